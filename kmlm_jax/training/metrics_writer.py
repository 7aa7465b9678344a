"""One interface for a run's scalars: TensorBoard always, Weights & Biases when asked.

`make_writer(config, workdir, resume)` returns the writer of this process:
on process 0 TensorBoard event files under WORKDIR/tb (tensorboardX) and, when
`train.wandb_project` is set, a Weights & Biases run besides (the optional
extra `pip install kmlm-jax[wandb]`; `WANDB_MODE=offline` writes it locally
for a later `wandb sync`); on the other processes a writer that drops
everything. Every writer has `write_scalars(step, {name: value})` and
`close()`.

The W&B run writes under `$WANDB_DIR` (default WORKDIR) and keeps its id in
WORKDIR/wandb_run_id, so `--resume` continues the same W&B run. W&B keeps only
increasing steps: after a resume from step k, the steps between k and the
last one logged before are logged again by TensorBoard but dropped by W&B.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
from pathlib import Path
from typing import Mapping

from kmlm_jax.config import ExperimentConfig
from kmlm_jax.errors import InputError

WANDB_ID_FILE = "wandb_run_id"


class MetricsWriter:
  """Where a run's scalars go; this base class drops them (processes other than 0)."""

  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    pass

  def close(self) -> None:
    pass


class TensorBoardWriter(MetricsWriter):
  """Scalars as TensorBoard event files in `logdir`."""

  def __init__(self, logdir: Path | str):
    from tensorboardX import SummaryWriter
    self._writer = SummaryWriter(str(logdir))

  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    for name, value in scalars.items():
      self._writer.add_scalar(name, value, step)

  def close(self) -> None:
    self._writer.close()


class WandbWriter(MetricsWriter):
  """Scalars as one Weights & Biases run of `project` (resumed by its id in `workdir`)."""

  def __init__(self, project: str, config: ExperimentConfig, workdir: Path, resume: bool):
    check_wandb()
    import wandb
    id_file = workdir / WANDB_ID_FILE
    run_id = id_file.read_text().strip() if resume and id_file.is_file() else None
    self._run = wandb.init(project=project, name=config.name, id=run_id,
                           resume="allow" if run_id else None,
                           dir=os.environ.get("WANDB_DIR") or str(workdir),
                           config=dataclasses.asdict(config))
    id_file.write_text(self._run.id)

  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    self._run.log(dict(scalars), step=step)

  def close(self) -> None:
    self._run.finish()


class MultiWriter(MetricsWriter):
  """Every scalar to each of `writers`."""

  def __init__(self, writers: list[MetricsWriter]):
    self.writers = writers

  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    for writer in self.writers:
      writer.write_scalars(step, scalars)

  def close(self) -> None:
    for writer in self.writers:
      writer.close()


def check_wandb() -> None:
  """Raises an `InputError` when the `wandb` package is not installed."""
  if importlib.util.find_spec("wandb") is None:
    raise InputError("train.wandb_project: the wandb package is not installed; "
                     "pip install kmlm-jax[wandb] (or pip install wandb), or unset "
                     "train.wandb_project")


def make_writer(config: ExperimentConfig, workdir: Path | str, *, resume: bool = False,
                process_index: int = 0) -> MetricsWriter:
  """The writer of process `process_index`: TensorBoard (+ W&B) on process 0, else none."""
  if process_index != 0:
    return MetricsWriter()
  workdir = Path(workdir)
  writers: list[MetricsWriter] = [TensorBoardWriter(workdir / "tb")]
  if config.train.wandb_project:
    try:
      writers.append(WandbWriter(config.train.wandb_project, config, workdir, resume))
    except BaseException:
      writers[0].close()
      raise
  return writers[0] if len(writers) == 1 else MultiWriter(writers)
