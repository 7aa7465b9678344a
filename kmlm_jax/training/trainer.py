"""One trainer for every objective: the `Task` contract and the jitted, sharded step.

A `Task` (t5x's BaseModel) declares one training objective: its parameters
(a tree of `nnx.Variable`s carrying logical axes, so the `Partitioner` can
shard them), `loss_fn`, which parameters train, and how a whole batch
normalises the loss. KMLM / Prix-LM pretraining, the fine-tuning heads, the
knowledge adapters and the KG embeddings all implement it; `make_trainer`
turns any of them, a `Partitioner` and an `OptimizerConfig` into the one
jitted step:

- exact gradient accumulation over `grad_accum_steps` micro-batches (a
  `lax.scan`): `loss_fn` returns sums normalised by the whole batch's
  `context`, so the micro-batches' results add up to one step on the batch;
- freezing through the optimizer: gradients, optimizer moments and updates
  exist only for the trainable parameters (`Task.trainable`);
- the non-finite guard: a step whose loss, gradient or update is not finite
  leaves the state unchanged and reports `finite = False` (callers stop the run);
- the state is donated, parameters and moments stay sharded by their
  logical axes, metrics come back replicated.

`TrainState` is a plain pytree: `params` (nested dict of fp32 arrays),
`opt_state` (optax, over the trainable parameters), `step` (int32) and `rng`
(the step's key is `fold_in(rng, step)`, so a resumed run draws the same
dropout masks and negatives).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx, traverse_util

from kmlm_jax.config import OptimizerConfig
from kmlm_jax.sharding import Partitioner
from kmlm_jax.training.optimizer import learning_rate_schedule, make_optimizer


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class TrainState:
  params: Any
  opt_state: Any
  step: jax.Array
  rng: jax.Array


class Task:
  """What one training objective declares (override the methods you need)."""

  #: micro-batch results add up exactly to the batch's (False: in-batch negatives)
  accumulates: bool = True

  def abstract_params(self) -> Any:
    """The parameter tree (abstract or concrete) of `nnx.Variable`s with their
    `out_sharding` logical axes; plain leaves are replicated."""
    raise NotImplementedError

  def init_params(self) -> dict:
    """A fresh nested dict of fp32 parameters (traced under `jax.jit`)."""
    raise NotImplementedError

  def context(self, batch: dict) -> Any:
    """Whole-batch normalisers handed to every micro-batch's `loss_fn`."""
    return None

  def loss_fn(self, params: dict, batch: dict, rng, context) -> tuple[jax.Array, dict]:
    """(loss, metrics) of (part of) a batch; `rng` is None in evaluation."""
    raise NotImplementedError

  def report(self, metrics: dict, context) -> dict:
    """Derived metrics (means from sums) of a whole batch."""
    return metrics

  def trainable(self, path: tuple[str, ...]) -> bool:
    """Whether the parameter at `path` (its keys in the nested dict) trains."""
    return True

  def constrain_update(self, new: dict, old: dict, batch: dict) -> dict:
    """The trainable parameters after an update (e.g. only one adapter's slice moves)."""
    return new


def split_params(params: dict, trainable: Callable) -> tuple[dict, dict]:
  """(trainable, frozen) nested dicts of `params`."""
  flat = traverse_util.flatten_dict(params)
  train = {k: v for k, v in flat.items() if trainable(k)}
  frozen = {k: v for k, v in flat.items() if not trainable(k)}
  return traverse_util.unflatten_dict(train), traverse_util.unflatten_dict(frozen)


def merge_params(*parts: dict) -> dict:
  return traverse_util.unflatten_dict(
      {k: v for part in parts for k, v in traverse_util.flatten_dict(part).items()})


def abstract_arrays(tree: Any) -> Any:
  """fp32 ShapeDtypeStructs of a parameter tree (Variables unwrapped)."""
  if isinstance(tree, nnx.State):
    tree = nnx.to_pure_dict(tree)
  return jax.tree.map(lambda v: jax.ShapeDtypeStruct(np.shape(v), jnp.float32), tree,
                      is_leaf=lambda x: isinstance(x, nnx.Variable))


