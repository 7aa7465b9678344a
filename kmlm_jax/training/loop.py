"""The train loop: init or resume, step, log, checkpoint, stop cleanly.

`train(config, workdir)` runs `config.train.steps` steps of the jitted
step of `trainer.py` (the `PretrainingTask`) on the mesh of `config.mesh`,
feeding host batches from `data.make_batches`. Every `checkpoint_every`
steps (and at the end, and on SIGTERM) it saves the state and the input
state (a few integers per input shard, `kmlm_jax.data.input`);
`resume=True` continues from the newest valid checkpoint (`checkpointing`:
checksums verified, corrupt ones moved aside, one saved by another model is a
config error) and reopens the input at that state in constant time, so the
result is bit-identical to an uninterrupted run. A resume refuses a changed
learning-rate schedule unless `allow_schedule_change`, and summary.json keeps
the history of every run before. A non-finite loss, gradient or update stops
the run with `NonFiniteLoss` before anything non-finite is saved; a failed
save stops it with `WriteError`. Metrics go to TensorBoard under WORKDIR/tb
and to a console progress bar (which counts completed steps and says when
the step is compiling).

Outputs in WORKDIR: checkpoints/, tb/, model/ (the final parameters as a
kmlm-jax model checkpoint, for `kmlm-jax convert --from WORKDIR/model`),
summary.json.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import signal
import time
from pathlib import Path
from typing import Callable, Iterator

import jax
import numpy as np
import psutil
from jax.experimental import multihost_utils

from kmlm_jax import sharding
from kmlm_jax.config import ExperimentConfig
from kmlm_jax.errors import InputError, NonFiniteLoss
from kmlm_jax.training import checkpointing, flops
from kmlm_jax.training import data as data_lib
from kmlm_jax.training.losses import TERM_NAMES
from kmlm_jax.training.pretraining import PretrainingTask
from kmlm_jax.training.trainer import Trainer, make_trainer, to_host

log = logging.getLogger("kmlm_jax.training")


class WorkdirError(InputError):
  """A work directory that does not fit the run (checkpoints present without --resume)."""


def schedule_settings(config: ExperimentConfig) -> dict:
  """The settings that fix the learning rate at each step (saved in every checkpoint)."""
  t = config.train
  return {"train.steps": t.steps, "train.learning_rate": t.learning_rate,
          "train.warmup_steps": t.warmup_steps}


def _meta_checker(config: ExperimentConfig, allow_schedule_change: bool):
  """`check_meta(step, meta)` of `Checkpointer.restore_latest`: another architecture is a
  config error; another schedule too, unless `allow_schedule_change`."""
  model = json.loads(json.dumps(config.model.architecture()))  # as saved: JSON values
  model = {f"model.{k}": v for k, v in model.items()}
  schedule = schedule_settings(config)

  def check(step: int, meta: dict) -> None:
    saved_model = {f"model.{k}": v for k, v in meta.get("model", {}).items()}
    diff = _differences(saved_model, model)
    if diff:
      raise checkpointing.CheckpointMismatch(
          f"the checkpoint at step {step} was saved with another model: {diff}; resume with "
          "its settings, or use another --workdir")
    diff = _differences(meta.get("schedule", {}), schedule)
    if diff and not allow_schedule_change:
      raise InputError(
          f"--resume would change the learning-rate schedule of the checkpoint at step {step}: "
          f"{diff}; pass --allow-schedule-change to accept it, or resume with its settings")
    if diff:
      log.warning("learning-rate schedule changed on resume (--allow-schedule-change): %s",
                  diff)

  return check


def _differences(saved: dict, ours: dict) -> str:
  return ", ".join(f"{k}={v!r} (this run: {ours.get(k)!r})" for k, v in saved.items()
                   if ours.get(k) != v)


def _check_finite(records) -> None:
  for step, m, _ in records:
    if not bool(m["finite"]):
      raise NonFiniteLoss(
          f"step {step}: the loss, gradient or update is not finite (loss={float(m['loss'])}, "
          f"grad_norm={float(m['grad_norm'])}); stopped without applying the update. The "
          "checkpoints saved before are intact; check train.learning_rate and the data.")


def _scalars(m, lr, tokens_per_s, tflops_per_device, mfu) -> dict:
  out = {"loss": float(m["loss"]), "grad_norm": float(m["grad_norm"]), "learning_rate": lr,
         "tokens_per_s": tokens_per_s, "tflops_per_device": tflops_per_device}
  if mfu is not None:
    out["mfu"] = mfu
  for i, name in enumerate(TERM_NAMES):
    if float(m["count"][i]) > 0:
      out[f"{name}/loss"] = float(m["term_loss"][i])
      out[f"{name}/accuracy"] = float(m["term_accuracy"][i])
  return out


def load_init_params(config: ExperimentConfig) -> dict | None:
  """The pure-dict params of `config.init_from`, or None for a random start. The
  checkpoint fixes the architecture; the run's settings (dtype, remat, scan_layers,
  dropout) apply to any checkpoint."""
  if not config.init_from:
    return None
  from kmlm_jax import model_checkpoint as mc
  model_config, params, _ = mc.load_model_checkpoint(config.init_from)
  theirs, ours = model_config.architecture(), config.model.architecture()
  if theirs != ours:
    diff = ", ".join(f"{k}={theirs[k]!r} (run: {ours[k]!r})" for k in theirs
                     if theirs[k] != ours[k])
    raise WorkdirError(f"init_from {config.init_from}: its architecture differs from "
                       f"model's: {diff}")
  return mc.model_params(mc.build_model(config.model, params))  # checks names and shapes


def pretraining_trainer(config: ExperimentConfig, devices=None) -> Trainer:
  """The jitted, sharded pretraining step of `config` (checked before compiling)."""
  partitioner = sharding.Partitioner.from_config(config.mesh, devices)
  partitioner.check_batch(config.data.batch_size, "data.batch_size",
                          config.train.grad_accum_steps)
  return make_trainer(PretrainingTask(config), partitioner, config.train.optimizer(),
                      grad_accum_steps=config.train.grad_accum_steps, seed=config.train.seed)


def train(config: ExperimentConfig, workdir: Path | str, *, resume: bool = False,
          allow_schedule_change: bool = False, progress: bool = True,
          batch_source: Callable[[int], Iterator[dict]] | None = None) -> dict:
  """Runs training; returns a summary dict (also written to WORKDIR/summary.json).

  `batch_source(start_position)` replaces the configured input (tests).
  """
  workdir = Path(workdir)
  ckpt = checkpointing.Checkpointer(workdir / "checkpoints", config.train.keep_checkpoints,
                                    config.train.async_checkpointing)
  try:
    trainer, state, input_state = _start(config, ckpt, resume, allow_schedule_change)
    batches = _open_batches(config, input_state, batch_source)
  except BaseException:
    ckpt.close(raise_errors=False)
    raise
  first_step = int(state.step)

  writer = None
  if jax.process_index() == 0:
    from tensorboardX import SummaryWriter
    writer = SummaryWriter(str(workdir / "tb"))
    (workdir / "config.json").write_text(json.dumps(dataclasses.asdict(config), indent=1))

  stop = {"signal": None}
  previous = signal.signal(signal.SIGTERM, lambda signum, frame: stop.update(signal=signum))
  step_flops = flops.train_flops_per_step(config.model, config.data.batch_size,
                                          config.data.seq_length, config.data.max_predictions)
  peak = flops.peak_flops(jax.devices()[0].device_kind, config.train.peak_flops_per_device)
  history = _previous_history(workdir, first_step)
  pending = []
  bar = None
  if progress and jax.process_index() == 0:
    from tqdm.auto import tqdm
    bar = tqdm(total=config.train.steps, initial=first_step, desc=config.name, unit="step")
  t_last, step_last = time.perf_counter(), first_step
  status = "completed"
  startup_s = None

  def flush(step):
    nonlocal pending, t_last, step_last
    records = jax.device_get(pending)  # (step, metrics, tokens) of each step since the last
    pending = []
    _check_finite(records)
    elapsed = time.perf_counter() - t_last
    steps = max(step - step_last, 1)
    t_last, step_last = time.perf_counter(), step
    tokens = sum(r[2] for r in records)
    per_device = step_flops * steps / elapsed / jax.device_count()
    for s, m, _ in records:
      scalars = _scalars(m, float(trainer.schedule(s - 1)), tokens / elapsed,
                         per_device / 1e12, per_device / peak if peak else None)
      history.append({"step": s, **scalars})
      if writer is not None:
        for k, v in scalars.items():
          writer.add_scalar(k, v, s)
    if bar is not None and records:
      bar.update(step - bar.n)
      last = history[-1]
      bar.set_postfix({k: f"{last[k]:.3g}" for k in ("loss", "mlm/loss", "knowledge/loss",
                                                      "reasoning/loss") if k in last})

  failed = True
  try:
    in_flight = None  # the loss of the step before, to count completed steps
    for step in range(first_step + 1, config.train.steps + 1):
      host = next(batches)
      tokens = int((host["segment_ids"] > 0).sum()) * jax.process_count()
      if step == first_step + 1:
        _say_compiling(bar, config.name)
      state, metrics = trainer.step(state, host)
      pending.append((step, metrics, tokens))
      if step == first_step + 1:  # start-up cost: process start to the first step done
        t0 = time.perf_counter()
        jax.block_until_ready(metrics)
        startup_s = time.time() - psutil.Process().create_time()
        _say_compiled(bar, config.name, step, time.perf_counter() - t0)
      elif bar is not None:  # steps run asynchronously: the bar counts the completed ones
        jax.block_until_ready(in_flight)
        bar.update(step - 1 - bar.n)
      in_flight = metrics["loss"]
      last = step == config.train.steps or stop["signal"]
      save = last or step % config.train.checkpoint_every == 0
      if save or step % config.train.log_every == 0:
        flush(step)  # also before saving: never save a state that followed a non-finite step
      if save:
        ckpt.save(step, state, {"input": batches.state(), "step": step, "config": config.name,
                                "model": config.model.architecture(),
                                "schedule": schedule_settings(config)})
      if config.train.eval_every and step % config.train.eval_every == 0:
        _periodic_eval(trainer, config, state, writer, step)
      if stop["signal"]:
        status = "preempted"
        log.warning("SIGTERM at step %d: saved a checkpoint, exiting", step)
        break
    failed = False
  finally:
    signal.signal(signal.SIGTERM, previous)
    batches.close()
    if bar is not None:
      bar.close()
    if writer is not None:
      writer.close()
    ckpt.close(raise_errors=not failed)  # a failed last save raises here

  if status == "completed":
    params = to_host(state.params) if jax.process_count() == 1 else \
        multihost_utils.process_allgather(state.params, tiled=True)
    if jax.process_index() == 0:
      _export_model(config, params, workdir / "model")
  summary = {"status": status, "steps": int(state.step), "first_step": first_step,
             "seconds_to_first_step": startup_s, "history": history, "workdir": str(workdir)}
  if jax.process_index() == 0:
    (workdir / "summary.json").write_text(json.dumps(summary, indent=1))
  return summary


def _start(config: ExperimentConfig, ckpt: checkpointing.Checkpointer, resume: bool,
           allow_schedule_change: bool):
  """(trainer, state, input state): a fresh state, or the newest valid checkpoint's."""
  if ckpt.steps() and not resume:
    raise WorkdirError(f"{ckpt.directory.parent} already holds checkpoints (steps "
                       f"{ckpt.steps()}); pass --resume to continue, or use another --workdir")
  trainer = pretraining_trainer(config)
  restored = None
  if resume:
    shapes = jax.eval_shape(trainer.init_state)
    restored = ckpt.restore_latest(checkpointing.abstract_like(shapes, trainer.state_shardings),
                                   _meta_checker(config, allow_schedule_change))
  if restored is None:
    if resume:
      log.info("--resume: %s holds no checkpoint; starting from step 0", ckpt.directory)
    log.info("initialising the train state")
    return trainer, trainer.init_state(load_init_params(config)), None
  state, meta = restored
  log.info("resumed from step %d (input position %s)", int(state.step),
           _describe_input(meta.get("input")))
  return trainer, state, meta.get("input")


