"""RELX relation classification (Köksal and Özgür 2020; KBP-37 style sentences).

Two layouts are accepted, told apart per record by the number of
tab-separated fields on its first line (an assumption: RELX copies circulate
in both; the released files follow KBP-37):

- TSV, one example per line: `ID<TAB>SENTENCE<TAB>RELATION`
  (an optional first line `id<TAB>sentence<TAB>relation` is a header);
- KBP-37 / SemEval-2010 blocks: `ID<TAB>"SENTENCE"`, then the relation on
  the next line, an optional `Comment:` line, then a blank line.

The sentence marks its two entities `<e1>...</e1>` and `<e2>...</e2>`
(either order, not nested, each exactly once), often with spaces inside
the markers (`<e1> Thom Yorke </e1>`). Relations are labels such as
`org:founded_by(e2,e1)` or `no_relation`, kept as written.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Iterable

from kmlm_jax.evaluation.readers.errors import error, read_lines

_MARKER = re.compile(r"(</?e[12]>)")
_DIRECTION = re.compile(r"(.+)\((e[12]),(e[12])\)")


@dataclasses.dataclass(frozen=True)
class RelxExample:
  """Marker-free `text` with the entities' [start, end) character spans."""

  id: str
  text: str
  e1: tuple[int, int]
  e2: tuple[int, int]
  relation: str
  lang: str | None = None

  @property
  def e1_text(self) -> str:
    return self.text[self.e1[0]:self.e1[1]]

  @property
  def e2_text(self) -> str:
    return self.text[self.e2[0]:self.e2[1]]

  @property
  def base_relation(self) -> str:
    """`org:founded_by` of `org:founded_by(e2,e1)`."""
    m = _DIRECTION.fullmatch(self.relation)
    return m.group(1) if m else self.relation


def parse_markers(sentence: str, normalize_space: bool = True) -> tuple[str, dict]:
  """(text without markers, {"e1": (start, end), "e2": (start, end)}).

  Raises ValueError for an unclosed, unopened, repeated or nested marker,
  or a missing or empty entity. Spans exclude spaces inside the markers;
  `normalize_space` also collapses whitespace runs and strips the text.
  """
  text = ""
  spans: dict[str, list[int]] = {}
  open_entity = None
  for piece in _MARKER.split(sentence):
    if not _MARKER.fullmatch(piece):
      if normalize_space:
        piece = re.sub(r"\s+", " ", piece)
        if piece.startswith(" ") and text[-1:] in ("", " "):
          piece = piece[1:]
      text += piece
      continue
    name = piece.strip("</>")
    if piece.startswith("</"):
      if open_entity != name:
        raise ValueError(f"{piece} without a matching <{name}>")
      spans[name].append(len(text))
      open_entity = None
    else:
      if name in spans:
        raise ValueError(f"<{name}> appears twice")
      if open_entity is not None:
        raise ValueError(f"<{name}> inside <{open_entity}> (nested entities)")
      spans[name] = [len(text)]
      open_entity = name
  if open_entity is not None:
    raise ValueError(f"unclosed <{open_entity}> (no </{open_entity}>)")
  if normalize_space:
    text = text.rstrip()
  result = {}
  for name in ("e1", "e2"):
    if name not in spans:
      raise ValueError(f"no <{name}>...</{name}> entity")
    start, end = spans[name][0], min(spans[name][1], len(text))
    while start < end and text[start].isspace():
      start += 1
    while end > start and text[end - 1].isspace():
      end -= 1
    if start == end:
      raise ValueError(f"empty <{name}> entity")
    result[name] = (start, end)
  return text, result


def read_relx(path: Path | str, *, lang: str | None = None,
              relations: Iterable[str] | None = None,
              normalize_space: bool = True) -> list[RelxExample]:
  """Examples of one RELX file in file order; `relations` rejects other labels."""
  path = Path(path)
  allowed = None if relations is None else set(relations)
  rows = list(read_lines(path))
  out = []
  i = 0
  while i < len(rows):
    number, text = rows[i]
    i += 1
    if not text.strip():
      continue
    cols = text.split("\t")
    if len(cols) == 3:
      if number == 1 and [c.strip().lower() for c in cols] == ["id", "sentence", "relation"]:
        continue
      ident, sentence, relation = cols
      rel_line = number
    elif len(cols) == 2:
      ident, sentence = cols
      if i >= len(rows) or not rows[i][1].strip():
        raise error(path, number, "KBP-37 block without a relation line after the sentence")
      rel_line, relation = rows[i]
      i += 1
      if i < len(rows) and rows[i][1].startswith("Comment"):
        i += 1
    else:
      raise error(path, number, f"expected 3 tab-separated columns (id, sentence, relation) "
                  f"or 2 (id, sentence) followed by a relation line, got {len(cols)}")
    relation = relation.strip()
    if not relation or "\t" in relation:
      raise error(path, rel_line, f"bad relation label {relation!r}", "relation")
    if allowed is not None and relation not in allowed:
      raise error(path, rel_line, f"unknown relation {relation!r}", "relation")
    sentence = sentence.strip()
    if len(sentence) >= 2 and sentence[0] == sentence[-1] == '"':
      sentence = sentence[1:-1]
    try:
      clean, spans = parse_markers(sentence, normalize_space)
    except ValueError as e:
      raise error(path, number, str(e), "sentence") from None
    out.append(RelxExample(ident.strip(), clean, spans["e1"], spans["e2"], relation, lang))
  return out
