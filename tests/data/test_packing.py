"""Vectorized block packer: row contents, budgets, truncation, efficiency vs first-fit."""

from __future__ import annotations

import numpy as np
import pytest

from kmlm_jax.data import packing

T, P, PAD = 128, 20, 1
SPEC = packing.PackSpec(T, P, PAD)


def _lengths(case: str, rng: np.random.Generator, count: int) -> np.ndarray:
  if case == "knowledge":
    return rng.integers(10, 36, count)
  if case == "text":
    u = rng.random(count)
    return np.where(u < 0.6, rng.integers(5, 41, count),
                    np.where(u < 0.9, rng.integers(40, 101, count), rng.integers(100, 129, count)))
  return rng.integers(30, 91, count)  # reasoning


def _block(case: str, count: int, seed: int = 0) -> dict[str, np.ndarray]:
  """A block of `count` examples; reasoning examples carry 2-8 loss tokens, the
  others ~15%. Prefix masks are random prefixes (Prix-LM-like) or all ones."""
  rng = np.random.default_rng(seed)
  lengths = _lengths(case, rng, count).astype(np.int32)
  total = int(lengths.sum())
  starts = np.cumsum(lengths) - lengths
  within = np.arange(total) - np.repeat(starts, lengths)
  if case == "reasoning":
    keys = rng.random(total)  # the 2-8 smallest keys of each example carry loss
    rank = np.empty(total, np.int64)
    for s, n in zip(starts, lengths):  # test data only
      rank[s:s + n] = np.argsort(np.argsort(keys[s:s + n]))
    loss = rank < np.repeat(rng.integers(2, 9, count), lengths)
  else:
    loss = rng.random(total) < 0.15
  prefix_len = np.where(rng.random(count) < 0.5, lengths, rng.integers(0, lengths + 1))
  return {
      "inputs": rng.integers(5, 250_000, total).astype(np.int32),
      "targets": rng.integers(5, 250_000, total).astype(np.int32),
      "loss": loss,
      "prefix": within < np.repeat(prefix_len, lengths),
      "lengths": lengths,
      "terms": rng.integers(0, 4, count).astype(np.int32),
  }


def _pack(block: dict[str, np.ndarray], spec: packing.PackSpec = SPEC):
  return packing.pack_block(block["inputs"], block["targets"], block["loss"], block["prefix"],
                            block["lengths"], block["terms"], spec)


def _kept_loss(loss: np.ndarray, limit: int) -> np.ndarray:
  return loss & (np.cumsum(loss) <= limit)


def _expected(block: dict[str, np.ndarray], limit: int = P) -> list[tuple]:
  """Each example as (inputs, prefix, loss positions, their targets, stream)."""
  out, start = [], 0
  for n, stream in zip(block["lengths"].tolist(), block["terms"].tolist()):
    sl = slice(start, start + n)
    where = np.flatnonzero(_kept_loss(block["loss"][sl], limit))
    out.append((tuple(block["inputs"][sl].tolist()),
                tuple(block["prefix"][sl].astype(int).tolist()), tuple(where.tolist()),
                tuple(block["targets"][sl][where].tolist()), stream))
    start += n
  return out


def _segments(rows: dict[str, np.ndarray], spec: packing.PackSpec = SPEC) -> list[list[tuple]]:
  """Per row, its examples in segment order (same tuples as `_expected`); checks
  the layout and padding on the way."""
  result = []
  for r in range(len(rows["input_ids"])):
    seg = rows["segment_ids"][r]
    used = int(np.count_nonzero(seg))
    assert used > 0 and (seg[:used] > 0).all() and (seg[used:] == 0).all()
    assert seg[0] == 1 and set(np.diff(seg[:used]).tolist()) <= {0, 1}  # contiguous examples
    assert (rows["input_ids"][r, used:] == spec.pad_id).all()
    assert (rows["prefix_mask"][r, used:] == 0).all()
    real = rows["mlm_weights"][r] > 0
    m = int(real.sum())
    assert m <= spec.max_predictions and real[:m].all() and not real[m:].any()
    pos = rows["mlm_positions"][r, :m]
    assert (np.diff(pos) > 0).all() and (seg[pos] > 0).all()
    assert (rows["mlm_positions"][r, m:] == 0).all()
    assert (rows["mlm_targets"][r, m:] == spec.pad_id).all()
    assert (rows["mlm_terms"][r, m:] == 0).all()
    examples = []
    for s in range(1, int(seg.max()) + 1):
      where = np.flatnonzero(seg == s)
      lo = where[0]
      hits = (seg[pos] == s)
      streams = set(rows["mlm_terms"][r, :m][hits].tolist())
      assert len(streams) <= 1
      examples.append((tuple(rows["input_ids"][r, where].tolist()),
                       tuple(rows["prefix_mask"][r, where].tolist()),
                       tuple((pos[hits] - lo).tolist()),
                       tuple(rows["mlm_targets"][r, :m][hits].tolist()), streams))
    result.append(examples)
  return result


def _same_examples(rows, block, limit: int = P) -> None:
  got = [e for row in _segments(rows) for e in row]
  want = {e[:4]: e[4] for e in _expected(block, limit)}
  assert sorted(e[:4] for e in got) == sorted(want)
  for e in got:  # a segment's stream shows only through its predictions
    assert e[4] <= {want[e[:4]]}


