"""Test session setup: 8 simulated CPU devices, quiet transformers, shared fixtures."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import pytest  # noqa: E402

from tests import hf_models  # noqa: E402


@pytest.fixture(scope="session")
def hf_dirs(tmp_path_factory):
  """Saved random transformers MaskedLM directories, built once per session."""
  cache = {}

  def get(flavour: str, dims: str):
    key = (flavour, dims)
    if key not in cache:
      path = tmp_path_factory.mktemp(f"hf-{flavour}-{dims}")
      hf_models.random_masked_lm(flavour, dims).save_pretrained(path)
      cache[key] = path
    return cache[key]

  return get
