"""Evaluation sets built from the same KG, held out of the pretraining corpora.

Hold-out is by unordered entity pair: when a pair {A, B} is held out, every
triple between A and B (either direction, any relation) leaves the
pretraining data, and so does every cycle with an edge on that pair. This
keeps a symmetric or inverse fact (`shares border with`, `capital` /
`capital of`) from leaking the answer.

- Link prediction (Prix-LM format): a fraction of the pairs whose two
  entities keep at least one other edge; every triple on them is a test
  query `(h, r, ?)`. Files per language: `lp/{lang}.test.tsv` and
  `lp/{lang}.filter.tsv` (`e1<TAB>r<TAB>e2<TAB>lang`, the filter file
  holding every true triple), `lp/{lang}.entities.tsv` (`ent<TAB>lang`).
- Cloze probes (X-FACTR / mLAMA style): the link-prediction test triples as
  templates `[X] ... [Y]` per relation and language, from
  `data/probe_templates.json`, falling back to `[X] <relation label> [Y].`.
- XLR multiple choice (KMLM appendix A.2): a cycle, one of its edges as the
  question "What is the relation between A and B?", the other edges as
  context, 6 choices (the cycle's relations, then relations of A and B
  elsewhere in the graph, then random relations), train/dev/test. Every XLR
  cycle leaves the reasoning stream (the paper removes its test cycles);
  the question pairs of the dev and test items are held out as above, those
  of the train items (fine-tuning data) are not.
- Validation (not an evaluation set: the held-out split of the pretraining
  streams, for validation loss during training): a further
  `validation_fraction` of the pairs, drawn among those the sets above left,
  again leaving each endpoint at least one edge. Every triple on them leaves
  the pretraining streams and becomes validation data, and so does every
  cycle with an edge on them (unless it also has an edge on an evaluation
  pair or is an XLR cycle: those stay out of both). Its own random stream
  (seed, 10) leaves the evaluation sets as they were without it.
- Entity alignment: entities labelled in English and in l', split
  train/dev/test per language (`alignment/{lang}.{split}.jsonl`:
  `{"id", "en": label, lang: label}`). Alignment pairs are not removed from
  pretraining (KMLM never trains on them as pairs); the adapter training
  that does reads only the train split.
"""

from __future__ import annotations

import dataclasses
import json
from importlib import resources
from pathlib import Path
from typing import Sequence

import numpy as np

from kmlm_jax.kg.graph import KnowledgeGraph
from kmlm_jax.kg.sentences import SOURCE_LANG, labelled

SPLITS = ("train", "dev", "test")
# "What is the relation between A and B?" (KMLM appendix A.2, Figure 5).
QUESTIONS = {
    "en": "What is the relation between {a} and {b}?",
    "fr": "Quelle est la relation entre {a} et {b} ?",
    "de": "Was ist die Beziehung zwischen {a} und {b}?",
    "es": "¿Cuál es la relación entre {a} y {b}?",
    "it": "Qual è la relazione tra {a} e {b}?",
    "nl": "Wat is de relatie tussen {a} en {b}?",
    "vi": "Mối quan hệ giữa {a} và {b} là gì?",
    "ja": "{a}と{b}の関係は何ですか？",
    "ko": "{a}와 {b}의 관계는 무엇입니까?",
    "zh": "{a}和{b}之间是什么关系？",
}


@dataclasses.dataclass(frozen=True)
class EvalOptions:
  lp_fraction: float = 0.05  # of the simple graph's entity pairs
  xlr_fraction: float = 0.08  # XLR cycles (all splits) per entity pair of the graph
  max_xlr_cycles: int = 20_000
  xlr_fractions: tuple[float, float, float] = (0.6, 0.2, 0.2)
  alignment_fractions: tuple[float, float, float] = (0.7, 0.1, 0.2)
  num_choices: int = 6
  validation_fraction: float = 0.02  # of the entity pairs: validation data, out of pretraining


