"""Trie-constrained beam search for Prix-LM link prediction, one jitted loop.

Semantics (the paper's Algorithm 1, made precise; `reference.py` implements
the same rules without a cache, trie arrays or batching):

- A hypothesis is a proper prefix of some entity name (no `[EOS]` yet) with
  its summed NLL `-sum log P(x_t | x_<t)`. The first one is empty, score 0.
- At every step each live hypothesis (beam) proposes all its trie
  children. The `[EOS]` child finishes the hypothesis as its entity (score
  + NLL of `[EOS]`) and goes to the finished list, unless the entity is in
  `exclude` (filtered setting: excluded entities are never finished, so
  others take their place). Other children are new hypotheses; the K best
  (lowest score) become the next beams. Finished hypotheses do not occupy
  beam slots.
- The finished list keeps the K best entities seen so far. The search stops
  when no live beam scores <= the K-th finished score (NLL only grows, so no
  later entity can enter the list) or when no beam is live.

Ties (equal float scores) are broken consistently:
  * next beams: lower score first, then the lexicographically smaller token
    sequence (= smaller trie state id); implemented by keeping beams in
    state order so that candidate order equals state order and using
    `lax.top_k`'s lower-index-first rule;
  * finished list and output: lower score first, then the smaller entity id.

Cost per step: the MLM head over the vocabulary for B x K rows (the
log-normalizer needs every logit; only the children's log-probabilities are
formed), then a gather of at most `max_branch` children per beam and a
top-K over K x max_branch candidates, never over K x V. The first step
expands only the root (its own static width, the root's out-degree); later
steps use the largest out-degree below the root. Widths are rounded up to a
power of two (masked slots) so that similar tries share one compilation.

Shapes: B queries, K beams, X excluded entities per query, Tp prefix length.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from kmlm_jax.decoding import kv_cache
from kmlm_jax.decoding.trie import Trie

_INF = float("inf")


class DeviceTrie(NamedTuple):
  """The trie arrays beam search reads, as (replicated) device arrays."""

  row_ptr: jax.Array  # [S + 1] int32
  child_token: jax.Array  # [E] int32
  child_state: jax.Array  # [E] int32
  eos_entity: jax.Array  # [S] int32


@dataclasses.dataclass(frozen=True)
class SearchResult:
  entities: np.ndarray  # [B, K] int32, best first; -1 pads
  scores: np.ndarray  # [B, K] float32 summed NLL; +inf pads
  steps: int  # decoding steps the loop ran (max over the batch)


@dataclasses.dataclass(frozen=True)
class _Static:
  num_beams: int
  max_decode_len: int  # object tokens including [EOS]
  root_degree: int
  branch: int  # children gathered per beam after the root step
  eos_id: int


def _select(head, beam_state, beam_score, trie: DeviceTrie, width: int, s: _Static):
  """Top-K non-[EOS] children of all beams.

  head: `_next_token_head` of the beams; beam_state/beam_score [B, R];
  `width` children per beam.
  Beams must be in ascending state order; the returned beams are too.
  Returns (parent [B, K], token [B, K], state [B, K], score [B, K]).
  """
  b, r = beam_state.shape
  start = trie.row_ptr[beam_state]
  degree = trie.row_ptr[beam_state + 1] - start
  slot = jnp.arange(width, dtype=jnp.int32)
  valid = slot < degree[..., None]  # [B, R, W]
  edge = jnp.where(valid, start[..., None] + slot, 0)
  token = trie.child_token[edge]
  state = trie.child_state[edge]
  valid &= token != s.eos_id
  logits, log_norm = head
  nll = log_norm[..., None] - jnp.take_along_axis(logits, token, axis=-1)
  score = jnp.where(valid & jnp.isfinite(beam_score)[..., None], beam_score[..., None] + nll,
                    _INF).reshape(b, r * width)
  if r * width < s.num_beams:
    score = jnp.pad(score, ((0, 0), (0, s.num_beams - r * width)), constant_values=_INF)
  _, index = jax.lax.top_k(-score, s.num_beams)
  index = jnp.sort(index, axis=-1)  # back to candidate (= state) order
  take = lambda x: jnp.take_along_axis(
      jnp.pad(x.reshape(b, r * width), ((0, 0), (0, score.shape[1] - r * width))), index, axis=1)
  new_score = jnp.take_along_axis(score, index, axis=1)
  new_state = jnp.where(jnp.isfinite(new_score), take(state), 0)
  return jnp.minimum(index // width, r - 1), take(token), new_state, new_score


def _finish(head, beam_state, beam_score, finished, exclude, trie: DeviceTrie, s: _Static):
  """Merges each beam's [EOS] completion into the finished list (K best)."""
  fin_entity, fin_score = finished
  entity = trie.eos_entity[beam_state]  # [B, R]
  excluded = (entity[..., None] == exclude[:, None, :]).any(-1)
  ok = (entity >= 0) & ~excluded & jnp.isfinite(beam_score)
  logits, log_norm = head
  score = jnp.where(ok, beam_score + log_norm - logits[..., s.eos_id], _INF)
  entity = jnp.where(ok, entity, -1)
  all_score = jnp.concatenate([fin_score, score], axis=1)
  all_entity = jnp.concatenate([fin_entity, entity], axis=1)
  tie_key = jnp.where(all_entity >= 0, all_entity, jnp.iinfo(jnp.int32).max)
  all_score, _, all_entity = jax.lax.sort((all_score, tie_key, all_entity), num_keys=2)
  return all_entity[:, :s.num_beams], all_score[:, :s.num_beams]


