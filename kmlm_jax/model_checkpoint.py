"""Model checkpoints on disk (Orbax) and building models from flat parameters.

Layout of a model checkpoint directory:

  CKPT/model_config.json   {"model": ModelConfig fields, "metadata": {...}}
  CKPT/params/             Orbax StandardCheckpointer tree of fp32 arrays
  CKPT/tokenizer/          tokenizer files, when the source had them

Training checkpoints (optimizer, step, data position) build on this layout
in `kmlm_jax.training`.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from pathlib import Path
from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from kmlm_jax.config import ModelConfig
from kmlm_jax.convert.hf import ConversionError, atomic_directory, copy_tokenizer_files, flatten_state
from kmlm_jax.models.encoder import Encoder, _activation


def abstract_model(config: ModelConfig) -> Encoder:
  """An Encoder whose parameters are ShapeDtypeStructs (nothing allocated)."""
  return nnx.eval_shape(lambda: Encoder(config, rngs=nnx.Rngs(0)))


def build_model(config: ModelConfig, params: Mapping[str, np.ndarray]) -> Encoder:
  """An Encoder holding exactly `params` ({"a.b": array}); checks names and shapes."""
  graphdef, state = nnx.split(abstract_model(config))
  flat = nnx.to_flat_state(state)
  expected = {".".join(map(str, path)) for path, _ in flat}
  if set(params) != expected:
    missing, extra = sorted(expected - set(params)), sorted(set(params) - expected)
    raise ConversionError(f"parameters do not match the config: missing {missing}, "
                          f"unexpected {extra}")
  leaves = []
  for path, var in flat:
    name = ".".join(map(str, path))
    value = params[name]
    if tuple(value.shape) != tuple(var.shape):
      raise ConversionError(f"parameter {name}: shape {tuple(value.shape)}, config needs "
                            f"{tuple(var.shape)}")
    leaves.append((path, var.replace(jnp.asarray(value, jnp.float32))))
  return nnx.merge(graphdef, nnx.from_flat_state(leaves))


def model_params(model: Encoder) -> dict[str, np.ndarray]:
  """{"a.b": numpy fp32 array} of a model's parameters."""
  return {k: np.asarray(v) for k, v in flatten_state(nnx.state(model, nnx.Param)).items()}


def nest_tree(flat: Mapping[str, np.ndarray]) -> dict:
  """{"a.b": x} -> {"a": {"b": x}}."""
  tree: dict = {}
  for name, value in flat.items():
    node = tree
    *parents, leaf = name.split(".")
    for p in parents:
      node = node.setdefault(p, {})
    node[leaf] = value
  return tree


def flatten_tree(tree: Mapping, prefix: str = "") -> dict[str, np.ndarray]:
  """{"a": {"b": x}} -> {"a.b": x}."""
  flat = {}
  for key, value in tree.items():
    name = f"{prefix}{key}"
    if isinstance(value, Mapping):
      flat.update(flatten_tree(value, name + "."))
    else:
      flat[name] = value
  return flat


def _local_checkpointer():
  """An Orbax checkpointer for host-local numpy trees that this process reads or
  writes alone (in a multi-host job, only process 0 exports the model)."""
  import orbax.checkpoint as ocp
  me = jax.process_index()
  return ocp.StandardCheckpointer(multiprocessing_options=ocp.options.MultiprocessingOptions(
      primary_host=me, active_processes={me}))


def save_model_checkpoint(path: Path | str, config: ModelConfig, params: Mapping[str, np.ndarray],
                          *, metadata: Mapping | None = None, tokenizer_dir: Path | None = None,
                          overwrite: bool = False) -> None:
  """Writes a model checkpoint atomically (temporary directory, then rename)."""
  import orbax.checkpoint as ocp
  path = Path(path).absolute()
  with atomic_directory(path, overwrite=overwrite) as tmp:
    (tmp / "model_config.json").write_text(json.dumps(
        {"model": dataclasses.asdict(config), "metadata": dict(metadata or {})}, indent=2))
    with _local_checkpointer() as checkpointer:
      checkpointer.save(tmp / "params", nest_tree(dict(params)))
      checkpointer.wait_until_finished()
    if tokenizer_dir is not None:
      (tmp / "tokenizer").mkdir()
      copy_tokenizer_files(tokenizer_dir, tmp / "tokenizer")


_POSITIVE = ("vocab_size", "hidden_size", "num_layers", "num_heads", "intermediate_size",
             "max_position_embeddings", "type_vocab_size")


def _check_fields(model: dict, config_file: Path) -> None:
  """Types of the `model` fields (JSON gives any type), and positive dimensions."""
  hints = typing.get_type_hints(ModelConfig)
  for name, value in model.items():
    kind = hints.get(name)
    ok = {int: lambda v: isinstance(v, int) and not isinstance(v, bool),
          float: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
          bool: lambda v: isinstance(v, bool),
          str: lambda v: isinstance(v, str)}.get(kind, lambda v: True)(value)
    if not ok:
      raise ConversionError(f"{config_file}: field 'model.{name}': expected "
                            f"{kind.__name__}, got {json.dumps(value)[:40]}")
    if name in _POSITIVE and value < 1:
      raise ConversionError(f"{config_file}: field 'model.{name}': must be at least 1, "
                            f"got {value}")


def read_model_config(path: Path | str) -> tuple[ModelConfig, dict]:
  """(model config, metadata) of CKPT/model_config.json; `ConversionError` names the file
  (and field) of a missing, unparsable or invalid config."""
  path = Path(path)
  config_file = path / "model_config.json"
  if not path.is_dir():
    raise ConversionError(f"{path}: no such checkpoint directory")
  if not config_file.is_file():
    raise ConversionError(f"{config_file}: missing (not a kmlm-jax model checkpoint)")
  try:
    raw = json.loads(config_file.read_text(encoding="utf-8"))
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise ConversionError(f"{config_file}: invalid JSON ({e})") from None
  if not isinstance(raw, dict) or not isinstance(raw.get("model"), dict):
    raise ConversionError(f"{config_file}: expected an object with a 'model' object")
  metadata = raw.get("metadata") or {}
  if not isinstance(metadata, dict):
    raise ConversionError(f"{config_file}: field 'metadata': expected an object")
  _check_fields(raw["model"], config_file)
  try:
    config = ModelConfig(**raw["model"])
    _activation(config.hidden_act)
  except (TypeError, ValueError) as e:
    raise ConversionError(f"{config_file}: invalid model config ({e})") from None
  return config, metadata


def load_model_checkpoint(path: Path | str) -> tuple[ModelConfig, dict[str, np.ndarray], dict]:
  """Returns (config, flat numpy params, metadata)."""
  import orbax.checkpoint as ocp
  path = Path(path).absolute()
  config, metadata = read_model_config(path)
  abstract = {k: jax.ShapeDtypeStruct(v.shape, np.float32)
              for k, v in flatten_state(nnx.state(abstract_model(config), nnx.Param)).items()}
  try:
    with _local_checkpointer() as checkpointer:
      restored = checkpointer.restore(path / "params", nest_tree(abstract))
  except Exception as e:  # orbax raises many types for damaged trees
    raise ConversionError(f"{path / 'params'}: cannot restore parameters ({e})") from None
  return config, {k: np.asarray(v) for k, v in flatten_tree(restored).items()}, metadata


def tokenizer_dir_of(path: Path | str) -> Path | None:
  tok = Path(path) / "tokenizer"
  return tok if tok.is_dir() and any(tok.iterdir()) else None