def _describe_input(state: dict | None) -> str:
  """The input position of a checkpoint, in short: batches consumed, or per shard
  (block, rows taken)."""
  if not state:
    return "0"
  if "position" in state:
    return str(state["position"])
  blocks = state.get("blocks") or []
  shown = ", ".join(f"{b}:{r}" for b, r in blocks[:4]) + (", ..." if len(blocks) > 4 else "")
  return f"block:rows per shard {shown}" if blocks else json.dumps(state)[:200]


def _previous_history(workdir: Path, first_step: int) -> list:
  """The history of the runs before a resume from `first_step` (WORKDIR/summary.json)."""
  path = workdir / "summary.json"
  if not first_step or not path.exists():
    return []
  try:
    history = json.loads(path.read_text())["history"]
    return [h for h in history if int(h["step"]) <= first_step]
  except (OSError, ValueError, KeyError, TypeError) as e:
    log.warning("%s cannot be read (%s); the new summary holds only this run's history",
                path, e)
    return []


def _say_compiling(bar, name: str) -> None:
  log.info("compiling the train step (the first step waits for it)")
  if bar is not None:
    bar.set_description(f"{name} (compiling)")


def _say_compiled(bar, name: str, step: int, seconds: float) -> None:
  log.info("compiled the train step and ran step %d in %.1f s", step, seconds)
  if bar is not None:
    bar.set_description(name)
    bar.update(step - bar.n)


