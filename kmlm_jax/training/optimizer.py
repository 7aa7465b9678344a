"""AdamW with linear warm-up and linear decay, global-norm clipping (KMLM A.1)."""

from __future__ import annotations

import jax
import optax

from kmlm_jax.config import OptimizerConfig


def learning_rate_schedule(config: OptimizerConfig) -> optax.Schedule:
  """0 -> peak over `warmup_steps`, then linearly to 0 at `steps` (or constant)."""
  if config.schedule == "constant":
    return optax.constant_schedule(config.learning_rate)
  warmup = max(0, min(config.warmup_steps, config.steps))
  return optax.join_schedules(
      [optax.linear_schedule(0.0, config.learning_rate, max(warmup, 1)),
       optax.linear_schedule(config.learning_rate, 0.0, max(config.steps - warmup, 1))],
      [warmup])


def _decay_mask(params):
  """Weight decay on matrices only (not on biases, LayerNorm or embeddings' norms)."""
  return jax.tree.map(lambda p: p.ndim >= 2, params)


def make_optimizer(config: OptimizerConfig) -> optax.GradientTransformation:
  chain = []
  if config.grad_clip_norm > 0:
    chain.append(optax.clip_by_global_norm(config.grad_clip_norm))
  chain.append(optax.adamw(learning_rate_schedule(config), b1=config.adam_b1, b2=config.adam_b2,
                           eps=config.adam_eps, weight_decay=config.weight_decay,
                           mask=_decay_mask))
  return optax.chain(*chain)
