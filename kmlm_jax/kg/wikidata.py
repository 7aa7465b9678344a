"""Streaming reader for the official Wikidata JSON dump.

Input is `latest-all.json[.gz|.bz2]`: one JSON array with one entity per
line (`[`, then `{...},` lines, the last entity without the comma, then
`]`). Plain JSON-lines files (no brackets) are read as well. The file is
streamed line by line (gzip/bz2 chosen by suffix), so memory grows with the
graph that is kept, never with the file.

What becomes the graph:
- items (`Q...`) become entities, in dump order; properties (`P...`) only
  supply relation labels and aliases.
- labels and aliases are kept for exactly the requested language codes;
  variants are not merged (`zh` does not pick up `zh-hans` or `zh-cn`; ask
  for them by name if you want them). Aliases equal to the label or repeated
  are dropped.
- a claim becomes a triple only when its main snak has `snaktype == "value"`
  and an item-valued `wikibase-entityid` datavalue, and its rank is not
  `deprecated` (normal and preferred statements are both kept). Qualifiers,
  references, sitelinks (and their badges), claims on properties, `somevalue`
  / `novalue` snaks and every non-item datatype (string, external-id,
  commonsMedia, time, quantity, globe-coordinate, monolingualtext,
  property-valued entity ids, ...) are ignored; `info["claims"]` counts them.
- relations are the properties used by at least one triple, in order of the
  first such triple. A relation with no property record in the dump gets
  empty labels and is listed in `info["relations_without_record"]`.

Records and `ReadStats` (records_read == kept + skipped always holds):
- a record is a line holding an entity or property. Bad records
  (`malformed_json`, `missing_id`, `malformed_field`, `duplicate_id`) raise
  `KGInputError` naming FILE:LINE (and field), or with
  `skip_bad_records=True` become counted skips.
- always counted skips, never errors, because they are normal in real dumps:
  `no_label` (an item with no label in any requested language),
  `not_in_whitelist` (entity or property outside a whitelist),
  `unused_property` (a property record no kept triple uses),
  `other_entity_type` (lexemes, mediainfo, ...).
- with an entity whitelist, item lines whose id is outside it are skipped
  from the first bytes of the line without a JSON parse (the real dump
  starts every item with `{"type":"item","id":"Q..."`); such lines are not
  checked for malformed JSON.
- duplicates are detected among kept entities and among properties; an id
  that was skipped once (e.g. `no_label`) may be kept at a later line.

Always errors: a missing or empty file, a truncated or corrupt `.gz`/`.bz2`
(named with the last good line), an array dump without its closing `]`, a
dump that yields no entity, an unknown language code, a bad whitelist file.
"""

from __future__ import annotations

import bz2
import contextlib
import functools
import gc
import gzip
import json
import re
import zlib
from pathlib import Path
from typing import Iterable, Sequence

from kmlm_jax.kg.errors import KGInputError, ReadStats, where
from kmlm_jax.kg.graph import ItemRecord, KnowledgeGraph, build_graph

# MediaWiki / Wikidata language codes that CLDR (babel) does not list.
WIKIDATA_EXTRA_LANGUAGE_CODES = frozenset("""
  aeb-arab aeb-latn als arq ary arz azb bat-smg bbc-latn bcc be-x-old bgn bh
  ban-bali cbk-zam cdo crh-cyrl crh-latn de-formal diq eml en-simple fiu-vro
  frc gan-hans gan-hant glk gom-deva gom-latn hif-latn hrx hu-formal ike-cans
  ike-latn jam kbd-cyrl kk-arab kk-cn kk-kz kk-latn kk-tr kiu krj ku-arab
  ku-latn lrc map-bms mhr mo mrj nds-nl nl-informal nrm olo pdc pfl pih pnb
  rmy roa-rup roa-tara ruq-cyrl ruq-latn sdc shy-latn simple skr skr-arab sr-ec
  sr-el sro szy tcy tg-cyrl tg-latn tt-cyrl tt-latn ug-arab ug-latn vls vro
  wuu-hans wuu-hant xmf yue-hans yue-hant zea zh-classical zh-cn zh-hk
  zh-min-nan zh-mo zh-my zh-sg zh-tw zh-yue
""".split())