def _next_token_head(model, hidden):
  """[B, R, D] -> (logits [B, R, V], log_norm [B, R]) in fp32.

  log P(v) = logits[v] - log_norm; only the trie children's entries are ever
  read, so the [B, R, V] log-softmax is never written out.
  """
  logits = model.mlm_logits(hidden).astype(jnp.float32)
  return logits, jax.nn.logsumexp(logits, axis=-1)


def _search(graphdef, s: _Static, state, trie: DeviceTrie, prefix_ids, prefix_len, exclude):
  model = nnx.merge(graphdef, state)
  b, k = prefix_ids.shape[0], s.num_beams
  slots = max(1, s.max_decode_len - 1)  # [EOS] is scored, never fed back
  cache, last_hidden = kv_cache.encode_prefix(model, prefix_ids, prefix_len,
                                              max_decode_len=slots, num_rows=k)
  head = _next_token_head(model, last_hidden[:, None])
  root = jnp.zeros((b, 1), jnp.int32)
  finished = (jnp.full((b, k), -1, jnp.int32), jnp.full((b, k), _INF, jnp.float32))
  finished = _finish(head, root, jnp.zeros((b, 1)), finished, exclude, trie, s)
  _, token, beam_state, beam_score = _select(head, root, jnp.zeros((b, 1)), trie,
                                             max(1, s.root_degree), s)

  def live(beam_score, fin_score):
    return jnp.isfinite(beam_score) & (beam_score <= fin_score[:, -1:])

  def cond(carry):
    step, _, _, _, beam_score, (_, fin_score) = carry
    return (step < slots) & live(beam_score, fin_score).any()

  def body(carry):
    step, cache, token, beam_state, beam_score, finished = carry
    cache, hidden = kv_cache.decode_step(model, cache, token, step)
    head = _next_token_head(model, hidden)
    finished = _finish(head, beam_state, beam_score, finished, exclude, trie, s)
    parent, token, beam_state, beam_score = _select(head, beam_state, beam_score, trie,
                                                    max(1, s.branch), s)
    cache = kv_cache.reorder_rows(cache, parent)
    return step + 1, cache, token, beam_state, beam_score, finished

  carry = (jnp.int32(0), cache, token, beam_state, beam_score, finished)
  steps, *_, (fin_entity, fin_score) = jax.lax.while_loop(cond, body, carry)
  return fin_entity, fin_score, steps


# One cache for all searchers: equal model structure and statics share a compilation.
_search_jit = jax.jit(_search, static_argnums=(0, 1))


def _round_width(n: int) -> int:
  """Gather width for n children: the next power of two (fewer distinct compilations)."""
  return 1 << max(0, n - 1).bit_length()


