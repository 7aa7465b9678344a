"""Fixtures of the bad-input suite."""

from __future__ import annotations

import contextlib
import subprocess
from pathlib import Path

import pytest

from tests.bad_inputs import small_tmpfs


@pytest.fixture
def tmpfs(tmp_path):
  """`tmpfs(name, size, read_only)` mounts a small tmpfs under tmp_path (unmounted after the
  test), or skips saying why it cannot."""
  with contextlib.ExitStack() as mounts:
    def mount(name: str, size: str = "1m", read_only: bool = False) -> Path:
      try:
        return mounts.enter_context(small_tmpfs(tmp_path / name, size, read_only))
      except (subprocess.CalledProcessError, FileNotFoundError) as e:
        pytest.skip(f"cannot mount a tmpfs here (needs root and mount): {e}")
    yield mount
