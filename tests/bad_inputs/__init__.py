"""The standing bad-input suite: every user mistake through `kmlm-jax` ends in one
stderr line `kmlm-jax SUBCOMMAND: error: ...` naming the file, line, field or key,
a documented exit code (README, "Exit codes"), no traceback and nothing half-written.

One module per subcommand; each case calls `kmlm_jax.cli.main` in-process (or in a
subprocess where the fault needs one) with one bad input.
"""

from __future__ import annotations

import contextlib
import subprocess
from pathlib import Path

from kmlm_jax.cli import main


def check(capsys, argv, command: str, needles, code: int = 2) -> str:
  """Runs `kmlm-jax ARGV`; asserts the exit code, one error line naming every needle and
  no traceback; returns the line."""
  rc = main([str(a) for a in argv])
  out, err = capsys.readouterr()
  assert "Traceback" not in out + err
  assert rc == code, err
  lines = err.splitlines()
  assert len(lines) == 1, err
  assert lines[0].startswith(f"kmlm-jax {command}: error: "), lines[0]
  for needle in needles:
    assert str(needle) in lines[0], (needle, lines[0])
  return lines[0]


@contextlib.contextmanager
def small_tmpfs(path: Path, size: str = "1m", read_only: bool = False):
  """A real small (or read-only) filesystem at `path` for disk-full and read-only faults.
  Needs root (CI runs as root); the caller skips when mounting is refused."""
  path.mkdir(parents=True, exist_ok=True)
  options = f"size={size}" + (",ro" if read_only else "")
  subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], check=True,
                 capture_output=True)
  try:
    yield path
  finally:
    subprocess.run(["umount", "-l", str(path)], check=False, capture_output=True)
