"""Loading experiment configs: a Python file whose `get_config()` returns an ExperimentConfig."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Sequence

from kmlm_jax.config import ExperimentConfig, override
from kmlm_jax.errors import InputError


class ConfigError(InputError):
  """A config that cannot run; names the file or key."""


def load_config(path: str | Path, overrides: Sequence[str] = (), expected=ExperimentConfig):
  path = Path(path)
  if not path.is_file():
    raise ConfigError(f"{path}: no such config file")
  spec = importlib.util.spec_from_file_location(f"kmlm_config_{path.stem}", path)
  module = importlib.util.module_from_spec(spec)
  try:
    spec.loader.exec_module(module)
  except Exception as e:
    raise ConfigError(f"{path}: cannot be loaded ({type(e).__name__}: {e})") from None
  if not hasattr(module, "get_config"):
    raise ConfigError(f"{path}: defines no get_config()")
  config = module.get_config()
  if not isinstance(config, expected):
    raise ConfigError(f"{path}: get_config() returned {type(config).__name__}, "
                      f"not an {expected.__name__}")
  try:
    return override(config, overrides)
  except ValueError as e:
    raise ConfigError(f"{path}: {e}") from None