_ENTITY_ID = re.compile(r"Q[1-9][0-9]*")
_RELATION_ID = re.compile(r"P[1-9][0-9]*")
_FALLBACK_CODE = re.compile(r"[a-z]{2,3}(-[a-z0-9]{1,8})*")
_ITEM_PREFIX = b'{"type":"item","id":"'
_MAGIC = {"gzip": b"\x1f\x8b", "bz2": b"BZh"}
_PROGRESS_EVERY = 4096


# ----------------------------------------------------------------- languages

@functools.cache
def wikidata_language_codes() -> frozenset[str]:
  """Codes Wikidata uses for labels: CLDR locales and languages (via babel,
  lowercased, `_` -> `-`) plus `WIKIDATA_EXTRA_LANGUAGE_CODES`.

  Returns an empty set when babel is missing; `check_languages` then falls
  back to a syntax check.
  """
  try:
    import babel
    from babel import localedata
  except ImportError:
    return frozenset()
  codes = set(localedata.locale_identifiers()) | set(babel.Locale("en").languages)
  return frozenset(c.lower().replace("_", "-") for c in codes) | WIKIDATA_EXTRA_LANGUAGE_CODES


def check_languages(languages: Sequence[str] | str,
                    extra_codes: Iterable[str] = ()) -> tuple[str, ...]:
  """Validates Wikidata language codes; returns them deduplicated, in order.

  Raises `KGInputError` listing every unknown code (with a hint when only
  the spelling is off, e.g. `EN` or `zh_Hans`).
  """
  if isinstance(languages, str):
    languages = [languages]
  languages = tuple(dict.fromkeys(languages))
  if not languages:
    raise KGInputError("no languages requested")
  known = wikidata_language_codes() | frozenset(extra_codes)
  bad = []
  for code in languages:
    if not isinstance(code, str):
      bad.append(repr(code))
    elif known and code not in known:
      hint = code.lower().replace("_", "-")
      bad.append(f"{code!r} (did you mean {hint!r}?)" if hint in known else repr(code))
    elif not known and not _FALLBACK_CODE.fullmatch(code):
      bad.append(repr(code))
  if bad:
    raise KGInputError(f"unknown Wikidata language code(s): {', '.join(bad)}; codes are "
                       "lowercase Wikidata/BCP 47 style, e.g. 'en', 'zh', 'zh-hans', 'pt-br'")
  return languages


# ----------------------------------------------------------------- whitelists

def read_id_list(path: Path | str, kind: str) -> frozenset[str]:
  """Reads a Wikidata5M-style whitelist: one id per line (`Q42` for kind
  "entity", `P31` for kind "relation"); the first tab-separated field is the
  id, so Wikidata5M alias files (`Q42<TAB>name<TAB>...`) work too. Blank
  lines and `#` comments are ignored.
  """
  pattern = {"entity": _ENTITY_ID, "relation": _RELATION_ID}[kind]
  example = "Q42" if kind == "entity" else "P31"
  path = Path(path)
  ids = set()
  try:
    with open(path, encoding="utf-8-sig") as f:
      for lineno, line in enumerate(f, 1):
        field = line.split("\t", 1)[0].strip()
        if not field or field.startswith("#"):
          continue
        if not pattern.fullmatch(field):
          raise KGInputError(f"{where(path, lineno)}: {field!r} is not a Wikidata {kind} id "
                             f"(expected one id like {example} per line)")
        ids.add(field)
  except FileNotFoundError:
    raise KGInputError(f"{path}: {kind} whitelist file not found") from None
  except UnicodeDecodeError as e:
    raise KGInputError(f"{path}: {kind} whitelist is not UTF-8 text ({e})") from None
  except OSError as e:
    raise KGInputError(f"{path}: cannot read {kind} whitelist ({e})") from None
  if not ids:
    raise KGInputError(f"{path}: {kind} whitelist file holds no ids")
  return frozenset(ids)


# ----------------------------------------------------------------- records

class _BadRecord(Exception):
  """A record the reader cannot use: reason for ReadStats, field, message."""

  def __init__(self, reason: str, field: str | None, message: str):
    super().__init__(message)
    self.reason, self.field, self.message = reason, field, message


