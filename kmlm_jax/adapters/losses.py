"""Pooling and the InfoNCE loss of the knowledge adapters. Shapes: B pairs, T length, D hidden."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def mean_pool(hidden: jax.Array, weights: jax.Array) -> jax.Array:
  """Weighted mean over T: hidden [B, T, D], weights [B, T] -> [B, D] fp32.

  With weights = the attention mask this is the masked mean; with all ones
  it is the original code's mean over every position, padding included.
  """
  w = weights.astype(jnp.float32)
  total = jnp.einsum("btd,bt->bd", hidden.astype(jnp.float32), w)
  return total / jnp.maximum(w.sum(-1, keepdims=True), 1e-9)


def normalize(x: jax.Array, eps: float = 1e-6) -> jax.Array:
  """Rows scaled to unit L2 norm: [N, D] -> [N, D]."""
  return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), eps)


def info_nce(left: jax.Array, right: jax.Array, keys: jax.Array, temperature: float,
             symmetric: bool = False) -> tuple[jax.Array, jax.Array]:
  """InfoNCE with cosine similarity and in-batch negatives.

  left, right [B, D]; keys [B] int: pair i's positive is right i, its
  negatives the other right sides except those with the same key (the same
  entity drawn twice is not a negative). Returns (mean loss, accuracy of
  picking right i among the candidates).
  """
  logits = normalize(left) @ normalize(right).T / temperature  # [B, B]
  b = logits.shape[0]
  clash = (keys[:, None] == keys[None, :]) & ~jnp.eye(b, dtype=bool)
  logits = jnp.where(clash, -1e9, logits)
  loss = -jnp.diagonal(jax.nn.log_softmax(logits, axis=-1)).mean()
  if symmetric:
    loss = 0.5 * (loss - jnp.diagonal(jax.nn.log_softmax(logits.T, axis=-1)).mean())
  accuracy = (logits.argmax(-1) == jnp.arange(b)).mean()
  return loss, accuracy
