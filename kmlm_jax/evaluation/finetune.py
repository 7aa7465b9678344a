"""Fine-tuning of a `TaskModel` (zero-shot cross-lingual protocol) as a `Task`.

Fine-tune on English training data, keep the parameters that score best on
the English dev set (checked every `eval_every` steps), then test on every
language. The step is `training.trainer.make_trainer`'s jitted, sharded step
(parameters by their logical axes, batches over the batch axes, the
non-finite guard) on a `FinetuneTask`; prediction is `Partitioner.jit`ted.

Batches are dicts of numpy arrays: `input_ids` and `attention_mask`
([B, T], or [B, C, T] for multiple choice) and `labels` ([B], or [B, T]
for token classification, where -100 marks positions without a label).
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Callable, Iterable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from kmlm_jax.config import MeshConfig, OptimizerConfig
from kmlm_jax.errors import NonFiniteLoss
from kmlm_jax.evaluation import progress
from kmlm_jax.experiment import ConfigError
from kmlm_jax.models.task_heads import TaskModel
from kmlm_jax.sharding import Partitioner
from kmlm_jax.training import losses
from kmlm_jax.training.trainer import Task, Trainer, TrainState, make_trainer

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

  def optimizer(self) -> OptimizerConfig:
    return OptimizerConfig(self.learning_rate, self.steps, self.warmup_steps, self.weight_decay)

  def validate(self, prefix: str = "finetune.") -> "FinetuneConfig":
    """Raises a ConfigError naming the key of the first value no run can use."""
    for name, low in (("steps", 1), ("batch_size", 1), ("eval_every", 1), ("max_length", 4),
                      ("warmup_steps", 0)):
      value = getattr(self, name)
      if not _is_int(value) or value < low:
        raise ConfigError(f"{prefix}{name}: expected an integer of at least {low}, "
                          f"got {value!r}")
    for name, strict in (("learning_rate", True), ("weight_decay", False)):
      value = getattr(self, name)
      number = isinstance(value, (int, float)) and not isinstance(value, bool)
      if not (number and (value > 0 if strict else value >= 0)):  # NaN fails both
        raise ConfigError(f"{prefix}{name}: expected a number {'>' if strict else '>='} 0, "
                          f"got {value!r}")
    if (not isinstance(self.seeds, (tuple, list)) or not self.seeds
        or not all(_is_int(s) for s in self.seeds)):
      raise ConfigError(f"{prefix}seeds: expected a non-empty tuple of integers, "
                        f"got {self.seeds!r}")
    return self


def _is_int(value) -> bool:
  return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def label_count(labels):
  return jnp.maximum((labels != IGNORE).sum(), 1)


def loss_and_accuracy(logits, labels, count=None):
  """Cross-entropy and accuracy summed over labels != IGNORE, divided by `count`
  (default: this batch's label count, i.e. the means)."""
  valid = labels != IGNORE
  nll, correct = losses.token_nll(logits, jnp.where(valid, labels, 0))
  count = label_count(labels) if count is None else count
  return (nll * valid).sum() / count, (correct & valid).sum() / count


@dataclasses.dataclass
class FinetuneTask(Task):
  """A `TaskModel`'s cross-entropy, averaged over the whole batch's labels (`context`)."""

  graphdef: nnx.GraphDef
  abstract: nnx.State  # the model's nnx.Params as ShapeDtypeStructs

  def abstract_params(self):
    return self.abstract

  def model(self, params) -> TaskModel:
    return nnx.merge(self.graphdef, params)

  def context(self, batch):
    return label_count(batch["labels"])

  def loss_fn(self, params, batch, rng, count):
    logits = self.model(params)(batch["input_ids"], batch["attention_mask"], rng)
    loss, accuracy = loss_and_accuracy(logits, batch["labels"], count)
    return loss, {"accuracy": accuracy}


@dataclasses.dataclass
class Finetuner:
  trainer: Trainer
  state: TrainState
  predict_fn: Callable

  @property
  def params(self) -> dict:
    return self.state.params

  def step(self, batch: dict) -> dict:
    self.state, metrics = self.trainer.step(self.state, batch)
    return metrics

  def predict(self, batch: dict) -> np.ndarray:
    batch = self.trainer.partitioner.put_batch(batch)
    return np.asarray(jax.device_get(self.predict_fn(self.state.params, batch)))


def make_finetuner(model: TaskModel, config: FinetuneConfig, devices=None,
                   seed: int = 0) -> Finetuner:
  """`model`'s fine-tuning step and prediction on `config.mesh` (checked before compiling);
  dropout keys derive from `seed`."""
  partitioner = Partitioner.from_config(config.mesh, devices)
  partitioner.check_batch(config.batch_size, "finetune.batch_size")
  graphdef, params = nnx.split(model, nnx.Param)
  task = FinetuneTask(graphdef, jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype),
                                             params))
  trainer = make_trainer(task, partitioner, config.optimizer(), seed=seed)

  def predict(params, batch):
    return task.model(params)(batch["input_ids"], batch["attention_mask"])

  return Finetuner(trainer, trainer.init_state(nnx.to_pure_dict(params)),
                   partitioner.jit(predict, out_shardings=partitioner.replicated))