def _names(obj: dict, languages: tuple[str, ...]) -> tuple[dict, dict]:
  """Labels and aliases in `languages` (empty `[]` tables are PHP's `{}`)."""
  labels_in, aliases_in = obj.get("labels") or {}, obj.get("aliases") or {}
  for field, table in (("labels", labels_in), ("aliases", aliases_in)):
    if not isinstance(table, dict):
      raise _BadRecord("malformed_field", field, f"expected an object, got {type(table).__name__}")
  labels, aliases = {}, {}
  for lang in languages:
    try:
      entry = labels_in.get(lang)
      label = entry["value"] if entry is not None else ""
      if type(label) is not str:
        raise TypeError(f"label is a {type(label).__name__}, not a string")
      if label:
        labels[lang] = label
      group = aliases_in.get(lang)
      if group:
        kept, seen = [], {label}
        for entry in group:
          alias = entry["value"]
          if type(alias) is not str:
            raise TypeError(f"alias is a {type(alias).__name__}, not a string")
          if alias and alias not in seen:
            seen.add(alias)
            kept.append(alias)
        if kept:
          aliases[lang] = kept
    except (KeyError, TypeError) as e:
      raise _BadRecord("malformed_field", f"labels/aliases.{lang}",
                       f"expected {{'value': ...}} entries ({type(e).__name__}: {e})") from None
  return labels, aliases


def _item_claims(claims, relation_whitelist, counts: dict) -> list[tuple[str, str]]:
  """(property, target QID) for each usable item-valued statement."""
  if not claims:
    return []
  if not isinstance(claims, dict):
    raise _BadRecord("malformed_field", "claims",
                     f"expected an object, got {type(claims).__name__}")
  out = []
  for pid, statements in claims.items():
    try:
      if relation_whitelist is not None and pid not in relation_whitelist:
        counts["not_in_relation_whitelist"] += len(statements)
        continue
      for st in statements:
        if st.get("rank") == "deprecated":
          counts["deprecated"] += 1
          continue
        snak = st["mainsnak"]
        if snak.get("snaktype") != "value":
          counts["somevalue_novalue"] += 1
          continue
        dv = snak["datavalue"]
        value = dv["value"]
        if dv.get("type") != "wikibase-entityid" or value.get("entity-type") != "item":
          counts["non_item"] += 1
          continue
        out.append((pid, value.get("id") or f"Q{value['numeric-id']}"))
    except (KeyError, TypeError, AttributeError) as e:
      raise _BadRecord("malformed_field", f"claims.{pid}",
                       f"malformed statement ({type(e).__name__}: {e})") from None
  counts["item"] += len(out)
  return out


# ----------------------------------------------------------------- files

def _compression(path: Path) -> str | None:
  """Compression by suffix, checked against the file's first bytes."""
  suffix = path.suffix.lower()
  kind = {".gz": "gzip", ".bz2": "bz2"}.get(suffix)
  with open(path, "rb") as f:
    head = f.read(4)
  if kind is not None:
    if head and not head.startswith(_MAGIC[kind]):
      raise KGInputError(f"{path}: name ends in {suffix} but the file is not {kind} data")
    return kind
  for other, magic in _MAGIC.items():
    if head.startswith(magic):
      raise KGInputError(f"{path}: file is {other} data; name it with the matching suffix "
                         "(.gz or .bz2) so it is decompressed")
  return None


def _open(path: Path, kind: str | None):
  """(raw file for byte progress, line stream)."""
  raw = open(path, "rb")
  if kind == "gzip":
    return raw, gzip.GzipFile(fileobj=raw, mode="rb")
  if kind == "bz2":
    return raw, bz2.BZ2File(raw, mode="rb")
  return raw, raw


# ----------------------------------------------------------------- reader

