"""Losses over gathered prediction positions, overall and per loss term.

Shapes: B rows, P predictions per row, V vocabulary. The loss terms are the
three KMLM losses: 0 = MLM on text (L_MLM), 1 = knowledge (L_K),
2 = reasoning (L_L), and Prix-LM's causal loss 3; the masking rules of
`kmlm_jax.data.masking` (RULE_*).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

NUM_TERMS = 4
TERM_NAMES = ("mlm", "knowledge", "reasoning", "causal")


def token_nll(logits: jax.Array, targets: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(nll [B, P] fp32, correct [B, P] bool) of fp32 logits [B, P, V]."""
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  nll = -jnp.take_along_axis(logp, targets[..., None].astype(jnp.int32), axis=-1)[..., 0]
  return nll, logits.argmax(-1) == targets


def term_counts(weights: jax.Array, terms: jax.Array) -> jax.Array:
  """[NUM_TERMS] number of loss positions of each term."""
  one_hot = jax.nn.one_hot(terms, NUM_TERMS, dtype=jnp.float32)
  return jnp.einsum("bp,bps->s", weights.astype(jnp.float32), one_hot)


def term_coefficients(alpha: float) -> jax.Array:
  """L = L_MLM + alpha * (L_K + L_L) (+ Prix-LM's causal loss with weight 1)."""
  return jnp.asarray([1.0, alpha, alpha, 1.0], jnp.float32)


def kmlm_loss(nll: jax.Array, correct: jax.Array, weights: jax.Array, terms: jax.Array,
              counts: jax.Array, alpha: float):
  """The combined loss of (part of) a batch, and per-term sums.

  Each term's loss is its mean NLL over `counts` (its loss positions in
  the whole batch, which may be larger than this part when gradients are
  accumulated over micro-batches: the parts' losses then add up to the
  batch's). A term with no loss positions contributes 0.
  Returns (loss, {"nll_sum": [S], "correct_sum": [S]}).
  """
  one_hot = jax.nn.one_hot(terms, NUM_TERMS, dtype=jnp.float32) * weights[..., None]
  nll_sum = jnp.einsum("bp,bps->s", nll, one_hot)
  correct_sum = jnp.einsum("bp,bps->s", correct.astype(jnp.float32), one_hot)
  per_term = nll_sum / jnp.maximum(counts, 1.0)
  loss = (term_coefficients(alpha) * per_term).sum()
  return loss, {"nll_sum": nll_sum, "correct_sum": correct_sum}