@dataclasses.dataclass
class Trainer:
  """The compiled pieces of one objective on one mesh."""

  task: Task
  partitioner: Partitioner
  tx: optax.GradientTransformation
  schedule: Callable
  state_shardings: TrainState
  step_fn: Callable  # (state, global batch) -> (state, metrics)
  eval_fn: Callable  # (params, global batch) -> metrics
  seed: int

  def init_state(self, params: dict | None = None) -> TrainState:
    """A fresh state on the mesh from `params` (nested dict) or the task's init."""
    task, tx = self.task, self.tx

    def init(params):
      train, _ = split_params(params, task.trainable)
      return TrainState(params, tx.init(train), jnp.zeros((), jnp.int32),
                        jax.random.PRNGKey(self.seed + 1))

    if params is None:
      return jax.jit(lambda: init(task.init_params()), out_shardings=self.state_shardings)()
    params = jax.device_put(jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), params),
                            self.state_shardings.params)
    return jax.jit(init, out_shardings=self.state_shardings)(params)

  def abstract_state(self) -> TrainState:
    """The state as ShapeDtypeStructs carrying its shardings (compile and restore targets)."""
    return jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
                        jax.eval_shape(self.init_state), self.state_shardings)

  def step(self, state: TrainState, host_batch: dict) -> tuple[TrainState, dict]:
    return self.step_fn(state, self.partitioner.put_batch(host_batch))

  def evaluate(self, params: dict, host_batch: dict) -> dict:
    return self.eval_fn(params, self.partitioner.put_batch(host_batch))


def optimizer_shardings(tx: optax.GradientTransformation, abstract: Any, shardings: Any,
                        replicated) -> Any:
  """Shardings of `tx`'s state over parameters `abstract`: a moment shaped like its
  parameter is sharded like it; anything else (counts, Adafactor's factored row and
  column statistics) is replicated."""
  return optax.tree_map_params(
      tx, lambda leaf, s, p: s if tuple(leaf.shape) == tuple(p.shape) else replicated,
      jax.eval_shape(tx.init, abstract), shardings, abstract,
      transform_non_params=lambda _: replicated)


def make_trainer(task: Task, partitioner: Partitioner, optimizer: OptimizerConfig, *,
                 grad_accum_steps: int = 1, seed: int = 0) -> Trainer:
  """The jitted train and eval steps of `task` on `partitioner`'s mesh."""
  if grad_accum_steps > 1 and not task.accumulates:
    raise ValueError(f"{type(task).__name__} cannot accumulate gradients exactly "
                     "(its loss couples the rows of a batch); use grad_accum_steps=1")
  abstract = task.abstract_params()
  param_shardings = partitioner.shardings(abstract)
  train_shardings, _ = split_params(param_shardings, task.trainable)
  train_abstract, _ = split_params(abstract_arrays(abstract), task.trainable)
  tx = make_optimizer(optimizer)
  replicated = partitioner.replicated
  opt_shardings = optimizer_shardings(tx, train_abstract, train_shardings, replicated)
  state_shardings = TrainState(param_shardings, opt_shardings, replicated, replicated)
  accum = grad_accum_steps

  def step(state: TrainState, batch: dict):
    context = task.context(batch)
    rng = jax.random.fold_in(state.rng, state.step)
    train, frozen = split_params(state.params, task.trainable)
    grad_fn = jax.value_and_grad(
        lambda t, b, r: task.loss_fn(merge_params(t, frozen), b, r, context), has_aux=True)
    if accum == 1:
      (loss, metrics), grads = grad_fn(train, batch, rng)
    else:
      micro = jax.tree.map(lambda x: x.reshape(accum, x.shape[0] // accum, *x.shape[1:]), batch)

      def body(carry, xs):
        i, mb = xs
        return jax.tree.map(jnp.add, carry, grad_fn(train, mb, jax.random.fold_in(rng, i))), None

      shapes = jax.eval_shape(grad_fn, train, jax.tree.map(lambda x: x[0], micro), rng)
      ((loss, metrics), grads), _ = jax.lax.scan(body, jax.tree.map(jnp.zeros_like, shapes),
                                                 (jnp.arange(accum), micro))
    grad_norm = optax.tree.norm(grads)
    updates, opt_state = tx.update(grads, state.opt_state, train)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm) & jnp.isfinite(
        optax.tree.norm(updates))
    new_train = task.constrain_update(optax.apply_updates(train, updates), train, batch)
    keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)
    params = merge_params(keep(new_train, train), frozen)
    new_state = TrainState(params, keep(opt_state, state.opt_state), state.step + 1, state.rng)
    return new_state, {**task.report(metrics, context), "loss": loss, "grad_norm": grad_norm,
                       "finite": finite}

  def evaluate(params, batch):
    context = task.context(batch)
    loss, metrics = task.loss_fn(params, batch, None, context)
    return {**task.report(metrics, context), "loss": loss}

  step_fn = partitioner.jit(step, out_shardings=(state_shardings, replicated),
                            donate_argnums=(0,))
  eval_fn = partitioner.jit(evaluate, out_shardings=replicated)
  return Trainer(task, partitioner, tx, learning_rate_schedule(optimizer), state_shardings,
                 step_fn, eval_fn, seed)


def to_host(tree) -> Any:
  return jax.tree.map(np.asarray, tree)