def pair_keys(graph: KnowledgeGraph, rows: np.ndarray | None = None) -> np.ndarray:
  """[N] int64 key of each triple's unordered entity pair."""
  t = graph.triples if rows is None else graph.triples[rows]
  lo, hi = np.minimum(t[:, 0], t[:, 2]), np.maximum(t[:, 0], t[:, 2])
  return lo.astype(np.int64) * graph.num_entities + hi


@dataclasses.dataclass
class HeldOut:
  """What the evaluation sets take out of pretraining.

  held_pairs: sorted unique pair keys; lp_rows: triple rows of the
  link-prediction test set; xlr_cycles: [X, k] triple rows of each XLR
  cycle (k = 3 or 5, padded with -1), xlr_question: [X] index of the
  question edge inside its cycle, xlr_split: [X] 0/1/2 (train/dev/test);
  validation_pairs: sorted unique pair keys of the validation split
  (disjoint from held_pairs).
  """

  held_pairs: np.ndarray
  lp_rows: np.ndarray
  xlr_cycles: np.ndarray
  xlr_question: np.ndarray
  xlr_split: np.ndarray
  validation_pairs: np.ndarray = dataclasses.field(
      default_factory=lambda: np.zeros(0, np.int64))

  def keep_triples(self, graph: KnowledgeGraph) -> np.ndarray:
    """[M] bool: triples that stay in pretraining (on no evaluation or validation pair)."""
    keys = pair_keys(graph)
    return ~np.isin(keys, self.held_pairs) & ~np.isin(keys, self.validation_pairs)

  def validation_triples(self, graph: KnowledgeGraph) -> np.ndarray:
    """[M] bool: triples of the validation split (on a validation pair)."""
    return np.isin(pair_keys(graph), self.validation_pairs)

  def keep_cycles(self, graph: KnowledgeGraph, cycle_triples: np.ndarray) -> np.ndarray:
    """[C] bool: cycles (as [C, k] triple rows) that are not XLR cycles and none
    of whose edges is held out (for evaluation or validation)."""
    return self._cycles(graph, cycle_triples, validation=False)

  def validation_cycles(self, graph: KnowledgeGraph, cycle_triples: np.ndarray) -> np.ndarray:
    """[C] bool: cycles of the validation split: an edge on a validation pair, none on an
    evaluation pair, not an XLR cycle."""
    return self._cycles(graph, cycle_triples, validation=True)

  def _cycles(self, graph: KnowledgeGraph, cycle_triples: np.ndarray, validation: bool):
    if not len(cycle_triples):
      return np.zeros(0, bool)
    keys = pair_keys(graph, cycle_triples.reshape(-1)).reshape(cycle_triples.shape)
    on = lambda pairs: np.isin(keys, pairs).any(axis=1)
    k = cycle_triples.shape[1]
    xlr = self.xlr_cycles[(self.xlr_cycles >= 0).sum(axis=1) == k][:, :k]  # XLR k-triple cycles
    in_xlr = _rows_in(cycle_triples, xlr)
    return ~on(self.held_pairs) & (on(self.validation_pairs) == validation) & ~in_xlr


def _rows_in(rows: np.ndarray, table: np.ndarray) -> np.ndarray:
  """[N] bool: the set of values of each row equals the set of some row of `table`."""
  if not len(table):
    return np.zeros(len(rows), bool)
  both = np.concatenate([np.sort(rows, axis=1), np.sort(table, axis=1)]).astype(np.int64)
  _, ids = np.unique(both, axis=0, return_inverse=True)
  ids = ids.reshape(-1)
  return np.isin(ids[:len(rows)], ids[len(rows):])


