"""XLR multiple-choice items (KMLM appendix A.2): the project's files and a release layout.

Two record formats, told apart per record by their keys:

- Project (`eval/xlr/SPLIT.jsonl`, written by `kmlm_jax.kg.build`): one JSON
  object per line with `id, split, lang, context` (list of str), `question`,
  `choices` (list of str), `label` (int index into choices) and, optionally,
  `cycle` (3 or 4), `choice_ids` (relation ids, one per choice), `triples`
  and `question_triple` (int rows of the KG).
- Release-style (assumed: KMLM published no XLR files or loader, so this
  follows the paper's Figure 5 and common multiple-choice releases): one
  file per language and split, JSON lines or one JSON array, records with
  `context` (list of str, or one str with one triple per line),
  `question` (str), `options` (list of str) and `answer`: a 0-based int
  index, a letter "A".."F", or the text of exactly one option. `id`, `lang`
  and `split` are optional; missing ones come from the arguments or the
  file name (`test.de.jsonl`, `de_test.json`, `de/test.jsonl`; "validation"
  and "valid" mean "dev"). Missing ids become `STEM-LINE`.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from kmlm_jax.evaluation.readers.errors import is_int, error, fields, iter_json_records

SPLIT_NAMES = {"train": "train", "dev": "dev", "validation": "dev", "valid": "dev",
               "test": "test"}


@dataclasses.dataclass(frozen=True)
class XLRItem:
  """One multiple-choice question; `label` indexes `choices`."""

  id: str
  lang: str
  split: str
  context: tuple[str, ...]
  question: str
  choices: tuple[str, ...]
  label: int
  cycle: int | None = None
  choice_ids: tuple[str, ...] | None = None
  triples: tuple[int, ...] | None = None
  question_triple: int | None = None

  @property
  def answer(self) -> str:
    return self.choices[self.label]

  def to_dict(self) -> dict:
    """The project's record (the keys `kmlm_jax.evaluation.xlr` reads); None fields dropped."""
    return {k: list(v) if isinstance(v, tuple) else v
            for k, v in dataclasses.asdict(self).items() if v is not None}


def read_xlr(path: Path | str, *, lang: str | None = None, split: str | None = None,
             num_choices: int | None = 6) -> list[XLRItem]:
  """Items of one XLR file, in file order.

  `lang` / `split` fill in records that lack them (release layout); they
  never override a record's own value. `num_choices=None` accepts any
  number of choices (at least 2).
  """
  path = Path(path)
  items = []
  for line, record in iter_json_records(path):
    if "choices" in record or "options" not in record and "label" in record:
      items.append(_project(record, path, line, num_choices))
    elif "options" in record:
      items.append(_release(record, path, line, lang, split, num_choices))
    else:
      raise error(path, line, f"missing key: an XLR record needs 'choices' (project format) "
                  f"or 'options' (release format); it has {sorted(record)}", "choices")
  return items


def _project(record: dict, path: Path, line: int, num_choices: int | None) -> XLRItem:
  get = fields(record, path, line)
  choices = _choices(get("choices", "str_list"), path, line, "choices", num_choices)
  label = get("label", "int")
  _check_index(label, choices, path, line, "label")
  choice_ids = get("choice_ids", "str_list", required=False)
  if choice_ids is not None and len(choice_ids) != len(choices):
    raise error(path, line, f"{len(choice_ids)} ids for {len(choices)} choices", "choice_ids")
  triples = get("triples", "int_list", required=False)
  return XLRItem(
      get("id"), get("lang"), _split(get("split"), path, line), tuple(get("context", "str_list")),
      get("question"), choices, label, get("cycle", "int", required=False),
      tuple(choice_ids) if choice_ids is not None else None,
      tuple(triples) if triples is not None else None,
      get("question_triple", "int", required=False))


def _release(record: dict, path: Path, line: int, lang: str | None, split: str | None,
             num_choices: int | None) -> XLRItem:
  get = fields(record, path, line)
  options = _choices(get("options", "str_list"), path, line, "options", num_choices)
  context = get("context", "any")
  if isinstance(context, str):
    context = [c.strip() for c in context.splitlines() if c.strip()]
  elif not (isinstance(context, list) and all(isinstance(c, str) for c in context)):
    raise error(path, line, "expected a list of strings or one string", "context")
  guessed_lang, guessed_split = _from_name(path)
  lang = get("lang", required=False) or lang or guessed_lang
  split = get("split", required=False) or split or guessed_split
  if lang is None or split is None:
    missing = "language" if lang is None else "split"
    raise error(path, line, f"no {missing} in the record or the file name; pass "
                f"{'lang' if lang is None else 'split'}=")
  return XLRItem(str(record.get("id", f"{path.stem}-{line}")), lang, _split(split, path, line),
                 tuple(context), get("question"), options,
                 _answer(get("answer", "any"), options, path, line))


def _choices(values: list[str], path, line, field, num_choices) -> tuple[str, ...]:
  if num_choices is not None and len(values) != num_choices:
    raise error(path, line, f"expected {num_choices} choices, got {len(values)}", field)
  if len(values) < 2:
    raise error(path, line, f"expected at least 2 choices, got {len(values)}", field)
  return tuple(values)


def _check_index(index: int, choices, path, line, field) -> None:
  if not 0 <= index < len(choices):
    raise error(path, line, f"index {index} out of range for {len(choices)} choices", field)


def _answer(answer, options: tuple[str, ...], path, line) -> int:
  if is_int(answer):
    _check_index(answer, options, path, line, "answer")
    return answer
  if isinstance(answer, str):
    if re.fullmatch(r"[A-Z]", answer) and answer not in options:
      index = ord(answer) - ord("A")
      _check_index(index, options, path, line, "answer")
      return index
    hits = [i for i, o in enumerate(options) if o == answer]
    if len(hits) == 1:
      return hits[0]
    raise error(path, line, f"{answer!r} is not a letter and matches {len(hits)} options "
                "(need exactly one)", "answer")
  raise error(path, line, f"expected an integer index, a letter or an option's text, got "
              f"{answer!r}", "answer")


def _split(value: str, path, line) -> str:
  if value not in SPLIT_NAMES:
    raise error(path, line, f"unknown split {value!r} (expected one of {sorted(SPLIT_NAMES)})",
                "split")
  return SPLIT_NAMES[value]


def _from_name(path: Path) -> tuple[str | None, str | None]:
  """(lang, split) guessed from `test.de.jsonl`, `de_test.json`, `de/test.jsonl`."""
  parts = re.split(r"[._-]", path.name.split(".json")[0]) + [path.parent.name]
  split = next((SPLIT_NAMES[p] for p in parts if p in SPLIT_NAMES), None)
  lang = next((p for p in parts if re.fullmatch(r"[a-z]{2,3}", p) and p not in SPLIT_NAMES
               and p not in ("xlr", "all")), None)
  return lang, split
