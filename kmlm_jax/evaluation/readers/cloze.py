"""Cloze probes (X-FACTR / mLAMA / the project's `eval/probes.jsonl`): shared records.

A template has one `[X]` (subject) and one `[Y]` (object) slot. Other
bracketed markers (X-FACTR's inflection annotations in some languages)
are kept verbatim for the downstream filler. Objects may be several
tokens long: `ClozeQuery.fill` takes whatever text (e.g. k masks) should
stand for the object.

Formats read here:
- templates, JSON lines: `{"relation": "P19", "template": "[X] was born in [Y] ."}`
  plus optional `label` (and other keys, ignored);
- templates, TSV: `relation<TAB>template` per line, extra columns ignored,
  an optional header line `relation<TAB>template`;
- facts, JSON lines: `sub_label`, `obj_label` required; `sub_uri`, `obj_uri`,
  `uuid` optional (`predicate_id` / `relation` may name the relation);
- project probes (`kmlm_jax.kg.build`): `lang, relation, template, subject,
  object, subject_id, object_id` plus optional `generic_template`, `triple`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable, Iterable, Sequence

from kmlm_jax.evaluation.readers.errors import error, fields, iter_json_records, read_lines


@dataclasses.dataclass(frozen=True)
class ClozeTemplate:
  relation: str
  template: str
  lang: str | None = None
  label: str | None = None


@dataclasses.dataclass(frozen=True)
class ClozeFact:
  relation: str
  subject: str
  object: str
  subject_id: str | None = None
  object_id: str | None = None
  uuid: str | None = None


@dataclasses.dataclass(frozen=True)
class ClozeQuery:
  """One fact rendered through one template in one language."""

  lang: str
  relation: str
  template: str
  subject: str
  object: str
  subject_id: str | None = None
  object_id: str | None = None
  uuid: str | None = None
  generic_template: bool = False
  triple: int | None = None

  def fill(self, obj: str) -> str:
    """The template with the subject in `[X]` and `obj` (e.g. k masks) in `[Y]`."""
    return self.template.replace("[X]", self.subject).replace("[Y]", obj)

  def to_dict(self) -> dict:
    """The project's probe record (the keys `kmlm_jax.evaluation.probing` reads)."""
    return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


def check_template(template: str, path, line: int, field: str = "template") -> str:
  for slot in ("[X]", "[Y]"):
    if template.count(slot) != 1:
      raise error(path, line, f"template {template!r} needs exactly one {slot}", field)
  return template


def read_templates(path: Path | str, lang: str | None = None) -> list[ClozeTemplate]:
  """Templates of one language from JSON lines (`.jsonl`/`.json`) or TSV (any other suffix)."""
  path = Path(path)
  out = []
  if path.suffix in (".jsonl", ".json"):
    for line, rec in iter_json_records(path):
      get = fields(rec, path, line)
      out.append(ClozeTemplate(get("relation"), check_template(get("template"), path, line),
                               get("lang", required=False) or lang, get("label", required=False)))
    return out
  for line, text in read_lines(path):
    if not text.strip():
      continue
    cols = text.split("\t")
    if len(cols) < 2:
      raise error(path, line, f"expected 2 tab-separated columns (relation, template), "
                  f"got {len(cols)}")
    relation, template = cols[0].strip(), cols[1].strip()
    if line == 1 and (relation.lower(), template.lower()) == ("relation", "template"):
      continue
    out.append(ClozeTemplate(relation, check_template(template, path, line), lang))
  return out


def read_facts(path: Path | str, relation: str | None = None) -> list[ClozeFact]:
  """Facts of one relation (JSON lines).

  The relation is `relation` when given, else the record's `predicate_id` or
  `relation` key, else the file's stem (`P19.jsonl`).
  """
  path = Path(path)
  out = []
  for line, rec in iter_json_records(path):
    get = fields(rec, path, line)
    rel = relation or (get("predicate_id", required=False) or get("relation", required=False)
                       or path.name.split(".")[0])
    uuid = rec.get("uuid")
    out.append(ClozeFact(rel, get("sub_label"), get("obj_label"), get("sub_uri", required=False),
                         get("obj_uri", required=False), None if uuid is None else str(uuid)))
  return out


def read_queries(templates: Sequence[ClozeTemplate], candidates: Callable[[str], Iterable[Path]],
                 lang: str) -> list[ClozeQuery]:
  """Each template's facts as queries, relations in template order, facts in file order.

  A relation's facts are the first existing file of `candidates(relation)`;
  relations without one are skipped.
  """
  out = []
  for t in templates:
    path = next((p for p in candidates(t.relation) if p.is_file()), None)
    if path is not None:
      out += [ClozeQuery(lang=lang, template=t.template, **dataclasses.asdict(f))
              for f in read_facts(path, t.relation)]
  return out


def read_probes(path: Path | str) -> list[ClozeQuery]:
  """The project's `eval/probes.jsonl`."""
  path = Path(path)
  out = []
  for line, rec in iter_json_records(path):
    get = fields(rec, path, line)
    generic = get("generic_template", "any", required=False, default=False)
    if not isinstance(generic, bool):
      raise error(path, line, f"expected true or false, got {generic!r}", "generic_template")
    out.append(ClozeQuery(
        get("lang"), get("relation"), check_template(get("template"), path, line), get("subject"),
        get("object"), get("subject_id"), get("object_id"), generic_template=generic,
        triple=get("triple", "int", required=False)))
  return out
