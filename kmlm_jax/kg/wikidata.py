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
  for them by name if you want them). Runs of tabs and line breaks in a
  label or alias become one space (`graph.clean_name`; counted in
  `ReadStats.names_cleaned`); aliases then equal to the label or repeated are
  dropped.
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
  (`malformed_json`, JSON nested too deeply included, `missing_id`,
  `malformed_field`, `duplicate_id`, `line_too_long`: a line over
  `MAX_LINE_BYTES`, `name_too_long`: a label or alias over
  `graph.MAX_NAME_CHARS`) raise `KGInputError` naming FILE:LINE (and field),
  or with `skip_bad_records=True` become counted skips. The two limits bound
  the memory one line can take, in the parse and in the graph's name tables.
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

Reading is split in two: `LineParser` parses one line with no state (so
lines can be parsed in parallel: `beam_pipeline.read_wikidata_dump_beam`),
and `DumpAssembler` files the results in dump order, deciding what depends
on earlier lines (duplicates, `max_entities`) and building the graph.

Always errors: a missing or empty file, a truncated or corrupt `.gz`/`.bz2`
(named with the last good line), an array dump without its closing `]`, a
dump that yields no entity, an unknown language code, a bad whitelist file.
"""

from __future__ import annotations

import bz2
import contextlib
import dataclasses
import functools
import gc
import gzip
import json
import os
import re
import zlib
from pathlib import Path
from typing import Iterable, Sequence

from kmlm_jax.kg.errors import BadRecord, KGInputError, ReadStats, where
from kmlm_jax.kg.graph import ItemRecord, KnowledgeGraph, build_graph, clean_name

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
_PREFIX_LEN = len(_ITEM_PREFIX)
_MAGIC = {"gzip": b"\x1f\x8b", "bz2": b"BZh"}
_PROGRESS_EVERY = 4096
_BOM = b"\xef\xbb\xbf"
# The longest dump line read; longer lines are `line_too_long` bad records. Wikidata's
# largest entities take a few MB of JSON.
MAX_LINE_BYTES = 16 << 20


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
  pattern, example = {"entity": (_ENTITY_ID, "Q42"), "relation": (_RELATION_ID, "P31")}[kind]
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

def _bad_tuple(e: BadRecord) -> tuple:
  return ("bad", e.reason, e.field, e.message)


def _names(obj: dict, languages: tuple[str, ...]) -> tuple[dict, dict, int]:
  """Labels and aliases in `languages` (empty `[]` tables are PHP's `{}`), cleaned
  by `clean_name`, and how many of them cleaning changed."""
  labels_in, aliases_in = obj.get("labels") or {}, obj.get("aliases") or {}
  for field, table in (("labels", labels_in), ("aliases", aliases_in)):
    if not isinstance(table, dict):
      raise BadRecord("malformed_field", field, f"expected an object, got {type(table).__name__}")
  labels, aliases, cleaned = {}, {}, 0
  for lang in languages:
    try:
      entry = labels_in.get(lang)
      label = entry["value"] if entry is not None else ""
      if type(label) is not str:
        raise TypeError(f"label is a {type(label).__name__}, not a string")
      label, changed = clean_name(label, f"labels.{lang}")
      cleaned += changed
      if label:
        labels[lang] = label
      kept = {}
      for entry in aliases_in.get(lang) or ():
        alias = entry["value"]
        if type(alias) is not str:
          raise TypeError(f"alias is a {type(alias).__name__}, not a string")
        alias, changed = clean_name(alias, f"aliases.{lang}")
        cleaned += changed
        if alias and alias != label:
          kept.setdefault(alias)
      if kept:
        aliases[lang] = list(kept)
    except (KeyError, TypeError) as e:
      raise BadRecord("malformed_field", f"labels/aliases.{lang}",
                      f"expected {{'value': ...}} entries ({type(e).__name__}: {e})") from None
  return labels, aliases, cleaned


def _item_claims(claims, relation_whitelist, counts: dict) -> list[tuple[str, str]]:
  """(property, target QID) for each usable item-valued statement."""
  if not claims:
    return []
  if not isinstance(claims, dict):
    raise BadRecord("malformed_field", "claims",
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
      raise BadRecord("malformed_field", f"claims.{pid}",
                      f"malformed statement ({type(e).__name__}: {e})") from None
  counts["item"] += len(out)
  return out


# ----------------------------------------------------------------- one line

CLAIM_KINDS = ("item", "non_item", "somevalue_novalue", "deprecated", "not_in_relation_whitelist")


@dataclasses.dataclass(frozen=True)
class LineParser:
  """Parses one dump line on its own, with no state (see the module doc).

  Results are plain tuples, cheap to pickle:

    None                          a blank line
    ("open",) / ("close",)        the array's `[` / `]`
    ("skip", reason)              a counted skip
    ("bad", reason, field, msg)   a bad record
    ("item" | "property", id, outcome, claim_counts, names_cleaned)

  `outcome` is an `ItemRecord`, a ("skip", ...) or a ("bad", ...), used
  only when the id is not a duplicate. `claim_counts` (per `CLAIM_KINDS`,
  or None for properties and when the claims were not reached) counts the
  item's statements, up to a malformed one. `names_cleaned` counts the
  labels and aliases `clean_name` changed.
  """

  languages: tuple[str, ...]
  entity_whitelist: frozenset[str] | None = None
  relation_whitelist: frozenset[str] | None = None
  max_line_bytes: int = MAX_LINE_BYTES

  def __call__(self, line: bytes):
    if len(line) > self.max_line_bytes:
      return ("bad", "line_too_long", None, f"line of {len(line):,} bytes, over the maximum "
              f"{self.max_line_bytes:,} (kmlm_jax.kg.wikidata.MAX_LINE_BYTES)")
    line = line.strip().removeprefix(_BOM)
    if not line:
      return None
    if line[-1] == 44:  # b","
      line = line[:-1]
    if line == b"[":
      return ("open",)
    if line == b"]":
      return ("close",)
    if self.entity_whitelist is not None and line.startswith(_ITEM_PREFIX):
      qid = line[_PREFIX_LEN:line.find(b'"', _PREFIX_LEN)].decode()
      if qid not in self.entity_whitelist:
        return ("skip", "not_in_whitelist")
    try:
      obj = json.loads(line)
    except ValueError as e:
      return ("bad", "malformed_json", None, f"malformed JSON ({e})")
    except RecursionError:
      return ("bad", "malformed_json", None, "malformed JSON (nested too deeply to parse)")
    try:
      return self._record(obj)
    except BadRecord as e:
      return _bad_tuple(e)

  def _record(self, obj):
    if not isinstance(obj, dict):
      raise BadRecord("missing_id", None, f"record is a JSON {type(obj).__name__}, not an object")
    rid = obj.get("id")
    if not isinstance(rid, str) or not rid:
      raise BadRecord("missing_id", "id", "record has no 'id'")
    kind = obj.get("type") or {"Q": "item", "P": "property"}.get(rid[0])
    if kind not in ("item", "property"):
      return ("skip", "other_entity_type")
    item = kind == "item"
    prefix, whitelist = ("Q", self.entity_whitelist) if item else ("P", self.relation_whitelist)
    if rid[0] != prefix:
      raise BadRecord("malformed_field", "id", f"{kind} id {rid!r} does not start with {prefix!r}")
    if whitelist is not None and rid not in whitelist:
      return ("skip", "not_in_whitelist")
    try:
      labels, aliases, cleaned = _names(obj, self.languages)
    except BadRecord as e:
      return (kind, rid, _bad_tuple(e), None, 0)
    if not item:
      return (kind, rid, ItemRecord(rid, labels, aliases), None, cleaned)
    if not labels:
      return (kind, rid, ("skip", "no_label"), None, cleaned)
    counts = dict.fromkeys(CLAIM_KINDS, 0)
    try:
      claims = _item_claims(obj.get("claims"), self.relation_whitelist, counts)
    except BadRecord as e:
      return (kind, rid, _bad_tuple(e), tuple(counts.values()), cleaned)
    return (kind, rid, ItemRecord(rid, labels, aliases, claims), tuple(counts.values()), cleaned)


# ----------------------------------------------------------------- files

_open_binary = functools.partial(open, mode="rb")


def dump_compression(path: Path | str, open_file=_open_binary) -> str | None:
  """"gzip", "bz2" or None, by suffix, checked against the file's first bytes.

  `open_file(path)` opens the file for binary reading (a URL opener for
  remote dumps).
  """
  suffix = os.path.splitext(str(path))[1].lower()
  kind = {".gz": "gzip", ".bz2": "bz2"}.get(suffix)
  with open_file(path) as f:
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


def open_dump(path: Path | str, kind: str | None, open_file=_open_binary):
  """(raw file for byte progress, line stream)."""
  raw = open_file(path)
  if kind == "gzip":
    return raw, gzip.GzipFile(fileobj=raw, mode="rb")
  if kind == "bz2":
    return raw, bz2.BZ2File(raw, mode="rb")
  return raw, raw


# Exceptions a read of a (compressed) dump raises on a truncated or corrupt file.
READ_ERRORS = (EOFError, OSError, zlib.error)


def read_error(path: Path, compression: str | None, lineno: int, error: str) -> KGInputError:
  """The error for a read that failed after `lineno` full lines; `error` is
  "ExceptionType: message"."""
  what = "compressed stream is truncated or corrupt" if compression else "read failed"
  return KGInputError(f"{path}: {what} after line {lineno} (the last line read in full); {error}")


# ----------------------------------------------------------------- reader

def prepare_read(path: Path | str, languages: Sequence[str], *,
                 entity_whitelist: Path | str | None = None,
                 relation_whitelist: Path | str | None = None,
                 max_entities: int | None = None,
                 extra_language_codes: Iterable[str] = (),
                 local: bool = True) -> tuple[Path | str, LineParser]:
  """Checks the arguments of a dump read; returns (path, the line parser).

  `local=False` leaves `path` (a URL such as gs://...) as given and
  unchecked: the caller reads it through its own file system layer.
  """
  path = Path(path) if local else path
  languages = check_languages(languages, extra_language_codes)
  entities = None if entity_whitelist is None else read_id_list(entity_whitelist, "entity")
  relations = None if relation_whitelist is None else read_id_list(relation_whitelist, "relation")
  if max_entities is not None and max_entities < 1:
    raise KGInputError(f"max_entities must be >= 1, got {max_entities}")
  if local and not path.is_file():
    raise KGInputError(f"{path}: Wikidata dump not found" if not path.exists()
                       else f"{path}: not a regular file")
  return path, LineParser(languages, entities, relations, MAX_LINE_BYTES)


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
  path, parse = prepare_read(path, languages, entity_whitelist=entity_whitelist,
                             relation_whitelist=relation_whitelist, max_entities=max_entities,
                             extra_language_codes=extra_language_codes)
  assembler = DumpAssembler(path, parse.languages, skip_bad_records, max_entities)
  with gc_paused():
    _read_lines(path, parse, assembler, progress)
    return assembler.finish()


def _read_lines(path: Path, parse: LineParser, assembler: "DumpAssembler", progress: bool) -> None:
  """The sequential hot loop: parse each line, file it, stop when told."""
  assembler.compression = compression = dump_compression(path)
  raw, stream = open_dump(path, compression)
  bar = None
  if progress:
    from tqdm.auto import tqdm
    bar = tqdm(total=path.stat().st_size, unit="B", unit_scale=True, desc=f"reading {path.name}")
  add = assembler.add
  lineno = 0
  try:
    for line in stream:
      lineno += 1
      if bar is not None and not lineno % _PROGRESS_EVERY:
        bar.update(raw.tell() - bar.n)
      if add(lineno, parse(line)):
        break
  except READ_ERRORS as e:
    raise read_error(path, compression, lineno, f"{type(e).__name__}: {e}") from None
  finally:
    if bar is not None:
      bar.update(raw.tell() - bar.n)
      bar.close()
    stream.close()
    raw.close()
  assembler.lines = lineno


@contextlib.contextmanager
def gc_paused():
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


class DumpAssembler:
  """Files `LineParser` results in dump order; `finish` builds the graph.

  Decides what needs the lines before: duplicate ids, `max_entities`, the
  bracket check; raises or counts bad records (FILE:LINE in messages).
  Set `compression` and `lines` (lines read) before `finish`.
  """

  def __init__(self, path: Path, languages: tuple[str, ...], skip_bad: bool,
               max_entities: int | None):
    self.path, self.languages = path, languages
    self.skip_bad, self.max_entities = skip_bad, max_entities
    self.stats = ReadStats()
    self.entities: dict[str, ItemRecord] = {}
    self.properties: dict[str, tuple[ItemRecord, int]] = {}
    self.claim_counts = dict.fromkeys(CLAIM_KINDS, 0)
    self.lines = 0
    self.opened = self.closed = self.stopped_early = False
    self.compression = None

  def add(self, lineno: int, parsed) -> bool:
    """Files the parse of line `lineno`; True when reading should stop
    (`max_entities` reached)."""
    if parsed is None:
      return False
    tag = parsed[0]
    if tag == "open":
      self.opened = True
    elif tag == "close":
      self.closed = True
    else:
      self.stats.records_read += 1
      if tag in ("item", "property"):
        self.stats.names_cleaned += parsed[4]
      if tag == "item":
        return self._item(parsed, lineno)
      if tag == "property":
        self._property(parsed, lineno)
      else:
        self._drop(parsed, lineno)
    return False

  def _drop(self, outcome: tuple, lineno: int) -> None:
    """Counts a ("skip", reason); raises or counts a ("bad", reason, field, message)."""
    if outcome[0] == "skip":
      self.stats.skip(outcome[1], f"{self.path}:{lineno}")
    else:
      self.stats.bad(self.skip_bad, self.path, lineno, *outcome[1:])

  def _item(self, parsed: tuple, lineno: int) -> bool:
    _, qid, outcome, claim_counts, _ = parsed
    if qid in self.entities:
      self._drop(("bad", "duplicate_id", "id", f"entity {qid} appears a second time"), lineno)
      return False
    if claim_counts is not None:
      for kind, n in zip(CLAIM_KINDS, claim_counts):
        self.claim_counts[kind] += n
    if isinstance(outcome, ItemRecord):
      self.entities[qid] = outcome
      self.stats.records_kept += 1
      if self.max_entities is not None and len(self.entities) >= self.max_entities:
        self.stopped_early = True
        return True
    else:
      self._drop(outcome, lineno)
    return False

  def _property(self, parsed: tuple, lineno: int) -> None:
    _, pid, outcome, _, _ = parsed
    if pid in self.properties:
      self._drop(("bad", "duplicate_id", "id", f"property {pid} appears a second time"), lineno)
    elif isinstance(outcome, ItemRecord):
      # Kept or skipped as `unused_property` in `finish`, once the triples are known.
      self.properties[pid] = (outcome, lineno)
    else:
      self._drop(outcome, lineno)

  # -- after the last line

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
    # Properties of claims whose tail is a kept entity, in first-use order.
    used = {pid: None for rec in self.entities.values() for pid, target in rec.claims
            if target in self.entities}
    without_record = [pid for pid in used if pid not in self.properties]
    relation_records = [self.properties[pid][0] if pid in self.properties
                        else ItemRecord(pid, {}, {}) for pid in used]
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