def choose_held_out(graph: KnowledgeGraph, cycle_sets: Sequence[np.ndarray], seed: int,
                    options: EvalOptions = EvalOptions()) -> HeldOut:
  """Picks the link-prediction pairs, then the XLR cycles among the rest, then the
  validation pairs among what is left."""
  rng = np.random.default_rng([seed, 7])
  keys = pair_keys(graph)
  t = graph.triples
  proper = t[:, 0] != t[:, 2]
  pairs = np.unique(keys[proper])
  lp_pairs = _take_pairs(pairs, int(round(options.lp_fraction * len(pairs))),
                         graph.num_entities, rng)

  # XLR: cycles with no link-prediction pair, one question edge each, with
  # distinct question pairs.
  cycles = [c for c in cycle_sets if len(c)]
  width = max([c.shape[1] for c in cycles], default=3)
  padded = [np.pad(c, ((0, 0), (0, width - c.shape[1])), constant_values=-1) for c in cycles]
  all_cycles = np.concatenate(padded) if padded else np.zeros((0, width), np.int64)
  sizes = (all_cycles >= 0).sum(axis=1)
  safe = np.where(all_cycles >= 0, all_cycles, 0)
  cyc_keys = pair_keys(graph, safe.reshape(-1)).reshape(safe.shape)
  clean = ~(np.isin(cyc_keys, lp_pairs) & (all_cycles >= 0)).any(axis=1)
  order = rng.permutation(np.flatnonzero(clean))
  question = np.floor(rng.random(len(order)) * sizes[order]).astype(np.int64)
  q_keys = cyc_keys[order, question]
  _, first = np.unique(q_keys, return_index=True)
  budget = min(options.max_xlr_cycles, int(round(options.xlr_fraction * len(pairs))))
  first = np.sort(first)[:budget]
  chosen, question = order[first], question[first]
  split = _split_ids(len(chosen), options.xlr_fractions, rng)
  held = np.union1d(lp_pairs, cyc_keys[chosen, question][split > 0])
  validation = _take_pairs(pairs[~np.isin(pairs, held)],
                           int(round(options.validation_fraction * len(pairs))),
                           graph.num_entities, np.random.default_rng([seed, 10]))
  return HeldOut(held, np.flatnonzero(np.isin(keys, lp_pairs)), all_cycles[chosen], question,
                 split, validation)


def _take_pairs(pairs: np.ndarray, count: int, num_entities: int, rng) -> np.ndarray:
  """Sorted keys of up to `count` of `pairs` (unordered pair keys), in seeded random
  order, among those whose two entities have another pair in `pairs`, giving back any
  that would leave an entity with none."""
  lo, hi = pairs // num_entities, pairs % num_entities
  degree = np.bincount(np.concatenate([lo, hi]), minlength=num_entities)
  candidates = pairs[(degree[lo] >= 2) & (degree[hi] >= 2)]
  take = rng.permutation(candidates)[:count]
  # One pass is enough: giving pairs back only raises the remaining degrees.
  t_lo, t_hi = take // num_entities, take % num_entities
  left = degree - np.bincount(np.concatenate([t_lo, t_hi]), minlength=num_entities)
  return np.sort(take[(left[t_lo] > 0) & (left[t_hi] > 0)])


def _split_ids(n: int, fractions: Sequence[float], rng) -> np.ndarray:
  """[n] split ids 0/1/2 in seeded random order with the given fractions."""
  bounds = np.round(np.cumsum(fractions) / np.sum(fractions) * n).astype(np.int64)
  ids = np.searchsorted(bounds, np.arange(n), side="right")
  return rng.permutation(ids)


# ---------------------------------------------------------------- writers


def write_link_prediction(graph: KnowledgeGraph, held: HeldOut, out: Path,
                          languages: Sequence[str]) -> dict[str, int]:
  """Prix-LM TSV files per language; returns test queries per language."""
  from kmlm_jax.kg.triples_tsv import write_entities_tsv, write_triples_tsv
  (out / "lp").mkdir(parents=True, exist_ok=True)
  test_graph = dataclasses.replace(graph, triples=graph.triples[held.lp_rows])
  counts = {}
  for lang in languages:
    counts[lang] = write_triples_tsv(test_graph, out / "lp" / f"{lang}.test.tsv", lang)
    write_triples_tsv(graph, out / "lp" / f"{lang}.filter.tsv", lang)
    write_entities_tsv(graph, out / "lp" / f"{lang}.entities.tsv", lang)
  return counts


def probe_templates() -> dict[str, dict[str, str]]:
  """relation id -> language -> template with [X] and [Y]."""
  text = resources.files("kmlm_jax.kg").joinpath("data/probe_templates.json").read_text("utf-8")
  return json.loads(text)


