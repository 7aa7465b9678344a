"""File helpers shared by every writer: atomic directories, deterministic zips.

What they write is readable as the umask allows (0644 files, 0755 folders under umask
022), like any file the user creates, and an output that cannot be written (read-only,
full disk) is a `WriteError` naming it, with nothing half-written left behind.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import re
import shutil
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Mapping

import numpy as np

from kmlm_jax.errors import KmlmError, OutputExistsError, WriteError

# A fixed timestamp makes zip bytes depend only on their contents.
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)
# An OSError with one of these is the output's fault (not the input's), wherever it is raised.
_WRITE_ERRNOS = {errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


def read_json_object(path: Path | str, error: type[Exception]) -> dict:
  """The JSON object in `path` (UTF-8, a BOM allowed); `error` names the file when it is
  unreadable, not UTF-8, not JSON or not an object."""
  try:
    value = json.loads(Path(path).read_text(encoding="utf-8-sig"))
  except UnicodeDecodeError as e:
    raise error(f"{path}: not UTF-8 text ({e.reason} at byte {e.start}); save it as UTF-8"
                ) from None
  except (json.JSONDecodeError, RecursionError) as e:
    raise error(f"{path}: invalid JSON ({e})") from None
  if not isinstance(value, dict):
    raise error(f"{path}: expected a JSON object {{...}}, got {_json_kind(value)}")
  return value


def _json_kind(value) -> str:
  kinds = {list: "an array [...]", str: "a string", bool: "a boolean", type(None): "null"}
  return kinds.get(type(value), "a number")


def inside(directory: Path | str, name: str) -> Path | None:
  """`directory / name` when `name` (a file named inside a model directory: a shard of a
  safetensors index, a tokenizer file) is a relative path that stays in `directory`;
  None for an absolute path or one that climbs out with `..`. (Lexical: symlinks inside,
  as in the Hugging Face cache, are followed as usual.)"""
  norm = os.path.normpath(name) if isinstance(name, str) and name else os.pardir
  if os.path.isabs(norm) or norm == os.curdir or norm.split(os.sep)[0] == os.pardir:
    return None
  return Path(directory) / norm


def check_output_dir(target: Path | str, overwrite: bool = False,
                     error: type[Exception] = OutputExistsError) -> None:
  """Raises `error` for a `target` that is a file, or non-empty and not to `overwrite`."""
  target = Path(target)
  if target.exists() and not target.is_dir():
    raise error(f"{target}: exists and is not a directory")
  if target.exists() and any(target.iterdir()) and not overwrite:
    raise error(f"{target}: already exists and is not empty (pass --overwrite)")


def check_writable(target: Path | str) -> None:
  """Raises `WriteError` when `target` cannot be created: its nearest existing ancestor is
  not a writable directory (read-only file system, no permission). Call it before a long
  computation whose result goes to `target`."""
  target = Path(target).absolute()
  parent = next(p for p in target.parents if p.exists())  # where the temporary goes
  if not os.access(parent, os.W_OK | os.X_OK):
    raise WriteError(f"{target}: cannot write in {parent} (read-only file system or "
                     "no permission); nothing written")


def check_free_space(target: Path | str, nbytes: int) -> None:
  """Raises `WriteError` when the file system `target` goes to has less than `nbytes`
  (and a 5% margin) free: refused before a long computation, not half-way through."""
  target = Path(target).absolute()
  parent = next(p for p in target.parents if p.exists())
  st = os.statvfs(parent)
  free = st.f_bavail * st.f_frsize
  if free < nbytes * 1.05:
    raise WriteError(f"{target}: not enough space (needs about {_mb(nbytes)}, "
                     f"{_mb(free)} free in {parent}); nothing written")


def os_error(e: Exception, path: Path | str) -> OSError | None:
  """The OSError that a library's error message reports ("os error 28" from safetensors,
  "os_error_code='28'" from Orbax / TensorStore), for `path`; None when it reports none."""
  code = re.search(r"os[ _]error(?:_code=)?'? ?(\d+)", str(e))
  if code is None:
    return None
  return OSError(int(code.group(1)), os.strerror(int(code.group(1))), str(path))


def _mb(nbytes: float) -> str:
  return f"{nbytes / 2**20:,.1f} MB"


@contextlib.contextmanager
def writing(target: Path | str, tmp: Path | None = None):
  """Turns an OSError that is a failure to write (read-only, full disk, or any failure
  on a path under `tmp`, a nested writer's `WriteError` included) into a `WriteError`
  naming `target`."""
  try:
    yield
  except OSError as e:
    where = getattr(e, "target", None) if isinstance(e, WriteError) else e.filename
    inside = tmp is not None and where is not None and Path(os.path.abspath(where)
                                                             ).is_relative_to(os.path.abspath(tmp))
    if isinstance(e, KmlmError) and not inside:
      raise
    if tmp is not None and not inside and e.errno not in _WRITE_ERRNOS:
      raise
    reason = getattr(e, "reason", None) or e.strerror or str(e)
    error = WriteError(f"{target}: cannot write ({reason}); nothing was left there")
    error.target, error.reason = str(target), reason
    raise error from None


def umask() -> int:
  """The process's umask (from /proc where there is one: setting it to read it races
  with other threads creating files)."""
  with contextlib.suppress(OSError, ValueError, StopIteration):
    with open("/proc/self/status") as f:
      return next(int(line.split()[1], 8) for line in f if line.startswith("Umask:"))
  mask = os.umask(0o022)
  os.umask(mask)
  return mask


def publish_modes(root: Path | str) -> None:
  """Gives `root` and everything under it the modes a plain create would have given
  (0666 files / 0777 folders and executables, less the umask): temporary files and
  folders (tempfile, some writers) are created 0600 / 0700, unreadable to others."""
  mask = umask()
  for folder, _, files in os.walk(root):
    os.chmod(folder, 0o777 & ~mask)
    for name in files:
      path = os.path.join(folder, name)
      if not os.path.islink(path):
        executable = os.stat(path).st_mode & 0o111
        os.chmod(path, (0o777 if executable else 0o666) & ~mask)


@contextlib.contextmanager
def atomic_directory(target: Path | str, overwrite: bool = False,
                     error: type[Exception] = OutputExistsError):
  """Yields a temporary sibling directory that is renamed to `target` on success.

  A failure (any exception, KeyboardInterrupt included) leaves nothing at
  `target` and removes the temporary. `check_output_dir` checks `target` first;
  a failure to write is a `WriteError` naming `target`. What is renamed gets the
  umask's modes (`publish_modes`).
  """
  target = Path(target)
  check_output_dir(target, overwrite, error)
  with writing(target):
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
  try:
    with writing(target, tmp):
      yield tmp
      publish_modes(tmp)
      if target.exists():
        shutil.rmtree(target)
      os.replace(tmp, target)
  except BaseException:
    remove_tree(tmp)
    raise


def remove_tree(path: Path | str, settle: float = 0.2, timeout: float = 10.0) -> None:
  """Removes `path`, again when a late writer re-creates it (Orbax's abandoned writes after
  a failed save: tensorstore makes the folders it writes into), until it stays gone for
  `settle` seconds or `timeout` seconds have passed."""
  deadline = time.monotonic() + timeout
  while True:
    shutil.rmtree(path, ignore_errors=True)
    time.sleep(settle)
    if not os.path.lexists(path) or time.monotonic() > deadline:
      return


def save_npz(path: Path | str, arrays: Mapping[str, np.ndarray]) -> None:
  """Like `np.savez_compressed`, but byte-identical for identical arrays (no pickle)."""
  with zipfile.ZipFile(path, "w") as zf:
    for name, array in arrays.items():
      buffer = io.BytesIO()
      np.lib.format.write_array(buffer, np.asarray(array), allow_pickle=False)
      info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_TIME)
      info.compress_type = zipfile.ZIP_DEFLATED
      zf.writestr(info, buffer.getvalue())