def read_wikidata_dump(
    path: Path | str,
    languages: Sequence[str],
    *,
    entity_whitelist: Path | str | None = None,
    relation_whitelist: Path | str | None = None,
    skip_bad_records: bool = False,
    progress: bool = False,
    max_entities: int | None = None,
    extra_language_codes: Iterable[str] = (),
) -> tuple[KnowledgeGraph, ReadStats, dict]:
  """Reads a Wikidata JSON dump into a `KnowledgeGraph` (see module doc).

  `entity_whitelist` / `relation_whitelist` are id-list files (see
  `read_id_list`). `max_entities` stops after that many kept entities
  (properties later in the file are then not seen). `extra_language_codes`
  admits codes outside the built-in list. Returns (graph, stats, info).
  """
  path = Path(path)
  languages = check_languages(languages, extra_language_codes)
  entities = None if entity_whitelist is None else read_id_list(entity_whitelist, "entity")
  relations = None if relation_whitelist is None else read_id_list(relation_whitelist, "relation")
  if max_entities is not None and max_entities < 1:
    raise KGInputError(f"max_entities must be >= 1, got {max_entities}")
  if not path.is_file():
    raise KGInputError(f"{path}: Wikidata dump not found" if not path.exists()
                       else f"{path}: not a regular file")
  reader = _DumpReader(path, languages, entities, relations, skip_bad_records, max_entities)
  with _gc_paused():
    reader.run(progress)
    return reader.finish()


@contextlib.contextmanager
def _gc_paused():
  """Pauses the cyclic GC: each JSON line allocates thousands of containers
  (freed by refcounting, no cycles), and the collections they trigger keep
  rescanning the growing graph; this takes ~25% off a full read."""
  enabled = gc.isenabled()
  gc.disable()
  try:
    yield
  finally:
    if enabled:
      gc.enable()


