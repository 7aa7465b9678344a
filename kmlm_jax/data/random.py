"""Stateless, vectorized randomness for the input pipeline.

Every random choice of the online input (shuffling, masking, mixing) is a
pure function of integer keys (the run's seed, a stream, a global example
index, a token index), computed for whole arrays at once with the
splitmix64 finalizer. Nothing depends on how examples are grouped into
blocks, processes or hosts, so any part of the input order can be
recomputed from its indices alone: that is what makes resume constant-time.

`permute(i, n, key)` is a bijection of [0, n) (a 4-round Feistel network
over the next power of four, with cycle walking), so an epoch of a stream
of n examples is shuffled without materializing a permutation.
"""

from __future__ import annotations

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def mix(x) -> np.ndarray:
  """splitmix64's finalizer: a bijective uint64 -> uint64 hash (elementwise)."""
  z = np.asarray(x, np.uint64)
  shape = z.shape
  z = z.reshape(-1) + _GOLDEN  # array arithmetic wraps silently (scalar arithmetic warns)
  z = (z ^ (z >> np.uint64(30))) * _M1
  z = (z ^ (z >> np.uint64(27))) * _M2
  return (z ^ (z >> np.uint64(31))).reshape(shape)


def key(*parts) -> np.ndarray:
  """A hash of several integer keys (scalars or broadcastable arrays)."""
  out = np.uint64(0x243F6A8885A308D3)
  for p in parts:
    out = mix(out ^ np.asarray(p).astype(np.uint64))
  return out


def uniform(k) -> np.ndarray:
  """float64 in [0, 1) from hashed keys (53 random bits)."""
  return (mix(k) >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def below(k, n) -> np.ndarray:
  """int64 uniform in [0, n) (elementwise n >= 1) from hashed keys."""
  return np.minimum((uniform(k) * n).astype(np.int64), np.asarray(n, np.int64) - 1)


def permute(index, n: int, seed_key) -> np.ndarray:
  """The images of `index` (int64 array in [0, n)) under the bijection of [0, n)
  keyed by `seed_key` (a scalar or one key per index)."""
  index = np.asarray(index, np.int64)
  if n <= 1:
    return index.copy()
  half = max(1, (int(n - 1).bit_length() + 1) // 2)
  mask = np.uint64((1 << half) - 1)
  keys = np.broadcast_to(np.asarray(seed_key, np.uint64), index.shape)
  round_keys = [key(keys, r) for r in range(4)]
  out = index.astype(np.uint64)
  todo = np.ones(out.shape, bool)
  while todo.any():  # cycle walking: re-encrypt values that left [0, n)
    x = out[todo]
    left, right = x >> np.uint64(half), x & mask
    for k in round_keys:
      left, right = right, left ^ (mix(right ^ k[todo]) & mask)
    out[todo] = (left << np.uint64(half)) | right
    todo = out >= np.uint64(n)
  return out.astype(np.int64)
