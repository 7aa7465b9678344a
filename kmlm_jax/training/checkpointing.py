"""Training checkpoints: Orbax `CheckpointManager` over the train state and the input position.

Layout: WORKDIR/checkpoints/STEP/{state,meta,checksums}. `state` holds params,
optimizer state, step and RNG key (`TrainState` as a dict); `meta` is JSON
with the input position (batches consumed), the step, the config name, the
model architecture and the learning-rate schedule; `checksums` is JSON with
the SHA-256 of `meta` and, for every array of `state`, its path, shape, dtype
and a checksum of its values computed on the host when it was saved.

With a `best_metric` (`train.keep_best`), Orbax also keeps the checkpoint whose
validation metrics (saved with it) rank best, besides the newest `keep`.

Restoring tries the newest checkpoint first:
- one whose `meta` does not fit the run (`check_meta` raises, e.g. another
  model width) or whose arrays have other paths or shapes than the run's state
  is a config error (`CheckpointMismatch`, exit 2): nothing is moved;
- one that cannot be read, or whose checksums differ (a flipped byte), is
  corrupt: it is reported with its step, moved aside to
  WORKDIR/checkpoints.corrupt/STEP (STEP.1, STEP.2, ... if that exists:
  nothing is ever deleted) and the one before is tried;
- when checkpoints exist (or only quarantined ones) but none restores, the
  run refuses to start from step 0 (`NoCheckpointRestored`, one line listing
  what was tried).
Saves can be asynchronous: a checkpoint becomes visible only once Orbax has
finalised it, so a process killed mid-save leaves the previous one as the
latest. A state with a non-finite value is never saved (`NonFiniteLoss`); a
save that fails (no space, no permission) raises `WriteError` (exit 1) and
removes its half-written directory, leaving the checkpoints before intact.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils
from orbax.checkpoint import checkpoint_managers as preservation

from kmlm_jax import fileio
from kmlm_jax.errors import InputError, NonFiniteLoss, WriteError
from kmlm_jax.model_checkpoint import quiet_orbax_failures
from kmlm_jax.training.trainer import TrainState

log = logging.getLogger("kmlm_jax.training")

_CHUNK = 1 << 20  # elements per checksum block (bounded host memory)


class CheckpointMismatch(InputError):
  """A checkpoint saved by a run with another configuration (not corruption)."""


class NoCheckpointRestored(InputError):
  """Checkpoints (or quarantined ones) exist, but none could be restored."""


class Corrupt(Exception):
  """A checkpoint whose data differs from what was saved."""


class Checkpointer:
  """`keep` newest checkpoints; with `best_metric`, also the best one by that validation
  metric (`validation.rank_key`: min for names ending in "loss", else max; the first step
  on ties) among the checkpoints saved with `metrics` holding it."""

  def __init__(self, directory: Path | str, keep: int = 3, async_save: bool = True,
               best_metric: str | None = None):
    self.directory = Path(directory).absolute()
    self.quarantine = self.directory.parent / f"{self.directory.name}.corrupt"
    self.best_metric = best_metric
    if best_metric:
      options = ocp.CheckpointManagerOptions(
          create=True, enable_async_checkpointing=async_save,
          best_fn=_ranker(best_metric), best_mode="max",  # best_fn: Orbax saves the metrics
          preservation_policy=preservation.AnyPreservationPolicy([
              preservation.LatestN(n=keep),
              preservation.BestN(get_metric_fn=_ranker(best_metric), n=1,
                                 keep_checkpoints_without_metrics=False)]))
    else:
      options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                             enable_async_checkpointing=async_save)
    self.manager = ocp.CheckpointManager(self.directory, options=options)
    quiet_orbax_failures(self.directory)

  def steps(self) -> list[int]:
    return sorted(self.manager.all_steps())

  def save(self, step: int, state: TrainState, meta: dict, metrics: dict | None = None) -> None:
    """Saves `state` and `meta` (with their checksums) as step `step`; raises
    `NonFiniteLoss` (nothing saved) for a non-finite value and `WriteError` when
    the checkpoint cannot be written. `metrics` ({name: value}): the validation results
    that rank it when the checkpointer keeps the best."""
    self._wait()  # a previous asynchronous save's failure surfaces here
    arrays = _checksums(vars(state), f"step {step}: the state to save")
    self._check_space(vars(state))
    sums = {"meta": _digest(meta), "arrays": arrays}
    try:
      self.manager.save(step, args=ocp.args.Composite(
          state=ocp.args.StandardSave(vars(state)), meta=ocp.args.JsonSave(meta),
          checksums=ocp.args.JsonSave(sums)), force=True,
          metrics={"step": step, **(metrics or {})} if self.best_metric else None)
    except Exception as e:  # orbax/tensorstore raise ValueError etc. for I/O failures
      self._failed(e)

  def restore_latest(self, abstract_state: TrainState,
                     check_meta: Callable[[int, dict], None] = lambda step, meta: None
                     ) -> tuple[TrainState, dict] | None:
    """The newest valid checkpoint as (state, meta), or None if there is none at all.

    `abstract_state` carries shapes, dtypes and shardings (jax.ShapeDtypeStruct
    leaves) so arrays are restored directly onto the mesh. `check_meta(step, meta)`
    raises an `InputError` when the checkpoint does not fit the run (nothing moved).
    """
    tried = []
    for step in reversed(self.steps()):
      try:
        return self._restore(step, abstract_state, check_meta)
      except Corrupt as e:
        moved = self._quarantine(step)
        log.warning("checkpoint at step %d in %s cannot be restored (%s); moved it to %s "
                    "and trying the one before", step, self.directory, e, moved)
        tried.append(f"step {step} ({e}; moved to {moved})")
    quarantined = self.quarantined()
    if tried or quarantined:
      raise NoCheckpointRestored(
          f"{self.directory}: no checkpoint could be restored, so --resume would start from "
          f"step 0; tried: {'; '.join(tried) or 'none left'}"
          + (f"; quarantined in {self.quarantine}: {', '.join(quarantined)}" if quarantined
             else "") + ". Inspect or move them, or use another --workdir")
    return None

  def restore_step(self, step: int, abstract_state: TrainState) -> tuple[TrainState, dict]:
    """Checkpoint `step` as (state, meta), its checksums verified (after the pending save);
    one that cannot be read raises `NoCheckpointRestored` (nothing is moved)."""
    self._wait()
    try:
      return self._restore(step, abstract_state, lambda s, m: None)
    except Corrupt as e:
      raise NoCheckpointRestored(f"{self.directory}: the checkpoint at step {step} cannot "
                                 f"be restored ({e})") from None

  def quarantined(self) -> list[str]:
    """Names of the checkpoints moved aside to `checkpoints.corrupt/`."""
    if not self.quarantine.is_dir():
      return []
    return sorted((p.name for p in self.quarantine.iterdir()), key=_step_order)

  def _restore(self, step, abstract_state, check_meta) -> tuple[TrainState, dict]:
    has_sums = (self.directory / str(step) / "checksums").exists()
    items = {"meta": ocp.args.JsonRestore()}
    if has_sums:
      items["checksums"] = ocp.args.JsonRestore()
    info = _read(lambda: self.manager.restore(step, args=ocp.args.Composite(**items)))
    meta = dict(info.meta)
    if not has_sums:
      log.warning("checkpoint at step %d has no checksums (an older kmlm-jax saved it); "
                  "restoring it unverified", step)
    elif _digest(meta) != info.checksums.get("meta"):
      raise Corrupt("its meta differs from its checksum")
    check_meta(step, meta)
    if has_sums:
      _check_layout(self.directory / str(step), info.checksums["arrays"],
                    {p: (list(x.shape), str(x.dtype)) for p, x in _flat(vars(abstract_state))})
    restored = _read(lambda: self.manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(vars(abstract_state)))))
    if has_sums:
      _verify(info.checksums["arrays"], _checksums(restored.state))
    return TrainState(**restored.state), meta

  def _quarantine(self, step: int) -> Path:
    """Moves checkpoint `step` to a fresh name under `checkpoints.corrupt/`."""
    target = self.quarantine / str(step)
    n = 0
    while target.exists():
      n += 1
      target = self.quarantine / f"{step}.{n}"
    if jax.process_index() == 0:
      target.parent.mkdir(parents=True, exist_ok=True)
      shutil.move(str(self.directory / str(step)), str(target))
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices(f"kmlm_jax quarantine {step}")
    self.manager.reload()
    return target

  def _check_space(self, state: dict) -> None:
    leaves = jax.tree.leaves(state)
    need = sum(x.size * x.dtype.itemsize for x in leaves) + 4096 * len(leaves) + (1 << 16)
    free = shutil.disk_usage(self.directory).free
    if free < need:
      raise WriteError(f"{self.directory}: {free / 2**20:.1f} MiB free, a checkpoint needs "
                       f"about {need / 2**20:.1f} MiB; nothing was saved, the checkpoints before "
                       f"are intact (steps {self.steps()}). Free space or use another --workdir")

  def _wait(self) -> None:
    try:
      self.manager.wait_until_finished()
    except Exception as e:
      self._failed(e)

  def _failed(self, error: Exception) -> None:
    if jax.process_index() == 0:
      for tmp in self.directory.glob("*.orbax-checkpoint-tmp*"):
        fileio.remove_tree(tmp)
    self.manager.reload()
    raise WriteError(f"{self.directory}: saving a checkpoint failed ({_reason(error)}); the "
                     f"checkpoints before are intact (steps {self.steps()})") from error

  def close(self, raise_errors: bool = True) -> None:
    """Waits for the last save; its failure raises `WriteError` (or, with
    `raise_errors=False`, while another error propagates, is logged)."""
    try:
      self._wait()
    except WriteError as e:
      if raise_errors:
        raise
      log.warning("%s", e)
    finally:
      self.manager.close()


def replace_meta(step_dir: Path | str, meta: dict) -> None:
  """Rewrites the `meta` of the saved checkpoint STEP_DIR and its checksum (for tools that
  edit a checkpoint's input position on purpose, e.g. bench/resume.py)."""
  step_dir = Path(step_dir)
  sums_file = step_dir / "checksums" / "metadata"
  sums = json.loads(sums_file.read_text())
  (step_dir / "meta" / "metadata").write_text(json.dumps(meta))
  sums_file.write_text(json.dumps({**sums, "meta": _digest(meta)}))


def _ranker(metric: str) -> Callable[[dict], tuple]:
  """Orbax's metric function of `metric`: a key, larger = better, from a checkpoint's
  metrics ({"step", names...})."""
  from kmlm_jax.training.validation import rank_key
  return lambda m: rank_key(metric, m.get(metric), int(m.get("step", 0)))


# ------------------------------------------------------------------------------ checksums


def _checksums(tree: dict, non_finite: str | None = None) -> dict:
  """{path: {"shape", "dtype", "sum"}} of every array of `tree` (a collective on several
  processes). `sum` is sum(word[i] * (2 i + 1)) mod 2**32 over the array's values as
  unsigned words, i their row-major position in the global array: any one changed value
  changes it, and it does not depend on the sharding or the number of processes. With
  `non_finite` (a description), a non-finite value raises `NonFiniteLoss`."""
  paths, leaves = zip(*_flat(tree))
  parts = np.array([_local_sum(x) for x in leaves], np.uint64)  # (sum, non-finite count)
  if jax.process_count() > 1:
    gathered = multihost_utils.process_allgather(parts.astype(np.uint32))
    parts = np.asarray(gathered, np.uint64).reshape(-1, *parts.shape).sum(0)
  bad = [p for p, (_, n) in zip(paths, parts) if n]
  if non_finite and bad:
    raise NonFiniteLoss(f"{non_finite} is not finite ({', '.join(bad[:3])}); nothing was "
                        "saved, the checkpoints saved before are intact")
  return {p: {"shape": list(x.shape), "dtype": str(x.dtype), "sum": int(s) % 2**32}
          for p, x, (s, _) in zip(paths, leaves, parts)}


def _flat(tree) -> list[tuple[str, Any]]:
  """(path "a/b/c", leaf) of every leaf of `tree`: the names the checksums file keys."""
  return [(jax.tree_util.keystr(p, simple=True, separator="/"), x)
          for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]]


