"""Reader of T-REx sentence/triple alignments (Elsahar et al. 2018).

A T-REx file holds documents, either as one JSON array (the released
`re-nlg_*.json` files) or one document per line (JSON lines); `.gz` and
`.bz2` are decompressed by suffix. A document:

  {"docid", "title", "uri", "text",
   "sentences_boundaries": [[start, end], ...],      character offsets in text
   "entities": [...],
   "triples": [{"subject":   {"uri", "boundaries": [start, end] | null, "surfaceform", "annotator"},
                "predicate": {... same ...},
                "object":    {... same ...},
                "sentence_id", "dependency_path", "confidence", "annotator"}, ...]}

Each triple whose subject and object both have boundaries becomes one
`TrexAlignment`: its sentence and the two mentions as character spans of
that sentence. Triples without boundaries (T-REx's "NoSubject" aligner
leaves the subject implicit) are skipped and counted. Malformed documents
raise `KGInputError` naming the file, line (JSON lines) or document index
(JSON array) and field, or are skipped and counted with `skip_bad=True`.
"""

from __future__ import annotations

import bz2
import collections
import dataclasses
import gzip
import itertools
import json
from pathlib import Path
from typing import Iterator

from kmlm_jax.kg.errors import KGInputError, ReadStats, where


@dataclasses.dataclass(frozen=True)
class TrexAlignment:
  """One triple aligned with one sentence; spans are [start, end) character offsets
  of `sentence`. Ids are Wikidata ids from the URIs ("" when the URI has none)."""

  sentence: str
  subject_span: tuple[int, int]
  object_span: tuple[int, int]
  subject_id: str
  predicate_id: str
  object_id: str

  @property
  def subject(self) -> str:
    return self.sentence[self.subject_span[0]:self.subject_span[1]]

  @property
  def object(self) -> str:
    return self.sentence[self.object_span[0]:self.object_span[1]]


def _documents(path: Path) -> Iterator[tuple[str, object]]:
  """(location, parsed document or the JSON error) pairs."""
  opener = {".gz": gzip.open, ".bz2": bz2.open}.get(path.suffix, open)
  with opener(path, "rt", encoding="utf-8") as f:
    head = f.read(1)
    while head and head.isspace():
      head = f.read(1)
    if not head:
      raise KGInputError(f"{path}: empty file (expected T-REx documents)")
    if head == "[":
      try:
        docs = json.loads(head + f.read())
      except json.JSONDecodeError as e:
        raise KGInputError(f"{path}: invalid JSON array ({e})") from None
      for i, doc in enumerate(docs):
        yield f"{path}: document {i}", doc
      return
    for number, line in enumerate(itertools.chain([head + f.readline()], f), 1):
      if line.strip():
        try:
          yield where(path, number), json.loads(line)
        except json.JSONDecodeError as e:
          yield where(path, number), e


def _wikidata_id(uri) -> str:
  return uri.rstrip("/").rsplit("/", 1)[-1] if isinstance(uri, str) and uri else ""


def _span(part: dict, field: str, loc: str) -> tuple[int, int] | None:
  bounds = part.get("boundaries")
  if bounds is None:
    return None
  if (not isinstance(bounds, (list, tuple)) or len(bounds) != 2
      or not all(isinstance(b, int) for b in bounds) or bounds[0] > bounds[1]):
    raise KGInputError(f"{loc}: field {field + '.boundaries'!r}: expected [start, end], "
                       f"got {bounds!r}")
  return int(bounds[0]), int(bounds[1])


def _sentence_bounds(doc: dict, triple: dict, span: tuple[int, int], loc: str, t: int):
  sentences = doc.get("sentences_boundaries") or [[0, len(doc["text"])]]
  sid = triple.get("sentence_id")
  if sid is None:
    for b, e in sentences:
      if b <= span[0] and span[1] <= e:
        return b, e
    return 0, len(doc["text"])
  if not isinstance(sid, int) or not 0 <= sid < len(sentences):
    raise KGInputError(f"{loc}: field 'triples[{t}].sentence_id': {sid!r} is not an index of "
                       f"the {len(sentences)} sentences_boundaries")
  return tuple(sentences[sid])


def _alignments(doc, loc: str, skipped: collections.Counter) -> list[TrexAlignment]:
  if not isinstance(doc, dict):
    raise KGInputError(f"{loc}: expected a JSON object (a T-REx document)")
  for field, kind in (("text", str), ("triples", list)):
    if not isinstance(doc.get(field), kind):
      raise KGInputError(f"{loc}: field {field!r}: missing or not a {kind.__name__}")
  text, out = doc["text"], []
  for t, triple in enumerate(doc["triples"]):
    parts = {role: triple.get(role) if isinstance(triple, dict) else None
             for role in ("subject", "predicate", "object")}
    for role, part in parts.items():
      if not isinstance(part, dict):
        raise KGInputError(f"{loc}: field 'triples[{t}].{role}': missing or not an object")
    subj = _span(parts["subject"], f"triples[{t}].subject", loc)
    obj = _span(parts["object"], f"triples[{t}].object", loc)
    if subj is None or obj is None:
      skipped["triple_without_boundaries"] += 1
      continue
    lo, hi = _sentence_bounds(doc, triple, obj, loc, t)
    if not (0 <= lo <= hi <= len(text)):
      raise KGInputError(f"{loc}: field 'sentences_boundaries': [{lo}, {hi}] lies outside the "
                         f"text of {len(text)} characters")
    for role, (b, e) in (("subject", subj), ("object", obj)):
      if not (lo <= b and e <= hi):
        raise KGInputError(f"{loc}: field 'triples[{t}].{role}.boundaries': [{b}, {e}] is not "
                           f"inside its sentence [{lo}, {hi}]")
    ids = (_wikidata_id(part.get("uri")) for part in parts.values())  # subject, predicate, object
    out.append(TrexAlignment(text[lo:hi], (subj[0] - lo, subj[1] - lo),
                             (obj[0] - lo, obj[1] - lo), *ids))
  return out


@dataclasses.dataclass
class TrexFile:
  """What `read_trex` found: the alignments, documents read / kept / skipped
  (`stats`), and triples left out inside kept documents (`skipped_triples`)."""

  alignments: list[TrexAlignment]
  stats: ReadStats
  skipped_triples: collections.Counter


def read_trex(path: Path | str, *, skip_bad: bool = False) -> TrexFile:
  """All alignments of one file, in document and triple order."""
  path = Path(path)
  if not path.is_file():
    raise KGInputError(f"{path}: no such T-REx file")
  stats, skipped, out = ReadStats(), collections.Counter(), []
  for loc, doc in _documents(path):
    stats.records_read += 1
    try:
      if isinstance(doc, json.JSONDecodeError):
        raise KGInputError(f"{loc}: invalid JSON ({doc})")
      local = collections.Counter()
      found = _alignments(doc, loc, local)
    except KGInputError as e:
      if not skip_bad:
        raise
      stats.skip("bad_document", str(e))
      continue
    stats.records_kept += 1
    skipped.update(local)
    out.extend(found)
  stats.check()
  return TrexFile(out, stats, skipped)
