"""Training checkpoints read as model checkpoints, for `convert --from`, `eval --ckpt` and
`init_from`.

Those accept three forms of a checkpoint (`kmlm_jax.model_checkpoint` asks `locate`):
  CKPT                         a model checkpoint directory (model_config.json, params/)
  WORKDIR/checkpoints/STEP     the training checkpoint saved at step STEP
  WORKDIR                      a training work directory: the newest step of checkpoints/
                               whose meta reads and matches its checksum

A training checkpoint (`checkpointing.py`: STEP/{state,meta,checksums}) gives the
architecture from its meta ("model"; the meta's SHA-256 is checked), the parameters from
the `params` subtree of STEP/state alone (no optimizer state is read), verified against
the per-array checksums saved with it, and the tokenizer from the run's WORKDIR/config.json
(`data.vocab`; null: the default XLM-R tokenizer), the one the final export WORKDIR/model
carries. A missing, unfinished or corrupt step is one `CheckpointError` line naming it.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp

from kmlm_jax import fileio
from kmlm_jax import model_checkpoint as mc
from kmlm_jax.config import ModelConfig
from kmlm_jax.training import checkpointing as ck

log = logging.getLogger("kmlm_jax.training")

CHECKPOINTS = "checkpoints"  # WORKDIR/checkpoints, as the train loop names it


@dataclasses.dataclass(frozen=True)
class TrainingCheckpoint:
  """One saved step: its directory, its (checked) meta and its checksums (None: saved by
  a kmlm-jax that wrote none)."""

  path: Path
  meta: dict
  sums: dict | None

  @property
  def step(self) -> int:
    return int(self.meta.get("step", -1))

  @property
  def meta_file(self) -> Path:
    return self.path / "meta" / "metadata"


def locate(path: Path | str) -> TrainingCheckpoint | None:
  """The training checkpoint `path` names (WORKDIR/checkpoints/STEP, WORKDIR or
  WORKDIR/checkpoints: the newest step), or None when `path` is none of them (a model
  checkpoint, or nothing: the caller says what is wrong). A missing or damaged step
  raises `CheckpointError`."""
  path = Path(path).absolute()
  if (path / "model_config.json").exists():
    return None
  if _is_step(path) or (path.parent.name == CHECKPOINTS and path.name.isdigit()):
    return _read_step(path)
  root = path if path.name == CHECKPOINTS else path / CHECKPOINTS
  return _newest(root) if root.is_dir() else None


def _is_step(path: Path) -> bool:
  return (path / "state").is_dir() and (path / "meta").is_dir()


def saved_steps(root: Path) -> list[int]:
  """The steps of WORKDIR/checkpoints (Orbax renames a step to its number when it is
  complete: an unfinished save is not one)."""
  if not root.is_dir():
    return []
  return sorted(int(p.name) for p in root.iterdir() if p.name.isdigit() and p.is_dir())


def _read_step(path: Path) -> TrainingCheckpoint:
  """The step directory `path` with its meta read and checked against its checksum."""
  if not path.is_dir():
    raise mc.CheckpointError(f"{path}: no such training checkpoint ({path.parent} holds "
                             f"{_steps_text(saved_steps(path.parent))})")
  if not _is_step(path):
    raise mc.CheckpointError(f"{path}: not a complete training checkpoint (no state/ and "
                             "meta/: not saved by kmlm-jax train, or its save did not finish)")
  meta = fileio.read_json_object(path / "meta" / "metadata", mc.CheckpointError)
  sums_file = path / "checksums" / "metadata"
  sums = fileio.read_json_object(sums_file, mc.CheckpointError) if sums_file.exists() else None
  if sums is not None and ck._digest(meta) != sums.get("meta"):
    raise mc.CheckpointError(f"{path}: corrupt training checkpoint: its meta differs from "
                             "its checksum")
  return TrainingCheckpoint(path, meta, sums)


def _newest(root: Path) -> TrainingCheckpoint:
  """The newest step of `root` whose meta reads and matches its checksum (one that does
  not is skipped with a warning)."""
  skipped = []
  for step in reversed(saved_steps(root)):
    try:
      return _read_step(root / str(step))
    except mc.CheckpointError as e:
      log.warning("skipping training checkpoint %s", e)
      skipped.append(str(step))
  raise mc.CheckpointError(f"{root}: no training checkpoint to read ("
                           + (f"steps {', '.join(skipped)} are damaged)" if skipped else
                              "none saved yet)"))


def _steps_text(steps: list[int]) -> str:
  return f"steps {', '.join(map(str, steps))}" if steps else "no steps"


def read_config(ckpt: TrainingCheckpoint) -> tuple[ModelConfig, dict]:
  """(model config, metadata) of a training checkpoint: the architecture its meta saved."""
  if not isinstance(ckpt.meta.get("model"), dict):
    raise mc.CheckpointError(f"{ckpt.meta_file}: expected an object with a 'model' object")
  config = mc.parse_model_config(ckpt.meta["model"], ckpt.meta_file)
  metadata = {"trained": ckpt.meta.get("config"), "step": ckpt.step,
              "training_checkpoint": str(ckpt.path)}
  return config, metadata


def load(ckpt: TrainingCheckpoint) -> tuple[ModelConfig, dict, dict]:
  """(config, nested fp32 numpy params, metadata): the `params` subtree of STEP/state alone,
  verified against its checksums."""
  config, metadata = read_config(ckpt)
  item = {"params": mc.abstract_params(config)}
  restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), item)
  try:
    with _params_reader() as reader:
      restored = reader.restore(ckpt.path / "state", args=ocp.args.PyTreeRestore(
          item=item, restore_args=restore_args, partial_restore=True))["params"]
  except Exception as e:  # orbax/tensorstore raise many types for damaged files
    raise mc.CheckpointError(f"{ckpt.path}: cannot restore the parameters "
                             f"({ck._reason(e)})") from None
  _verify(ckpt, restored)
  params = jax.tree.map(lambda x: np.asarray(x, np.float32), restored)
  return config, params, {**metadata, "verified": ckpt.sums is not None}


def _params_reader() -> ocp.Checkpointer:
  """An Orbax reader of part of a tree, host-local (like `mc._local_checkpointer`)."""
  me = jax.process_index()
  options = ocp.options.MultiprocessingOptions(primary_host=me, active_processes={me})
  return ocp.Checkpointer(ocp.PyTreeCheckpointHandler(multiprocessing_options=options),
                          multiprocessing_options=options)


def _verify(ckpt: TrainingCheckpoint, params: dict) -> None:
  """The restored parameters against the checksums saved with them (computed on this host
  alone: every process of a multi-host job reads the whole tree)."""
  if ckpt.sums is None:
    log.warning("training checkpoint %s has no checksums (an older kmlm-jax saved it); "
                "reading it unverified", ckpt.path)
    return
  saved = {p: s for p, s in ckpt.sums.get("arrays", {}).items() if p.startswith("params/")}
  ours = {p: {"sum": ck._local_sum(x)[0]} for p, x in ck._flat({"params": params})}
  try:
    ck._verify(saved, ours)
  except ck.Corrupt as e:
    others = [s for s in saved_steps(ckpt.path.parent) if s != ckpt.step]
    raise mc.CheckpointError(f"{ckpt.path}: corrupt training checkpoint ({e}); read another "
                             f"step ({ckpt.path.parent} also holds {_steps_text(others)})"
                             ) from None


def vocab_tokenizer_dir(vocab: str | None) -> Path | None:
  """The tokenizer folder of a run's `data.vocab` (None: the default XLM-R tokenizer.json):
  the folder of a tokenizer.json, a folder itself, else None. The final export
  WORKDIR/model copies the tokenizer files of this folder."""
  from kmlm_jax.text.vocab import default_vocab_path
  vocab = Path(vocab or default_vocab_path())
  if vocab.name == "tokenizer.json":
    return vocab.parent
  return vocab if vocab.is_dir() else None


def tokenizer_dir(ckpt: TrainingCheckpoint) -> Path | None:
  """The tokenizer folder of the run that saved `ckpt` (its WORKDIR/config.json's
  `data.vocab`), or None when the run's config or tokenizer files are not there."""
  from kmlm_jax.assets import AssetError
  config_file = ckpt.path.parent.parent / "config.json"  # WORKDIR/config.json
  if not config_file.is_file():
    return None
  data = fileio.read_json_object(config_file, mc.CheckpointError).get("data")
  vocab = data.get("vocab") if isinstance(data, dict) else None
  if vocab is not None and not isinstance(vocab, str):
    raise mc.CheckpointError(f"{config_file}: field 'data.vocab': expected a path or null")
  try:
    directory = vocab_tokenizer_dir(vocab)
  except AssetError:  # the default tokenizer is not installed here
    return None
  has_files = directory is not None and any((directory / n).is_file()
                                            for n in mc.TOKENIZER_FILES)
  return directory if has_files else None
