"""Host batches of packed rows from the token cache, with a small, exact input state.

The global order. Every step's global batch of B rows is made by U input
shards (`data.input_shards`), shard u giving rows [u B/U, (u+1) B/U). Shard
u reads blocks k = 0, 1, ...; block k holds `data.block_examples` examples,
split over the mixture's sources by cumulative rounding of their weights,
and its c-th example of source s is number c U + u of that source's endless
order (epoch e = that number // n_s, shuffled by a keyed bijection of
[0, n_s)). A block is masked (`masking.py`, keys from seed, source and the
global example number; knowledge samples over `InputSpec.mask_scope`) and
packed (`packing.py`) on its own, so it is a pure function of (spec, u, k),
computable in any process.

The input state is, per shard, (block k, rows already taken from it): a
[U, 2] array saved in every checkpoint and restored in constant time (one
block per shard is recomputed). Host shares (`Partitioner.host_share`: one
per process, or one per group of processes whose devices hold the same
rows) own contiguous ranges of shards (U must be divisible by the number of
shares), so the global batches do not depend on the number of processes: a
run resumed on another number of hosts
continues the same global order, with no example repeated or skipped.

Blocks can be computed ahead by worker processes (`data.workers`).

`InputSpec.split = "validation"` reads the cache's validation split instead
(`kmlm_jax.training.data.make_validation_batches`): the same order, masking
and packing over other examples.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import multiprocessing
import os
import zlib

import numpy as np

from kmlm_jax.data import masking, packing
from kmlm_jax.data import random as srandom
from kmlm_jax.data.cache import TokenCache
from kmlm_jax.text.errors import CorpusError

_SHUFFLE = 0xB10C


@dataclasses.dataclass(frozen=True)
class InputSpec:
  """Everything that defines the global order (picklable, sent to workers)."""

  cache_dir: str
  sources: tuple[str, ...]
  weights: tuple[float, ...]
  counts: tuple[int, ...]
  seed: int
  seq_length: int
  max_predictions: int
  num_shards: int
  rows_per_shard: int
  block_examples: int = 1024
  pack: bool = True
  split: str = "train"  # the token cache's split: "train" or "validation"
  # The knowledge samples' masking scope (`masking.MASK_SCOPES`): "entities" draws over
  # entity and relation tokens, "original" over every non-special token but the linkers.
  mask_scope: str = masking.SCOPE_ENTITIES

  def __post_init__(self):
    if self.block_examples < 1:
      raise CorpusError(f"data.block_examples must be >= 1, got {self.block_examples}")
    if self.mask_scope not in masking.MASK_SCOPES:
      raise CorpusError(f"data.mask_scope: expected one of {masking.MASK_SCOPES}, got "
                        f"{self.mask_scope!r}")


def default_input_shards(batch_size: int, limit: int = 64) -> int:
  """The largest divisor of the batch size that is at most `limit`."""
  return max(d for d in range(1, min(batch_size, limit) + 1) if batch_size % d == 0)


_OPEN: dict[tuple[str, int], TokenCache] = {}


def _cache(path: str) -> TokenCache:
  """The cache opened once per process (again if sources were added since)."""
  key = (path, os.stat(os.path.join(path, "cache.json")).st_mtime_ns)
  if key not in _OPEN:
    _OPEN[key] = TokenCache(path)
  return _OPEN[key]


def _source_key(name: str) -> int:
  return zlib.crc32(name.encode())


def block_members(spec: InputSpec, shard: int, block: int):
  """Per source: (global example numbers, example ids) of one block."""
  out = []
  for name, weight, n in zip(spec.sources, spec.weights, spec.counts):
    lo = int(np.floor(block * spec.block_examples * weight))
    hi = int(np.floor((block + 1) * spec.block_examples * weight))
    number = np.arange(lo, hi, dtype=np.int64) * spec.num_shards + shard
    epoch, position = np.divmod(number, n)
    ids = srandom.permute(position, n, srandom.key(spec.seed, _source_key(name), epoch))
    out.append((name, number, ids))
  return out


_PER_EXAMPLE = ("lengths", "aux", "keys", "rules")


def _take(arrays: dict, order: np.ndarray) -> dict:
  """Reorders a block's ragged examples (per-example and per-token arrays)."""
  lengths = arrays["lengths"]
  starts = np.cumsum(lengths) - lengths
  new_lengths = lengths[order]
  new_starts = np.cumsum(new_lengths) - new_lengths
  flat = np.repeat(starts[order] - new_starts, new_lengths) + np.arange(int(new_lengths.sum()))
  return {k: v[order] if k in _PER_EXAMPLE else v[flat] for k, v in arrays.items()}


