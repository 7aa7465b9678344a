"""Entity-name trie as CSR arrays, built on the host with numpy.

A name is the token sequence of one candidate object entity followed by
`[EOS]`. States are the distinct prefixes of these sequences; state 0 is
the empty prefix (root). States are numbered breadth-first and, within a
depth, in lexicographic order of their token sequences, so children of a
state are contiguous and sorted by token, and `child_state[e] == e + 1`.

Arrays (S states, E = S - 1 edges, N entities):
  row_ptr [S + 1] int32: children of state s are edges row_ptr[s]:row_ptr[s+1].
  child_token [E] int32, child_state [E] int32.
  terminal_entity [S] int32: entity whose name + [EOS] ends at s, else -1.
  eos_entity [S] int32: entity reached from s by its [EOS] edge, else -1
    (what beam search reads: one finished candidate per beam and step).
  entity_state [N] int32: terminal state of each entity (-1: dropped
    duplicate).

Names are validated: an empty name, an `[EOS]` inside a name, a negative
token, or (with `max_decode_len`) a name whose tokens + [EOS] exceed it
raise `TrieError` naming the entity. Two entities with the same token
sequence raise by default (`duplicates="error"`); `duplicates="first"`
keeps the lowest entity index on the shared terminal state and marks the
others unreachable (`entity_state == -1`, listed in `dropped`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import tempfile
import zipfile
from typing import Sequence

import numpy as np

from kmlm_jax.errors import InputError

_FORMAT = 1
_ARRAYS = ("row_ptr", "child_token", "child_state", "terminal_entity", "eos_entity",
           "entity_state")


class TrieError(InputError):
  """Invalid entity names."""


@dataclasses.dataclass(frozen=True, eq=False)
class Trie:
  """The CSR arrays of the module docstring, the [EOS] id and the longest name."""

  row_ptr: np.ndarray
  child_token: np.ndarray
  child_state: np.ndarray
  terminal_entity: np.ndarray
  eos_entity: np.ndarray
  entity_state: np.ndarray
  eos_id: int
  max_len: int  # longest name, [EOS] included

  @property
  def num_states(self) -> int:
    return self.row_ptr.shape[0] - 1

  @property
  def num_entities(self) -> int:
    return self.entity_state.shape[0]

  @property
  def out_degree(self) -> np.ndarray:
    """[S] number of children of every state."""
    return np.diff(self.row_ptr)

  @property
  def max_branch(self) -> int:
    """Largest out-degree of any state (exact, no truncation)."""
    return int(self.out_degree.max(initial=0))

  @property
  def root_degree(self) -> int:
    return int(self.row_ptr[1] - self.row_ptr[0])

  @property
  def max_branch_below_root(self) -> int:
    """Largest out-degree of a non-root state (beam steps after the first)."""
    return int(self.out_degree[1:].max(initial=0))

  @property
  def dropped(self) -> np.ndarray:
    """Entities that share another entity's name and cannot be reached."""
    return np.flatnonzero(self.entity_state < 0)

  @property
  def nbytes(self) -> int:
    return sum(getattr(self, name).nbytes for name in _ARRAYS)

  def children(self, state: int) -> tuple[np.ndarray, np.ndarray]:
    """(tokens, states) of the children of `state`, sorted by token."""
    lo, hi = self.row_ptr[state], self.row_ptr[state + 1]
    return self.child_token[lo:hi], self.child_state[lo:hi]

  def save(self, path: str | os.PathLike) -> None:
    """Writes an `.npz` atomically (temporary file + rename)."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".npz", dir=directory)
    os.close(fd)
    try:
      np.savez(tmp, format=np.int64(_FORMAT), eos_id=np.int64(self.eos_id),
               max_len=np.int64(self.max_len), **{n: getattr(self, n) for n in _ARRAYS})
      os.replace(tmp, path)
    finally:
      if os.path.exists(tmp):
        os.remove(tmp)

  @classmethod
  def load(cls, path: str | os.PathLike) -> "Trie":
    """Reads `save`'s file; a missing, truncated or foreign file raises `TrieError`."""
    try:
      with np.load(os.fspath(path), allow_pickle=False) as data:
        if "format" not in data or int(data["format"]) != _FORMAT:
          raise TrieError(f"{path}: not a trie file of format {_FORMAT}")
        missing = [n for n in (*_ARRAYS, "eos_id", "max_len") if n not in data]
        if missing:
          raise TrieError(f"{path}: trie file without {missing}")
        return cls(**{n: data[n] for n in _ARRAYS}, eos_id=int(data["eos_id"]),
                   max_len=int(data["max_len"]))
    except TrieError:
      raise
    except FileNotFoundError:
      raise TrieError(f"{path}: no such trie file") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
      raise TrieError(f"{path}: damaged trie file ({type(e).__name__}: {e})") from None