class _DumpReader:
  """One pass over a dump; `run` is the hot loop, `finish` builds the graph."""

  def __init__(self, path, languages, entity_whitelist, relation_whitelist, skip_bad, max_entities):
    self.path, self.languages = path, languages
    self.entity_whitelist, self.relation_whitelist = entity_whitelist, relation_whitelist
    self.skip_bad, self.max_entities = skip_bad, max_entities
    self.stats = ReadStats()
    self.entities: dict[str, ItemRecord] = {}
    self.properties: dict[str, tuple[ItemRecord, int]] = {}
    self.claim_counts = dict.fromkeys(
        ("item", "non_item", "somevalue_novalue", "deprecated", "not_in_relation_whitelist"), 0)
    self.lines = 0
    self.opened = self.closed = self.stopped_early = False
    self.compression = None

  # -- the loop

  def run(self, progress: bool) -> None:
    self.compression = _compression(self.path)
    raw, stream = _open(self.path, self.compression)
    bar = _progress_bar(self.path, raw) if progress else None
    loads, stats, path = json.loads, self.stats, self.path
    fast_skip = self.entity_whitelist
    prefix_len = len(_ITEM_PREFIX)
    lineno = 0
    try:
      for line in stream:
        lineno += 1
        if bar is not None and not lineno % _PROGRESS_EVERY:
          bar.update(raw.tell() - bar.n)
        line = line.strip()
        if not line:
          continue
        if line[-1] == 44:  # b","
          line = line[:-1]
        if line == b"[":
          self.opened = True
          continue
        if line == b"]":
          self.closed = True
          continue
        stats.records_read += 1
        if fast_skip is not None and line.startswith(_ITEM_PREFIX):
          qid = line[prefix_len:line.find(b'"', prefix_len)].decode()
          if qid not in fast_skip:
            stats.skip("not_in_whitelist", f"{path}:{lineno}")
            continue
        try:
          obj = loads(line)
        except ValueError as e:
          self._bad(_BadRecord("malformed_json", None, f"malformed JSON ({e})"), lineno)
          continue
        try:
          self._record(obj, lineno)
        except _BadRecord as e:
          self._bad(e, lineno)
        if self.max_entities is not None and len(self.entities) >= self.max_entities:
          self.stopped_early = True
          break
    except (EOFError, OSError, zlib.error) as e:
      what = "compressed stream is truncated or corrupt" if self.compression else "read failed"
      raise KGInputError(f"{path}: {what} after line {lineno} (the last line read in full); "
                         f"{type(e).__name__}: {e}") from None
    finally:
      if bar is not None:
        bar.update(raw.tell() - bar.n)
        bar.close()
      stream.close()
      raw.close()
    self.lines = lineno

  def _bad(self, error: _BadRecord, lineno: int) -> None:
    if not self.skip_bad:
      raise KGInputError(f"{where(self.path, lineno, error.field)}: {error.message} (pass "
                         "skip_bad_records=True / --skip-bad-records to count and skip "
                         "such records)")
    self.stats.skip(error.reason, f"{self.path}:{lineno}")

  def _record(self, obj, lineno: int) -> None:
    """Files one parsed record as an entity, a property, or a counted skip."""
    if not isinstance(obj, dict):
      raise _BadRecord("missing_id", None, f"record is a JSON {type(obj).__name__}, not an object")
    rid = obj.get("id")
    if not isinstance(rid, str) or not rid:
      raise _BadRecord("missing_id", "id", "record has no 'id'")
    kind = obj.get("type") or {"Q": "item", "P": "property"}.get(rid[0])
    if kind == "item":
      self._item(obj, rid, lineno)
    elif kind == "property":
      self._property(obj, rid, lineno)
    else:
      self.stats.skip("other_entity_type", f"{self.path}:{lineno}")

  def _item(self, obj: dict, qid: str, lineno: int) -> None:
    stats = self.stats
    if qid[0] != "Q":
      raise _BadRecord("malformed_field", "id", f"item id {qid!r} does not start with 'Q'")
    if self.entity_whitelist is not None and qid not in self.entity_whitelist:
      stats.skip("not_in_whitelist", f"{self.path}:{lineno}")
      return
    if qid in self.entities:
      raise _BadRecord("duplicate_id", "id", f"entity {qid} appears a second time")
    labels, aliases = _names(obj, self.languages)
    if not labels:
      stats.skip("no_label", f"{self.path}:{lineno}")
      return
    claims = _item_claims(obj.get("claims"), self.relation_whitelist, self.claim_counts)
    self.entities[qid] = ItemRecord(qid, labels, aliases, claims)
    stats.records_kept += 1

  def _property(self, obj: dict, pid: str, lineno: int) -> None:
    if pid[0] != "P":
      raise _BadRecord("malformed_field", "id", f"property id {pid!r} does not start with 'P'")
    if self.relation_whitelist is not None and pid not in self.relation_whitelist:
      self.stats.skip("not_in_whitelist", f"{self.path}:{lineno}")
      return
    if pid in self.properties:
      raise _BadRecord("duplicate_id", "id", f"property {pid} appears a second time")
    labels, aliases = _names(obj, self.languages)
    # Kept or skipped as `unused_property` in `finish`, once the triples are known.
    self.properties[pid] = (ItemRecord(pid, labels, aliases), lineno)

  # -- after the loop

  def finish(self) -> tuple[KnowledgeGraph, ReadStats, dict]:
    path, stats = self.path, self.stats
    if self.opened and not self.closed and not self.stopped_early:
      raise KGInputError(f"{path}: the JSON array has no closing ']' after line {self.lines}; "
                         "the dump is truncated")
    if stats.records_read == 0:
      raise KGInputError(f"{path}: the dump holds no entity records")
    if not self.entities:
      raise KGInputError(f"{path}: none of the {stats.records_read} records became an entity "
                         f"(skipped: {dict(stats.skipped)})")
    used = self._used_relations()
    relation_records, without_record = [], []
    for pid in used:
      found = self.properties.get(pid)
      relation_records.append(found[0] if found else ItemRecord(pid, {}, {}))
      if not found:
        without_record.append(pid)
    for pid, (_, lineno) in self.properties.items():
      if pid in used:
        stats.records_kept += 1
      else:
        stats.skip("unused_property", f"{path}:{lineno}")
    stats.check()
    graph, counts = build_graph(self.entities.values(), relation_records, self.languages)
    info = {
        "path": str(path), "compression": self.compression,
        "format": "json-array" if self.opened else "json-lines",
        "languages": list(self.languages), "lines": self.lines,
        "entities": graph.num_entities, "relations": graph.num_relations,
        "triples": graph.num_triples, **counts,
        "relations_without_record": without_record,
        "relations_without_label": [r.id for r in relation_records if not r.labels],
        "claims": dict(self.claim_counts), "stopped_early": self.stopped_early,
    }
    return graph, stats, info

  def _used_relations(self) -> dict[str, None]:
    """Properties of claims whose tail is a kept entity, in first-use order."""
    entities, used = self.entities, {}
    for rec in entities.values():
      for pid, target in rec.claims:
        if target in entities:
          used.setdefault(pid)
    return used


def _progress_bar(path: Path, raw):
  from tqdm.auto import tqdm
  return tqdm(total=path.stat().st_size, unit="B", unit_scale=True, desc=f"reading {path.name}")
