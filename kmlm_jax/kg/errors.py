"""Bad KG input: one error type that names the file, line and field, and
the counted skips a user asks for with `--skip-bad-records`."""

from __future__ import annotations

import collections
import dataclasses

from kmlm_jax.errors import InputError


class KGInputError(InputError):
  """Bad input to a KG reader or builder; the message names file, line and field."""


def where(path, line: int | None = None, field: str | None = None) -> str:
  """"FILE:LINE: field F" prefix for error messages."""
  out = str(path)
  if line is not None:
    out += f":{line}"
  if field is not None:
    out += f": field {field!r}"
  return out


class BadRecord(Exception):
  """A record a reader cannot use: reason (a ReadStats skip reason), field, message."""

  def __init__(self, reason: str, field: str | None, message: str):
    super().__init__(message)
    self.reason, self.field, self.message = reason, field, message


@dataclasses.dataclass
class ReadStats:
  """What a reader read, kept and skipped.

  Invariant checked by `check()`: records_read == records_kept + sum(skipped).
  `skipped` maps a reason ("malformed_json", "no_label", ...) to a count;
  `examples` keeps the first few locations per reason for the manifest.
  `names_cleaned` counts labels and aliases whose tabs or line breaks were
  replaced by a space (`graph.clean_name`).
  """

  records_read: int = 0
  records_kept: int = 0
  skipped: collections.Counter = dataclasses.field(default_factory=collections.Counter)
  examples: dict[str, list[str]] = dataclasses.field(default_factory=dict)
  names_cleaned: int = 0

  def skip(self, reason: str, location: str, max_examples: int = 5) -> None:
    self.skipped[reason] += 1
    examples = self.examples.setdefault(reason, [])
    if len(examples) < max_examples:
      examples.append(location)

  def bad(self, skip_bad: bool, path, line: int, reason: str, field: str | None, message: str,
          what: str = "records") -> None:
    """Counts a bad record as a skip when `skip_bad`, else raises naming FILE:LINE: field."""
    if not skip_bad:
      raise KGInputError(f"{where(path, line, field)}: {message} (pass skip_bad_records=True / "
                         f"--skip-bad-records to count and skip such {what})") from None
    self.skip(reason, f"{path}:{line}")

  @property
  def num_skipped(self) -> int:
    return sum(self.skipped.values())

  def check(self) -> None:
    if self.records_read != self.records_kept + self.num_skipped:
      raise AssertionError(f"records read {self.records_read} != kept {self.records_kept} + "
                           f"skipped {self.num_skipped}")

  def as_dict(self) -> dict:
    return {"records_read": self.records_read, "records_kept": self.records_kept,
            "skipped": self.num_skipped, "skipped_by_reason": dict(sorted(self.skipped.items())),
            "skipped_examples": self.examples, "names_cleaned": self.names_cleaned}
