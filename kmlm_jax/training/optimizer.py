"""The optimizer of every trainer (KMLM A.1): AdamW, or Adafactor, with linear warm-up and
linear decay and global-norm clipping.

`opt_type="adamw"` is optax's AdamW; `mu_dtype="bfloat16"` stores its first moment in
bf16 (half of its memory; the second moment stays fp32). `opt_type="adafactor"` is
optax's Adafactor (factored second moment of matrices with both sides >= 128, no first
moment, update clipped to RMS 1) whose `learning_rate` is absolute as AdamW's (no
parameter-scale multiplication), so the same schedule applies. Both clip the gradient's
global norm first and decay the weights of matrices only, decoupled and scaled by the
learning rate.

`RestartsConfig` (an `OptimizerConfig`) is the knowledge adapters' original optimizer
(yifan-h/Multilingual_Space `src/tasks.py`): transformers'
`get_cosine_with_hard_restarts_schedule_with_warmup` shape (linear warm-up from 0, then
`cycles` cosine decays from the peak to 0, each restarting at the peak), counted in
optimizer steps of the whole phase: a state that makes every `stride`-th of them (two
adapters alternating on one schedule) reads the schedule at `stride * count + offset`.
`decay_all` decays every trained parameter, biases included, as the original's AdamW
over all parameters does (the default decays matrices only).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import optax

from kmlm_jax.config import OptimizerConfig


COSINE_RESTARTS = "cosine_restarts"


@dataclasses.dataclass(frozen=True)
class RestartsConfig(OptimizerConfig):
  """AdamW with warm-up and cosine hard restarts (see the module docstring): `steps` and
  `warmup_steps` count the phase's optimizer steps; `cycles` cosine decays after the
  warm-up; this state reads the schedule at `stride * count + offset`."""

  schedule: str = COSINE_RESTARTS
  cycles: int = 1
  stride: int = 1
  offset: int = 0
  decay_all: bool = False


def cosine_restarts_schedule(peak: float, warmup: int, steps: int, cycles: int,
                             stride: int = 1, offset: int = 0) -> optax.Schedule:
  """Step g = stride * count + offset: peak * g / warmup during the warm-up, then
  peak * (1 + cos(pi * frac(cycles * progress))) / 2 with progress = (g - warmup) /
  (steps - warmup), and 0 from progress 1 on."""
  def schedule(count):
    g = (jnp.asarray(count, jnp.float32) * stride + offset)
    rising = g / max(1, warmup)
    progress = (g - warmup) / max(1, steps - warmup)
    phase = jnp.mod(cycles * progress, 1.0)
    falling = jnp.where(progress >= 1.0, 0.0, 0.5 * (1.0 + jnp.cos(math.pi * phase)))
    return peak * jnp.where(g < warmup, rising, falling)

  return schedule


def learning_rate_schedule(config: OptimizerConfig) -> optax.Schedule:
  """0 -> peak over `warmup_steps`, then linearly to 0 at `steps` (or constant, or the
  cosine hard restarts of a `RestartsConfig`)."""
  if config.schedule == COSINE_RESTARTS:
    return cosine_restarts_schedule(config.learning_rate, config.warmup_steps, config.steps,
                                    config.cycles, config.stride, config.offset)
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
                     mask=None if getattr(config, "decay_all", False) else _decay_mask)


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
