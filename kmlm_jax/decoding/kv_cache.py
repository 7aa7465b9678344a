"""Incremental Prix-LM decoding with a key/value cache.

Prix-LM reads a query as a bidirectional prefix (`<s> [S] Xs </s></s> [P] Xp
</s></s> [O]`) followed by causally attended object tokens. Prefix tokens
never see object tokens, so their keys and values are computed once
(`encode_prefix`); each object token then costs one position per layer
(`decode_step`): it attends to the valid prefix, to the object tokens before
it and to itself. This equals a full `Encoder.__call__` with
`prefix_causal_mask` over the same sequence (tests: 1e-5 in fp32).

Under `model.config.attention == "causal"` (the released Prix-LM, a
transformers `XLMRobertaForCausalLM`) the prefix is encoded causally too:
each prefix token sees the prefix up to itself. Object tokens attend as
above either way, so `decode_step` is the same; the cache then equals a
full causal forward (`masks.causal_mask`).

The functions read the encoder's parameters (`model.embeddings`,
`model.layers.params()`) and redo its layer maths; they work eagerly and
inside `jax.jit` (with a model from `nnx.merge`).

Shapes: L layers, B queries, R rows (hypotheses) per query, Tp prefix
length (right-padded), M object slots (`max_decode_len`), H heads, K head
dim, D hidden. The prefix part of the cache is stored once per query and
shared by its R rows.

Layout (measured on CPU, `bench/beam_search.py`): the object slots sit next
to the head dim (`[..., H, M, K]`) so that the per-row attention over them
is a batched matmul with no transposes, each layer has its own arrays (a
tuple over layers, not one stacked array), and `decode_step` unrolls its
static layer loop, so that the cache is updated in place instead of being
sliced and restacked every step.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from kmlm_jax.models import masks as masks_lib
from kmlm_jax.models.encoder import (attention_output_and_mlp, compute_layer_params,
                                     project)


@dataclasses.dataclass
class KVCache:
  """Per-layer keys and values of the prefix and of the decoded object tokens."""

  prefix_k: tuple[jax.Array, ...]  # L x [B, Tp, H, K] compute dtype
  prefix_v: tuple[jax.Array, ...]  # L x [B, Tp, H, K]
  prefix_len: jax.Array  # [B] int32, valid prefix tokens of each query
  object_k: tuple[jax.Array, ...]  # L x [B, R, H, M, K]; slot m holds object token m
  object_v: tuple[jax.Array, ...]  # L x [B, R, H, M, K]

  @property
  def max_decode_len(self) -> int:
    return self.object_k[0].shape[3]

  @property
  def num_rows(self) -> int:
    return self.object_k[0].shape[1]


jax.tree_util.register_dataclass(
    KVCache, data_fields=["prefix_k", "prefix_v", "prefix_len", "object_k", "object_v"],
    meta_fields=[])


def _check_prefix(model, prefix_ids, prefix_len, max_decode_len: int, num_rows: int):
  c = model.config
  if prefix_ids.ndim != 2 or prefix_len.ndim != 1 or prefix_len.shape[0] != prefix_ids.shape[0]:
    raise ValueError(f"prefix_ids must be [B, Tp] and prefix_len [B]; got shapes "
                     f"{tuple(prefix_ids.shape)} and {tuple(prefix_len.shape)}")
  if max_decode_len < 1 or num_rows < 1:
    raise ValueError(f"max_decode_len ({max_decode_len}) and num_rows ({num_rows}) must be >= 1")
  last_position = prefix_ids.shape[1] + max_decode_len - 1 + c.position_offset
  if last_position >= c.max_position_embeddings:
    raise ValueError(
        f"prefix length {prefix_ids.shape[1]} + max_decode_len {max_decode_len} needs position "
        f"{last_position}, beyond max_position_embeddings {c.max_position_embeddings}")
  if not isinstance(prefix_len, jax.core.Tracer):
    lengths = jax.device_get(prefix_len)
    if lengths.size and (lengths.min() < 1 or lengths.max() > prefix_ids.shape[1]):
      raise ValueError(f"prefix_len must lie in [1, {prefix_ids.shape[1]}]; got "
                       f"min {lengths.min()}, max {lengths.max()}")


def encode_prefix(model, prefix_ids: jax.Array, prefix_len: jax.Array, *,
                  max_decode_len: int = 32, num_rows: int = 1) -> tuple[KVCache, jax.Array]:
  """Runs the prefix once (bidirectional, or causal under `attention="causal"`).

  Args:
    model: an `Encoder` (deterministic: no dropout).
    prefix_ids: [B, Tp] int, right-padded; each row ends with `[O]`.
    prefix_len: [B] int, number of valid tokens (>= 1).
    max_decode_len: M, object slots in the cache (object tokens that can be
      fed to `decode_step`).
    num_rows: R, hypotheses per query sharing the prefix (beams).

  Returns:
    (cache with empty object slots, last_hidden [B, D]: the final hidden
    state at the last prefix token, which predicts the first object token).
  """
  prefix_ids, prefix_len = jnp.asarray(prefix_ids, jnp.int32), jnp.asarray(prefix_len, jnp.int32)
  _check_prefix(model, prefix_ids, prefix_len, max_decode_len, num_rows)
  c = model.config
  b, tp = prefix_ids.shape
  valid = (jnp.arange(tp)[None, :] < prefix_len[:, None]).astype(jnp.int32)
  positions = masks_lib.default_positions(
      valid, c.position_offset, c.pad_token_id if c.flavour == "xlmr" else 0)
  in_prefix = jnp.ones_like(valid, dtype=bool)  # every token of these rows is prefix
  mask = masks_lib.decoding_mask(valid, in_prefix, c.attention)
  bias = masks_lib.mask_to_bias(mask, jnp.float32)  # [B, 1, Tp, Tp]
  x = model.embeddings(prefix_ids, positions, jnp.zeros_like(prefix_ids), None)

  def layer(x, p):
    p = compute_layer_params(c, p)
    q, k, v = (project(p, x, n) for n in ("q", "k", "v"))
    scores = jnp.einsum("bqhk,bshk->bhqs", q, k, preferred_element_type=jnp.float32)
    probs = jax.nn.softmax(scores / math.sqrt(c.head_dim) + bias, axis=-1).astype(c.dtype)
    context = jnp.einsum("bhqs,bshk->bqhk", probs, v)
    return attention_output_and_mlp(c, p, x, context), (k, v)

  x, (keys, values) = jax.lax.scan(layer, x, model.layers.params())
  last_hidden = jnp.take_along_axis(x, (prefix_len - 1)[:, None, None], axis=1)[:, 0]
  slots = jnp.zeros((b, num_rows, c.num_heads, max_decode_len, c.head_dim), keys.dtype)
  per_layer = lambda stacked: tuple(stacked[i] for i in range(c.num_layers))
  cache = KVCache(prefix_k=per_layer(keys), prefix_v=per_layer(values), prefix_len=prefix_len,
                  object_k=(slots,) * c.num_layers, object_v=(slots,) * c.num_layers)
  return cache, last_hidden


def decode_step(model, cache: KVCache, token_ids: jax.Array,
                step) -> tuple[KVCache, jax.Array]:
  """Appends object token number `step` (0-based, same for every row).

  Args:
    model: the `Encoder` that built `cache`.
    cache: from `encode_prefix` and steps 0 .. step-1.
    token_ids: [B] (cache with R = 1) or [B, R] int, the object token of
      every row at slot `step`.
    step: int or traced int32 scalar, < M. Its position id is
      `prefix_len + step + offset`.

  Returns:
    (cache with slot `step` written, hidden [B, D] or [B, R, D]: final
    hidden state of the token, which predicts the next object token).
  """
  c = model.config
  token_ids = jnp.asarray(token_ids, jnp.int32)
  squeeze = token_ids.ndim == 1
  if squeeze:
    token_ids = token_ids[:, None]
  b, r = cache.object_k[0].shape[:2]
  if token_ids.shape != (b, r):
    raise ValueError(f"token_ids must be [{b}] or [{b}, {r}] for this cache; got "
                     f"{tuple(token_ids.shape)}")
  if not isinstance(step, jax.core.Tracer) and not 0 <= int(step) < cache.max_decode_len:
    raise ValueError(f"step {int(step)} outside the cache's {cache.max_decode_len} object slots")
  step = jnp.asarray(step, jnp.int32)
  positions = jnp.broadcast_to((cache.prefix_len + step + c.position_offset)[:, None], (b, r))
  x = model.embeddings(token_ids, positions, jnp.zeros_like(token_ids), None)  # [B, R, D]

  tp, m = cache.prefix_k[0].shape[1], cache.max_decode_len
  neg = jnp.finfo(jnp.float32).min
  prefix_bias = jnp.where(jnp.arange(tp)[None, :] < cache.prefix_len[:, None], 0.0, neg)
  prefix_bias = prefix_bias[:, None, None, :]  # [B, 1, 1, Tp]
  object_bias = jnp.where(jnp.arange(m) < step, 0.0, neg)  # earlier object tokens only
  scale = math.sqrt(c.head_dim)
  f32 = dict(preferred_element_type=jnp.float32)
  params = model.layers.params()
  object_k, object_v = list(cache.object_k), list(cache.object_v)
  write = lambda slots, new: jax.lax.dynamic_update_slice_in_dim(
      slots, new[:, :, :, None].astype(slots.dtype), step, axis=3)
  for layer in range(c.num_layers):
    p = compute_layer_params(c, {name: value[layer] for name, value in params.items()})
    q, k, v = (project(p, x, n) for n in ("q", "k", "v"))  # [B, R, H, K]
    ok, ov = object_k[layer], object_v[layer]  # [B, R, H, M, K]
    s_prefix = jnp.einsum("brhk,bshk->brhs", q, cache.prefix_k[layer], **f32)
    s_object = jnp.einsum("brhk,brhmk->brhm", q, ok, **f32)
    s_self = (q * k).sum(-1, dtype=jnp.float32)[..., None]
    scores = jnp.concatenate([s_prefix / scale + prefix_bias, s_object / scale + object_bias,
                              s_self / scale], -1)
    probs = jax.nn.softmax(scores, axis=-1).astype(c.dtype)
    context = (jnp.einsum("brhs,bshk->brhk", probs[..., :tp], cache.prefix_v[layer])
               + jnp.einsum("brhm,brhmk->brhk", probs[..., tp:tp + m], ov)
               + probs[..., -1:] * v)
    x = attention_output_and_mlp(c, p, x, context)
    object_k[layer], object_v[layer] = write(ok, k), write(ov, v)
  cache = dataclasses.replace(cache, object_k=tuple(object_k), object_v=tuple(object_v))
  return cache, (x[:, 0] if squeeze else x)


def reorder_rows(cache: KVCache, parent: jax.Array) -> KVCache:
  """Row r of query b takes the object keys/values of row `parent[b, r]`.

  `parent` is [B, R] int (beam search: each new beam's parent beam).
  """
  b, r = cache.object_k[0].shape[:2]
  rows = (parent + jnp.arange(b, dtype=parent.dtype)[:, None] * r).reshape(-1)
  # A gather of whole contiguous rows, much cheaper than take_along_axis's
  # element-wise indices.
  take = lambda slots: jnp.take(slots.reshape(b * r, -1), rows, axis=0,
                                mode="clip").reshape(slots.shape)
  return dataclasses.replace(cache, object_k=tuple(map(take, cache.object_k)),
                             object_v=tuple(map(take, cache.object_v)))