@pytest.mark.parametrize("case", ["knowledge", "text", "reasoning"])
def test_every_example_once_within_budgets(case):
  block = _block(case, 300, seed=1)
  rows, stats = _pack(block)
  assert set(rows) == set(packing.ROW_KEYS)
  r = stats["rows"]
  for key in packing.ROW_KEYS:
    assert rows[key].shape == (r, P if key.startswith("mlm_") else T)
  assert rows["mlm_weights"].dtype == np.float32
  assert all(rows[k].dtype == np.int32 for k in packing.ROW_KEYS if k != "mlm_weights")
  _same_examples(rows, block)
  assert stats["examples"] == 300 and stats["tokens"] == int(block["lengths"].sum())
  assert stats["predictions_dropped"] == int(block["loss"].sum()) - sum(
      len(e[2]) for e in _expected(block))
  assert int(np.count_nonzero(rows["segment_ids"])) == stats["tokens"]


def test_mlm_positions_point_at_loss_tokens():
  block = _block("text", 200, seed=2)
  kept = np.concatenate([_kept_loss(x, P) for x in np.split(block["loss"],
                                                            np.cumsum(block["lengths"])[:-1])])
  block["inputs"] = np.where(kept, -block["targets"], block["inputs"])  # marks kept loss tokens
  rows, _ = _pack(block)
  real = rows["mlm_weights"] > 0
  r, _ = np.nonzero(real)
  at = rows["input_ids"][r, rows["mlm_positions"][real]]
  np.testing.assert_array_equal(at, -rows["mlm_targets"][real])
  assert (rows["input_ids"] < 0).sum() == real.sum()  # every kept loss token has its slot


def test_overfull_example_keeps_first_predictions():
  block = _block("knowledge", 40, seed=3)
  block["lengths"][5] = 100
  n = int(block["lengths"].sum())
  rng = np.random.default_rng(3)
  for key in ("inputs", "targets"):
    block[key] = rng.integers(5, 250_000, n).astype(np.int32)
  block["prefix"] = np.ones(n, bool)
  block["loss"] = np.zeros(n, bool)
  start = int(block["lengths"][:5].sum())
  block["loss"][start + 3:start + 3 + 2 * 30:2] = True  # 30 loss tokens, every other one
  rows, stats = _pack(block)
  assert stats["predictions_dropped"] == 10
  _same_examples(rows, block)
  r = next(i for i, seg in enumerate(_segments(rows)) if any(len(e[0]) == 100 for e in seg))
  assert rows["mlm_weights"][r].sum() == P  # the long example fills the row's budget
  s = rows["segment_ids"][r, rows["mlm_positions"][r, 0]]
  offsets = rows["mlm_positions"][r] - np.flatnonzero(rows["segment_ids"][r] == s)[0]
  np.testing.assert_array_equal(offsets, 3 + 2 * np.arange(P))


def test_too_long_example_raises():
  block = _block("knowledge", 10, seed=4)
  with pytest.raises(ValueError, match=r"35.*rows of 30"):
    _pack(block, packing.PackSpec(30, P, PAD))


def test_unpacked_rows_hold_one_example_in_order():
  block = _block("text", 50, seed=5)
  rows, stats = _pack(block, packing.PackSpec(T, P, PAD, pack=False))
  assert stats["rows"] == 50
  segments = _segments(rows)
  assert all(len(s) == 1 for s in segments)
  assert [s[0][:4] for s in segments] == [e[:4] for e in _expected(block)]


def test_deterministic_and_small_blocks():
  block = _block("text", 120, seed=6)
  a, _ = _pack(block)
  b, _ = _pack(block)
  for key in packing.ROW_KEYS:
    np.testing.assert_array_equal(a[key], b[key])
  rows, stats = _pack(block, packing.PackSpec(T, P, PAD, lookahead=1))
  _same_examples(rows, block)
  empty = {k: v[:0] for k, v in block.items()}
  rows, stats = _pack(empty)
  assert stats == {"examples": 0, "rows": 0, "tokens": 0, "predictions_dropped": 0}
  assert rows["input_ids"].shape == (0, T) and rows["mlm_weights"].shape == (0, P)


def _first_fit_rows(block: dict[str, np.ndarray], open_rows: int = 8) -> int:
  """Rows made by the old per-example first-fit into `open_rows` open rows."""
  predictions = np.minimum(np.add.reduceat(block["loss"], np.cumsum(block["lengths"]) -
                                           block["lengths"], dtype=np.int64), P)
  rows, made = [], 0  # open rows as [tokens, predictions]
  for n, p in zip(block["lengths"].tolist(), predictions.tolist()):
    for row in rows:
      if row[0] + n <= T and row[1] + p <= P:
        row[0] += n
        row[1] += p
        break
    else:
      if len(rows) >= open_rows:
        rows.pop(0)
      rows.append([n, p])
      made += 1
  return made


@pytest.mark.parametrize("case", ["knowledge", "text", "reasoning"])
def test_efficiency_at_least_first_fit(case):
  block = _block(case, 2048, seed=7)
  rows, stats = _pack(block)
  ours = packing.efficiency(stats, T)
  reference = stats["tokens"] / (_first_fit_rows(block) * T)
  print(f"packing efficiency {case}: {ours:.2%} (first-fit of 8 open rows: {reference:.2%})")
  assert ours >= reference - 0.005
  assert np.count_nonzero(rows["segment_ids"]) / rows["segment_ids"].size == pytest.approx(ours)
