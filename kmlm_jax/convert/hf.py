"""transformers (PyTorch) checkpoints <-> our parameters, both directions.

Reading accepts a directory with `config.json` and `model.safetensors`,
`model.safetensors.index.json` (sharded) or `pytorch_model.bin`, saved from a
MaskedLM model (`BertForMaskedLM`, `XLMRobertaForMaskedLM`, ...) or from a
bare encoder (`BertModel`, `XLMRobertaModel`, as sentence-transformers
saves them). Every tensor of the file is either mapped, a known alias or
buffer that we check, or an error: nothing is dropped silently.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from pathlib import Path
from typing import Iterator, Mapping

import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from kmlm_jax import fileio
from kmlm_jax import model_checkpoint as mc
from kmlm_jax.config import ModelConfig
from kmlm_jax.convert import name_map as nm
from kmlm_jax.errors import InputError


class ConversionError(InputError):
  """Bad input to a conversion; the message names the file or tensor."""


SUPPORTED_MODEL_TYPES = {"bert": "bert", "xlm-roberta": "xlmr", "roberta": "xlmr"}

# ---------------------------------------------------------------- configs


def model_config_from_hf(hf: Mapping, source: str = "config.json") -> ModelConfig:
  """ModelConfig from a transformers config dict; errors name `source`."""
  model_type = hf.get("model_type")
  if model_type not in SUPPORTED_MODEL_TYPES:
    raise ConversionError(
        f"{source}: unsupported model_type {model_type!r} (architectures "
        f"{hf.get('architectures')}); supported: {', '.join(SUPPORTED_MODEL_TYPES)}")
  flavour = SUPPORTED_MODEL_TYPES[model_type]
  if hf.get("position_embedding_type", "absolute") != "absolute":
    raise ConversionError(f"{source}: position_embedding_type "
                          f"{hf['position_embedding_type']!r} is not supported (only 'absolute')")
  if hf.get("is_decoder") or hf.get("add_cross_attention"):
    raise ConversionError(f"{source}: decoder / cross-attention models are not supported")
  required = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
              "intermediate_size", "max_position_embeddings")
  missing = [k for k in required if k not in hf]
  if missing:
    raise ConversionError(f"{source}: missing field(s) {', '.join(missing)}")
  try:
    return ModelConfig(
        flavour=flavour,
        vocab_size=int(hf["vocab_size"]),
        hidden_size=int(hf["hidden_size"]),
        num_layers=int(hf["num_hidden_layers"]),
        num_heads=int(hf["num_attention_heads"]),
        intermediate_size=int(hf["intermediate_size"]),
        max_position_embeddings=int(hf["max_position_embeddings"]),
        type_vocab_size=int(hf.get("type_vocab_size", 2)),
        pad_token_id=int(hf.get("pad_token_id", 1 if flavour == "xlmr" else 0)),
        layer_norm_eps=float(hf.get("layer_norm_eps", 1e-12)),
        hidden_act=str(hf.get("hidden_act", "gelu")),
        dropout_rate=float(hf.get("hidden_dropout_prob", 0.1)),
        attention_dropout_rate=float(hf.get("attention_probs_dropout_prob", 0.1)),
        initializer_range=float(hf.get("initializer_range", 0.02)),
    )
  except (TypeError, ValueError) as e:
    raise ConversionError(f"{source}: {e}") from None


def hf_config_from_model_config(config: ModelConfig) -> dict:
  """A transformers config.json dict for the MaskedLM class of the flavour."""
  common = dict(
      vocab_size=config.vocab_size, hidden_size=config.hidden_size,
      num_hidden_layers=config.num_layers, num_attention_heads=config.num_heads,
      intermediate_size=config.intermediate_size, hidden_act=config.hidden_act,
      hidden_dropout_prob=config.dropout_rate,
      attention_probs_dropout_prob=config.attention_dropout_rate,
      max_position_embeddings=config.max_position_embeddings,
      type_vocab_size=config.type_vocab_size, initializer_range=config.initializer_range,
      layer_norm_eps=config.layer_norm_eps, pad_token_id=config.pad_token_id,
      position_embedding_type="absolute", tie_word_embeddings=True, dtype="float32")
  if config.flavour == "xlmr":
    return dict(architectures=["XLMRobertaForMaskedLM"], model_type="xlm-roberta",
                bos_token_id=0, eos_token_id=2, **common)
  return dict(architectures=["BertForMaskedLM"], model_type="bert", **common)


# ---------------------------------------------------------------- reading


class TensorReader(contextlib.AbstractContextManager):
  """Lazy name -> numpy access to the tensors of a transformers directory."""

  def __init__(self, directory: Path):
    self.directory = directory
    self._files: dict[str, Path] = {}
    self._handles: dict[Path, object] = {}
    self._torch: dict[str, object] | None = None
    index = directory / "model.safetensors.index.json"
    single = directory / "model.safetensors"
    bin_file = directory / "pytorch_model.bin"
    if single.exists():
      self._open_safetensors(single)
    elif index.exists():
      try:
        weight_map = json.loads(index.read_text())["weight_map"]
      except (json.JSONDecodeError, KeyError) as e:
        raise ConversionError(f"{index}: not a valid safetensors index ({e})") from None
      for shard in sorted(set(weight_map.values())):
        self._open_safetensors(directory / shard)
    elif bin_file.exists():
      self._open_torch(bin_file)
    else:
      raise ConversionError(
          f"{directory}: no model.safetensors, model.safetensors.index.json or pytorch_model.bin")

  def _open_safetensors(self, path: Path):
    from kmlm_jax.convert.safetensors_reader import SafetensorsError, SafetensorsFile
    if not path.exists():
      raise ConversionError(f"{path}: file listed in the index is missing")
    try:
      handle = SafetensorsFile(path)
    except SafetensorsError as e:
      raise ConversionError(str(e)) from None
    self._handles[path] = handle
    for name in handle.keys():
      self._files[name] = path

  def _open_torch(self, path: Path):
    import torch
    try:
      state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:  # torch raises many types for a bad file
      raise ConversionError(f"{path}: corrupt or unreadable PyTorch file ({e})") from None
    self._torch = state
    for name in state:
      self._files[name] = path

  def names(self) -> list[str]:
    return list(self._files)

  def __contains__(self, name: str) -> bool:
    return name in self._files

  def get(self, name: str) -> np.ndarray:
    path = self._files[name]
    try:
      if self._torch is not None:
        t = self._torch[name]
        return t.float().numpy() if str(t.dtype) == "torch.bfloat16" else t.numpy()
      # (bf16 safetensors come back as ml_dtypes.bfloat16 and are widened on assignment.)
      return self._handles[path].get(name)
    except Exception as e:
      raise ConversionError(f"{path}: tensor {name!r} could not be read ({e})") from None

  def __exit__(self, *exc):
    self._handles.clear()
    self._torch = None
    return False


def read_hf_config(directory: Path) -> tuple[dict, ModelConfig]:
  directory = Path(directory)
  if not directory.is_dir():
    raise ConversionError(f"{directory}: no such directory")
  path = directory / "config.json"
  if not path.exists():
    raise ConversionError(f"{path}: missing (a transformers directory needs config.json)")
  try:
    hf = json.loads(path.read_text())
  except json.JSONDecodeError as e:
    raise ConversionError(f"{path}: invalid JSON ({e})") from None
  return hf, model_config_from_hf(hf, str(path))


@dataclasses.dataclass
class LoadedHF:
  """Our parameters (nested dict) plus what the conversion found."""

  config: ModelConfig
  params: dict
  has_mlm_head: bool
  has_pooler: bool
  prefix: str  # "bert." / "roberta." / "" (bare encoder)
  dropped: list[str]  # tensors deliberately not converted (e.g. NSP head)


def _detect_prefix(names: list[str], config: ModelConfig) -> str:
  prefix = nm.ENCODER_PREFIX[config.flavour]
  if any(n.startswith(prefix + "embeddings.") for n in names):
    return prefix
  if any(n.startswith("embeddings.") for n in names):
    return ""
  return prefix  # reported as missing tensors below


def load_hf_params(directory: Path | str) -> LoadedHF:
  """Reads a transformers directory into our nested parameter dict (fp32 jax arrays).

  Each parameter is assembled in a numpy buffer from tensors read one at a
  time, then moved into a jax array and the buffer freed, so peak memory stays
  near one copy of the model plus its largest parameter. (jax arrays rather
  than numpy: Orbax saves them with one host copy instead of two.)
  """
  directory = Path(directory)
  _, config = read_hf_config(directory)
  with TensorReader(directory) as reader:
    names = reader.names()
    prefix = _detect_prefix(names, config)
    head_names = {nm.hf_name(r, config, prefix) for r in nm.MLM_HEAD_RULES[config.flavour]}
    has_head = any(n in head_names for n in names)
    has_pooler = prefix + "pooler.dense.weight" in names
    rules = nm.rules_for(config, with_pooler=has_pooler, with_mlm_head=has_head)
    config = config.replace(use_pooler=has_pooler, use_mlm_head=True)
    expected = _expected_shapes(config)

    params: dict[str, np.ndarray] = {}
    used: set[str] = set()
    for rule in rules:
      shape = expected[rule.ours]
      # Stacked parameters are assembled layer by layer in one buffer.
      out = np.empty(shape, np.float32) if rule.stacked else None
      for i in range(config.num_layers) if rule.stacked else [None]:
        name = nm.hf_name(rule, config, prefix, i)
        if name not in reader:
          raise ConversionError(f"{directory}: missing tensor {name!r} (needed for {rule.ours})")
        t = reader.get(name)
        try:
          value = rule.hook.to_ours(t, config)
        except ValueError:
          value = None
        target = shape[1:] if rule.stacked else shape
        if value is None or tuple(value.shape) != tuple(target):
          raise ConversionError(
              f"{directory}: tensor {name!r} has shape {tuple(t.shape)}, which does not fit "
              f"{rule.ours} {tuple(target)} of config.json")
        if rule.stacked:
          out[i] = value
        else:
          out = value
        used.add(name)
        del t, value
      params[rule.ours] = jnp.asarray(out, dtype=jnp.float32)
      del out

    dropped = []
    for name in names:
      if name in used:
        continue
      alias = nm.ALIASES[config.flavour].get(name)
      if alias is not None and alias in params:
        if not np.array_equal(reader.get(name), np.asarray(params[alias])):
          raise ConversionError(
              f"{directory}: tensor {name!r} differs from {alias}; untied MLM decoders are "
              "not supported")
        continue
      if name.endswith(nm.BUFFER_SUFFIXES) or name.startswith(nm.DROPPED_PREFIXES):
        dropped.append(name)
        continue
      raise ConversionError(f"{directory}: unexpected tensor {name!r} (no rule maps it)")

  if not has_head:
    # A bare encoder: the MLM head starts from the standard initialisation.
    params.update({k: jnp.asarray(v) for k, v in initial_mlm_head(config).items()})
  params = traverse_util.unflatten_dict(params, sep=".")
  return LoadedHF(config, params, has_head, has_pooler, prefix, dropped)


def _expected_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
  """Parameter name ("a.b") -> shape, read off an abstract (never allocated) model."""
  flat = traverse_util.flatten_dict(mc.abstract_params(config), sep=".")
  return {k: tuple(v.shape) for k, v in flat.items()}


def initial_mlm_head(config: ModelConfig, seed: int = 0) -> dict[str, np.ndarray]:
  """Freshly initialised MLM head parameters (normal(0.02) kernel, zero biases)."""
  rng = np.random.default_rng(seed)
  d = config.hidden_size
  return {
      "mlm_head.dense_kernel": (rng.standard_normal((d, d)) * config.initializer_range
                                ).astype(np.float32),
      "mlm_head.dense_bias": np.zeros((d,), np.float32),
      "mlm_head.norm_scale": np.ones((d,), np.float32),
      "mlm_head.norm_bias": np.zeros((d,), np.float32),
      "mlm_head.bias": np.zeros((config.vocab_size,), np.float32),
  }


# ---------------------------------------------------------------- writing


def hf_tensors(config: ModelConfig, params: Mapping) -> Iterator[tuple[str, np.ndarray]]:
  """Yields (transformers name, fp32 array) of nested `params` for a MaskedLM checkpoint."""
  params = traverse_util.flatten_dict(dict(params), sep=".")
  prefix = nm.ENCODER_PREFIX[config.flavour]
  rules = nm.rules_for(config, with_pooler="pooler.kernel" in params, with_mlm_head=True)
  for rule in rules:
    value = np.asarray(params[rule.ours], dtype=np.float32)
    if rule.stacked:
      for i in range(config.num_layers):
        yield nm.hf_name(rule, config, prefix, i), np.ascontiguousarray(
            rule.hook.to_hf(value[i], config))
    else:
      yield nm.hf_name(rule, config, prefix), np.ascontiguousarray(rule.hook.to_hf(value, config))


def write_hf_dir(directory: Path | str, config: ModelConfig, params: Mapping,
                 tokenizer_dir: Path | None = None) -> None:
  """Writes config.json, model.safetensors (and tokenizer files) atomically."""
  from safetensors.numpy import save_file
  directory = Path(directory)
  with atomic_directory(directory) as tmp:
    (tmp / "config.json").write_text(json.dumps(hf_config_from_model_config(config), indent=2))
    save_file(dict(hf_tensors(config, params)), str(tmp / "model.safetensors"),
              metadata={"format": "pt"})
    if tokenizer_dir is not None:
      copied = mc.copy_tokenizer_files(tokenizer_dir, tmp)
      if config.flavour == "xlmr" and copied == ["tokenizer.json"]:
        # A bare tokenizer.json does not tell transformers which tokens are special.
        (tmp / "tokenizer_config.json").write_text(json.dumps(XLMR_TOKENIZER_CONFIG, indent=1))


# What transformers needs beside an XLM-R tokenizer.json to know its special tokens.
XLMR_TOKENIZER_CONFIG = {
    "tokenizer_class": "XLMRobertaTokenizer", "bos_token": "<s>", "eos_token": "</s>",
    "sep_token": "</s>", "cls_token": "<s>", "unk_token": "<unk>", "pad_token": "<pad>",
    "mask_token": "<mask>", "model_max_length": 512}


def atomic_directory(target: Path, overwrite: bool = False):
  """`kmlm_jax.fileio.atomic_directory` raising ConversionError for an existing target."""
  return fileio.atomic_directory(target, overwrite, error=ConversionError)
