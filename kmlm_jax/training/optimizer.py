"""The optimizer of every trainer (KMLM A.1): AdamW, or Adafactor, with linear warm-up and
linear decay and global-norm clipping.

`opt_type="adamw"` is optax's AdamW; `mu_dtype="bfloat16"` stores its first moment in
bf16 (half of its memory; the second moment stays fp32). `opt_type="adafactor"` is
optax's Adafactor (factored second moment of matrices with both sides >= 128, no first
moment, update clipped to RMS 1) whose `learning_rate` is absolute as AdamW's (no
parameter-scale multiplication), so the same schedule applies. Both clip the gradient's
global norm first and decay the weights of matrices only, decoupled and scaled by the
learning rate.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
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


def _adamw(config: OptimizerConfig, schedule: optax.Schedule) -> optax.GradientTransformation:
  return optax.adamw(schedule, b1=config.adam_b1, b2=config.adam_b2, eps=config.adam_eps,
                     mu_dtype=jnp.dtype(config.mu_dtype), weight_decay=config.weight_decay,
                     mask=_decay_mask)


def _adafactor(config: OptimizerConfig,
               schedule: optax.Schedule) -> optax.GradientTransformation:
  # optax adds the decay after the learning rate: scale it by the schedule as AdamW does.
  decay = (lambda count: config.weight_decay * schedule(count)) if config.weight_decay else None
  return optax.adafactor(schedule, multiply_by_parameter_scale=False,
                         weight_decay_rate=decay, weight_decay_mask=_decay_mask)


def make_optimizer(config: OptimizerConfig) -> optax.GradientTransformation:
  chain = []
  if config.grad_clip_norm > 0:
    chain.append(optax.clip_by_global_norm(config.grad_clip_norm))
  make = {"adamw": _adamw, "adafactor": _adafactor}[config.opt_type]
  chain.append(make(config, learning_rate_schedule(config)))
  return optax.chain(*chain)
