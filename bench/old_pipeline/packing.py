"""Packing masked examples into fixed-shape rows for the encoder.

An example is a dict of `input_ids` [n], `targets` [n], `loss_mask` [n]
bool, `stream` (STREAM_*) and optionally `prefix_mask` [n] bool (Prix-LM:
True on the bidirectional prefix; absent means bidirectional everywhere). Rows hold up to `length` tokens and up to
`max_predictions` loss positions; examples are placed first-fit into a few
open rows (deterministic: same examples in, same rows out), and a row is
emitted when it is full or pushed out by a newer one. Attention never
crosses examples (segment ids), positions restart in each example, so a
packed row computes exactly what its examples compute alone.

Row layout (all numpy, T = length, P = max_predictions):
  input_ids [T] int32 (pad_id after the last example)
  segment_ids [T] int32 (1, 2, ... per example; 0 = padding)
  positions [T] int32 (offset, offset + 1, ... per example; pad_position on padding)
  prefix_mask [T] int32 (1 where keys are visible to every query of the example)
  mlm_positions [P] int32, mlm_targets [P] int32, mlm_weights [P] float32 (1 real, 0 padding)
  mlm_streams [P] int32 (the stream of each prediction; 0 on padding)
"""

from __future__ import annotations

import dataclasses
from typing import Iterable, Iterator

import numpy as np

STREAM_TEXT, STREAM_KNOWLEDGE, STREAM_REASONING, STREAM_CAUSAL = 0, 1, 2, 3
STREAM_NAMES = ("mlm", "knowledge", "reasoning", "causal")
ROW_KEYS = ("input_ids", "segment_ids", "positions", "prefix_mask", "mlm_positions",
            "mlm_targets", "mlm_weights", "mlm_streams")


@dataclasses.dataclass(frozen=True)
class PackSpec:
  length: int
  max_predictions: int
  pad_id: int
  position_offset: int  # XLM-R: pad_id + 1; BERT: 0
  pad_position: int  # XLM-R: pad_id; BERT: 0
  pack: bool = True  # False: one example per row
  open_rows: int = 8


class _Row:
  def __init__(self):
    self.examples: list[dict] = []
    self.tokens = 0
    self.predictions = 0


def _predictions(example) -> int:
  return int(np.count_nonzero(example["loss_mask"]))


class Packer:
  """Greedy first-fit packer; `add` returns the rows it completed."""

  def __init__(self, spec: PackSpec, stats: dict | None = None):
    self.spec = spec
    self.open: list[_Row] = []
    self.stats = stats if stats is not None else {}
    for key in ("examples", "rows", "tokens", "predictions_dropped"):
      self.stats.setdefault(key, 0)

  def add(self, example: dict) -> list[dict]:
    spec = self.spec
    n = len(example["input_ids"])
    if n > spec.length:
      raise ValueError(f"example of {n} tokens does not fit rows of {spec.length}; "
                       "truncate or skip it before packing")
    extra = _predictions(example) - spec.max_predictions
    if extra > 0:  # keep the first P loss positions of an over-full example
      keep = np.cumsum(example["loss_mask"]) <= spec.max_predictions
      example = {**example, "loss_mask": example["loss_mask"] & keep}
      self.stats["predictions_dropped"] += extra
    self.stats["examples"] += 1
    self.stats["tokens"] += n
    p = _predictions(example)
    for row in self.open:
      if (spec.pack and row.tokens + n <= spec.length
          and row.predictions + p <= spec.max_predictions):
        self._place(row, example, n, p)
        return []
    done = []
    if len(self.open) >= (spec.open_rows if spec.pack else 1):
      done.append(self._emit(self.open.pop(0)))
    row = _Row()
    self._place(row, example, n, p)
    self.open.append(row)
    return done

  def flush(self) -> list[dict]:
    done = [self._emit(r) for r in self.open]
    self.open = []
    return done

  @staticmethod
  def _place(row: _Row, example: dict, n: int, p: int) -> None:
    row.examples.append(example)
    row.tokens += n
    row.predictions += p

  def _emit(self, row: _Row) -> dict:
    s = self.spec
    out = {
        "input_ids": np.full(s.length, s.pad_id, np.int32),
        "segment_ids": np.zeros(s.length, np.int32),
        "positions": np.full(s.length, s.pad_position, np.int32),
        "prefix_mask": np.zeros(s.length, np.int32),
        "mlm_positions": np.zeros(s.max_predictions, np.int32),
        "mlm_targets": np.full(s.max_predictions, s.pad_id, np.int32),
        "mlm_weights": np.zeros(s.max_predictions, np.float32),
        "mlm_streams": np.zeros(s.max_predictions, np.int32),
    }
    t = p = 0
    for k, ex in enumerate(row.examples, start=1):
      n = len(ex["input_ids"])
      out["input_ids"][t:t + n] = ex["input_ids"]
      out["segment_ids"][t:t + n] = k
      out["positions"][t:t + n] = s.position_offset + np.arange(n)
      out["prefix_mask"][t:t + n] = ex.get("prefix_mask", True)
      where = np.flatnonzero(ex["loss_mask"])
      out["mlm_positions"][p:p + len(where)] = t + where
      out["mlm_targets"][p:p + len(where)] = ex["targets"][where]
      out["mlm_weights"][p:p + len(where)] = 1.0
      out["mlm_streams"][p:p + len(where)] = ex["stream"]
      t, p = t + n, p + len(where)
    self.stats["rows"] += 1
    return out


def pack(examples: Iterable[dict], spec: PackSpec, stats: dict | None = None) -> Iterator[dict]:
  """Rows from examples (see module docstring); `stats` is kept up to date with
  the counts of examples, rows, tokens and dropped predictions."""
  packer = Packer(spec, stats)
  for example in examples:
    yield from packer.add(example)
  yield from packer.flush()


def efficiency(stats: dict, length: int) -> float:
  """Fraction of row slots holding real tokens."""
  return stats["tokens"] / max(1, stats["rows"] * length)
