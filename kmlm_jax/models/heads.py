"""Output heads: the tied masked-LM head."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from kmlm_jax.config import ModelConfig
from kmlm_jax.models.layers import layer_norm, param


class MLMHead(nnx.Module):
  """dense -> gelu -> LayerNorm -> tied decoder (word embeddings) + own bias.

  Given `positions` [B, P] it computes logits only at those P gathered
  positions per sequence (the fast training path: at T=128 and P=20 the
  vocabulary projection costs ~6x less); given None it computes all T
  (probing).
  """

  def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
    d = config.hidden_size
    self.config = config
    self.dense_kernel = param(jax.nn.initializers.normal(config.initializer_range), rngs,
                              (d, d), ("embed", None))
    self.dense_bias = param(jax.nn.initializers.zeros, rngs, (d,), (None,))
    self.norm_scale = param(jax.nn.initializers.ones, rngs, (d,), ("embed",))
    self.norm_bias = param(jax.nn.initializers.zeros, rngs, (d,), ("embed",))
    self.bias = param(jax.nn.initializers.zeros, rngs, (config.vocab_size,), ("vocab",))

  def __call__(self, hidden, word_embeddings, positions=None):
    """Returns fp32 logits [B, P, V] (or [B, T, V] when positions is None)."""
    c = self.config
    if positions is not None:  # [B, T, D] -> [B, P, D]
      hidden = jnp.take_along_axis(hidden, positions[..., None].astype(jnp.int32), axis=1)
    h = jnp.einsum("bpd,de->bpe", hidden, self.dense_kernel[...].astype(c.dtype))
    h = jax.nn.gelu(h + self.dense_bias[...], approximate=False)
    h = layer_norm(h, self.norm_scale[...], self.norm_bias[...], c.layer_norm_eps).astype(c.dtype)
    logits = jnp.einsum("bpd,vd->bpv", h, word_embeddings.astype(c.dtype),
                        preferred_element_type=jnp.float32)
    return logits + self.bias[...]
