"""Knowledge sentences from triples (KMLM section 3.1).

Code-switched, for a triple (h, r, t) and a pair (en, l'), in the paper's
four steps: 1) the pair is given; 2) start from the English default labels
of h, r and t; 3) each of h, r, t independently switches to its l' label
with probability 0.5 when it has one; 4) emit `h <linker> r <linker> t.`.
Parallel: the same triple fully in English and fully in l' (two samples
sharing a group id), for each l' in which h, r and t all have labels.
Alias-replaced (variant "alias"): the same, with each name drawn from the
item's aliases in the chosen language instead of its default label. As in
the original code, an alias is drawn uniformly from the first
`n // 2 + 1` of the item's n aliases when n > 2 (Wikidata lists common
aliases first); an item with no alias keeps its label. An alias sample
contains at least one alias: a triple none of whose three names has an
alias in the drawn languages writes no alias sample (a parallel pair needs
one on each side) and is counted under "no_alias". The original code
(`wikidata_tool/dump_by_id.py`) writes an alias line only when all three
items have an alias in their drawn languages; on Wikidata most relations
have aliases, on the embedded sample none has, so that rule would write no
alias sample there.

Triples whose head, relation or tail has no English label are skipped and
counted. Every random choice comes from a generator seeded with
(seed, stream, chunk index) over fixed chunks of `CHUNK` triples, so any
chunk can be generated alone (the Beam pipeline does that) and the output
does not depend on how the work is split.
"""

from __future__ import annotations

import dataclasses
from typing import Iterator, Sequence

import numpy as np

from kmlm_jax.kg.graph import KnowledgeGraph, NameTable
from kmlm_jax.kg.samples import (KIND_CODE_SWITCHED, KIND_LINK, KIND_PARALLEL, KIND_TRIPLE,
                                 ROLE_ENTITY, Sample, triple_sample)

CHUNK = 4096
SOURCE_LANG = "en"
# Stream numbers keep the random streams of the generators apart.
STREAM_CODE_SWITCHED, STREAM_PARALLEL = 1, 2


@dataclasses.dataclass(frozen=True)
class SentenceOptions:
  """target_langs: the l' of the pairs (None: every language but English);
  variants: which of "label" and "alias" to emit."""

  target_langs: tuple[str, ...] | None = None
  variants: tuple[str, ...] = ("label", "alias")

  def targets(self, graph: KnowledgeGraph) -> tuple[str, ...]:
    langs = self.target_langs or tuple(l for l in graph.languages if l != SOURCE_LANG)
    unknown = [l for l in langs if l not in graph.languages]
    if unknown:
      raise ValueError(f"target languages {unknown} are not languages of the graph "
                       f"{list(graph.languages)}")
    return tuple(langs)


