"""Progress of long phases on stderr: a line when a phase starts, a bar over its loop.

stdout keeps each command's results (scripts and tests parse them); these lines
and bars go to stderr, from the first process of a multi-host run only. A
loop whose first iteration compiles says so first ("compiling ..."), so a long
wait at 0% is explained. Off a terminal (a log file) bars redraw every 10 s.
"""

from __future__ import annotations

import sys

from tqdm.auto import tqdm


def _leader() -> bool:
  jax = sys.modules.get("jax")
  return jax is None or jax.process_index() == 0


def phase(text: str) -> None:
  """One stderr line (written between a running bar's redraws)."""
  if _leader():
    tqdm.write(text, file=sys.stderr)
    sys.stderr.flush()


def bar(total: int, desc: str, unit: str, compiling: str | None = None,
        disable: bool = False) -> tqdm:
  """A tqdm bar on stderr over `total` units; with `compiling`, first the phase line
  "compiling WHAT (during the first UNIT)". `disable`: neither (a quiet library call)."""
  if compiling and not disable:
    phase(f"compiling {compiling} (during the first {unit})")
  tty = sys.stderr.isatty()
  return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr,
              disable=disable or not _leader(), mininterval=0.1 if tty else 10.0,
              dynamic_ncols=tty)
