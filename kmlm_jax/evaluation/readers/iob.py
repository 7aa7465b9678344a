"""NER in CoNLL-style IOB columns: CoNLL-2002, CoNLL-2003, WikiAnn / PAN-X.

File format: one token per line, the NER tag in the last column, a blank
line between sentences, `-DOCSTART-` lines (document breaks) skipped.
Columns are tab-separated when the line has a tab, else separated by runs
of spaces. Every token line of a file must have as many columns as the
first one:
- CoNLL-2003: `token POS chunk NER` (German: 5 columns, with the lemma);
- CoNLL-2002: `token NER` (Spanish), `token POS NER` (Dutch);
- WikiAnn / PAN-X (XTREME's files): `en:Paris<TAB>B-LOC`; the `LANG:`
  prefix is stripped and kept as the sentence's `lang`.

Tags are `O`, `B-TYPE` or `I-TYPE`. Schemes:
- "iob2": every entity starts with B-; an I-TYPE must follow B-TYPE or
  I-TYPE (WikiAnn, CoNLL-2002, most modern copies of CoNLL-2003);
- "iob1": entities start with I-; B-TYPE only starts an entity right after
  another TYPE entity (the original CoNLL-2003 files);
- "loose": only the tag syntax is checked.
`to_iob2=True` rewrites the tags as IOB2 after checking (an I- that starts
an entity becomes B-).
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Iterable, Sequence

from kmlm_jax.errors import InputError
from kmlm_jax.evaluation.readers.errors import ReaderError, error, read_lines

SCHEMES = ("iob2", "iob1", "loose")
_TAG = re.compile(r"O|[BI]-\S+")
_PREFIX = re.compile(r"([a-z]{2,3}(?:[-_][a-zA-Z]+)?):(.+)")


@dataclasses.dataclass(frozen=True)
class TaggedSentence:
  """Tokens and their tags (same length); `line` is the first token's line."""

  tokens: tuple[str, ...]
  tags: tuple[str, ...]
  lang: str | None = None
  line: int | None = dataclasses.field(default=None, compare=False)


@dataclasses.dataclass(frozen=True)
class IOBDataset:
  """Sentences and the label set (`O` first, then B-/I- of each type, types sorted)."""

  sentences: tuple[TaggedSentence, ...]
  labels: tuple[str, ...]

  @property
  def entity_types(self) -> tuple[str, ...]:
    return tuple(sorted({t[2:] for t in self.labels if t != "O"}))


class TagError(InputError):
  """A tag sequence that breaks its scheme; `index` is the faulty tag's position."""

  def __init__(self, index: int, message: str):
    super().__init__(message)
    self.index = index


def check_tags(tags: Sequence[str], scheme: str = "iob2",
               entity_types: Iterable[str] | None = None) -> None:
  """Raises TagError (a ValueError with the tag's position) at the first tag breaking `scheme`."""
  if scheme not in SCHEMES:
    raise ReaderError(f"unknown scheme {scheme!r} (expected one of {SCHEMES})")
  allowed = None if entity_types is None else set(entity_types)
  prev = "O"
  for i, tag in enumerate(tags):
    if not _TAG.fullmatch(tag):
      raise TagError(i, f"unknown tag {tag!r} (expected O, B-TYPE or I-TYPE)")
    if allowed is not None and tag != "O" and tag[2:] not in allowed:
      raise TagError(i, f"unknown tag {tag!r} (entity types: {', '.join(sorted(allowed))})")
    same = prev != "O" and prev[2:] == tag[2:]
    if scheme == "iob2" and tag.startswith("I-") and not same:
      raise TagError(i, f"{tag} after {prev} in strict IOB2 mode (an entity must start with "
                     "B-; for IOB1 files such as the original CoNLL-2003 pass scheme='iob1')")
    if scheme == "iob1" and tag.startswith("B-") and not same:
      raise TagError(i, f"{tag} after {prev} in IOB1 mode (B- only separates two adjacent "
                     f"{tag[2:]} entities; for IOB2 files pass scheme='iob2')")
    prev = tag


def iob1_to_iob2(tags: Sequence[str]) -> tuple[str, ...]:
  """IOB1 (or ill-formed IOB2) -> IOB2: an I-TYPE that starts an entity becomes B-TYPE."""
  out, prev = [], "O"
  for tag in tags:
    if tag.startswith("I-") and (prev == "O" or prev[2:] != tag[2:]):
      tag = "B-" + tag[2:]
    out.append(tag)
    prev = tag
  return tuple(out)


def read_conll(path: Path | str, *, scheme: str = "iob2", to_iob2: bool = False,
               entity_types: Iterable[str] | None = None, lang_prefix: bool | None = None,
               encoding: str = "utf-8") -> IOBDataset:
  """Sentences of one CoNLL / WikiAnn file, in file order.

  `lang_prefix`: True strips a required `LANG:` token prefix, False keeps
  tokens as they are, None decides from the first token of the file.
  `entity_types` (e.g. {"PER", "LOC", "ORG", "MISC"}) rejects other types.
  """
  check_tags((), scheme)  # an unknown scheme fails before the file is read
  path = Path(path)
  types = None if entity_types is None else tuple(entity_types)
  sentences, tokens, tags, lines, langs = [], [], [], [], set()
  columns = first_line = None

  def flush():
    if not tokens:
      return
    try:
      check_tags(tags, scheme, types)
    except TagError as e:
      raise error(path, lines[e.index], str(e), f"tag (column {columns})") from None
    out = iob1_to_iob2(tags) if to_iob2 else tuple(tags)
    lang = langs.pop() if langs else None
    sentences.append(TaggedSentence(tuple(tokens), out, lang, lines[0]))
    for buffer in (tokens, tags, lines, langs):
      buffer.clear()

  for number, text in read_lines(path, encoding):
    if not text.strip():
      flush()
      continue
    cols = [c.strip() for c in text.split("\t")] if "\t" in text else text.split()
    if cols[0] == "-DOCSTART-" or cols[0].endswith(":-DOCSTART-"):
      flush()
      continue
    if columns is None:
      columns, first_line = len(cols), number
      if columns < 2:
        raise error(path, number, f"expected at least 2 columns (token ... tag), got {columns}")
      if lang_prefix is None:
        lang_prefix = _PREFIX.fullmatch(cols[0]) is not None
    elif len(cols) != columns:
      raise error(path, number, f"expected {columns} columns like line {first_line}, "
                  f"got {len(cols)}")
    token = cols[0]
    if lang_prefix:
      m = _PREFIX.fullmatch(token)
      if m is None:
        raise error(path, number, f"token {token!r} has no 'LANG:' prefix like the file's "
                    "first token", "token (column 1)")
      lang, token = m.groups()
      if langs and lang not in langs:
        raise error(path, number, f"language {lang!r} inside a {langs.pop()!r} sentence",
                    "token (column 1)")
      langs.add(lang)
    if not token:
      raise error(path, number, "empty token", "token (column 1)")
    tokens.append(token)
    tags.append(cols[-1])
    lines.append(number)
  flush()
  if not sentences:
    raise ReaderError(f"{path}: no sentences")
  kinds = sorted({t[2:] for s in sentences for t in s.tags if t != "O"})
  return IOBDataset(tuple(sentences), ("O",) + tuple(f"{p}-{k}" for k in kinds for p in "BI"))