def flatten_names(names: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
  """Token lists -> (flat tokens [sum of lengths] int64, lengths [N] int64)."""
  lengths = np.fromiter((len(n) for n in names), dtype=np.int64, count=len(names))
  parts = [np.asarray(n, dtype=np.int64).reshape(-1) for n in names]
  flat = np.concatenate(parts) if parts else np.zeros(0, np.int64)
  return flat, lengths


def build_trie(names: Sequence[Sequence[int]], eos_id: int, *, max_decode_len: int | None = None,
               duplicates: str = "error") -> Trie:
  """Builds the trie of `names` (entity i = names[i]).

  Each name is a token sequence; a trailing `eos_id` is optional (added when
  missing). See the module docstring for validation and `duplicates`.
  """
  flat, lengths = flatten_names(names)
  return build_trie_flat(flat, lengths, eos_id, max_decode_len=max_decode_len,
                         duplicates=duplicates)


def _core_names(flat: np.ndarray, lengths: np.ndarray, eos_id: int):
  """Drops an optional trailing [EOS]; returns (core tokens, core lengths) after validation."""
  n = lengths.shape[0]
  starts = np.cumsum(lengths) - lengths
  ends = starts + lengths
  nonempty = lengths > 0
  has_eos = np.zeros(n, bool)
  has_eos[nonempty] = flat[ends[nonempty] - 1] == eos_id
  core = lengths - has_eos
  if (core == 0).any():
    raise TrieError(f"entity {int(np.flatnonzero(core == 0)[0])} has an empty name "
                    f"({int((core == 0).sum())} empty names in all)")
  owner = np.repeat(np.arange(n), lengths)
  index = np.arange(flat.shape[0]) - np.repeat(starts, lengths)
  keep = index < core[owner]
  if (flat < 0).any():
    raise TrieError(f"entity {int(owner[np.argmax(flat < 0)])} has a negative token id")
  inner_eos = keep & (flat == eos_id)
  if inner_eos.any():
    raise TrieError(f"entity {int(owner[np.argmax(inner_eos)])} has [EOS] ({eos_id}) inside "
                    f"its name; [EOS] may only end a name")
  return flat[keep], core


def _padded(tokens: np.ndarray, core: np.ndarray, eos_id: int) -> np.ndarray:
  """[N, max(core) + 1] int64: core tokens, then [EOS], then -1."""
  n, width = core.shape[0], int(core.max(initial=0)) + 1
  out = np.full((n, width), -1, np.int64)
  rows = np.repeat(np.arange(n), core)
  cols = np.arange(tokens.shape[0]) - np.repeat(np.cumsum(core) - core, core)
  out[rows, cols] = tokens
  out[np.arange(n), core] = eos_id
  return out


def build_trie_flat(flat: np.ndarray, lengths: np.ndarray, eos_id: int, *,
                    max_decode_len: int | None = None, duplicates: str = "error") -> Trie:
  """`build_trie` over concatenated tokens [sum(lengths)] and lengths [N].

  Vectorized: one `np.unique` over (parent state, token) pairs per depth.
  """
  if duplicates not in ("error", "first"):
    raise TrieError(f"duplicates must be 'error' or 'first', got {duplicates!r}")
  flat = np.asarray(flat, np.int64).reshape(-1)
  lengths = np.asarray(lengths, np.int64).reshape(-1)
  if lengths.shape[0] == 0:
    raise TrieError("no entity names given")
  if (lengths < 0).any() or lengths.sum() != flat.shape[0]:
    raise TrieError(f"lengths (sum {int(lengths.sum())}) do not match {flat.shape[0]} tokens")
  if eos_id < 0:
    raise TrieError(f"eos_id must be >= 0, got {eos_id}")
  tokens, core = _core_names(flat, lengths, eos_id)
  full = core + 1
  if max_decode_len is not None and full.max() > max_decode_len:
    bad = np.flatnonzero(full > max_decode_len)
    raise TrieError(f"entity {int(bad[0])} has {int(full[bad[0]])} tokens with [EOS], more than "
                    f"max_decode_len={max_decode_len} ({bad.shape[0]} such names)")
  padded = _padded(tokens, core, eos_id)
  n, width = padded.shape
  base = max(int(padded.max()), eos_id) + 1
  if base > 2 ** 31 or (tokens.shape[0] + 2 * n + 1) * base >= 2 ** 63:
    raise TrieError(f"token ids up to {base - 1} are too large for int32 / the pair keys")

  state = np.zeros(n, np.int64)  # state of each name's prefix of the current depth
  edge_parent, edge_token = [], []
  next_state = 1
  for depth in range(width):
    active = np.flatnonzero(full > depth)
    key = state[active] * base + padded[active, depth]
    unique, inverse = np.unique(key, return_inverse=True)
    edge_parent.append(unique // base)
    edge_token.append(unique % base)
    state[active] = next_state + inverse.reshape(-1)
    next_state += unique.shape[0]
  final_state = state  # every name ends with its [EOS] edge
  edge_parent = np.concatenate(edge_parent)
  child_token = np.concatenate(edge_token).astype(np.int32)
  num_states = next_state
  if num_states >= 2 ** 31:
    raise TrieError(f"{num_states} trie states exceed int32")
  child_state = np.arange(1, num_states, dtype=np.int32)
  row_ptr = np.zeros(num_states + 1, np.int32)
  row_ptr[1:] = np.cumsum(np.bincount(edge_parent, minlength=num_states))

  terminal_entity, entity_state = _terminals(final_state, num_states, duplicates)
  eos_entity = np.full(num_states, -1, np.int32)
  eos_edges = np.flatnonzero(child_token == eos_id)
  eos_entity[edge_parent[eos_edges]] = terminal_entity[child_state[eos_edges]]
  return Trie(row_ptr=row_ptr, child_token=child_token, child_state=child_state,
              terminal_entity=terminal_entity, eos_entity=eos_entity, entity_state=entity_state,
              eos_id=int(eos_id), max_len=int(full.max()))


def _terminals(final_state: np.ndarray, num_states: int, duplicates: str):
  n = final_state.shape[0]
  order = np.lexsort((np.arange(n), final_state))  # by state, then entity index
  sorted_states = final_state[order]
  first = np.ones(n, bool)
  first[1:] = sorted_states[1:] != sorted_states[:-1]
  if duplicates == "error" and not first.all():
    dup = np.flatnonzero(~first)[0]
    raise TrieError(f"entities {int(order[dup - 1])} and {int(order[dup])} have the same name "
                    f"({int((~first).sum())} duplicates in all); pass duplicates='first' to "
                    f"keep the lowest entity index")
  terminal_entity = np.full(num_states, -1, np.int32)
  terminal_entity[sorted_states[first]] = order[first]
  entity_state = np.full(n, -1, np.int32)
  entity_state[order[first]] = sorted_states[first]
  return terminal_entity, entity_state


def build_trie_cached(names: Sequence[Sequence[int]], eos_id: int, cache_dir: str | os.PathLike, *,
                      max_decode_len: int | None = None, duplicates: str = "error") -> Trie:
  """Loads `cache_dir/trie-<digest>.npz` or builds and saves it; the sha256
  digest covers the tokens, eos_id, max_decode_len and duplicates policy."""
  flat, lengths = flatten_names(names)
  h = hashlib.sha256(f"trie-v{_FORMAT}|{eos_id}|{max_decode_len}|{duplicates}|".encode())
  h.update(lengths.tobytes())
  h.update(flat.tobytes())
  path = os.path.join(os.fspath(cache_dir), f"trie-{h.hexdigest()[:24]}.npz")
  if os.path.exists(path):
    try:
      return Trie.load(path)
    except TrieError:  # a damaged cache entry (e.g. a full disk): build it again
      pass
  trie = build_trie_flat(flat, lengths, eos_id, max_decode_len=max_decode_len,
                         duplicates=duplicates)
  trie.save(path)
  return trie
