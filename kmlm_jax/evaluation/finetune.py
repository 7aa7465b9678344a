"""Jitted, sharded fine-tuning of a `TaskModel` (zero-shot cross-lingual protocol).

Fine-tune on English training data, keep the parameters that score best on
the English dev set (checked every `eval_every` steps), then test on every
language. The step is a pure function of (params, optimizer state, batch,
key) under `jax.jit` with the shardings of `kmlm_jax.sharding` (parameters
by their logical axes, batches over the batch axes), and reuses the
pretraining optimizer (`training/optimizer.py`).

Batches are dicts of numpy arrays: `input_ids` and `attention_mask`
([B, T], or [B, C, T] for multiple choice) and `labels` ([B], or [B, T]
for token classification, where -100 marks positions without a label).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Iterable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from kmlm_jax import sharding
from kmlm_jax.config import MeshConfig, TrainConfig
from kmlm_jax.models.task_heads import TaskModel
from kmlm_jax.training.optimizer import make_optimizer

IGNORE = -100


@dataclasses.dataclass(frozen=True)
class FinetuneConfig:
  steps: int = 200
  batch_size: int = 16
  learning_rate: float = 2e-5
  warmup_steps: int = 20
  weight_decay: float = 0.01
  eval_every: int = 50
  seeds: tuple[int, ...] = (0, 1, 2)
  max_length: int = 128
  mesh: MeshConfig = MeshConfig(shape=(-1, 1, 1))


def loss_and_accuracy(logits, labels):
  """Mean cross-entropy and accuracy over labels != IGNORE."""
  valid = labels != IGNORE
  safe = jnp.where(valid, labels, 0)
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), -1)
  nll = -jnp.take_along_axis(logp, safe[..., None], -1)[..., 0]
  count = jnp.maximum(valid.sum(), 1)
  correct = (logits.argmax(-1) == labels) & valid
  return (nll * valid).sum() / count, correct.sum() / count


@dataclasses.dataclass
class Finetuner:
  """Compiled train and predict functions of one TaskModel on a mesh."""

  graphdef: object
  params: dict
  opt_state: object
  train_fn: Callable
  predict_fn: Callable
  batch_sharding: Callable

  def step(self, batch: dict, key) -> dict:
    self.params, self.opt_state, metrics = self.train_fn(
        self.params, self.opt_state, self._put(batch), key)
    return metrics

  def predict(self, batch: dict) -> np.ndarray:
    return np.asarray(jax.device_get(self.predict_fn(self.params, self._put(batch))))

  def _put(self, batch):
    return {k: jax.device_put(v, self.batch_sharding(np.ndim(v))) for k, v in batch.items()}


def make_finetuner(model: TaskModel, config: FinetuneConfig, devices=None) -> Finetuner:
  mesh = sharding.make_mesh(config.mesh, devices)
  rules = config.mesh.rules
  graphdef, state = nnx.split(model, nnx.Param)
  shardings = nnx.to_pure_dict(sharding.state_shardings(state, mesh, rules))
  params = jax.device_put(nnx.to_pure_dict(state), shardings)
  tx = make_optimizer(TrainConfig(steps=config.steps, learning_rate=config.learning_rate,
                                  warmup_steps=config.warmup_steps,
                                  weight_decay=config.weight_decay))
  opt_state = tx.init(params)
  batch_sharding = lambda ndim: sharding.batch_sharding(mesh, rules, ndim)

  def loss_fn(params, batch, key):
    logits = nnx.merge(graphdef, params)(batch["input_ids"], batch["attention_mask"], key)
    return loss_and_accuracy(logits, batch["labels"])

  def train(params, opt_state, batch, key):
    (loss, acc), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, batch, key)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, {"loss": loss, "accuracy": acc}

  def predict(params, batch):
    return nnx.merge(graphdef, params)(batch["input_ids"], batch["attention_mask"])

  def in_mesh(fn):
    def call(*args):
      with sharding.activation_sharding(mesh, rules):
        return fn(*args)
    return call

  return Finetuner(graphdef, params, opt_state, in_mesh(jax.jit(train)), in_mesh(jax.jit(predict)),
                   batch_sharding)


def batches(examples: Sequence[dict], batch_size: int, seed: int | None, pad: dict) -> Iterable[dict]:
  """Stacked batches of examples (shuffled with `seed`, in order when None).

  The last batch is padded with copies whose labels are IGNORE, so shapes
  stay static.
  """
  order = np.arange(len(examples))
  if seed is not None:
    order = np.random.default_rng(seed).permutation(order)
  for lo in range(0, len(order), batch_size):
    chunk = [examples[i] for i in order[lo:lo + batch_size]]
    filler = {**chunk[-1], "labels": np.full_like(np.asarray(chunk[-1]["labels"]), IGNORE)}
    chunk += [filler] * (batch_size - len(chunk))
    yield {k: np.stack([np.asarray(e[k]) for e in chunk]) for k in pad}


def evaluate(tuner: Finetuner, examples: Sequence[dict], batch_size: int, keys) -> np.ndarray:
  """Predicted label per example ([N] or [N, T] for token tasks)."""
  out = []
  for batch in batches(examples, batch_size, None, keys):
    out.append(tuner.predict(batch).argmax(-1))
  return np.concatenate(out)[:len(examples)]


def finetune_and_select(model_fn: Callable[[int], TaskModel], train: Sequence[dict],
                        dev: Sequence[dict], config: FinetuneConfig, seed: int,
                        score: Callable[[np.ndarray, Sequence[dict]], float],
                        devices=None) -> tuple[Finetuner, dict]:
  """Trains with `seed`, keeps the parameters best on `dev`; returns (tuner, log)."""
  keys = tuple(train[0])
  tuner = make_finetuner(model_fn(seed), config, devices)
  best, best_params, history = -1.0, tuner.params, []
  rng = jax.random.key(seed)
  step, epoch = 0, 0
  while step < config.steps:
    for batch in batches(train, config.batch_size, seed * 1000 + epoch, keys):
      step += 1
      metrics = tuner.step(batch, jax.random.fold_in(rng, step))
      if step % config.eval_every == 0 or step == config.steps:
        dev_score = score(evaluate(tuner, dev, config.batch_size, keys), dev)
        history.append({"step": step, "loss": float(metrics["loss"]), "dev": dev_score})
        if dev_score > best:
          best, best_params = dev_score, jax.tree.map(lambda x: x, tuner.params)
      if step >= config.steps:
        break
    epoch += 1
  tuner.params = best_params
  return tuner, {"best_dev": best, "history": history}
