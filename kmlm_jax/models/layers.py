"""Small building blocks shared by the encoder and its heads."""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx


def param(init, rngs: nnx.Rngs, shape: Sequence[int], logical_axes: Sequence[str | None]):
  """An fp32 `nnx.Param` with its logical axis names as Flax's `out_sharding` metadata
  (resolved against a mesh by `kmlm_jax.sharding`, not eagerly)."""
  if len(shape) != len(logical_axes):
    raise ValueError(f"shape {tuple(shape)} and logical axes {tuple(logical_axes)} differ in rank")
  return nnx.Param(init(rngs.params(), tuple(shape), jnp.float32),
                   out_sharding=tuple(logical_axes), eager_sharding=False)


def layer_norm(x, scale, bias, eps: float):
  """LayerNorm over the last axis, computed in fp32; returns fp32."""
  x = x.astype(jnp.float32)
  mean = x.mean(-1, keepdims=True)
  var = jnp.square(x - mean).mean(-1, keepdims=True)
  return (x - mean) * jax.lax.rsqrt(var + eps) * scale + bias


def dropout(x, rate: float, rng):
  """Inverted dropout; identity when `rng` is None or the rate is 0."""
  if rng is None or rate == 0.0:
    return x
  keep = jax.random.bernoulli(rng, 1.0 - rate, x.shape)
  return jnp.where(keep, x / (1.0 - rate), jnp.zeros_like(x))