def make_block(spec: InputSpec, shard: int, block: int) -> tuple[dict, dict]:
  """The packed rows of one block of one shard, and its packing counts."""
  cache = _cache(spec.cache_dir)
  parts = []
  for name, number, ids in block_members(spec, shard, block):
    source = cache.source(name, spec.split)
    data = source.gather(ids)
    data["keys"] = srandom.key(spec.seed, _source_key(name), number)
    data["rules"] = np.full(len(ids), source.rule, np.int32)
    parts.append(data)
  arrays = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
  shuffle = srandom.key(spec.seed, _SHUFFLE, shard, block, np.arange(len(arrays["lengths"])))
  arrays = _take(arrays, np.argsort(shuffle, kind="stable"))
  m = masking.mask_block(arrays["tokens"], arrays["roles"], arrays["mentions"],
                         arrays["sentences"], arrays["lengths"], arrays["rules"], arrays["aux"],
                         arrays["keys"], cache.special, scope=spec.mask_scope)
  return packing.pack_block(m.inputs, m.targets, m.loss, m.prefix, arrays["lengths"],
                            arrays["rules"],
                            packing.PackSpec(spec.seq_length, spec.max_predictions,
                                             cache.special.pad, pack=spec.pack))


class Batches:
  """The rows of host share `share` of `shares` (`Partitioner.host_share`) of each step,
  from its input shards; `state()`: its part of the input state."""

  def __init__(self, spec: InputSpec, share: int = 0, shares: int = 1,
               state: np.ndarray | None = None, workers: int = 0, prefetch: int = 2):
    u = spec.num_shards
    if u % shares:
      raise CorpusError(f"data.input_shards={u} is not divisible by the {shares} host shares; "
                        "choose input shards that every host count divides")
    per = u // shares
    self.spec, self.shards = spec, list(range(share * per, (share + 1) * per))
    full = np.zeros((u, 2), np.int64) if state is None else np.asarray(state, np.int64)
    if full.shape != (u, 2):
      raise CorpusError(f"the saved input state is for {len(full)} input shards, this run has "
                        f"data.input_shards={u}; resume with the same value")
    self._position = {s: full[s].tolist() for s in self.shards}
    self._rows: dict[int, dict] = {}
    self.stats = {"examples": 0, "rows": 0, "tokens": 0, "predictions_dropped": 0}
    self._pool = concurrent.futures.ProcessPoolExecutor(
        workers, mp_context=multiprocessing.get_context("spawn")) if workers else None
    self._prefetch = prefetch
    self._futures: dict[tuple[int, int], concurrent.futures.Future] = {}

  def _load(self, shard: int, block: int) -> dict:
    if self._pool is None:
      rows, stats = make_block(self.spec, shard, block)
    else:
      for k in range(block, block + self._prefetch + 1):
        if (shard, k) not in self._futures:
          self._futures[(shard, k)] = self._pool.submit(make_block, self.spec, shard, k)
      rows, stats = self._futures.pop((shard, block)).result()
    for key in self.stats:
      self.stats[key] += stats[key]
    return rows

  def __iter__(self):
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    parts = []
    for shard in self.shards:
      need = self.spec.rows_per_shard
      while need:
        block, taken = self._position[shard]
        if shard not in self._rows:
          self._rows[shard] = self._load(shard, block)
        rows = self._rows[shard]
        total = len(rows["input_ids"])
        take = min(need, total - taken)
        parts.append({k: v[taken:taken + take] for k, v in rows.items()})
        need -= take
        if taken + take == total:
          self._position[shard] = [block + 1, 0]
          del self._rows[shard]
        else:
          self._position[shard] = [block, taken + take]
    return {k: np.concatenate([p[k] for p in parts]) for k in packing.ROW_KEYS}

  def state(self) -> np.ndarray:
    """[input shards of this share, 2]: (block, rows taken) of each."""
    return np.asarray([self._position[s] for s in self.shards], np.int64)

  def close(self) -> None:
    if self._pool is not None:
      self._pool.shutdown(wait=False, cancel_futures=True)
      self._pool = None
