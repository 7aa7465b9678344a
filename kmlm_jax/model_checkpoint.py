"""Model checkpoints on disk (Orbax) and building models from flat parameters.

Layout of a model checkpoint directory:

  CKPT/model_config.json   {"model": ModelConfig fields, "metadata": {...}}
  CKPT/params/             Orbax StandardCheckpointer tree of fp32 arrays
  CKPT/tokenizer/          tokenizer files, when the source had them

Training checkpoints (optimizer, step, data position) build on this layout
in `kmlm_jax.training`. `read_model_config`, `load_model_checkpoint` and
`tokenizer_dir_of` also read a training checkpoint as a model checkpoint:
WORKDIR/checkpoints/STEP, or WORKDIR for its newest step (`kmlm_jax.training.export`),
so `convert --from`, `eval --ckpt` and `init_from` accept all three forms.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import traceback
import typing
from pathlib import Path
from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx, traverse_util

from kmlm_jax.config import ModelConfig
from kmlm_jax.errors import InputError
from kmlm_jax import fileio
from kmlm_jax.fileio import atomic_directory
from kmlm_jax.models.encoder import Encoder, _activation


class CheckpointError(InputError):
  """A model checkpoint that cannot be read or does not fit its config; names the path."""


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "vocab.txt", "sentencepiece.bpe.model", "added_tokens.json")


def abstract_model(config: ModelConfig) -> Encoder:
  """An Encoder whose parameters are ShapeDtypeStructs (nothing allocated)."""
  return nnx.eval_shape(lambda: Encoder(config, rngs=nnx.Rngs(0)))


def abstract_params(config: ModelConfig) -> dict:
  """The nested dict of fp32 ShapeDtypeStructs of a config's parameters."""
  state = nnx.to_pure_dict(nnx.state(abstract_model(config), nnx.Param))
  return jax.tree.map(lambda v: jax.ShapeDtypeStruct(v.shape, jnp.float32), state)


def build_model(config: ModelConfig, params: Mapping) -> Encoder:
  """An Encoder holding exactly `params` (nested dict); checks names and shapes."""
  expected = traverse_util.flatten_dict(abstract_params(config), sep=".")
  given = traverse_util.flatten_dict(dict(params), sep=".")
  if set(given) != set(expected):
    missing, extra = sorted(set(expected) - set(given)), sorted(set(given) - set(expected))
    raise CheckpointError(f"parameters do not match the config: missing {missing}, "
                          f"unexpected {extra}")
  for name, value in given.items():
    if tuple(np.shape(value)) != tuple(expected[name].shape):
      raise CheckpointError(f"parameter {name}: shape {tuple(np.shape(value))}, config needs "
                            f"{tuple(expected[name].shape)}")
  graphdef, state = nnx.split(abstract_model(config))
  nnx.replace_by_pure_dict(state, jax.tree.map(lambda x: jnp.asarray(x, jnp.float32),
                                               traverse_util.unflatten_dict(given, sep=".")))
  return nnx.merge(graphdef, state)


def model_params(model: Encoder) -> dict:
  """The nested dict of numpy fp32 arrays of a model's parameters."""
  return jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(model, nnx.Param)))


def check_tokenizer_files(directory: Path | str) -> None:
  """The files a tokenizer_config.json names (`vocab_file`, `tokenizer_file`, ...) must
  be inside its directory: transformers would read them from wherever they point."""
  config_file = Path(directory) / "tokenizer_config.json"
  if not config_file.is_file():
    return
  for key, value in fileio.read_json_object(config_file, CheckpointError).items():
    if key.endswith("_file") and value is not None and fileio.inside(directory, value) is None:
      raise CheckpointError(f"{config_file}: field {key!r} names {value!r}, outside "
                            f"{directory}; tokenizer files must be in the tokenizer's folder")


def copy_tokenizer_files(source: Path, target: Path) -> list[str]:
  """Copies the tokenizer files of `source` (checked first) into `target`; returns their
  names. (Plain copies: modes as the umask gives, not the source's.)"""
  check_tokenizer_files(source)
  copied = [name for name in TOKENIZER_FILES if (Path(source) / name).exists()]
  for name in copied:
    shutil.copyfile(Path(source) / name, Path(target) / name)
  return copied


