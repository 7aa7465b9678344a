"""Task heads on the shared encoder: multiple choice, token and sequence classification.

Shapes: B examples, C choices, T length, D hidden, N labels. Heads read the
encoder's hidden states [*, T, D] and are fp32. The sentence representation
is the first token's (`<s>` / `[CLS]`) hidden state through dense + tanh,
as transformers' RoBERTa classification head does (XLM-R has no pooler).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from kmlm_jax.config import ModelConfig
from kmlm_jax.models.encoder import Encoder
from kmlm_jax.models.layers import dropout, param


class _Sentence(nnx.Module):
  """first token -> dropout -> dense -> tanh -> dropout -> linear(N)."""

  def __init__(self, config: ModelConfig, num_outputs: int, *, rngs: nnx.Rngs):
    d, std = config.hidden_size, config.initializer_range
    normal, zeros = jax.nn.initializers.normal(std), jax.nn.initializers.zeros
    self.dense_kernel = param(normal, rngs, (d, d), ("embed", None))
    self.dense_bias = param(zeros, rngs, (d,), (None,))
    self.out_kernel = param(normal, rngs, (d, num_outputs), ("embed", None))
    self.out_bias = param(zeros, rngs, (num_outputs,), (None,))
    self.rate = config.dropout_rate

  def __call__(self, hidden, rng=None):
    """[..., T, D] -> [..., N]."""
    rngs = (None, None) if rng is None else tuple(jax.random.split(rng))
    x = dropout(hidden[..., 0, :].astype(jnp.float32), self.rate, rngs[0])
    x = jnp.tanh(x @ self.dense_kernel[...] + self.dense_bias[...])
    x = dropout(x, self.rate, rngs[1])
    return x @ self.out_kernel[...] + self.out_bias[...]


class TaskModel(nnx.Module):
  """An encoder plus one task head.

  kind: "multiple_choice" (input [B, C, T] -> scores [B, C]),
  "sequence" (input [B, T] -> logits [B, N]) or "token" (input [B, T] ->
  logits [B, T, N]).
  """

  def __init__(self, encoder: Encoder, kind: str, num_labels: int = 1, *, rngs: nnx.Rngs):
    if kind not in ("multiple_choice", "sequence", "token"):
      raise ValueError(f"unknown head kind {kind!r}")
    self.encoder, self.kind = encoder, kind
    c = encoder.config
    if kind == "token":
      normal = jax.nn.initializers.normal(c.initializer_range)
      self.token_kernel = param(normal, rngs, (c.hidden_size, num_labels), ("embed", None))
      self.token_bias = param(jax.nn.initializers.zeros, rngs, (num_labels,), (None,))
    else:
      self.head = _Sentence(c, 1 if kind == "multiple_choice" else num_labels, rngs=rngs)

  def __call__(self, input_ids, attention_mask, dropout_rng=None):
    rngs = (None, None) if dropout_rng is None else tuple(jax.random.split(dropout_rng))
    t = input_ids.shape[-1]
    hidden = self.encoder(input_ids.reshape(-1, t), attention_mask=attention_mask.reshape(-1, t),
                          dropout_rng=rngs[0]).hidden
    if self.kind == "token":
      x = dropout(hidden.astype(jnp.float32), self.encoder.config.dropout_rate, rngs[1])
      return x @ self.token_kernel[...] + self.token_bias[...]
    out = self.head(hidden, rngs[1])
    if self.kind == "multiple_choice":
      return out[..., 0].reshape(input_ids.shape[:-1])
    return out
