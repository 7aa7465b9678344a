"""Multilingual link prediction on a `kg build` directory: Prix-LM vs KG embeddings.

Test queries are the Prix-LM TSV files `eval/lp/LANG.test.tsv` (head,
relation, tail named in LANG). Prix-LM answers `(h, r, ?)` with the jitted
trie-constrained beam search over the names of `eval/lp/LANG.entities.tsv`
(K beams, known true tails other than the answer excluded inside the search:
the filtered setting); a KG-embedding model (TransE, RotatE) trained on the
triples pretraining may see (`eval/lp/train_rows.npy`) ranks all entities
for the same queries, filtered with all true triples. Both report filtered
Hits@1/3/10 and MRR per language (an answer missing from a returned list
has rank infinity, MRR contribution 0).
"""

from __future__ import annotations

import collections
from pathlib import Path
from typing import Sequence

import numpy as np

from kmlm_jax.errors import InputError
from kmlm_jax.evaluation import link_prediction as lp
from kmlm_jax.evaluation import metrics
from kmlm_jax.kg.corpus_dir import CorpusDir


class LinkPredictionInputError(InputError):
  pass


def read_tsv(path: Path, fields: int) -> list[list[str]]:
  rows = []
  for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
    parts = line.split("\t")
    if len(parts) != fields or not all(parts):
      raise LinkPredictionInputError(f"{path}:{n}: expected {fields} non-empty tab-separated "
                                     f"fields, got {len(parts)}")
    rows.append(parts)
  return rows


def prixlm_ranks(model, vocab, corpus: Path, lang: str, *, num_beams: int = 50,
                 batch_size: int = 32, max_queries: int | None = None) -> tuple[np.ndarray, dict]:
  """[N] filtered ranks of the LANG test queries under Prix-LM beam search."""
  from kmlm_jax.decoding.beam_search import BeamSearch
  from kmlm_jax.decoding.trie import build_trie
  from kmlm_jax.text import prixlm
  ids = prixlm.PrixLMIds.of(vocab)
  corpus = CorpusDir(corpus)
  entities_path = corpus.eval_path("lp", f"{lang}.entities.tsv")
  entities = [name for name, _ in read_tsv(entities_path, 2)]
  if len(set(entities)) != len(entities):
    raise LinkPredictionInputError(f"{entities_path}: duplicate names")
  index = {name: i for i, name in enumerate(entities)}
  trie = build_trie([vocab.encode(n) for n in entities], ids.end, duplicates="first")
  test_path = corpus.eval_path("lp", f"{lang}.test.tsv")
  queries = read_tsv(test_path, 4)[:max_queries]
  true_tails = collections.defaultdict(set)
  for h, r, t, _ in read_tsv(corpus.eval_path("lp", f"{lang}.filter.tsv"), 4):
    true_tails[(h, r)].add(t)
  missing = [t for _, _, t, _ in queries if t not in index]
  if missing:
    raise LinkPredictionInputError(f"{lang}: test answers not in the entity list: {missing[:5]}")
  answers = np.asarray([index[t] for _, _, t, _ in queries])
  exclude = [[index[o] for o in sorted(true_tails[(h, r)] - {t}) if o in index]
             for h, r, t, _ in queries]
  width = max([len(e) for e in exclude] + [1])
  exclude = np.asarray([e + [-1] * (width - len(e)) for e in exclude])
  prefixes = []
  for n, (h, r, _, _) in enumerate(queries, 1):
    try:
      prefixes.append(prixlm.triple_prefix(vocab, ids, h, r))
    except prixlm.UnknownRelationError as e:
      raise LinkPredictionInputError(f"{test_path}:{n}: field 2 (relation): {e}") from None
  search = BeamSearch(model, trie, num_beams=num_beams)
  # One padded length and exclude width for all batches: one compilation per
  # language instead of one per distinct batch shape.
  length = max([len(p) for p in prefixes] + [1])
  ranked = []
  for lo in range(0, len(queries), batch_size):
    block = prefixes[lo:lo + batch_size]
    rows = np.full((batch_size, length), vocab.pad_id, np.int32)
    lengths = np.ones(batch_size, np.int32)
    for i, p in enumerate(block):
      rows[i, :len(p)], lengths[i] = p, len(p)
    rows[len(block):, 0] = vocab.bos_id
    ex = np.full((batch_size, width), -1)
    ex[:len(block)] = exclude[lo:lo + batch_size]
    ranked.append(search(rows, lengths, ex).entities[:len(block)])
  ranked = np.concatenate(ranked) if ranked else np.zeros((0, num_beams), int)
  info = {"queries": len(queries), "entities": len(entities), "trie_states": trie.num_states}
  return metrics.list_ranks(ranked, answers, exclude), info


def kge_ranks(corpus: Path, langs: Sequence[str], config) -> dict[str, np.ndarray]:
  """Filtered tail ranks of a KG-embedding model (trained here) per language.

  The queries of LANG are the test rows whose three items are labelled in
  LANG, i.e. the rows of `LANG.test.tsv`.
  """
  from kmlm_jax.kg.sentences import labelled
  from kmlm_jax.models import kge
  corpus = CorpusDir(corpus)
  graph = corpus.graph()
  train_rows = np.load(corpus.eval_path("lp", "train_rows.npy"))
  test_rows = np.load(corpus.eval_path("lp", "test_rows.npy"))
  params, _ = kge.train(config, graph.triples[train_rows], graph.num_entities,
                        graph.num_relations)
  ranks = kge.filtered_ranks(config, params, graph.triples[test_rows], graph.triples)
  return {lang: ranks[labelled(graph, lang, graph.triples[test_rows])] for lang in langs}


def results_table(results: dict[str, dict[str, np.ndarray]], langs: Sequence[str]) -> str:
  """Markdown in the layout of the Prix-LM paper's Table 1 (methods x metrics, languages)."""
  per_method = {}
  for method, ranks in results.items():
    flat = np.concatenate([ranks[l] for l in langs])
    labels = np.concatenate([[l] * len(ranks[l]) for l in langs])
    per_method[method] = lp.metrics_by_language(flat, labels)
  return lp.table1_markdown(per_method, list(langs), metric_names=lp.METRICS)
