"""Losses over gathered prediction positions."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def masked_lm_loss(logits: jax.Array, targets: jax.Array, weights: jax.Array):
  """Weighted mean cross-entropy and accuracy.

  logits [B, P, V] fp32, targets [B, P] int, weights [B, P] (0 for padding
  predictions). Returns (loss, accuracy, weight sum); with no weight the loss
  is 0, not NaN.
  """
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  nll = -jnp.take_along_axis(logp, targets[..., None].astype(jnp.int32), axis=-1)[..., 0]
  weights = weights.astype(jnp.float32)
  total = weights.sum()
  denom = jnp.maximum(total, 1.0)
  loss = (nll * weights).sum() / denom
  accuracy = ((logits.argmax(-1) == targets) * weights).sum() / denom
  return loss, accuracy, total
