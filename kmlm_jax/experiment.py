"""Loading experiment configs: a Python file whose `get_config()` returns an ExperimentConfig.

Every problem with a config file raises `ConfigError` (an `InputError`,
exit code 2 in the CLI) whose message starts with the file's path: a
missing or unloadable file, a `get_config()` that fails or returns the
wrong type, a bad `key=value` override, or a value the config's own
`validate()` rejects (every field's range, the sections against each other).
`preflight` then checks, before any model is built or compiled, what the config
needs from files and devices: `check_paths` (the files and directories it names
exist), the input (`training.data.check_input`: text files, tokenizer vs
`model.vocab_size`, Prix-LM tokens), `check_devices` (mesh vs devices, batch vs
devices, accumulation and hosts) and `check_run_options` (`train.keep_best` names a
validation metric of the run, the evaluation files validation reads exist,
`train.wandb_project` has its package). Each failure is one line naming the key.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Sequence

from kmlm_jax.config import ExperimentConfig, override
from kmlm_jax.errors import InputError


class ConfigError(InputError):
  """A config that cannot run; names the file or key."""


def load_config(path: str | Path, overrides: Sequence[str] = (), expected=ExperimentConfig):
  """`get_config()` of the file at `path`, with `key=value` overrides applied and, when the
  config has a `validate()` method, validated."""
  path = Path(path)
  if not path.is_file():
    raise ConfigError(f"{path}: no such config file")
  spec = importlib.util.spec_from_file_location(f"kmlm_config_{path.stem}", path)
  module = importlib.util.module_from_spec(spec)
  try:
    spec.loader.exec_module(module)
  except Exception as e:  # the user's Python file: any error is the file's
    raise ConfigError(f"{path}: cannot be loaded ({type(e).__name__}: {e})") from None
  if not callable(getattr(module, "get_config", None)):
    raise ConfigError(f"{path}: defines no get_config()")
  try:
    config = module.get_config()
  except Exception as e:  # the user's code again (an unknown preset, a bad field value, ...)
    raise ConfigError(f"{path}: get_config() failed ({type(e).__name__}: {e})") from None
  if not isinstance(config, expected):
    raise ConfigError(f"{path}: get_config() returned {type(config).__name__}, "
                      f"not an {expected.__name__}")
  try:
    config = override(config, overrides)
  except ValueError as e:
    raise ConfigError(f"{path}: {e}") from None
  if callable(getattr(config, "validate", None)):
    try:
      config = config.validate()
    except InputError as e:
      raise ConfigError(f"{path}: {e}") from None
  return config


def preflight(config: ExperimentConfig, devices=None, *, train: bool = True) -> None:
  """Every check of a loaded (validated) config that needs no compilation: the paths, the
  input and, with `train`, the devices (`devices`: default all of JAX's; after
  `jax.distributed.initialize` on clusters). `train=False` (`kmlm-jax data cache`) checks
  what the token cache needs only. Raises an `InputError` naming the key."""
  from kmlm_jax.training.data import check_input
  check_paths(config, model=train)
  if train:
    check_devices(config, devices)
    check_run_options(config)
  check_input(config.data, config.model.vocab_size if train else None)


def check_run_options(config: ExperimentConfig) -> None:
  """`train.keep_best` names a validation metric the run produces (the error lists them),
  the corpus holds the files the knowledge metrics read, `train.wandb_project` has the
  wandb package."""
  from kmlm_jax.training import metrics_writer, validation
  try:
    validation.check_keep_best(config)
    validation.check_knowledge_inputs(config)
    if config.train.wandb_project:
      metrics_writer.check_wandb()
  except InputError as e:
    raise ConfigError(str(e)) from None


def check_devices(config: ExperimentConfig, devices=None) -> None:
  """`mesh.shape` against the devices, the global batch against the mesh's batch axes,
  `train.grad_accum_steps` and the host shares, and the input shards against the host
  shares (`Partitioner.host_share`)."""
  from kmlm_jax import sharding
  from kmlm_jax.data.input import default_input_shards
  partitioner = sharding.Partitioner.from_config(config.mesh, devices)
  data, shares = config.data, partitioner.host_share[1]
  partitioner.check_batch(data.batch_size, "data.batch_size", config.train.grad_accum_steps)
  shards = data.input_shards or default_input_shards(data.batch_size)
  if data.mixture != "synthetic" and shards % shares:
    raise ConfigError(f"data.input_shards: {shards} is not divisible by the {shares} host "
                      f"shares; expected a multiple of {shares} that divides data.batch_size="
                      f"{data.batch_size}")


def check_paths(config: ExperimentConfig, *, model: bool = True) -> None:
  """Raises a `ConfigError` naming the key for what the config names that cannot be
  used: an unknown `data.mixture`, the `data.corpus_dir` manifest, a missing `data.vocab`,
  a `data.text_pattern` that is not a `{lang}` pattern and, with `model`, the `init_from`
  checkpoint's model_config.json. Cheap (the tokenizer is loaded, no model is built), so
  a run fails before it compiles."""
  from kmlm_jax.data import mixtures
  from kmlm_jax.kg.corpus_dir import CorpusDir
  data = config.data
  if data.mixture != "synthetic":
    try:
      mixtures.members(data.mixture)
    except InputError as e:
      raise ConfigError(f"data.mixture: {e}") from None
  if data.corpus_dir:
    try:
      CorpusDir(data.corpus_dir).manifest  # noqa: B018  (reads and checks manifest.json)
    except InputError as e:
      raise ConfigError(f"data.corpus_dir: {e}") from None
  if data.vocab:
    from kmlm_jax.text.vocab import load_vocab
    if not Path(data.vocab).exists():
      raise ConfigError(f"data.vocab: {data.vocab}: no such tokenizer file or directory")
    try:
      load_vocab(data.vocab)  # cached: the run reuses it
    except InputError as e:
      raise ConfigError(f"data.vocab: {e}") from None
  if data.text_pattern:
    try:
      data.text_pattern.format(lang="en")
    except (KeyError, IndexError, ValueError) as e:
      raise ConfigError(f"data.text_pattern: {data.text_pattern!r} is not a pattern with one "
                        f"{{lang}} field ({type(e).__name__}: {e})") from None
  if model and config.init_from:
    from kmlm_jax.model_checkpoint import read_model_config
    try:
      read_model_config(config.init_from)
    except InputError as e:
      raise ConfigError(f"init_from: {e}") from None