def _local_checkpointer():
  """An Orbax checkpointer for host-local numpy trees that this process reads or
  writes alone (in a multi-host job, only process 0 exports the model)."""
  me = jax.process_index()
  return ocp.StandardCheckpointer(multiprocessing_options=ocp.options.MultiprocessingOptions(
      primary_host=me, active_processes={me}))


def save_model_checkpoint(path: Path | str, config: ModelConfig, params: Mapping,
                          *, metadata: Mapping | None = None, tokenizer_dir: Path | None = None,
                          overwrite: bool = False) -> None:
  """Writes a model checkpoint (nested `params`) atomically (temporary directory, then
  rename). model_config.json holds the architecture only: the run settings (dtype,
  remat_policy, scan_layers, dropout) belong to whoever loads it."""
  path = Path(path).absolute()
  with atomic_directory(path, overwrite=overwrite, error=CheckpointError) as tmp:
    (tmp / "model_config.json").write_text(json.dumps(
        {"model": config.architecture(), "metadata": dict(metadata or {})}, indent=2))
    _save_params(tmp / "params", params)
    if tokenizer_dir is not None:
      (tmp / "tokenizer").mkdir()
      copy_tokenizer_files(tokenizer_dir, tmp / "tokenizer")


def quiet_orbax_failures(directory: Path) -> None:
  """Keeps Orbax's own reports of a failed save into `directory` off the console: the
  caller raises the failure as one `WriteError`. Drops the ERROR log records of Orbax
  (absl, with tracebacks, also from its background threads) and asyncio's "... exception
  was never retrieved" of Orbax's writes (whose exception may carry no Orbax frame: they
  are known by naming a checkpoint directory), and the "Event loop is closed" errors of
  writes still completing after a failed save. The filters are installed once per process."""
  global _quiet_installed
  _checkpoint_dirs.add(str(directory))
  if _quiet_installed:
    return
  _quiet_installed = True
  for name in ("absl", "asyncio"):
    logging.getLogger(name).addFilter(
        lambda r: r.levelno < logging.ERROR or not _from_orbax(r))
  previous = sys.unraisablehook

  def hook(unraisable) -> None:
    if not (isinstance(unraisable.exc_value, RuntimeError)
            and str(unraisable.exc_value) == "Event loop is closed"):
      previous(unraisable)

  sys.unraisablehook = hook


def _from_orbax(record: logging.LogRecord) -> bool:
  """Whether a log record is Orbax's: logged from its code, naming it or a checkpoint
  directory, or carrying an exception raised through Orbax or naming such a directory."""
  orbax = f"{os.sep}orbax{os.sep}"
  error = record.exc_info[1] if record.exc_info else None
  files = [f.filename for f in traceback.extract_tb(error.__traceback__)] if error else []
  texts = [record.pathname or "", record.getMessage(), str(error or ""), *files]
  return any(orbax in text or any(d in text for d in _checkpoint_dirs) for text in texts)


_checkpoint_dirs: set[str] = set()
_quiet_installed = False


def _save_params(path: Path, params: Mapping) -> None:
  """Orbax's save; its failure to write (full disk: a ValueError naming the OS error, and
  error logs from its threads) becomes that OSError, for `atomic_directory`'s WriteError."""
  quiet_orbax_failures(path)
  absl = logging.getLogger("absl")
  level = absl.level
  absl.setLevel(logging.CRITICAL)
  try:
    with _local_checkpointer() as checkpointer:
      checkpointer.save(path, dict(params))
      checkpointer.wait_until_finished()
  except (ValueError, RuntimeError) as e:
    raise (fileio.os_error(e, path) or e) from None
  finally:
    absl.setLevel(level)


POSITIVE_FIELDS = ("vocab_size", "hidden_size", "num_layers", "num_heads",
                   "intermediate_size", "max_position_embeddings", "type_vocab_size")
# The JSON values each field type accepts (Python's bool is an int: only bool fields take it).
_JSON_TYPES = {int: int, float: (int, float), bool: bool, str: str}


def field_problem(name: str, value) -> str | None:
  """What is wrong with JSON `value` for ModelConfig field `name` (its type, a dimension
  below 1, a negative pad id), or None; the caller names the file and key."""
  kind = typing.get_type_hints(ModelConfig).get(name)
  if kind in _JSON_TYPES and (not isinstance(value, _JSON_TYPES[kind])
                             or isinstance(value, bool) != (kind is bool)):
    return f"expected {kind.__name__}, got {json.dumps(value)[:40]}"
  if name in POSITIVE_FIELDS and value < 1:
    return f"must be at least 1, got {value}"
  if name == "pad_token_id" and value < 0:
    return f"must be at least 0, got {value}"
  return None


