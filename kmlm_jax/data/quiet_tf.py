"""TensorFlow without its CUDA probes' noise: kmlm-jax uses TensorFlow for I/O only.

Importing TensorFlow prints CUDA initialisation lines on machines without a GPU
("Could not find cuda drivers", "failed call to cuInit", ...), most of them before
TensorFlow reads `TF_CPP_MIN_LOG_LEVEL`. `install()` (called when `kmlm_jax` is
imported) sets `TF_CPP_MIN_LOG_LEVEL=1` unless the user set it, and makes the
first `import tensorflow` of the process run with file descriptor 2 captured:
the lines of TensorFlow's GPU probes and INFO lines are dropped, every other
line (a real error, a Python warning) is written back to stderr. It then hides
the GPUs from TensorFlow (as t5x and MaxText do), so TensorFlow never touches
CUDA again and leaves the accelerators to JAX. `TF_CPP_MIN_LOG_LEVEL=0` keeps
every line.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.util
import os
import re
import sys
import tempfile

# The lines of TensorFlow's (and its XLA's) CUDA probes, and the absl banner before them.
PROBE_NOISE = re.compile(
    r"All log messages before absl::InitializeLog|cudart_stub\.cc|failed call to cuInit"
    r"|Unable to register cu(DNN|FFT|BLAS) factory|computation_placer|TF-TRT Warning"
    r"|Could not find TensorRT|^To enable the following instructions: ")
INFO_LINE = re.compile(r"^(I\d{4} |\d{4}-\d\d-\d\d [\d:.]+: I )")


def _noise(line: str) -> bool:
  return bool(PROBE_NOISE.search(line) or INFO_LINE.match(line))


@contextlib.contextmanager
def filtered_stderr():
  """Captures file descriptor 2 (C++ logs included) and writes back the lines that are not
  TensorFlow's probe noise or INFO logs."""
  try:
    sys.stderr.flush()
    saved = os.dup(2)
  except (OSError, ValueError):  # no usable stderr: nothing to filter
    yield
    return
  with tempfile.TemporaryFile() as capture:
    os.dup2(capture.fileno(), 2)
    try:
      yield
    finally:
      try:
        sys.stderr.flush()
      except ValueError:
        pass
      os.dup2(saved, 2)
      os.close(saved)
      capture.seek(0)
      lines = capture.read().decode("utf-8", "replace").splitlines(keepends=True)
      kept = "".join(line for line in lines if not _noise(line))
      if kept:
        sys.stderr.write(kept)
        sys.stderr.flush()


class _QuietLoader(importlib.abc.Loader):
  """Runs TensorFlow's own loader under `filtered_stderr`, then hides the GPUs from it."""

  def __init__(self, loader):
    self.loader = loader

  def create_module(self, spec):
    return self.loader.create_module(spec)

  def exec_module(self, module):
    module.__spec__.loader = module.__loader__ = self.loader
    with filtered_stderr():
      self.loader.exec_module(module)
      try:
        module.config.set_visible_devices([], "GPU")
      except (AttributeError, RuntimeError, ValueError):  # TF already initialised, or a stub
        pass


class _Finder(importlib.abc.MetaPathFinder):
  """Wraps the loader of the first `import tensorflow`, then steps aside."""

  def find_spec(self, name, path=None, target=None):
    if name != "tensorflow":
      return None
    sys.meta_path.remove(self)
    spec = importlib.util.find_spec(name)
    if spec is not None and spec.loader is not None:
      spec.loader = _QuietLoader(spec.loader)
    return spec


def install() -> None:
  """Quiets the first TensorFlow import of this process (see the module docstring)."""
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
  if (os.environ["TF_CPP_MIN_LOG_LEVEL"] == "0" or "tensorflow" in sys.modules
      or any(isinstance(f, _Finder) for f in sys.meta_path)):
    return
  sys.meta_path.insert(0, _Finder())
