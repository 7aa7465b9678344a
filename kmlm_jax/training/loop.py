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
save stops it with `WriteError`. Metrics go through `metrics_writer`
(TensorBoard under WORKDIR/tb, W&B with `train.wandb_project`) and to a console
progress bar (which counts completed steps and says when the step is compiling).

Run operations: every `eval_every` steps `validation.Validator` scores the
current parameters (summary.json "validation"); `keep_best=METRIC` saves a
checkpoint at each validation and keeps the best one besides the newest
(`checkpointing.Checkpointer(best_metric=...)`), its tracker (`validation.BestTracker`)
saved in each checkpoint's meta; `early_stop_patience` ends the run with status
"early_stopped"; `export="best"` exports the best checkpoint's parameters.
`profile_steps=A,B` traces steps A..B-1 into WORKDIR/profile; `jax_cache_dir`
enables JAX's persistent compilation cache.

Outputs in WORKDIR: checkpoints/, tb/, model/ (the final or best parameters as a
kmlm-jax model checkpoint, for `kmlm-jax convert --from WORKDIR/model`; any step
exports too: `--from WORKDIR/checkpoints/STEP`, or `--from WORKDIR` for the newest),
summary.json, profile/ (with `profile_steps`).
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
from kmlm_jax.config import ExperimentConfig, ModelConfig
from kmlm_jax.errors import InputError, NonFiniteLoss
from kmlm_jax.training import checkpointing, flops, metrics_writer, validation
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


_MODEL_DEFAULTS = {f.name: f.default for f in dataclasses.fields(ModelConfig)
                   if f.default is not dataclasses.MISSING}


