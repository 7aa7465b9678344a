"""Training checkpoints: Orbax `CheckpointManager` over the train state and the input position.

Layout: WORKDIR/checkpoints/STEP/{state,meta}. `state` holds params,
optimizer state, step and RNG key (`TrainState` as a dict); `meta` is JSON
with the input position (batches consumed), the step and the config name.
Saves can be asynchronous: a checkpoint becomes visible only once Orbax has
finalised it, so a process killed mid-save leaves the previous one as the
latest. A checkpoint that exists but cannot be read (truncated, corrupted)
is reported with its step, moved aside to WORKDIR/checkpoints.corrupt/STEP
(so a resumed run can save that step again) and skipped in favour of the one
before.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

from kmlm_jax.training.trainer import TrainState

log = logging.getLogger("kmlm_jax.training")


class Checkpointer:
  def __init__(self, directory: Path | str, keep: int = 3, async_save: bool = True):
    self.directory = Path(directory).absolute()
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                           enable_async_checkpointing=async_save)
    self.manager = ocp.CheckpointManager(self.directory, options=options)

  def steps(self) -> list[int]:
    return sorted(self.manager.all_steps())

  def save(self, step: int, state: TrainState, meta: dict) -> None:
    self.manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(vars(state)), meta=ocp.args.JsonSave(meta)), force=True)

  def restore_latest(self, abstract_state: TrainState) -> tuple[TrainState, dict] | None:
    """The newest readable checkpoint as (state, meta), or None if there is none.

    `abstract_state` carries shapes, dtypes and shardings (jax.ShapeDtypeStruct
    leaves) so arrays are restored directly onto the mesh.
    """
    for step in reversed(self.steps()):
      try:
        restored = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(vars(abstract_state)),
            meta=ocp.args.JsonRestore()))
      except Exception as e:  # orbax/tensorstore raise many types for damaged files
        moved = self._quarantine(step)
        log.warning("checkpoint at step %d in %s cannot be restored (%s: %s); moved it to %s "
                    "and trying the one before", step, self.directory, type(e).__name__,
                    str(e).splitlines()[0][:300], moved)
        continue
      return TrainState(**restored.state), dict(restored.meta)
    return None

  def _quarantine(self, step: int) -> Path:
    target = self.directory.parent / f"{self.directory.name}.corrupt" / str(step)
    if target.exists():
      shutil.rmtree(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(self.directory / str(step)), str(target))
    self.manager.reload()
    return target

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


def abstract_like(state_shapes: Any, shardings: Any) -> Any:
  """ShapeDtypeStructs carrying the given shardings (restore targets)."""
  return jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
                      state_shapes, shardings)