def _local_sum(x) -> tuple[int, int]:
  """(checksum part, non-finite count) of the shards of `x` this process holds."""
  shards = [(s.data, s.index) for s in x.addressable_shards if s.replica_id == 0] \
      if isinstance(x, jax.Array) else [(x, ())]
  parts = [_shard_sum(np.asarray(data), index, x.shape) for data, index in shards]
  return sum(s for s, _ in parts) % 2**32, sum(n for _, n in parts)


def _shard_sum(data: np.ndarray, index: tuple, shape: tuple) -> tuple[int, int]:
  """The checksum part and non-finite count of `data`, the block `index` of `shape`."""
  data = np.ascontiguousarray(data).reshape(data.shape or (1,))
  shape = tuple(shape) or (1,)
  starts = [(sl.start or 0) for sl in index] + [0] * (len(shape) - len(index))
  strides = [int(np.prod(shape[d + 1:], dtype=np.int64)) for d in range(len(shape))]
  axes = [np.arange(start, start + n, dtype=np.uint64) * stride
          for start, n, stride in zip(starts[1:], data.shape[1:], strides[1:])]
  rest = sum(np.ix_(*axes), np.zeros(data.shape[1:], np.uint64))  # positions within a row
  words = np.dtype(f"u{data.dtype.itemsize}")
  floating = jnp.issubdtype(data.dtype, jnp.floating)
  rows = max(1, _CHUNK // max(rest.size, 1))
  total, non_finite = 0, 0
  for r in range(0, data.shape[0], rows):
    block = data[r:r + rows]
    pos = np.arange(starts[0] + r, starts[0] + r + len(block), dtype=np.uint64) * strides[0]
    pos = pos.reshape(-1, *[1] * (data.ndim - 1)) + rest
    weighted = block.view(words).astype(np.uint64) * (2 * pos + 1)  # wraps mod 2**64
    total = (total + int(weighted.sum(dtype=np.uint64))) % 2**32
    if floating:
      non_finite += int(block.size - np.isfinite(block).sum())
  return total, non_finite


def _verify(saved: dict, restored: dict) -> None:
  bad = [p for p in saved if saved[p]["sum"] != restored.get(p, {}).get("sum")]
  if bad:
    raise Corrupt(f"checksum mismatch in {', '.join(bad[:3])}"
                  + (f" and {len(bad) - 3} more arrays" if len(bad) > 3 else ""))


def _check_layout(where: Path, saved: dict, expected: dict) -> None:
  """A checkpoint whose arrays have other paths, shapes or dtypes than the run's state
  belongs to another configuration."""
  diff = [f"{p} is missing" for p in saved if p not in expected]
  diff += [f"{p} is new" for p in expected if p not in saved]
  diff += [f"{p} has shape {saved[p]['shape']} {saved[p]['dtype']} (run: {e[0]} {e[1]})"
           for p, e in expected.items()
           if p in saved and [saved[p]["shape"], saved[p]["dtype"]] != list(e)]
  if diff:
    raise CheckpointMismatch(
        f"{where} does not fit this run's state: {'; '.join(diff[:4])}"
        + (f" and {len(diff) - 4} more" if len(diff) > 4 else "")
        + ". Resume with the settings the checkpoint was saved with, or use another --workdir")


def _digest(meta: dict) -> str:
  return hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()


def _read(restore: Callable):
  try:
    return restore()
  except Exception as e:  # orbax/tensorstore raise many types for damaged files
    raise Corrupt(f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}") \
        from e


def _reason(error: Exception) -> str:
  """The system's reason of a failed write, e.g. 'No space left on device'."""
  reported = error if isinstance(error, OSError) else fileio.os_error(error, "")
  if reported is not None and reported.strerror:
    return reported.strerror
  return (str(error).splitlines() or [type(error).__name__])[0][:300]


def _step_order(name: str) -> tuple:
  return tuple(int(p) if p.isdigit() else 0 for p in name.split("."))