def _meta_checker(config: ExperimentConfig, allow_schedule_change: bool):
  """`check_meta(step, meta)` of `Checkpointer.restore_latest`: another architecture is a
  config error; another schedule too, unless `allow_schedule_change`."""
  model = json.loads(json.dumps(config.model.architecture()))  # as saved: JSON values
  model = {f"model.{k}": v for k, v in model.items()}
  schedule = schedule_settings(config)

  def check(step: int, meta: dict) -> None:
    # A field the checkpoint predates is its default (model.attention: "prefix_causal").
    saved = {**{k: v for k, v in _MODEL_DEFAULTS.items() if f"model.{k}" in model},
             **meta.get("model", {})}
    saved_model = {f"model.{k}": v for k, v in saved.items()}
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
  checkpoint fixes the architecture; the run's settings (dtype, remat_policy, scan_layers,
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
  t = config.train
  validation.check_keep_best(config)  # also checked by experiment.preflight
  if t.jax_cache_dir:
    enable_compilation_cache(t.jax_cache_dir)
  ckpt = checkpointing.Checkpointer(workdir / "checkpoints", t.keep_checkpoints,
                                    t.async_checkpointing, best_metric=t.keep_best)
  try:
    trainer, state, meta = _start(config, ckpt, resume, allow_schedule_change)
    batches = _open_batches(config, meta.get("input"), batch_source,
                            trainer.partitioner.host_share)
  except BaseException:
    ckpt.close(raise_errors=False)
    raise
  first_step = int(state.step)
  best = validation.BestTracker.from_meta(t.keep_best, meta) if t.keep_best else None
  validations = _previous(workdir, first_step, "validation")
  writer = None
  profile = _Profile(t.profile_steps, first_step, t.steps, workdir / "profile")

  stop = {"signal": None}
  previous = signal.signal(signal.SIGTERM, lambda signum, frame: stop.update(signal=signum))
  step_flops = flops.train_flops_per_step(config.model, config.data.batch_size,
                                          config.data.seq_length, config.data.max_predictions)
  peak = flops.peak_flops(jax.devices()[0].device_kind, t.peak_flops_per_device)
  history = _previous(workdir, first_step, "history")
  pending = []
  bar = None
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
      writer.write_scalars(s, scalars)
    if bar is not None and records:
      bar.update(step - bar.n)
      last = history[-1]
      bar.set_postfix({k: f"{last[k]:.3g}" for k in ("loss", "mlm/loss", "knowledge/loss",
                                                      "reasoning/loss") if k in last})

  failed = True
  final_params = None
  try:
    writer = metrics_writer.make_writer(config, workdir, resume=resume,
                                        process_index=jax.process_index())
    if jax.process_index() == 0:
      (workdir / "config.json").write_text(json.dumps(dataclasses.asdict(config), indent=1))
    validator = validation.Validator(config, trainer) if t.eval_every else None
    if progress and jax.process_index() == 0:
      from tqdm.auto import tqdm
      bar = tqdm(total=t.steps, initial=first_step, desc=config.name, unit="step")
    in_flight = None  # the loss of the step before, to count completed steps
    for step in range(first_step + 1, t.steps + 1):
      host = next(batches)
      tokens = int((host["segment_ids"] > 0).sum()) * trainer.partitioner.host_share[1]
      if step == first_step + 1:
        log.info("compiling the train step (the first step waits for it)")
        if bar is not None:
          bar.set_description(f"{config.name} (compiling)")
      profile.before(step)
      state, metrics = trainer.step(state, host)
      profile.after(step, state)
      pending.append((step, metrics, tokens))
      if step == first_step + 1:  # start-up cost: process start to the first step done
        t0 = time.perf_counter()
        jax.block_until_ready(metrics)
        startup_s = time.time() - psutil.Process().create_time()
        log.info("compiled the train step and ran step %d in %.1f s", step,
                 time.perf_counter() - t0)
        if bar is not None:
          bar.set_description(config.name)
          bar.update(step - bar.n)
      elif bar is not None:  # steps run asynchronously: the bar counts the completed ones
        jax.block_until_ready(in_flight)
        bar.update(step - 1 - bar.n)
      in_flight = metrics["loss"]
      last = step == t.steps or stop["signal"]
      validate = bool(t.eval_every) and step % t.eval_every == 0
      save = last or step % t.checkpoint_every == 0 or (validate and best is not None)
      if save or validate or step % t.log_every == 0:
        flush(step)  # also before saving: never save a state that followed a non-finite step
      results = _validate(validator, state.params, step, writer, validations, best) \
          if validate else None
      if save:
        ckpt.save(step, state, _meta(config, batches, step, best), metrics=results)
      if validate and _early_stop(best, t.early_stop_patience, step):
        status = "early_stopped"
        break
      if stop["signal"]:
        status = "preempted"
        log.warning("SIGTERM at step %d: saved a checkpoint, exiting", step)
        break
    profile.stop(state)
    if status != "preempted":
      final_params = _export_params(config, trainer, ckpt, state, best)
    failed = False
  finally:
    profile.stop(None)
    signal.signal(signal.SIGTERM, previous)
    batches.close()
    if bar is not None:
      bar.close()
    if writer is not None:
      writer.close()
    ckpt.close(raise_errors=not failed)  # a failed last save raises here

  if final_params is not None:
    params = to_host(final_params) if jax.process_count() == 1 else \
        multihost_utils.process_allgather(final_params, tiled=True)
    if jax.process_index() == 0:
      _export_model(config, params, workdir / "model")
  summary = {"status": status, "steps": int(state.step), "first_step": first_step,
             "seconds_to_first_step": startup_s, "history": history, "workdir": str(workdir)}
  if t.eval_every:
    summary["validation"] = validations
  if best is not None:
    summary["best"] = best.meta()
  if jax.process_index() == 0:
    (workdir / "summary.json").write_text(json.dumps(summary, indent=1))
  return summary


def _validate(validator, params, step: int, writer, validations: list, best) -> dict:
  """The validation results of `params` at `step`: recorded, written and ranked by `best`."""
  results = validator(params)
  validations.append({"step": step, **results})
  writer.write_scalars(step, results)
  if best is not None and best.update(step, results):
    log.info("step %d: best %s so far (%.6g)", step, best.metric, best.value)
  return results


def _early_stop(best, patience: int, step: int) -> bool:
  """Whether `patience` validations passed without a better keep-best metric."""
  if best is None or not patience or best.since_best < patience:
    return False
  log.warning("early stop at step %d: %s has not improved on %.6g (step %d) for %d "
              "validations", step, best.metric, best.value, best.step, best.since_best)
  return True


def _meta(config: ExperimentConfig, batches, step: int, best) -> dict:
  """A checkpoint's meta: input position, step, config name, model, schedule (and the
  keep-best tracker)."""
  meta = {"input": batches.state(), "step": step, "config": config.name,
          "model": config.model.architecture(), "schedule": schedule_settings(config)}
  if best is not None:
    meta["best"] = best.meta()
  return meta


def _export_params(config: ExperimentConfig, trainer: Trainer, ckpt, state, best):
  """The parameters WORKDIR/model receives: the last, or with `train.export=best` the best
  checkpoint's (the last when no validation ran)."""
  if config.train.export != "best" or best is None or best.step in (None, int(state.step)):
    if config.train.export == "best" and (best is None or best.step is None):
      log.warning("train.export=best: no validation ran; exporting the last parameters")
    return state.params
  log.info("train.export=best: exporting step %d (%s=%.6g)", best.step, best.metric,
           best.value)
  restored, _ = ckpt.restore_step(best.step, trainer.abstract_state())
  return restored.params


