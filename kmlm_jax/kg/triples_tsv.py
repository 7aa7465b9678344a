"""Prix-LM's released KG format: triples TSV and entity lists.

Triples: one `head<TAB>relation<TAB>tail<TAB>lang` per line, entities and
relation given by their names in `lang`. Entity list (optional):
`name<TAB>lang` per line, the candidate set of link prediction.

The files carry no ids, and in Prix-LM the same entity in two languages is
two nodes joined by cross-lingual links. So the reader makes one node per
(language, name):
- entity id `"{lang}:{name}"`, relation id `"{lang}:{relation}"` (split at
  the first `:`; a language code never contains one);
- the item's label in `lang` is the name, and it has no label (and no
  aliases) in any other language of the graph.
Entities come in entity-list order, then in order of first appearance in
the triples; relations in order of first appearance. A UTF-8 BOM at the
start of a file and whitespace around each field are dropped; line breaks
inside a name become a space (`graph.clean_name`, counted in
`ReadStats.names_cleaned`). Blank lines are ignored; duplicate triple lines
are reported in `info["duplicate_triples"]` and repeated entity-list lines in
`info["duplicate_entity_lines"]`.

Bad lines (`wrong_field_count`, `empty_field`, `bad_language`, `name_too_long`,
and `unknown_language` when `languages` is given) raise `KGInputError` naming
FILE:LINE and the field, or with `skip_bad_records=True` become counted
skips in `ReadStats`.

`write_triples_tsv` / `write_entities_tsv` write any graph (e.g. one read
from Wikidata) in this format for one language, using its labels there; two
items sharing a label in that language become one node when read back.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

from kmlm_jax.kg.errors import BadRecord, KGInputError, ReadStats
from kmlm_jax.kg.graph import ItemRecord, KnowledgeGraph, build_graph, clean_name
from kmlm_jax.kg.wikidata import check_languages

TRIPLE_FIELDS = ("head", "relation", "tail", "lang")
ENTITY_FIELDS = ("entity", "lang")
_LANG = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")


def node_id(name: str, lang: str) -> str:
  """The id the reader gives an entity or relation named `name` in `lang`."""
  return f"{lang}:{name}"


class _TsvReader:
  """Collects nodes and triples from the entity list and triples files."""

  def __init__(self, languages: tuple[str, ...] | None, skip_bad: bool):
    self.requested = languages
    self.skip_bad = skip_bad
    self.stats = ReadStats()
    # Requested languages first, then the file's; every one passes `_check_lang`.
    self.languages: dict[str, None] = dict.fromkeys(languages or ())
    self.entities: dict[str, ItemRecord] = {}
    self.relations: dict[str, ItemRecord] = {}
    self.listed: set[str] = set()
    self.duplicate_entity_lines = 0

  def read(self, path: Path, fields: tuple[str, ...], handle) -> None:
    """Streams one file, calling `handle(values)` for each good line."""
    if not path.is_file():
      raise KGInputError(f"{path}: file not found" if not path.exists() else f"{path}: not a file")
    try:
      with open(path, encoding="utf-8-sig") as f:
        for lineno, line in enumerate(f, 1):
          line = line.rstrip("\r\n")
          if not line.strip():
            continue
          self.stats.records_read += 1
          try:
            handle(self._split(line, fields))
          except BadRecord as e:
            self.stats.bad(self.skip_bad, path, lineno, e.reason, e.field, e.message, "lines")
            continue
          self.stats.records_kept += 1
    except UnicodeDecodeError as e:
      raise KGInputError(f"{path}: not UTF-8 text ({e})") from None

  def _split(self, line: str, fields: tuple[str, ...]) -> list[str]:
    values = [v.strip() for v in line.split("\t")]
    if len(values) != len(fields):
      raise BadRecord("wrong_field_count", None, f"expected {len(fields)} tab-separated fields "
                      f"({', '.join(fields)}), got {len(values)}")
    for name, value in zip(fields, values):
      if not value:
        raise BadRecord("empty_field", name, "empty value")
    self._check_lang(values[-1])
    cleaned = [clean_name(value, name) for name, value in zip(fields[:-1], values)]
    self.stats.names_cleaned += sum(changed for _, changed in cleaned)
    return [value for value, _ in cleaned] + values[-1:]

  def _check_lang(self, lang: str) -> None:
    if lang in self.languages:
      return
    if not _LANG.fullmatch(lang):
      raise BadRecord("bad_language", "lang", f"{lang!r} is not a language code")
    if self.requested is not None and lang not in self.requested:
      raise BadRecord("unknown_language", "lang",
                      f"language {lang!r} is not one of the requested {list(self.requested)}")
    self.languages[lang] = None

  def _node(self, table: dict, name: str, lang: str) -> ItemRecord:
    key = node_id(name, lang)
    if key not in table:
      table[key] = ItemRecord(key, {lang: name}, {})
    return table[key]

  def entity_line(self, values: list[str]) -> None:
    name, lang = values
    key = node_id(name, lang)
    if key in self.listed:
      self.duplicate_entity_lines += 1
    self.listed.add(key)
    self._node(self.entities, name, lang)

  def triple_line(self, values: list[str]) -> None:
    head, relation, tail, lang = values
    rec = self._node(self.entities, head, lang)
    self._node(self.entities, tail, lang)
    self._node(self.relations, relation, lang)
    rec.claims.append((node_id(relation, lang), node_id(tail, lang)))


def read_triples_tsv(path: Path | str, *, entities_path: Path | str | None = None,
                     languages: Sequence[str] | None = None,
                     skip_bad_records: bool = False) -> tuple[KnowledgeGraph, ReadStats, dict]:
  """Reads Prix-LM triples (and optionally its entity list) into a graph.

  `languages` (validated Wikidata codes) restricts and orders the graph's
  languages; without it they are the file's, in order of first appearance.
  Returns (graph, stats, info).
  """
  requested = None if languages is None else check_languages(languages)
  reader = _TsvReader(requested, skip_bad_records)
  if entities_path is not None:
    reader.read(Path(entities_path), ENTITY_FIELDS, reader.entity_line)
  reader.read(Path(path), TRIPLE_FIELDS, reader.triple_line)
  stats = reader.stats
  stats.check()
  if not reader.entities:
    raise KGInputError(f"{path}: no triples or entities read (skipped: {dict(stats.skipped)})")
  graph, counts = build_graph(reader.entities.values(), reader.relations.values(),
                              tuple(reader.languages))
  info = {"path": str(path), "entities_path": None if entities_path is None else str(entities_path),
          "languages": list(graph.languages), "entities": graph.num_entities,
          "relations": graph.num_relations, "triples": graph.num_triples, **counts,
          "duplicate_entity_lines": reader.duplicate_entity_lines}
  if entities_path is not None:
    info["entities_not_in_entity_list"] = len(reader.entities) - len(reader.listed)
  return graph, stats, info


# ----------------------------------------------------------------- writing

def _writable(name: str, what: str) -> str:
  if "\t" in name or "\n" in name or "\r" in name:
    raise ValueError(f"{what} label {name!r} holds a tab or line break; "
                     "it cannot be written as TSV")
  return name


def _check_lang(graph: KnowledgeGraph, lang: str) -> None:
  if lang not in graph.languages:
    raise KGInputError(f"language {lang!r} is not in the graph (it has {list(graph.languages)})")


def write_triples_tsv(graph: KnowledgeGraph, path: Path | str, lang: str) -> int:
  """Writes `head<TAB>relation<TAB>tail<TAB>lang` lines with the labels in
  `lang`, in triple order, skipping triples with an unlabelled item there and
  writing each distinct line once. Returns the number of lines written.
  """
  _check_lang(graph, lang)
  entity = graph.entity_names[lang].labels
  relation = graph.relation_names[lang].labels
  seen = set()
  with open(path, "w", encoding="utf-8", newline="\n") as f:
    for h, r, t in graph.triples.tolist():
      names = (entity[h], relation[r], entity[t])
      if not all(names) or names in seen:
        continue
      seen.add(names)
      f.write("\t".join(_writable(n, "item") for n in names) + f"\t{lang}\n")
  return len(seen)


def write_entities_tsv(graph: KnowledgeGraph, path: Path | str, lang: str) -> int:
  """Writes the `name<TAB>lang` entity list (entities labelled in `lang`, in
  graph order, each name once). Returns the number of lines written."""
  _check_lang(graph, lang)
  seen = {}
  for name in graph.entity_names[lang].labels:
    if name:
      seen.setdefault(_writable(name, "entity"))
  with open(path, "w", encoding="utf-8", newline="\n") as f:
    f.writelines(f"{name}\t{lang}\n" for name in seen)
  return len(seen)