def probes(graph: KnowledgeGraph, held: HeldOut, languages: Sequence[str]) -> list[dict]:
  """Cloze probes over the link-prediction test triples."""
  templates = probe_templates()
  out = []
  for lang in languages:
    ok = labelled(graph, lang, graph.triples[held.lp_rows])
    e, r = graph.entity_names[lang].labels, graph.relation_names[lang].labels
    for row in held.lp_rows[ok]:
      h, p, t = (int(x) for x in graph.triples[row])
      pid = graph.relation_ids[p]
      template = templates.get(pid, {}).get(lang)
      out.append(dict(lang=lang, relation=pid, template=template or f"[X] {r[p]} [Y].",
                      generic_template=template is None, subject=e[h], object=e[t],
                      subject_id=graph.entity_ids[h], object_id=graph.entity_ids[t],
                      triple=int(row)))
  return out


def xlr_items(graph: KnowledgeGraph, held: HeldOut, languages: Sequence[str], seed: int,
              num_choices: int = 6) -> list[dict]:
  """Multiple-choice items of the held-out cycles, in every language they are labelled in."""
  rng = np.random.default_rng([seed, 8])
  t = graph.triples
  # Relations attached to each entity (either end), in triple order.
  ends = np.concatenate([t[:, 0], t[:, 2]])
  order = np.argsort(ends, kind="stable")
  end_relations = np.concatenate([t[:, 1], t[:, 1]])[order]
  bounds = np.searchsorted(ends[order], np.arange(graph.num_entities + 1))
  relations_of = lambda e: end_relations[bounds[e]:bounds[e + 1]].tolist()
  items = []
  for x, (cycle, q, split) in enumerate(zip(held.xlr_cycles, held.xlr_question, held.xlr_split)):
    rows = cycle[cycle >= 0]
    h, answer, tail = (int(v) for v in t[rows[q]])
    cycle_rels = list(dict.fromkeys(int(v) for v in t[rows, 1]))
    nearby = [v for v in dict.fromkeys(relations_of(h) + relations_of(tail))
              if v not in cycle_rels]
    others = [v for v in rng.permutation(graph.num_relations).tolist()
              if v not in cycle_rels and v not in nearby]
    choices = (cycle_rels + list(rng.permutation(nearby)) + others)[:num_choices]
    if len(choices) < num_choices:
      continue  # the graph has too few relations for this many choices
    choices = [int(c) for c in rng.permutation(choices)]
    context_rows = [int(r) for i, r in enumerate(rows) if i != q]
    for lang in languages:
      if lang not in QUESTIONS:
        continue
      rel_ok = graph.relation_names[lang].has_label()[choices].all()
      if not (rel_ok and labelled(graph, lang, t[rows]).all()):
        continue
      e, r = graph.entity_names[lang].labels, graph.relation_names[lang].labels
      items.append(dict(
          id=f"xlr-{x}", split=SPLITS[int(split)], lang=lang, cycle=int({3: 3, 5: 4}[len(rows)]),
          context=[f"{e[a]} {r[b]} {e[c]}." for a, b, c in t[context_rows]],
          question=QUESTIONS[lang].format(a=e[h], b=e[tail]),
          choices=[r[c] for c in choices], choice_ids=[graph.relation_ids[c] for c in choices],
          label=choices.index(answer), triples=[int(v) for v in rows],
          question_triple=int(rows[q])))
  return items


def alignment_pairs(graph: KnowledgeGraph, languages: Sequence[str], seed: int,
                    fractions=(0.7, 0.1, 0.2)) -> dict[str, dict[str, list[tuple[str, str, str]]]]:
  """lang -> split -> [(entity id, English label, l' label)]."""
  en = graph.entity_names[SOURCE_LANG]
  out = {}
  for li, lang in enumerate(l for l in languages if l != SOURCE_LANG):
    both = np.flatnonzero(en.has_label() & graph.entity_names[lang].has_label())
    split = _split_ids(len(both), fractions, np.random.default_rng([seed, 9, li]))
    out[lang] = {name: [(graph.entity_ids[i], en.labels[i], graph.entity_names[lang].labels[i])
                        for i in both[split == s]] for s, name in enumerate(SPLITS)}
  return out