def num_chunks(graph: KnowledgeGraph) -> int:
  return -(-graph.num_triples // CHUNK)


def choose_names(table: NameTable, ids: np.ndarray, use_alias: bool,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
  """([N] object array, [N] bool): each item's label, or an alias drawn by the
  original's rule, and whether the name is an alias (an item without one keeps its label)."""
  names = table.labels[ids]
  if not use_alias:
    return names, np.zeros(len(ids), bool)
  counts = table.alias_counts()[ids]
  pool = np.where(counts > 2, counts // 2 + 1, counts)
  pick = np.floor(rng.random(len(ids)) * pool).astype(np.int64)
  has = counts > 0
  flat = table.alias_offsets[ids][has] + pick[has]
  out = names.copy()
  out[has] = table.aliases[flat]
  return out, has


def labelled(graph: KnowledgeGraph, lang: str, triples: np.ndarray) -> np.ndarray:
  """[N] bool: head, relation and tail of each triple all have a `lang` label."""
  e, r = graph.entity_names[lang].has_label(), graph.relation_names[lang].has_label()
  return e[triples[:, 0]] & r[triples[:, 1]] & e[triples[:, 2]]


def _chunk(graph: KnowledgeGraph, chunk: int, keep: np.ndarray | None, counts: dict | None):
  """(start, triples, [n] bool allowed by `keep`) of one chunk; the rest count as "held_out"."""
  start = chunk * CHUNK
  triples = graph.triples[start:start + CHUNK]
  allowed = np.ones(len(triples), bool) if keep is None else keep[start:start + CHUNK]
  add_count(counts, "held_out", (~allowed).sum())
  return start, triples, allowed


def chunk_rows(graph: KnowledgeGraph, chunk: int, keep: np.ndarray | None, counts: dict | None):
  """(start, kept row offsets, kept triples) of one chunk.

  A row is kept when `keep` (a [M] bool mask; held-out evaluation triples
  are False) allows it and all three items have English labels; the rest
  are counted under "held_out" and "no_english_label".
  """
  start, triples, allowed = _chunk(graph, chunk, keep, counts)
  ok = labelled(graph, SOURCE_LANG, triples)
  add_count(counts, "no_english_label", (allowed & ~ok).sum())
  index = np.flatnonzero(allowed & ok)
  return start, index, triples[index]


def _names(graph: KnowledgeGraph, lang: str, triples: np.ndarray, use_alias: bool, rng):
  """(three [N] name columns (head, relation, tail) in `lang`, [N, 3] bool: the name is an
  alias)."""
  e, r = graph.entity_names[lang], graph.relation_names[lang]
  picked = [choose_names(table, triples[:, j], use_alias, rng)
            for j, table in enumerate((e, r, e))]
  return tuple(p[0] for p in picked), np.stack([p[1] for p in picked], axis=1)


def add_count(counts: dict | None, key: str, n) -> None:
  if counts is not None:
    counts[key] = counts.get(key, 0) + int(n)


def _with_alias(variant: str, counts: dict | None, *flags: np.ndarray) -> np.ndarray:
  """[N] bool: the rows to write, the rest counted as "no_alias". An alias sample needs an
  alias among its names (each [N, 3] flag array: one side); a label sample is always written."""
  write = (np.logical_and.reduce([f.any(axis=1) for f in flags]) if variant == "alias"
           else np.ones(len(flags[0]), bool))
  add_count(counts, "no_alias", (~write).sum())
  return write


def code_switched_chunk(graph: KnowledgeGraph, chunk: int, seed: int,
                        options: SentenceOptions = SentenceOptions(),
                        keep: np.ndarray | None = None,
                        counts: dict | None = None) -> Iterator[Sample]:
  """Code-switched samples of triples [chunk * CHUNK, (chunk + 1) * CHUNK)."""
  rng = np.random.default_rng([seed, STREAM_CODE_SWITCHED, chunk])
  start, index, triples = chunk_rows(graph, chunk, keep, counts)
  for lang in options.targets(graph):
    e, r = graph.entity_names[lang].has_label(), graph.relation_names[lang].has_label()
    has = np.stack([e[triples[:, 0]], r[triples[:, 1]], e[triples[:, 2]]], axis=1)
    for variant in options.variants:
      switch = (rng.random(triples.shape) < 0.5) & has
      source, source_alias = _names(graph, SOURCE_LANG, triples, variant == "alias", rng)
      target, target_alias = _names(graph, lang, triples, variant == "alias", rng)
      cols = [np.where(switch[:, j], target[j], source[j]) for j in range(3)]
      write = _with_alias(variant, counts, np.where(switch, target_alias, source_alias))
      pair = f"{SOURCE_LANG}-{lang}"
      for n in np.flatnonzero(write):
        yield triple_sample(KIND_CODE_SWITCHED, pair, variant, [c[n] for c in cols],
                            triples[n], start + index[n])


def parallel_chunk(graph: KnowledgeGraph, chunk: int, seed: int,
                   options: SentenceOptions = SentenceOptions(),
                   keep: np.ndarray | None = None,
                   counts: dict | None = None) -> Iterator[Sample]:
  """Parallel (en, l') sample pairs of the chunk's triples; a pair shares `group`."""
  rng = np.random.default_rng([seed, STREAM_PARALLEL, chunk])
  start, index, triples = chunk_rows(graph, chunk, keep, counts)
  targets = options.targets(graph)
  for li, lang in enumerate(targets):
    rows = np.flatnonzero(labelled(graph, lang, triples))
    sub = triples[rows]
    for vi, variant in enumerate(options.variants):
      source, source_alias = _names(graph, SOURCE_LANG, sub, variant == "alias", rng)
      target, target_alias = _names(graph, lang, sub, variant == "alias", rng)
      write = _with_alias(variant, counts, source_alias, target_alias)
      for n in np.flatnonzero(write):
        t_index = start + index[rows[n]]
        group = (t_index * len(targets) + li) * len(options.variants) + vi
        for out_lang, names in ((SOURCE_LANG, source), (lang, target)):
          yield triple_sample(KIND_PARALLEL, out_lang, variant, [c[n] for c in names], sub[n],
                              t_index, group)


def triples_chunk(graph: KnowledgeGraph, chunk: int, seed: int,
                  options: SentenceOptions = SentenceOptions(), keep: np.ndarray | None = None,
                  counts: dict | None = None) -> Iterator[Sample]:
  """Prix-LM monolingual triples: each kept triple in every graph language in
  which its three items have labels (default labels, no randomness)."""
  del seed, options
  start, triples, allowed = _chunk(graph, chunk, keep, counts)
  for lang in graph.languages:
    e, r = graph.entity_names[lang].labels, graph.relation_names[lang].labels
    for row in np.flatnonzero(allowed & labelled(graph, lang, triples)):
      h, p, t = (int(x) for x in triples[row])
      yield triple_sample(KIND_TRIPLE, lang, "label", (e[h], r[p], e[t]), (h, p, t), start + row)


def links_chunk(graph: KnowledgeGraph, chunk: int, excluded: dict | None = None,
                counts: dict | None = None) -> Iterator[Sample]:
  """Prix-LM cross-lingual links of entities [chunk * CHUNK, (chunk + 1) * CHUNK):
  an entity's English and l' labels, for every l' in which it has one.
  `excluded[lang]` (sorted entity ids) leaves out held-out alignment pairs."""
  start = chunk * CHUNK
  ids = np.arange(start, min(start + CHUNK, graph.num_entities))
  en = graph.entity_names[SOURCE_LANG]
  for lang in (l for l in graph.languages if l != SOURCE_LANG):
    other = graph.entity_names[lang]
    ok = en.has_label()[ids] & other.has_label()[ids]
    held = np.isin(ids, (excluded or {}).get(lang, ()))
    add_count(counts, "held_out", (ok & held).sum())
    for e in ids[ok & ~held]:
      e = int(e)
      yield Sample(KIND_LINK, f"{SOURCE_LANG}-{lang}", "label", 0,
                   (en.labels[e], other.labels[e]), (ROLE_ENTITY, ROLE_ENTITY), (0, 0), (0, 0),
                   (e, e), ())


def generate(graph: KnowledgeGraph, kind: str, seed: int,
             options: SentenceOptions = SentenceOptions(), keep: np.ndarray | None = None,
             chunks: Sequence[int] | None = None, counts: dict | None = None) -> Iterator[Sample]:
  """All samples of `kind` (code_switched | parallel), chunk by chunk."""
  fn = {KIND_CODE_SWITCHED: code_switched_chunk, KIND_PARALLEL: parallel_chunk}[kind]
  for chunk in range(num_chunks(graph)) if chunks is None else chunks:
    yield from fn(graph, chunk, seed, options, keep, counts)
