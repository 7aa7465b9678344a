"""`KnowledgeGraph`: the columnar tables every generator reads.

Entities and relations are numbered 0..E-1 and 0..R-1 in the order of
their first appearance in the source. Names are stored per language as a
`NameTable`: one default label per item ("" where the item has none in
that language) plus its aliases in CSR form. Triples are an int32 [M, 3]
array of (head, relation, tail) ids, unique and sorted.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import zipfile
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from kmlm_jax import fileio
from kmlm_jax.kg.errors import BadRecord, KGInputError

# Wikidata caps labels and aliases at 250 characters; a name over this limit is a
# bad record (it would make every name table row this wide: see `KnowledgeGraph.save`).
MAX_NAME_CHARS = 1000
_BREAK_CHARS = "\t\n\r\v\f\x1c-\x1f\x85\u2028\u2029"
_BREAKS = re.compile(f"[ {_BREAK_CHARS}]*[{_BREAK_CHARS}][ {_BREAK_CHARS}]*")


@dataclasses.dataclass(frozen=True)
class NameTable:
  """Names of N items in one language.

  labels: [N] object array of str, "" where the item has no label.
  alias_offsets: [N + 1] int64; item i's aliases are
    `aliases[alias_offsets[i]:alias_offsets[i + 1]]`.
  aliases: [A] object array of str.
  """

  labels: np.ndarray
  alias_offsets: np.ndarray
  aliases: np.ndarray

  def __len__(self) -> int:
    return len(self.labels)

  def has_label(self) -> np.ndarray:
    """[N] bool."""
    return self.labels != ""

  def aliases_of(self, i: int) -> np.ndarray:
    return self.aliases[self.alias_offsets[i]:self.alias_offsets[i + 1]]

  def alias_counts(self) -> np.ndarray:
    """[N] int64 number of aliases per item."""
    return np.diff(self.alias_offsets)

  @classmethod
  def build(cls, labels: Sequence[str], aliases: Sequence[Sequence[str]]) -> "NameTable":
    counts = np.fromiter((len(a) for a in aliases), np.int64, len(aliases))
    offsets = np.zeros(len(aliases) + 1, np.int64)
    np.cumsum(counts, out=offsets[1:])
    flat = np.empty(int(offsets[-1]), object)
    flat[:] = [a for group in aliases for a in group]
    out = np.empty(len(labels), object)
    out[:] = list(labels)
    return cls(out, offsets, flat)


@dataclasses.dataclass(frozen=True)
class KnowledgeGraph:
  """A multilingual knowledge graph as columnar arrays.

  entity_ids: [E] object array of source ids (Wikidata QIDs).
  relation_ids: [R] object array of source ids (Wikidata PIDs).
  languages: the languages the name tables cover, in a fixed order.
  entity_names / relation_names: language -> NameTable of length E / R.
  triples: [M, 3] int32 (head, relation, tail), unique rows, sorted.
  """

  entity_ids: np.ndarray
  relation_ids: np.ndarray
  languages: tuple[str, ...]
  entity_names: Mapping[str, NameTable]
  relation_names: Mapping[str, NameTable]
  triples: np.ndarray

  def __post_init__(self):
    e, r = len(self.entity_ids), len(self.relation_ids)
    for lang in self.languages:
      if len(self.entity_names[lang]) != e or len(self.relation_names[lang]) != r:
        raise ValueError(f"name tables for {lang!r} do not cover every entity and relation")
    t = self.triples
    if t.ndim != 2 or t.shape[1] != 3 or t.dtype != np.int32:
      raise ValueError(f"triples must be int32 [M, 3], got {t.dtype} {t.shape}")
    if len(t) and (t.min() < 0 or t[:, [0, 2]].max() >= e or t[:, 1].max() >= r):
      raise ValueError("triples reference entity or relation ids out of range")

  @property
  def num_entities(self) -> int:
    return len(self.entity_ids)

  @property
  def num_relations(self) -> int:
    return len(self.relation_ids)

  @property
  def num_triples(self) -> int:
    return len(self.triples)

  def entity_label(self, i: int, lang: str) -> str:
    return self.entity_names[lang].labels[i]

  def relation_label(self, i: int, lang: str) -> str:
    return self.relation_names[lang].labels[i]

  def fingerprint(self) -> str:
    """A short hash of the whole graph (ids, names, triples)."""
    h = hashlib.sha256()
    for column in (self.entity_ids, self.relation_ids):
      h.update("\x1f".join(column).encode())
    for lang in self.languages:
      for table in (self.entity_names[lang], self.relation_names[lang]):
        h.update(lang.encode())
        h.update("\x1f".join(table.labels).encode())
        h.update("\x1f".join(table.aliases).encode())
        h.update(table.alias_offsets.tobytes())
    h.update(self.triples.tobytes())
    return h.hexdigest()[:16]

  # ------------------------------------------------------------ persistence

  def save(self, path: Path | str) -> None:
    """Writes one `.npz` file (strings stored as unicode arrays, no pickle)."""
    arrays = {"entity_ids": _u(self.entity_ids), "relation_ids": _u(self.relation_ids),
              "languages": _u(np.array(self.languages, object)), "triples": self.triples}
    for kind, tables in (("entity", self.entity_names), ("relation", self.relation_names)):
      for lang in self.languages:
        t = tables[lang]
        arrays[f"{kind}/{lang}/labels"] = _u(t.labels)
        arrays[f"{kind}/{lang}/alias_offsets"] = t.alias_offsets
        arrays[f"{kind}/{lang}/aliases"] = _u(t.aliases)
    fileio.save_npz(path, arrays)

  @classmethod
  def load(cls, path: Path | str) -> "KnowledgeGraph":
    try:
      with np.load(path, allow_pickle=False) as z:
        obj = lambda name: z[name].astype(object)
        languages = tuple(obj("languages"))
        names = {kind: {lang: NameTable(obj(f"{kind}/{lang}/labels"),
                                        z[f"{kind}/{lang}/alias_offsets"],
                                        obj(f"{kind}/{lang}/aliases")) for lang in languages}
                 for kind in ("entity", "relation")}
        return cls(obj("entity_ids"), obj("relation_ids"), languages, names["entity"],
                   names["relation"], z["triples"])
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:
      raise KGInputError(f"{path}: not a readable graph.npz ({type(e).__name__}: {e})") from None


def _u(a: np.ndarray) -> np.ndarray:
  """Object array of str -> fixed-width unicode array (np.savez without pickle)."""
  return np.asarray(list(a), dtype=str) if len(a) else np.zeros(0, "<U1")


def clean_name(name: str, field: str) -> tuple[str, bool]:
  """(`name` with each run of tabs and line breaks, with the spaces around it, replaced
  by one space and the ends stripped of them, whether that changed it). Real dumps
  hold such labels; the TSV and JSONL outputs cannot. A name over `MAX_NAME_CHARS`
  raises `BadRecord` ("name_too_long") naming `field`."""
  if len(name) > MAX_NAME_CHARS:
    raise BadRecord("name_too_long", field, f"name of {len(name):,} characters, over the "
                    f"maximum {MAX_NAME_CHARS:,} (Wikidata allows 250)")
  if name.isprintable():  # the fast path: no tab or line break
    return name, False
  cleaned = _BREAKS.sub(" ", name).strip(" ")
  return cleaned, cleaned != name


@dataclasses.dataclass
class ItemRecord:
  """One entity or relation as a reader found it.

  labels: language -> default label; aliases: language -> aliases (in the
  source's order, duplicates of the label removed); claims: (relation id,
  target entity id) pairs, item-valued only.
  """

  id: str
  labels: dict[str, str]
  aliases: dict[str, list[str]]
  claims: list[tuple[str, str]] = dataclasses.field(default_factory=list)


def build_graph(entities: Iterable[ItemRecord], relations: Iterable[ItemRecord],
                languages: Sequence[str]) -> tuple[KnowledgeGraph, dict[str, int]]:
  """Assembles a graph from reader records.

  Keeps a triple only when its head and tail are both entities of the graph
  and its relation is a relation of the graph; the counts of what was left
  out come back as `{"dangling_triples": n, "duplicate_triples": n}`.
  Relations that appear in claims but have no record get an id as their
  only name in every language ("" label) -- readers pass records for the
  relations they know.
  """
  languages, entities, relations = tuple(languages), list(entities), list(relations)

  def index(records, what: str) -> dict[str, int]:
    out = {}
    for rec in records:
      if rec.id in out:
        raise ValueError(f"{what} {rec.id} appears twice")
      out[rec.id] = len(out)
    return out

  entity_index, relation_index = index(entities, "entity"), index(relations, "relation")

  rows, dangling = [], 0
  for rec in entities:
    h = entity_index[rec.id]
    for pid, target in rec.claims:
      r, t = relation_index.get(pid), entity_index.get(target)
      if r is None or t is None:
        dangling += 1
        continue
      rows.append((h, r, t))
  triples = np.asarray(rows, np.int32).reshape(-1, 3)
  unique = np.unique(triples, axis=0) if len(triples) else triples
  counts = {"dangling_triples": dangling, "duplicate_triples": len(triples) - len(unique)}

  def tables(records):
    return {lang: NameTable.build([r.labels.get(lang, "") for r in records],
                                  [r.aliases.get(lang, []) for r in records])
            for lang in languages}

  ids = lambda records: np.array([r.id for r in records], dtype=object)
  graph = KnowledgeGraph(ids(entities), ids(relations), languages, tables(entities),
                         tables(relations), unique.astype(np.int32))
  return graph, counts