class BeamSearch:
  """Constrained beam search over one trie with one model, compiled once per shape.

  Args:
    model: a Prix-LM `Encoder` with its MLM head (the LM head).
    trie: candidate entity names (`trie.eos_id` is the [EOS] token).
    num_beams: K, also the length of the returned lists.
    max_decode_len: object tokens incl. [EOS] the cache holds; default
      `trie.max_len`. Must be >= `trie.max_len`.
    mesh: optional `jax.sharding.Mesh`; queries are split over `batch_axis`,
      parameters and trie arrays are replicated. None: one device.
  """

  def __init__(self, model, trie: Trie, *, num_beams: int, max_decode_len: int | None = None,
               mesh=None, batch_axis: str = "data"):
    config = model.config
    if num_beams < 1:
      raise ValueError(f"num_beams must be >= 1, got {num_beams}")
    max_decode_len = trie.max_len if max_decode_len is None else max_decode_len
    if max_decode_len < trie.max_len:
      raise ValueError(f"max_decode_len {max_decode_len} is shorter than the longest name "
                       f"({trie.max_len} tokens with [EOS])")
    top_token = max(int(trie.child_token.max(initial=0)), trie.eos_id)
    if top_token >= config.vocab_size:
      raise ValueError(f"trie token {top_token} is outside the model vocabulary "
                       f"({config.vocab_size})")
    self.config, self.mesh, self.batch_axis = config, mesh, batch_axis
    self.static = _Static(num_beams=num_beams, max_decode_len=max_decode_len,
                          root_degree=_round_width(trie.root_degree),
                          branch=_round_width(trie.max_branch_below_root),
                          eos_id=trie.eos_id)
    self._graphdef, state = nnx.split(model)
    replicated = None if mesh is None else NamedSharding(mesh, PartitionSpec())
    self._state = state if mesh is None else jax.device_put(state, replicated)
    self._trie = DeviceTrie(*(jax.device_put(np.asarray(getattr(trie, name), np.int32), replicated)
                              for name in DeviceTrie._fields))

  def __call__(self, prefix_ids, prefix_len, exclude=None) -> SearchResult:
    """Searches B queries at once.

    Args:
      prefix_ids: [B, Tp] int, right-padded `<s> [S] Xs </s></s> [P] Xp
        </s></s> [O]` rows.
      prefix_len: [B] int, valid tokens per row.
      exclude: optional [B, X] int entity ids never to return (-1 pads).
    """
    prefix_ids, prefix_len = np.asarray(prefix_ids), np.asarray(prefix_len)
    if prefix_ids.ndim != 2 or prefix_len.shape != prefix_ids.shape[:1]:
      raise ValueError(f"prefix_ids must be [B, Tp] and prefix_len [B]; got "
                       f"{prefix_ids.shape} and {prefix_len.shape}")
    b, tp = prefix_ids.shape
    if b == 0:
      raise ValueError("empty batch")
    if prefix_len.min() < 1 or prefix_len.max() > tp:
      raise ValueError(f"prefix_len must lie in [1, {tp}]")
    if prefix_ids.min() < 0 or prefix_ids.max() >= self.config.vocab_size:
      raise ValueError(f"prefix token ids must lie in [0, {self.config.vocab_size})")
    exclude = np.full((b, 1), -1) if exclude is None else np.asarray(exclude)
    if exclude.ndim != 2 or exclude.shape[0] != b:
      raise ValueError(f"exclude must be [B={b}, X]; got {exclude.shape}")
    exclude = np.where(exclude >= 0, exclude, -1) if exclude.size else np.full((b, 1), -1)
    inputs = [prefix_ids.astype(np.int32), prefix_len.astype(np.int32), exclude.astype(np.int32)]
    if self.mesh is not None:
      n = self.mesh.shape[self.batch_axis]
      pad = -b % n
      inputs = [np.concatenate([x, np.repeat(x[-1:], pad, 0)]) for x in inputs]
      sharding = NamedSharding(self.mesh, PartitionSpec(self.batch_axis))
      inputs = [jax.device_put(x, sharding) for x in inputs]
    entities, scores, steps = jax.device_get(
        _search_jit(self._graphdef, self.static, self._state, self._trie, *inputs))
    return SearchResult(entities=entities[:b], scores=scores[:b], steps=int(steps))

