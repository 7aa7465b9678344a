"""The one error type of the evaluation-set readers, and JSON record helpers.

Every malformed input raises `ReaderError` with a message that starts
"FILE:LINE: field 'F': ..." (line and field when known), so a user can open
the file at the faulty record.
"""

from __future__ import annotations

import contextlib
import json
import re
from pathlib import Path
from typing import Any, Callable, Iterator

from kmlm_jax.errors import InputError
from kmlm_jax.kg.errors import where  # the one FILE:LINE: field formatter

_SPACE = re.compile(r"\s*")


class ReaderError(InputError):
  """Malformed evaluation data; the message names file, line and field."""


def error(path, line: int | None, message: str, field: str | None = None) -> ReaderError:
  return ReaderError(f"{where(path, line, field)}: {message}")


@contextlib.contextmanager
def _reading(path: Path):
  """Turns a missing, unreadable or non-utf-8 file into a ReaderError naming it."""
  try:
    yield
  except FileNotFoundError:
    raise ReaderError(f"{path}: no such file") from None
  except UnicodeDecodeError as e:
    raise ReaderError(f"{path}: not valid utf-8 at byte {e.start}") from None
  except OSError as e:  # a directory, no permission, ...
    raise ReaderError(f"{path}: cannot be read ({e.strerror or e})") from None


def read_lines(path: Path | str, encoding: str = "utf-8") -> Iterator[tuple[int, str]]:
  """(1-based line number, line without its newline); a decoding error names the line."""
  path = Path(path)
  with _reading(path), path.open("rb") as f:
    for number, raw in enumerate(f, 1):
      try:
        text = raw.decode(encoding)
      except UnicodeDecodeError as e:
        raise error(path, number, f"not valid {encoding} ({e.reason} at byte {e.start}); "
                    "pass the file's encoding (CoNLL-2002 files are latin-1)") from None
      yield number, text.rstrip("\r\n")


def iter_json_records(path: Path | str) -> Iterator[tuple[int, dict]]:
  """(line, object) of a JSON-lines file or of a file holding one JSON array.

  JSON lines: one object per non-blank line. Array: `[ {...}, {...} ]` over
  any number of lines; the line of an element is the line it starts on.
  """
  path = Path(path)
  with _reading(path):
    text = path.read_text("utf-8")
  if text.lstrip().startswith("["):
    yield from _array_records(path, text)
    return
  for number, line in enumerate(text.splitlines(), 1):
    if not line.strip():
      continue
    try:
      record = json.loads(line)
    except json.JSONDecodeError as e:
      raise error(path, number, f"invalid JSON ({e.msg} at column {e.colno})") from None
    yield number, _object(record, path, number)


def _array_records(path: Path, text: str) -> Iterator[tuple[int, dict]]:
  decoder = json.JSONDecoder()
  pos = _SPACE.match(text, text.index("[") + 1).end()
  if text.startswith("]", pos):
    return
  while True:
    line = text.count("\n", 0, pos) + 1
    try:
      record, pos = decoder.raw_decode(text, pos)
    except json.JSONDecodeError as e:
      raise error(path, e.lineno, f"invalid JSON ({e.msg} at column {e.colno})") from None
    yield line, _object(record, path, line)
    pos = _SPACE.match(text, pos).end()
    if text.startswith(",", pos):
      pos = _SPACE.match(text, pos + 1).end()
    elif text.startswith("]", pos) and not text[pos + 1:].strip():
      return
    else:
      problem = "data after the array" if text.startswith("]", pos) else "expected ',' or ']'"
      raise error(path, text.count("\n", 0, pos) + 1, f"invalid JSON ({problem})")


def _object(record: Any, path: Path, line: int) -> dict:
  if not isinstance(record, dict):
    raise error(path, line, f"expected a JSON object, got {type(record).__name__}")
  return record


def is_int(value) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)  # true/false is no index


_KINDS = {  # kind -> (its check, the value expected in words)
    "str": (lambda v: isinstance(v, str), "a string"),
    "int": (is_int, "an integer"),
    "str_list": (lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v),
                 "a list of strings"),
    "int_list": (lambda v: isinstance(v, list) and all(map(is_int, v)), "a list of integers"),
    "any": (lambda v: True, None),
}


def fields(record: dict, path, line: int) -> Callable[..., Any]:
  """`get(key, kind="str", required=True, default=None)` of one record: record[key] checked
  against `kind` ("str", "int", "str_list", "int_list" or "any"). A missing required key, or
  a value of the wrong type, raises ReaderError."""

  def get(key: str, kind: str = "str", required: bool = True, default: Any = None) -> Any:
    value = record.get(key)
    if value is None:
      if required:
        raise error(path, line, f"missing key (record has {sorted(record)})", key)
      return default
    check, want = _KINDS[kind]
    if not check(value):
      raise error(path, line, f"expected {want}, got "
                  f"{json.dumps(value, ensure_ascii=False)[:80]}", key)
    return value

  return get
