"""File helpers shared by every writer: atomic directories, deterministic zips."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Mapping

import numpy as np

from kmlm_jax.errors import OutputExistsError

# A fixed timestamp makes zip bytes depend only on their contents.
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


def check_output_dir(target: Path | str, overwrite: bool = False,
                     error: type[Exception] = OutputExistsError) -> None:
  """Raises `error` for a `target` that is a file, or non-empty and not to `overwrite`."""
  target = Path(target)
  if target.exists() and not target.is_dir():
    raise error(f"{target}: exists and is not a directory")
  if target.exists() and any(target.iterdir()) and not overwrite:
    raise error(f"{target}: already exists and is not empty (pass --overwrite)")


@contextlib.contextmanager
def atomic_directory(target: Path | str, overwrite: bool = False,
                     error: type[Exception] = OutputExistsError):
  """Yields a temporary sibling directory that is renamed to `target` on success.

  A failure (any exception, KeyboardInterrupt included) leaves nothing at
  `target` and removes the temporary. `check_output_dir` checks `target` first.
  """
  target = Path(target)
  check_output_dir(target, overwrite, error)
  target.parent.mkdir(parents=True, exist_ok=True)
  tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
  try:
    yield tmp
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  if target.exists():
    shutil.rmtree(target)
  os.replace(tmp, target)


def save_npz(path: Path | str, arrays: Mapping[str, np.ndarray]) -> None:
  """Like `np.savez_compressed`, but byte-identical for identical arrays (no pickle)."""
  with zipfile.ZipFile(path, "w") as zf:
    for name, array in arrays.items():
      buffer = io.BytesIO()
      np.lib.format.write_array(buffer, np.asarray(array), allow_pickle=False)
      info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_TIME)
      info.compress_type = zipfile.ZIP_DEFLATED
      zf.writestr(info, buffer.getvalue())