def enable_compilation_cache(directory: Path | str) -> None:
  """JAX's persistent compilation cache in `directory`, for every compilation (also the
  fast CPU ones); takes effect even after compilations without a cache."""
  from jax.experimental.compilation_cache import compilation_cache
  directory = str(Path(directory).expanduser().absolute())
  Path(directory).mkdir(parents=True, exist_ok=True)
  if jax.config.jax_compilation_cache_dir != directory:
    compilation_cache.reset_cache()
    jax.config.update("jax_compilation_cache_dir", directory)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)


class _Profile:
  """`train.profile_steps=A,B`: a `jax.profiler` trace of steps A..B-1 in `directory`
  (TensorBoard's profile plugin reads it). A resumed run traces what is left of them."""

  def __init__(self, steps: tuple[int, ...], first_step: int, last_step: int, directory: Path):
    self.start, self.end = (max(steps[0], first_step + 1), min(steps[1] - 1, last_step)) \
        if steps else (0, -1)
    self.directory, self.active = directory, False

  def before(self, step: int) -> None:
    if step == self.start and self.start <= self.end:
      log.info("profiling steps %d to %d into %s", self.start, self.end, self.directory)
      options = jax.profiler.ProfileOptions()
      options.python_tracer_level = 0  # Python calls (the first step's tracing) flood the trace
      jax.profiler.start_trace(str(self.directory), profiler_options=options)
      self.active = True

  def after(self, step: int, state) -> None:
    if step == self.end:
      self.stop(state)

  def stop(self, state) -> None:
    """Ends the trace (after `state` is computed; None: at once, e.g. on an error)."""
    if self.active:
      if state is not None:
        jax.block_until_ready(state)
      jax.profiler.stop_trace()
      self.active = False


def _start(config: ExperimentConfig, ckpt: checkpointing.Checkpointer, resume: bool,
           allow_schedule_change: bool):
  """(trainer, state, meta): a fresh state ({} meta), or the newest valid checkpoint's."""
  if ckpt.steps() and not resume:
    raise WorkdirError(f"{ckpt.directory.parent} already holds checkpoints (steps "
                       f"{ckpt.steps()}); pass --resume to continue, or use another --workdir")
  trainer = pretraining_trainer(config)
  restored = None
  if resume:
    restored = ckpt.restore_latest(trainer.abstract_state(),
                                   _meta_checker(config, allow_schedule_change))
  if restored is None:
    if resume:
      log.info("--resume: %s holds no checkpoint; starting from step 0", ckpt.directory)
    log.info("initialising the train state")
    return trainer, trainer.init_state(load_init_params(config)), {}
  state, meta = restored
  log.info("resumed from step %d (input position %s)", int(state.step),
           _describe_input(meta.get("input")))
  return trainer, state, meta


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


def _previous(workdir: Path, first_step: int, key: str) -> list:
  """The records under `key` ("history", "validation") of WORKDIR/summary.json up to step
  `first_step`: those of the runs before a resume from there."""
  path = workdir / "summary.json"
  if not first_step or not path.exists():
    return []
  try:
    records = json.loads(path.read_text()).get(key, [])
    return [h for h in records if int(h["step"]) <= first_step]
  except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
    log.warning("%s cannot be read (%s); the new summary holds only this run's %s",
                path, e, key)
    return []


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


def _open_batches(config: ExperimentConfig, input_state: dict | None, batch_source,
                  host_share: tuple[int, int]):
  if batch_source is not None:
    return _External(batch_source, int((input_state or {}).get("position", 0)))
  spec = None
  if config.data.mixture != "synthetic":
    if jax.process_index() == 0:
      data_lib.prepare_input(config.data)  # builds the token cache once
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices("kmlm_jax token cache")
    spec = data_lib.prepare_input(config.data, build=False)
  return data_lib.make_batches(config.data, config.model.vocab_size, *host_share, input_state,
                               spec)


def _export_model(config: ExperimentConfig, params: dict, target: Path) -> None:
  from kmlm_jax import model_checkpoint as mc
  from kmlm_jax.training.export import vocab_tokenizer_dir
  mc.save_model_checkpoint(target, config.model, jax.tree.map(np.asarray, params),
                           metadata={"trained": config.name},
                           tokenizer_dir=vocab_tokenizer_dir(config.data.vocab), overwrite=True)