class _External:
  """A test's `batch_source(position)`, its state the number of batches consumed."""

  def __init__(self, source, position: int):
    self._it, self.position = source(position), position

  def __next__(self):
    self.position += 1
    return next(self._it)

  def state(self) -> dict:
    return {"kind": "external", "position": self.position}

  def close(self) -> None:
    pass


def _open_batches(config: ExperimentConfig, input_state: dict | None, batch_source):
  if batch_source is not None:
    return _External(batch_source, int((input_state or {}).get("position", 0)))
  spec = None
  if config.data.mixture != "synthetic":
    if jax.process_index() == 0:
      data_lib.prepare_input(config.data)  # builds the token cache once
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices("kmlm_jax token cache")
    spec = data_lib.prepare_input(config.data, build=False)
  return data_lib.make_batches(config.data, config.model.vocab_size, jax.process_index(),
                               jax.process_count(), input_state, spec)


def _periodic_eval(trainer, config, state, writer, step) -> None:
  """MLM loss and accuracy per loss term on fixed batches (seed + 1) of the training mixture."""
  batches = data_lib.make_validation_batches(config.data, config.model.vocab_size,
                                             jax.process_index(), jax.process_count(),
                                             config.train.eval_batches)
  totals = np.zeros((2, len(TERM_NAMES)))
  counts = np.zeros(len(TERM_NAMES))
  for batch in batches:
    m = jax.device_get(trainer.evaluate(state.params, batch))
    totals += np.stack([m["term_loss"], m["term_accuracy"]]) * m["count"]
    counts += m["count"]
  if writer is not None:
    for i, name in enumerate(TERM_NAMES):
      if counts[i]:
        writer.add_scalar(f"eval/{name}/loss", totals[0, i] / counts[i], step)
        writer.add_scalar(f"eval/{name}/accuracy", totals[1, i] / counts[i], step)


def _export_model(config: ExperimentConfig, params: dict, target: Path) -> None:
  from kmlm_jax import model_checkpoint as mc
  from kmlm_jax.text.vocab import default_vocab_path
  vocab = config.data.vocab or default_vocab_path()
  tokenizer_dir = Path(vocab).parent if Path(vocab).name == "tokenizer.json" else (
      Path(vocab) if Path(vocab).is_dir() else None)
  mc.save_model_checkpoint(target, config.model, jax.tree.map(np.asarray, params),
                           metadata={"trained": config.name}, tokenizer_dir=tokenizer_dir,
                           overwrite=True)