def batches(examples: Sequence[dict], batch_size: int, seed: int | None,
            keys: Sequence[str]) -> Iterable[dict]:
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
    yield {k: np.stack([np.asarray(e[k]) for e in chunk]) for k in keys}


def evaluate(tuner: Finetuner, examples: Sequence[dict], batch_size: int, bar=None) -> np.ndarray:
  """Predicted label per example ([N] or [N, T] for token tasks); `bar` counts batches."""
  out = []
  for batch in batches(examples, batch_size, None, tuple(examples[0])):
    out.append(tuner.predict(batch).argmax(-1))
    if bar is not None:
      bar.update(1)
  return np.concatenate(out)[:len(examples)]


def _check_finite(pending: list, seed: int) -> None:
  """Raises at the first of the (step, finite flag) pairs that is False."""
  for step, finite in jax.device_get(pending):
    if not finite:
      raise NonFiniteLoss(f"fine-tuning (seed {seed}): the loss or gradient is not finite at "
                          f"step {step}; lower the learning rate or check the data")
  pending.clear()


def finetune_and_select(model_fn: Callable[[int], TaskModel], train: Sequence[dict],
                        dev: Sequence[dict], config: FinetuneConfig, seed: int,
                        score: Callable[[np.ndarray, Sequence[dict]], float],
                        devices=None, bar=None) -> tuple[Finetuner, dict]:
  """Trains with `seed`, keeps the parameters best on `dev`; returns (tuner, log).

  Raises `NonFiniteLoss` (checked at every dev evaluation) if a step diverged.
  `bar` (a progress bar) advances once per finished step.
  """
  tuner = make_finetuner(model_fn(seed), config, devices, seed)
  copy = lambda params: jax.tree.map(jnp.copy, params)  # the step donates the state
  best, best_params, history, pending = -1.0, copy(tuner.params), [], []
  step, epoch = 0, 0
  while step < config.steps:
    for batch in batches(train, config.batch_size, seed * 1000 + epoch, tuple(train[0])):
      step += 1
      metrics = tuner.step(batch)
      pending.append((step, metrics["finite"]))
      if bar is not None:  # a finished step, not a dispatched one: the bar moves steadily
        jax.block_until_ready(metrics["loss"])
        bar.update(1)
      if step % config.eval_every == 0 or step == config.steps:
        _check_finite(pending, seed)
        dev_score = score(evaluate(tuner, dev, config.batch_size), dev)
        history.append({"step": step, "loss": float(metrics["loss"]), "dev": dev_score})
        if dev_score > best:
          best, best_params = dev_score, copy(tuner.params)
      if step >= config.steps:
        break
    epoch += 1
  tuner.state = dataclasses.replace(tuner.state, params=best_params)
  return tuner, {"best_dev": best, "history": history}


def run_seeds(model_fn: Callable[[int], TaskModel], train: Sequence[dict], dev: Sequence[dict],
              tests: dict[str, Sequence[dict]], score, config: FinetuneConfig,
              devices=None, task: str = "the task") -> dict:
  """`finetune_and_select` with every seed, then `score` on each language's test examples:
  {"score": {lang: mean}, "std": {lang: std}, "per_seed": {lang: [score]}, "logs": [log]}.
  Each seed's fine-tuning and testing show a phase line and a bar (stderr), named `task`."""
  per_seed = collections.defaultdict(list)
  logs = []
  test_batches = sum(-(-len(x) // config.batch_size) for x in tests.values())
  for i, seed in enumerate(config.seeds, 1):
    what = f"{task} seed {i}/{len(config.seeds)}"
    progress.phase(f"fine-tuning {what} (seed {seed}, {config.steps} steps)")
    with progress.bar(config.steps, f"fine-tuning {what}", "step",
                      compiling="the fine-tuning step") as bar:
      tuner, log = finetune_and_select(model_fn, train, dev, config, seed, score, devices, bar)
    logs.append(log)
    progress.phase(f"testing {what} on {len(tests)} languages")
    with progress.bar(test_batches, f"testing {what}", "batch") as bar:
      for lang, examples in tests.items():
        predicted = evaluate(tuner, examples, config.batch_size, bar)
        per_seed[lang].append(score(predicted, examples))
  return {"score": {l: float(np.mean(v)) for l, v in per_seed.items()},
          "std": {l: float(np.std(v)) for l, v in per_seed.items()},
          "per_seed": dict(per_seed), "logs": logs}