def config_problem(config: ModelConfig) -> str | None:
  """What is wrong across the fields of a config (field names are ModelConfig's), or None."""
  try:
    _activation(config.hidden_act)
  except ValueError as e:
    return str(e)
  if config.pad_token_id >= config.vocab_size:
    return f"pad_token_id {config.pad_token_id} is not below vocab_size {config.vocab_size}"
  if config.max_position_embeddings <= config.position_offset:
    return (f"max_position_embeddings {config.max_position_embeddings} leaves no position: "
            f"XLM-R positions start at pad_token_id + 1 = {config.position_offset}")
  return None


def _check_fields(model: dict, config_file: Path) -> None:
  """Types of the `model` fields (JSON gives any type), and positive dimensions."""
  for name, value in model.items():
    problem = field_problem(name, value)
    if problem:
      raise CheckpointError(f"{config_file}: field 'model.{name}': {problem}")


def _training(path: Path | str):
  """The `export.TrainingCheckpoint` that `path` names, or None (a model checkpoint)."""
  from kmlm_jax.training import export
  return export.locate(path)


def parse_model_config(model: dict, config_file: Path) -> ModelConfig:
  """The ModelConfig of the JSON object `model` read from `config_file`; `CheckpointError`
  names the file (and field) of an invalid one."""
  _check_fields(model, config_file)
  try:
    config = ModelConfig(**model)
  except (TypeError, ValueError) as e:
    raise CheckpointError(f"{config_file}: invalid model config ({e})") from None
  if config_problem(config):
    raise CheckpointError(f"{config_file}: invalid model config ({config_problem(config)})")
  return config


def model_config_file(path: Path | str) -> Path:
  """The file that holds the architecture of checkpoint `path` (for messages):
  CKPT/model_config.json, or a training checkpoint's STEP/meta/metadata."""
  training = _training(path)
  return training.meta_file if training else Path(path) / "model_config.json"


def read_model_config(path: Path | str) -> tuple[ModelConfig, dict]:
  """(model config, metadata) of CKPT/model_config.json or of a training checkpoint's meta;
  `CheckpointError` names the file (and field) of a missing, unparsable or invalid config."""
  training = _training(path)
  if training is not None:
    from kmlm_jax.training import export
    return export.read_config(training)
  path = Path(path)
  config_file = path / "model_config.json"
  if not path.is_dir():
    raise CheckpointError(f"{path}: no such checkpoint directory")
  if not config_file.is_file():
    raise CheckpointError(f"{config_file}: missing (not a kmlm-jax model checkpoint)")
  raw = fileio.read_json_object(config_file, CheckpointError)
  if not isinstance(raw.get("model"), dict):
    raise CheckpointError(f"{config_file}: expected an object with a 'model' object")
  metadata = raw.get("metadata") or {}
  if not isinstance(metadata, dict):
    raise CheckpointError(f"{config_file}: field 'metadata': expected an object")
  return parse_model_config(raw["model"], config_file), metadata


def load_model_checkpoint(path: Path | str) -> tuple[ModelConfig, dict, dict]:
  """Returns (config, nested numpy params, metadata) of a model checkpoint, or of a
  training checkpoint (its parameters only, verified against their checksums)."""
  training = _training(path)
  if training is not None:
    from kmlm_jax.training import export
    return export.load(training)
  path = Path(path).absolute()
  config, metadata = read_model_config(path)
  try:
    with _local_checkpointer() as checkpointer:
      restored = checkpointer.restore(path / "params", abstract_params(config))
  except Exception as e:  # orbax raises many types for damaged trees
    raise CheckpointError(f"{path / 'params'}: cannot restore parameters ({e})") from None
  return config, jax.tree.map(np.asarray, restored), metadata


def tokenizer_dir_of(path: Path | str) -> Path | None:
  """CKPT/tokenizer, or the tokenizer folder of the run that saved a training checkpoint;
  None when there are no tokenizer files."""
  training = _training(path)
  if training is not None:
    from kmlm_jax.training import export
    return export.tokenizer_dir(training)
  tok = Path(path) / "tokenizer"
  return tok if tok.is_dir() and any(tok.iterdir()) else None
