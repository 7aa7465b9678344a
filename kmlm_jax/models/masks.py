"""Attention masks and default position ids.

Shapes: B batch, T length. `segment_ids` is [B, T] int32 with 0 for padding
and 1, 2, ... for the packed examples of a row; a token may attend to a key
only inside its own non-zero segment.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def segment_mask(segment_ids: jax.Array) -> jax.Array:
  """[B, 1, T, T] bool: query and key are in the same non-padding segment."""
  same = segment_ids[:, :, None] == segment_ids[:, None, :]
  valid_key = (segment_ids != 0)[:, None, :]
  return (same & valid_key)[:, None]


def prefix_causal_mask(segment_ids: jax.Array, prefix_mask: jax.Array) -> jax.Array:
  """[B, 1, T, T] bool: Prix-LM mask within each segment.

  `prefix_mask` [B, T] is True on the bidirectional prefix (subject and
  predicate). Every token sees the whole prefix of its segment; an object
  token also sees the object tokens up to itself (causal).
  """
  t = segment_ids.shape[1]
  allowed = prefix_mask[:, None, :] | jnp.tril(jnp.ones((t, t), dtype=bool))  # [B, T, T]
  return segment_mask(segment_ids) & allowed[:, None]


def causal_mask(segment_ids: jax.Array) -> jax.Array:
  """[B, 1, T, T] bool: fully causal within each segment (a decoder's mask, as
  transformers' `is_decoder` models apply it): a token sees its segment up to itself."""
  t = segment_ids.shape[1]
  return segment_mask(segment_ids) & jnp.tril(jnp.ones((t, t), dtype=bool))[None, None]


def training_mask(segment_ids: jax.Array, prefix_mask: jax.Array, attention: str) -> jax.Array:
  """[B, 1, T, T] bool: the mask of packed training rows under `ModelConfig.attention`.

  A segment whose tokens are all prefix (an MLM example) is bidirectional in
  both modes. A segment with object tokens (a Prix-LM example) is
  prefix-causal under "prefix_causal" and fully causal, prefix included,
  under "causal" (the released Prix-LM, an `XLMRobertaForCausalLM`).
  """
  if attention == "prefix_causal":
    return prefix_causal_mask(segment_ids, prefix_mask)
  if attention != "causal":
    raise ValueError(f"unknown attention {attention!r} (prefix_causal or causal)")
  has_object = (segment_ids != 0) & ~prefix_mask  # [B, T]
  # [B, T]: the token's segment has an object token
  causal_segment = (segment_mask(segment_ids)[:, 0] & has_object[:, None, :]).any(-1)
  return prefix_causal_mask(segment_ids, prefix_mask & ~causal_segment)


def decoding_mask(segment_ids: jax.Array, prefix_mask: jax.Array, attention: str) -> jax.Array:
  """[B, 1, T, T] bool: the mask of Prix-LM rows being scored or decoded (every segment
  is a query, even one that has no object token yet): prefix-causal, or fully causal."""
  if attention == "causal":
    return causal_mask(segment_ids)
  if attention != "prefix_causal":
    raise ValueError(f"unknown attention {attention!r} (prefix_causal or causal)")
  return prefix_causal_mask(segment_ids, prefix_mask)


def mask_to_bias(mask: jax.Array, dtype) -> jax.Array:
  """Additive attention bias: 0 where allowed, the dtype's minimum elsewhere.

  A finite minimum (not -inf) keeps fully masked rows (padding queries) free
  of NaN, as in transformers.
  """
  return jnp.where(mask, jnp.zeros((), dtype), jnp.finfo(dtype).min)


def default_positions(segment_ids: jax.Array, offset: int, pad_position: int) -> jax.Array:
  """Position ids that restart at `offset` in every segment.

  For one unpacked right-padded row this equals transformers' RoBERTa rule
  (`cumsum(not pad) * not pad + padding_idx`) when `offset = pad + 1` and
  `pad_position = pad`, and BERT's `arange(T)` when `offset = 0`.
  """
  index = jnp.arange(segment_ids.shape[1])[None, :]
  starts = jnp.concatenate(
      [jnp.ones_like(segment_ids[:, :1], dtype=bool), segment_ids[:, 1:] != segment_ids[:, :-1]],
      axis=1)
  start_index = jax.lax.cummax(jnp.where(starts, index, 0), axis=1)
  positions = index - start_index + offset
  return jnp.where(segment_ids != 0, positions, pad_position).astype(jnp.int32)
