"""Reasoning samples from cycles (KMLM section 3.1, "Reasoning-Based Training Data").

A 3-cycle becomes 3 sentences and a 4-cycle with a diagonal ("diamond")
5 sentences, one per edge, each `h <linker> r <linker> t.` rendered with
the direction and relation of the edge's triple. Samples are monolingual:
as in the original, which ran once per language, a cycle yields one sample
in every requested language in which all its entities and relations have
labels. Span ids mark the same entity across sentences (entities get span
ids 0..3 in order of first mention; each relation mention gets its own id,
4 + sentence index), which the masking rules of the reasoning stream use.

Sentence order: the cycle's edges in the order of `Cycles` (for a diamond
(u, v, a, b): the diagonal (u, v), then (u, a), (v, a), (u, b), (v, b)).
"""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np

from kmlm_jax.kg.graph import KnowledgeGraph
from kmlm_jax.kg.samples import Sample, cycle_sample
from kmlm_jax.kg.sentences import add_count, labelled

CHUNK = 4096


def cycle_labelled(graph: KnowledgeGraph, lang: str, cycle_triples: np.ndarray) -> np.ndarray:
  """[C] bool: every triple of each cycle ([C, k] triple rows) is labelled in `lang`."""
  if not len(cycle_triples):
    return np.zeros(0, bool)
  flat = labelled(graph, lang, graph.triples[cycle_triples.reshape(-1)])
  return flat.reshape(cycle_triples.shape).all(axis=1)


def render_cycle(graph: KnowledgeGraph, lang: str, triple_rows: Sequence[int]) -> Sample:
  """One monolingual reasoning sample from the triple rows of a cycle."""
  e, r = graph.entity_names[lang].labels, graph.relation_names[lang].labels
  triples = [[int(x) for x in graph.triples[row]] for row in triple_rows]
  return cycle_sample(lang, "label", [((e[h], r[p], e[t]), (h, p, t)) for h, p, t in triples],
                      tuple(int(row) for row in triple_rows))


def generate(graph: KnowledgeGraph, cycle_triples: np.ndarray, languages: Sequence[str],
             keep: np.ndarray | None = None, counts: dict | None = None) -> Iterator[Sample]:
  """Samples of cycles given as [C, 3] or [C, 5] triple rows, language by language.

  `keep` [C] bool leaves out held-out cycles (counted as "held_out").
  Cycles not labelled in a language are counted per language as
  "unlabelled_<lang>".
  """
  cycle_triples = np.asarray(cycle_triples, np.int64)
  allowed = np.ones(len(cycle_triples), bool) if keep is None else np.asarray(keep, bool)
  add_count(counts, "held_out", (~allowed).sum())
  for lang in languages:
    ok = allowed & cycle_labelled(graph, lang, cycle_triples)
    add_count(counts, f"unlabelled_{lang}", (allowed & ~ok).sum())
    for c in np.flatnonzero(ok):
      yield render_cycle(graph, lang, cycle_triples[c])
