"""transformers (PyTorch) checkpoints <-> our parameters, both directions.

Reading accepts a directory with `config.json` and `model.safetensors`,
`model.safetensors.index.json` (sharded) or `pytorch_model.bin`, saved from a
MaskedLM model (`BertForMaskedLM`, `XLMRobertaForMaskedLM`, ...), from a
bare encoder (`BertModel`, `XLMRobertaModel`, as sentence-transformers
saves them) or from a decoder (`XLMRobertaForCausalLM`, `BertLMHeadModel`:
config.json `is_decoder: true`, as the released Prix-LM). Every tensor of
the file is either mapped, a known alias or buffer that we check, or an
error: nothing is dropped silently.

A decoder's tensors have the MaskedLM names (`roberta.` / `bert.` encoder,
the same LM head); what differs is its mask, fully causal, so it becomes
`ModelConfig.attention="causal"`, and writing a causal config gives the
decoder class back (`is_decoder: true`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import typing
from pathlib import Path
from typing import Iterator, Mapping

import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from kmlm_jax import fileio
from kmlm_jax import model_checkpoint as mc
from kmlm_jax.config import ModelConfig
from kmlm_jax.convert import name_map as nm
from kmlm_jax.convert.safetensors_reader import SafetensorsError, SafetensorsFile
from kmlm_jax.errors import InputError


class ConversionError(InputError):
  """Bad input to a conversion; the message names the file or tensor."""


SUPPORTED_MODEL_TYPES = {"bert": "bert", "xlm-roberta": "xlmr", "roberta": "xlmr"}

# ModelConfig field -> transformers config.json key (in config.json's order).
HF_KEYS = {
    "vocab_size": "vocab_size", "hidden_size": "hidden_size",
    "num_layers": "num_hidden_layers", "num_heads": "num_attention_heads",
    "intermediate_size": "intermediate_size", "hidden_act": "hidden_act",
    "dropout_rate": "hidden_dropout_prob", "attention_dropout_rate": "attention_probs_dropout_prob",
    "max_position_embeddings": "max_position_embeddings", "type_vocab_size": "type_vocab_size",
    "initializer_range": "initializer_range", "layer_norm_eps": "layer_norm_eps",
    "pad_token_id": "pad_token_id"}
# transformers' defaults of the keys a config.json may omit (pad_token_id: by flavour).
HF_DEFAULTS = {"hidden_act": "gelu", "hidden_dropout_prob": 0.1,
               "attention_probs_dropout_prob": 0.1, "type_vocab_size": 2,
               "initializer_range": 0.02, "layer_norm_eps": 1e-12}

# ---------------------------------------------------------------- configs


def model_config_from_hf(hf: Mapping, source: str = "config.json") -> ModelConfig:
  """ModelConfig from a transformers config dict; errors name `source` and the key."""
  if not isinstance(hf, Mapping):
    raise ConversionError(f"{source}: expected a JSON object, got {type(hf).__name__}")
  model_type = hf.get("model_type")
  if model_type not in SUPPORTED_MODEL_TYPES:
    raise ConversionError(
        f"{source}: unsupported model_type {model_type!r} (architectures "
        f"{hf.get('architectures')}); supported: {', '.join(SUPPORTED_MODEL_TYPES)}")
  flavour = SUPPORTED_MODEL_TYPES[model_type]
  if hf.get("position_embedding_type", "absolute") != "absolute":
    raise ConversionError(f"{source}: position_embedding_type "
                          f"{hf['position_embedding_type']!r} is not supported (only 'absolute')")
  if hf.get("add_cross_attention"):
    raise ConversionError(f"{source}: field 'add_cross_attention': cross-attention (an "
                          "encoder-decoder's decoder) is not supported")
  if not isinstance(hf.get("is_decoder", False), bool):
    raise ConversionError(f"{source}: field 'is_decoder': expected true or false, got "
                          f"{json.dumps(hf['is_decoder'])[:40]}")
  defaults = {**HF_DEFAULTS, "pad_token_id": 1 if flavour == "xlmr" else 0}
  missing = [k for k in HF_KEYS.values() if k not in hf and k not in defaults]
  if missing:
    raise ConversionError(f"{source}: missing field(s) {', '.join(missing)}")
  types = typing.get_type_hints(ModelConfig)  # int, float or str
  values = {}
  for ours, key in HF_KEYS.items():
    value = hf.get(key, defaults.get(key))
    problem = mc.field_problem(ours, value)
    if problem:
      raise ConversionError(f"{source}: field {key!r}: {problem}")
    values[ours] = types[ours](value)
  try:
    config = ModelConfig(flavour=flavour, attention=attention_of(hf), **values)
  except (TypeError, ValueError) as e:
    raise ConversionError(f"{source}: {e}") from None
  if mc.config_problem(config):
    raise ConversionError(f"{source}: {mc.config_problem(config)}")
  return config


def attention_of(hf: Mapping) -> str:
  """`ModelConfig.attention` of a transformers config: a decoder (`is_decoder`, which alone
  decides transformers' mask, whatever `architectures` says) is fully causal."""
  return "causal" if hf.get("is_decoder", False) else "prefix_causal"


# transformers class of each flavour: (MaskedLM, decoder).
HF_CLASSES = {"xlmr": ("XLMRobertaForMaskedLM", "XLMRobertaForCausalLM"),
              "bert": ("BertForMaskedLM", "BertLMHeadModel")}


def hf_config_from_model_config(config: ModelConfig) -> dict:
  """A transformers config.json dict: the MaskedLM class of the flavour, or its decoder
  class (`is_decoder: true`) for a causal model."""
  common = {key: getattr(config, ours) for ours, key in HF_KEYS.items()}
  common.update(position_embedding_type="absolute", tie_word_embeddings=True, dtype="float32")
  causal = config.attention == "causal"
  if causal:
    common.update(is_decoder=True, add_cross_attention=False)
  architectures = [HF_CLASSES[config.flavour][causal]]
  if config.flavour == "xlmr":
    return dict(architectures=architectures, model_type="xlm-roberta",
                bos_token_id=0, eos_token_id=2, **common)
  return dict(architectures=architectures, model_type="bert", **common)


# ---------------------------------------------------------------- reading


class TensorReader(contextlib.AbstractContextManager):
  """Lazy name -> numpy access to the tensors of a transformers directory."""

  def __init__(self, directory: Path):
    # name -> (file, the SafetensorsFile or torch state dict holding it)
    self._sources: dict[str, tuple[Path, object]] = {}
    index = directory / "model.safetensors.index.json"
    bin_file = directory / "pytorch_model.bin"
    if (directory / "model.safetensors").exists():
      self._open_safetensors(directory / "model.safetensors")
    elif index.exists():
      for shard in shard_files(index):
        self._open_safetensors(shard)
    elif bin_file.exists():
      import torch
      try:
        state = torch.load(bin_file, map_location="cpu", weights_only=True, mmap=True)
      except Exception as e:  # torch raises many types for a bad file
        raise ConversionError(f"{bin_file}: corrupt or unreadable PyTorch file ({e})") from None
      self._sources.update((name, (bin_file, state)) for name in state)
    else:
      raise ConversionError(
          f"{directory}: no model.safetensors, model.safetensors.index.json or pytorch_model.bin")

  def _open_safetensors(self, path: Path):
    if not path.is_file():
      raise ConversionError(f"{path}: file listed in the index is missing")
    try:
      handle = SafetensorsFile(path)
    except SafetensorsError as e:
      raise ConversionError(str(e)) from None
    self._sources.update((name, (path, handle)) for name in handle.keys())

  def names(self) -> list[str]:
    return list(self._sources)

  def __contains__(self, name: str) -> bool:
    return name in self._sources

  def get(self, name: str) -> np.ndarray:
    path, source = self._sources[name]
    try:
      if isinstance(source, SafetensorsFile):
        # (bf16 safetensors come back as ml_dtypes.bfloat16 and are widened on assignment.)
        return source.get(name)
      t = source[name]
      return t.float().numpy() if str(t.dtype) == "torch.bfloat16" else t.numpy()
    except Exception as e:
      raise ConversionError(f"{path}: tensor {name!r} could not be read ({e})") from None

  def __exit__(self, *exc):
    self._sources.clear()


def shard_files(index: Path) -> list[Path]:
  """The files a model.safetensors.index.json names, each inside the index's directory."""
  weight_map = fileio.read_json_object(index, ConversionError).get("weight_map")
  if not isinstance(weight_map, dict) or not all(isinstance(v, str)
                                                 for v in weight_map.values()):
    raise ConversionError(f"{index}: field 'weight_map': expected an object of tensor name "
                          "-> file name")
  shards = []
  for name in sorted(set(weight_map.values())):
    path = fileio.inside(index.parent, name)
    if path is None:
      raise ConversionError(f"{index}: field 'weight_map' names {name!r}, outside "
                            f"{index.parent}; shard files must be in the model directory")
    shards.append(path)
  return shards


def read_hf_config(directory: Path) -> ModelConfig:
  directory = Path(directory)
  if not directory.is_dir():
    raise ConversionError(f"{directory}: no such directory")
  path = directory / "config.json"
  if not path.exists():
    raise ConversionError(f"{path}: missing (a transformers directory needs config.json)")
  return model_config_from_hf(fileio.read_json_object(path, ConversionError), str(path))


@dataclasses.dataclass
class LoadedHF:
  """Our parameters (nested dict) plus what the conversion found."""

  config: ModelConfig
  params: dict
  has_mlm_head: bool
  dropped: list[str]  # tensors deliberately not converted (e.g. NSP head)
  nonfinite: list[str] = dataclasses.field(default_factory=list)  # `nonfinite_note`s


def nonfinite_note(name: str, value: np.ndarray) -> str | None:
  """None for an all-finite float array; else "NAME (n NaN, m inf of size)". (A float64
  sum is the fast test: it allocates nothing and cannot overflow for float32 values.)"""
  if np.isfinite(value.sum(dtype=np.float64)):
    return None
  nan = int(np.isnan(value).sum())
  return f"{name} ({nan} NaN, {int(np.isinf(value).sum())} inf of {value.size})"


def nonfinite_warning(notes: list[str]) -> str:
  return f"warning: non-finite weights in {len(notes)} tensor(s): {'; '.join(notes)}"


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
  config = read_hf_config(directory)
  with TensorReader(directory) as reader:
    names = reader.names()
    prefix = _detect_prefix(names, config)
    head_names = {nm.hf_name(r, prefix) for r in nm.MLM_HEAD_RULES[config.flavour]}
    has_head = any(n in head_names for n in names)
    has_pooler = prefix + "pooler.dense.weight" in names
    rules = nm.rules_for(config, with_pooler=has_pooler, with_mlm_head=has_head)
    config = config.replace(use_pooler=has_pooler, use_mlm_head=True)
    expected = traverse_util.flatten_dict(mc.abstract_params(config), sep=".")

    params: dict[str, np.ndarray] = {}
    used: set[str] = set()
    nonfinite = []
    for rule in rules:
      out = np.empty(expected[rule.ours].shape, np.float32)
      # A stacked parameter is assembled layer by layer; `...` indexes all of an unstacked one.
      for i in range(config.num_layers) if rule.stacked else [...]:
        name = nm.hf_name(rule, prefix, i)
        if name not in reader:
          raise ConversionError(f"{directory}: missing tensor {name!r} (needed for {rule.ours})")
        t = reader.get(name)
        try:
          value = rule.hook.to_ours(t, config)
        except ValueError:
          value = None
        if value is None or tuple(value.shape) != out[i].shape:
          raise ConversionError(
              f"{directory}: tensor {name!r} has shape {tuple(t.shape)}, which does not fit "
              f"{rule.ours} {out[i].shape} of config.json")
        out[i] = value
        nonfinite.append(nonfinite_note(name, out[i]))
        used.add(name)
        del t, value
      params[rule.ours] = jnp.asarray(out)
      del out

    dropped = []
    for name in [n for n in names if n not in used]:
      alias = nm.ALIASES[config.flavour].get(name)
      if alias is not None and alias in params:
        if not np.array_equal(reader.get(name), np.asarray(params[alias])):
          raise ConversionError(
              f"{directory}: tensor {name!r} differs from {alias}; untied MLM decoders are "
              "not supported")
      elif name.endswith(nm.BUFFER_SUFFIXES) or name.startswith(nm.DROPPED_PREFIXES):
        dropped.append(name)
      else:
        raise ConversionError(f"{directory}: unexpected tensor {name!r} (no rule maps it)")

  if not has_head:
    # A bare encoder: the MLM head starts from the standard initialisation.
    params.update({k: jnp.asarray(v) for k, v in initial_mlm_head(config).items()})
  params = traverse_util.unflatten_dict(params, sep=".")
  return LoadedHF(config, params, has_head, dropped, [n for n in nonfinite if n])


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
  for rule in nm.rules_for(config, with_pooler="pooler.kernel" in params, with_mlm_head=True):
    value = np.asarray(params[rule.ours], dtype=np.float32)
    for i in range(config.num_layers) if rule.stacked else [...]:
      yield nm.hf_name(rule, prefix, i), np.ascontiguousarray(rule.hook.to_hf(value[i], config))


def write_hf_dir(directory: Path | str, config: ModelConfig, params: Mapping,
                 tokenizer_dir: Path | None = None) -> list[str]:
  """Writes config.json, model.safetensors (and tokenizer files) atomically; returns the
  `nonfinite_note`s of the tensors written."""
  directory = Path(directory)
  with fileio.atomic_directory(directory, error=ConversionError) as tmp:
    (tmp / "config.json").write_text(json.dumps(hf_config_from_model_config(config), indent=2))
    tensors = dict(hf_tensors(config, params))
    nonfinite = [n for n in (nonfinite_note(k, v) for k, v in tensors.items()) if n]
    _save_safetensors(tensors, tmp / "model.safetensors")
    del tensors
    if tokenizer_dir is not None:
      mc.copy_tokenizer_files(tokenizer_dir, tmp)
      write_tokenizer_config(tmp, config)
  return nonfinite


def _save_safetensors(tensors: dict, path: Path) -> None:
  """`safetensors.numpy.save_file`, whose I/O failures (full disk) become the OSError
  they are, so `fileio.atomic_directory` reports a `WriteError`."""
  from safetensors import SafetensorError
  from safetensors.numpy import save_file
  try:
    save_file(tensors, str(path), metadata={"format": "pt"})
  except SafetensorError as e:
    raise (fileio.os_error(e, path) or e) from None


def write_tokenizer_config(directory: Path, config: ModelConfig) -> None:
  """Sets `model_max_length` in DIR/tokenizer_config.json to the model's true maximum
  (its positions less the offset; transformers would take 512, or no limit, and a longer
  input would index past the position table); writes the file, with what transformers
  needs to know the special tokens, where the tokenizer came without one: which tokenizer
  that is comes from the tokenizer files, never from the model's flavour (a BERT model with
  the XLM-R tokenizer, as multilingual-e5, gets the XLM-R one)."""
  path = directory / "tokenizer_config.json"
  if path.exists():
    tokenizer_config = fileio.read_json_object(path, ConversionError)
  elif _is_xlmr_tokenizer(directory):
    tokenizer_config = dict(XLMR_TOKENIZER_CONFIG)
  elif (directory / "tokenizer.json").exists():
    tokenizer_config = {}
  else:  # a bare vocab.txt: cased, as `kmlm_jax.text.tokenizers.load_tokenizer` reads it
    tokenizer_config = {"tokenizer_class": "BertTokenizer", "do_lower_case": False}
  tokenizer_config["model_max_length"] = config.max_length
  path.write_text(json.dumps(tokenizer_config, indent=1, ensure_ascii=False), encoding="utf-8")


def _is_xlmr_tokenizer(directory: Path) -> bool:
  """An XLM-R tokenizer.json (Unigram, fairseq order), or a sentencepiece.bpe.model alone."""
  from kmlm_jax.text.vocab import is_xlmr_tokenizer_json
  if (directory / "tokenizer.json").exists():
    try:
      return is_xlmr_tokenizer_json(directory / "tokenizer.json")
    except InputError as e:
      raise ConversionError(str(e)) from None
  return (directory / "sentencepiece.bpe.model").exists()


# What transformers needs beside an XLM-R tokenizer.json to know its special tokens.
XLMR_TOKENIZER_CONFIG = {
    "tokenizer_class": "XLMRobertaTokenizer", "bos_token": "<s>", "eos_token": "</s>",
    "sep_token": "</s>", "cls_token": "<s>", "unk_token": "<unk>", "pad_token": "<pad>",
    "mask_token": "<mask>"}
