"""Train state and the jitted, sharded KMLM train step.

`TrainState` is a plain pytree: `params` (nested dict of fp32 arrays, the
NNX model's `nnx.Param` state as a pure dict), `opt_state` (optax), `step`
(int32 scalar) and `rng` (uint32 [2] key; the step's dropout key is
`fold_in(rng, step)`, so a resumed run draws the same masks).

The step is a pure function of (state, batch) under `jax.jit` with the
shardings of `sharding.py`: parameters and optimizer moments by their
logical axes, batches over the batch axes. Batch features: those of
`kmlm_jax.data.packing.ROW_KEYS` ([B, T] and [B, P] arrays). Gradients can
be accumulated over `grad_accum_steps` micro-batches (a `lax.scan`); the
result equals one step on the whole batch. A step whose loss or gradient
is not finite leaves the state unchanged and reports `finite = False`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from kmlm_jax import sharding
from kmlm_jax.config import ExperimentConfig
from kmlm_jax.models import masks
from kmlm_jax.models.encoder import Encoder
from kmlm_jax.data import packing
from kmlm_jax.training import losses
from kmlm_jax.training.optimizer import learning_rate_schedule, make_optimizer


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class TrainState:
  params: Any
  opt_state: Any
  step: jax.Array
  rng: jax.Array


def batch_shardings(mesh: Mesh, rules, batch_spec: dict) -> dict:
  return {k: sharding.batch_sharding(mesh, rules, len(shape)) for k, (shape, _) in
          batch_spec.items()}


def check_batch_fits(config: ExperimentConfig, mesh: Mesh) -> None:
  """Fails before compiling when the global batch cannot be split as asked."""
  rules = dict(config.mesh.rules)
  axes = rules.get("batch") or ()
  axes = (axes,) if isinstance(axes, str) else tuple(axes)
  ways = math.prod(mesh.shape[a] for a in axes)
  b, accum = config.data.batch_size, config.train.grad_accum_steps
  if b % accum:
    raise ValueError(f"data.batch_size={b} is not divisible by train.grad_accum_steps={accum}")
  if (b // accum) % ways:
    raise ValueError(
        f"the micro-batch of {b // accum} sequences (data.batch_size / train.grad_accum_steps) "
        f"cannot be split over the {ways} devices of mesh axes {axes} "
        f"(mesh {dict(mesh.shape)}); make data.batch_size a multiple of {ways * accum} or "
        f"change mesh.shape")
  if b % jax.process_count():
    raise ValueError(f"data.batch_size={b} is not divisible by the {jax.process_count()} hosts")


@dataclasses.dataclass
class Trainer:
  """The compiled pieces of a run: graphdef, optimizer, shardings and step functions."""

  config: ExperimentConfig
  mesh: Mesh
  graphdef: Any
  tx: optax.GradientTransformation
  state_shardings: TrainState
  batch_shardings: dict
  step_fn: Callable  # (state, batch) -> (state, metrics)
  eval_fn: Callable  # (params, batch) -> metrics
  schedule: Callable

  def model(self, params) -> Encoder:
    return nnx.merge(self.graphdef, params)


def _forward(graphdef, params, batch, dropout_rng):
  """(nll [B, P], correct [B, P]) of the gathered MLM head."""
  model = nnx.merge(graphdef, params)
  attention = masks.prefix_causal_mask(batch["segment_ids"], batch["prefix_mask"] > 0)
  out = model(batch["input_ids"], segment_ids=batch["segment_ids"],
              positions=batch.get("positions"), attention=attention, dropout_rng=dropout_rng)
  logits = model.mlm_logits(out.hidden, batch["mlm_positions"])
  return losses.token_nll(logits, batch["mlm_targets"])


def _metrics(loss, sums, counts, grads=None) -> dict:
  out = {"loss": loss, "count": counts,
         "stream_loss": sums["nll_sum"] / jnp.maximum(counts, 1.0),
         "stream_accuracy": sums["correct_sum"] / jnp.maximum(counts, 1.0)}
  if grads is not None:
    out["grad_norm"] = optax.tree.norm(grads)
  return out


def make_trainer(config: ExperimentConfig, mesh: Mesh, abstract_model: Encoder) -> Trainer:
  """Builds the jitted train and eval steps for `config` on `mesh`."""
  check_batch_fits(config, mesh)
  rules = config.mesh.rules
  graphdef, abstract_params = nnx.split(abstract_model, nnx.Param)
  param_shardings = nnx.to_pure_dict(sharding.state_shardings(abstract_params, mesh, rules))
  tx = make_optimizer(config.train)
  abstract_pure = nnx.to_pure_dict(abstract_params)
  abstract_opt = jax.eval_shape(tx.init, abstract_pure)
  replicated = NamedSharding(mesh, PartitionSpec())
  opt_shardings = optax.tree_map_params(
      tx, lambda _, s: s, abstract_opt, param_shardings,
      transform_non_params=lambda _: replicated)
  state_shardings = TrainState(param_shardings, opt_shardings, replicated, replicated)
  t, p = config.data.seq_length, config.data.max_predictions
  spec = {k: ((t,) if not k.startswith("mlm_") else (p,), None) for k in packing.ROW_KEYS}
  b_shardings = batch_shardings(mesh, rules, spec)
  alpha, accum = config.train.alpha, config.train.grad_accum_steps

  def micro_loss(params, micro, counts, rng):
    nll, correct = _forward(graphdef, params, micro, rng)
    return losses.kmlm_loss(nll, correct, micro["mlm_weights"], micro["mlm_streams"], counts,
                            alpha)

  def step(state: TrainState, batch: dict):
    counts = losses.stream_counts(batch["mlm_weights"], batch["mlm_streams"])
    rng = jax.random.fold_in(state.rng, state.step)
    grad_fn = jax.value_and_grad(micro_loss, has_aux=True)
    if accum == 1:
      (loss, sums), grads = grad_fn(state.params, batch, counts, rng)
    else:
      micro = jax.tree.map(lambda x: x.reshape(accum, x.shape[0] // accum, *x.shape[1:]), batch)

      def body(carry, xs):
        i, mb = xs
        (l, s), g = grad_fn(state.params, mb, counts, jax.random.fold_in(rng, i))
        return jax.tree.map(jnp.add, carry, (l, s, g)), None

      zeros = (jnp.zeros(()), {"nll_sum": jnp.zeros(losses.NUM_STREAMS),
                               "correct_sum": jnp.zeros(losses.NUM_STREAMS)},
               jax.tree.map(jnp.zeros_like, state.params))
      (loss, sums, grads), _ = jax.lax.scan(body, zeros, (jnp.arange(accum), micro))
    finite = jnp.isfinite(loss) & jnp.isfinite(optax.tree.norm(grads))
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)
    new_state = TrainState(keep(params, state.params), keep(opt_state, state.opt_state),
                           state.step + 1, state.rng)
    metrics = _metrics(loss, sums, counts, grads)
    metrics["finite"] = finite
    return new_state, metrics

  def evaluate(params, batch):
    counts = losses.stream_counts(batch["mlm_weights"], batch["mlm_streams"])
    nll, correct = _forward(graphdef, params, batch, None)
    loss, sums = losses.kmlm_loss(nll, correct, batch["mlm_weights"], batch["mlm_streams"],
                                  counts, alpha)
    return _metrics(loss, sums, counts)

  step_fn = _with_activation_sharding(
      jax.jit(step, in_shardings=(state_shardings, b_shardings),
              out_shardings=(state_shardings, replicated), donate_argnums=(0,)), mesh, rules)
  eval_fn = _with_activation_sharding(
      jax.jit(evaluate, in_shardings=(param_shardings, b_shardings), out_shardings=replicated),
      mesh, rules)
  return Trainer(config, mesh, graphdef, tx, state_shardings, b_shardings, step_fn, eval_fn,
                 learning_rate_schedule(config.train))


def _with_activation_sharding(fn, mesh, rules):
  """Traces (on first call) with the model's activation constraints active."""

  def call(*args):
    with sharding.activation_sharding(mesh, rules):
      return fn(*args)

  return call


def init_state(trainer: Trainer, params: dict | None = None) -> TrainState:
  """A fresh state on the mesh: `params` (pure dict) or a random initialisation."""
  config = trainer.config

  def init(params):
    if params is None:
      model = Encoder(config.model, rngs=nnx.Rngs(config.train.seed))
      params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    return TrainState(params, trainer.tx.init(params), jnp.zeros((), jnp.int32),
                      jax.random.PRNGKey(config.train.seed + 1))

  if params is None:
    return jax.jit(lambda: init(None), out_shardings=trainer.state_shardings)()
  params = jax.device_put(jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), params),
                          trainer.state_shardings.params)
  return jax.jit(init, in_shardings=(trainer.state_shardings.params,),
                 out_shardings=trainer.state_shardings)(params)


def global_batch(trainer: Trainer, host_batch: dict) -> dict:
  """This host's numpy rows -> global arrays sharded over the batch axes."""
  return {k: (jax.device_put(v, trainer.batch_shardings[k]) if jax.process_count() == 1 else
              jax.make_array_from_process_local_data(trainer.batch_shardings[k], v))
          for k, v in host_batch.items()}


def to_host(tree) -> Any:
  return jax.tree.map(np.asarray, tree)
