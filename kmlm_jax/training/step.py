"""Jitted, sharded MLM loss-and-gradient over an NNX model.

The pure function of (params state, batch) that the train loop wraps with
the optimizer update. Batches are dicts of [B, ...] arrays:
`input_ids`, `segment_ids`, `mlm_positions`, `mlm_targets`, `mlm_weights`
(optionally `positions`, `token_type_ids`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
from flax import nnx
from jax.sharding import Mesh

from kmlm_jax import sharding
from kmlm_jax.training.losses import masked_lm_loss

BATCH_KEYS = ("input_ids", "segment_ids", "mlm_positions", "mlm_targets", "mlm_weights")


def mlm_loss(graphdef, params, batch, dropout_rng=None, gathered_head: bool = True):
  """Mean MLM loss of a batch; `gathered_head=False` computes all T logits first."""
  model = nnx.merge(graphdef, params)
  out = model(batch["input_ids"], segment_ids=batch["segment_ids"],
              positions=batch.get("positions"), token_type_ids=batch.get("token_type_ids"),
              dropout_rng=dropout_rng)
  if gathered_head:
    logits = model.mlm_logits(out.hidden, batch["mlm_positions"])
  else:
    full = model.mlm_logits(out.hidden)
    logits = jax.numpy.take_along_axis(full, batch["mlm_positions"][..., None], axis=1)
  loss, accuracy, _ = masked_lm_loss(logits, batch["mlm_targets"], batch["mlm_weights"])
  return loss, accuracy


@dataclasses.dataclass
class ShardedGrad:
  """`fn(params, batch) -> ((loss, accuracy), grads)`, jitted on `mesh`."""

  fn: Callable
  params: Any  # the model's parameter state, placed on the mesh
  mesh: Mesh
  rules: Any

  def __call__(self, batch):
    with sharding.activation_sharding(self.mesh, self.rules):
      return self.fn(self.params, batch)


def sharded_value_and_grad(model: nnx.Module, mesh: Mesh, rules, batch_example: dict,
                           gathered_head: bool = True) -> ShardedGrad:
  graphdef, params = nnx.split(model, nnx.Param)
  param_shardings = sharding.state_shardings(params, mesh, rules)
  batch_shardings = {k: sharding.batch_sharding(mesh, rules, v.ndim)
                     for k, v in batch_example.items()}
  fn = jax.jit(
      jax.value_and_grad(
          lambda p, b: mlm_loss(graphdef, p, b, gathered_head=gathered_head), has_aux=True),
      in_shardings=(param_shardings, batch_shardings),
      out_shardings=(None, param_shardings))
  return ShardedGrad(fn, jax.device_put(params, param_shardings), mesh, rules)
