"""Multilingual link prediction on a `kg build` directory: Prix-LM vs KG embeddings.

Test queries are the Prix-LM TSV files `eval/lp/LANG.test.tsv` (head,
relation, tail named in LANG). Prix-LM answers `(h, r, ?)` with the jitted
trie-constrained beam search over the names of `eval/lp/LANG.entities.tsv`
(K beams, known true tails other than the answer excluded inside the search:
the filtered setting); a KG-embedding model (TransE, RotatE) trained on the
triples pretraining may see (`eval/lp/train_rows.npy`) ranks all entities
for the same queries, filtered with all true triples. Both report filtered
Hits@1/3/10 and MRR per language (an answer missing from a returned list
has rank infinity, MRR contribution 0). Prix-LM's own released splits
(`triples.txt`, `entities.txt`, `filtered.txt`) are read by
`kmlm_jax.kg.released.read_prixlm_lp` into the same `LPSplit`s.
"""

from __future__ import annotations

import collections
import dataclasses
from pathlib import Path
from typing import Sequence

import numpy as np

from kmlm_jax.errors import InputError
from kmlm_jax.evaluation import link_prediction as lp
from kmlm_jax.evaluation import metrics, progress
from kmlm_jax.kg.corpus_dir import CorpusDir


class LinkPredictionInputError(InputError):
  pass


def read_tsv(path: Path, fields: int) -> list[list[str]]:
  """Rows of a Prix-LM TSV file (see `numbered_rows`)."""
  return [row for _, row in numbered_rows(path, fields)]


def numbered_rows(path: Path, fields: int) -> list[tuple[int, list[str]]]:
  """(line number, fields) of each line of a Prix-LM TSV file: fields stripped of
  surrounding whitespace (and the file of a UTF-8 BOM), blank lines skipped; an error
  names FILE:LINE."""
  if not path.is_file():
    raise LinkPredictionInputError(f"{path}: missing (a link-prediction file of "
                                   "`kmlm-jax kg build`)")
  try:
    text = path.read_text(encoding="utf-8-sig")
  except UnicodeDecodeError as e:
    raise LinkPredictionInputError(f"{path}: not UTF-8 text ({e})") from None
  rows = []
  for n, line in enumerate(text.split("\n"), 1):
    if not line.strip():
      continue
    parts = [p.strip() for p in line.split("\t")]
    if len(parts) != fields:
      raise LinkPredictionInputError(f"{path}:{n}: expected {fields} tab-separated fields, "
                                     f"got {len(parts)}")
    if not all(parts):
      raise LinkPredictionInputError(f"{path}:{n}: field {parts.index('') + 1} is empty")
    rows.append((n, parts))
  return rows


@dataclasses.dataclass(frozen=True)
class LPSplit:
  """One language's link-prediction files, read and checked (no tokenizer needed yet):
  the entity names, the test queries (head, relation, tail, line) and the known tails
  of each (head, relation) (the filter file); `notes`: counts a reader reports (Prix-LM's
  release: repeated entity lines, answers missing from the entity list)."""

  lang: str
  entities: list[str]
  queries: list[tuple[str, str, str, int]]
  true_tails: dict
  test_path: Path
  notes: dict = dataclasses.field(default_factory=dict)


def read_split(corpus: Path | str, lang: str, max_queries: int | None = None) -> LPSplit:
  """`eval/lp/LANG.{entities,test,filter}.tsv` of a `kg build` directory; raises
  `LinkPredictionInputError` naming the file (and line) of a malformed or empty split."""
  corpus = CorpusDir(corpus)
  entities_path = corpus.eval_path("lp", f"{lang}.entities.tsv")
  entities = [name for name, _ in read_tsv(entities_path, 2)]
  dupes = [name for name, k in collections.Counter(entities).items() if k > 1]
  if dupes:
    raise LinkPredictionInputError(f"{entities_path}: duplicate names {dupes[:5]}")
  test_path = corpus.eval_path("lp", f"{lang}.test.tsv")
  queries = [(h, r, t, n) for n, (h, r, t, _) in numbered_rows(test_path, 4)][:max_queries]
  if not queries:
    raise LinkPredictionInputError(f"{test_path}: no test queries (an empty split)")
  index = set(entities)
  for h, r, t, n in queries:
    if t not in index:
      raise LinkPredictionInputError(f"{test_path}:{n}: field 3 (tail) {t!r} is not in "
                                     f"{entities_path}")
  true_tails = collections.defaultdict(set)
  for h, r, t, _ in read_tsv(corpus.eval_path("lp", f"{lang}.filter.tsv"), 4):
    true_tails[(h, r)].add(t)
  return LPSplit(lang, entities, queries, dict(true_tails), test_path)


@dataclasses.dataclass(frozen=True)
class LPQueries:
  """A split under one tokenizer: the entity trie, each query's prefix ids, answer and
  excluded entities ([N, X], -1 pads), and the positions the longest search needs."""

  trie: object
  prefixes: list[list[int]]
  answers: np.ndarray
  exclude: np.ndarray
  positions: int  # longest prefix + longest name with [EOS]


def encode_split(split: LPSplit, vocab) -> LPQueries:
  """Tokenizes a split (an answer missing from the entities gets -1: no search finds it);
  a tokenizer without the Prix-LM tokens or a relation it cannot
  represent raises `LinkPredictionInputError` (naming the tokenizer, or FILE:LINE)."""
  from kmlm_jax.decoding.trie import build_trie
  from kmlm_jax.text import prixlm
  try:
    ids = prixlm.PrixLMIds.of(vocab)
  except ValueError:
    raise LinkPredictionInputError(
        f"task lp: the tokenizer {getattr(vocab, 'source', '')} lacks the Prix-LM tokens "
        f"{' '.join(prixlm.PRIXLM_TOKENS)} (lp evaluates a Prix-LM checkpoint with its "
        "tokenizer)") from None
  index = {name: i for i, name in enumerate(split.entities)}
  trie = build_trie([vocab.encode(n) for n in split.entities], ids.end, duplicates="first")
  prefixes = []
  for h, r, _, n in split.queries:
    try:
      prefixes.append(prixlm.triple_prefix(vocab, ids, h, r))
    except prixlm.UnknownRelationError as e:
      raise LinkPredictionInputError(f"{split.test_path}:{n}: field 2 (relation): {e}") from None
  exclude = [[index[o] for o in sorted(split.true_tails.get((h, r), set()) - {t}) if o in index]
             for h, r, t, _ in split.queries]
  width = max([len(e) for e in exclude] + [1])
  exclude = np.asarray([e + [-1] * (width - len(e)) for e in exclude])
  # -1: an answer outside the entity list (Prix-LM's release has them): always a miss.
  answers = np.asarray([index.get(t, -1) for _, _, t, _ in split.queries])
  positions = max(len(p) for p in prefixes) + trie.max_len
  return LPQueries(trie, prefixes, answers, exclude, positions)


def prixlm_ranks(model, vocab, corpus: Path, lang: str, *, num_beams: int = 50,
                 batch_size: int = 32, max_queries: int | None = None,
                 split: LPSplit | None = None) -> tuple[np.ndarray, dict]:
  """[N] filtered ranks of the LANG test queries under Prix-LM beam search (`split`: the
  files as `read_split` read them; read here when None). Shows a phase line and a bar
  over the queries (stderr)."""
  from kmlm_jax.decoding.beam_search import BeamSearch
  split = split or read_split(corpus, lang, max_queries)
  q = encode_split(split, vocab)
  n = len(q.prefixes)
  progress.phase(f"link prediction {lang}: {n} queries, {num_beams} beams over "
                 f"{len(split.entities)} entities")
  search = BeamSearch(model, q.trie, num_beams=num_beams)
  # One padded length and exclude width for all batches: one compilation per
  # language instead of one per distinct batch shape.
  length = max(len(p) for p in q.prefixes)
  ranked = []
  with progress.bar(n, f"link prediction {lang}", "query", compiling="the beam search") as bar:
    for lo in range(0, n, batch_size):
      block = q.prefixes[lo:lo + batch_size]
      rows = np.full((batch_size, length), vocab.pad_id, np.int32)
      lengths = np.ones(batch_size, np.int32)
      for i, p in enumerate(block):
        rows[i, :len(p)], lengths[i] = p, len(p)
      rows[len(block):, 0] = vocab.bos_id
      ex = np.full((batch_size, q.exclude.shape[1]), -1)
      ex[:len(block)] = q.exclude[lo:lo + batch_size]
      ranked.append(search(rows, lengths, ex).entities[:len(block)])
      bar.update(len(block))
  info = {"queries": n, "entities": len(split.entities), "trie_states": q.trie.num_states}
  return metrics.list_ranks(np.concatenate(ranked), q.answers, q.exclude), info


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
  progress.phase(f"{config.model}: {config.steps} steps on {len(train_rows)} training triples, "
                 f"then {len(test_rows)} test queries")
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
