"""The one error base class: every error a user can cause is a `KmlmError`.

The CLI maps them to exit codes in one place (`kmlm_jax.cli.main`):

  0  success
  1  a runtime failure: a verification failed (`convert --verify`: PyTorch
     differs) or an output cannot be written (read-only, full disk)
  2  bad input: a config, file, checkpoint, corpus, tokenizer or argument
  3  training diverged: the loss or gradient became NaN/inf (nothing bad saved)

Errors keep their Python base (`ValueError`, ...) as a second base, so
library callers can still catch them as before. Messages name the file
(and line and field where there is one).
"""

from __future__ import annotations


class KmlmError(Exception):
  """An error the user can fix; `exit_code` is the CLI's exit status."""

  exit_code = 2


class InputError(KmlmError, ValueError):
  """Bad input: a config, file, checkpoint, corpus or argument."""


class OutputExistsError(InputError, FileExistsError):
  """An output that exists already (pass --overwrite)."""


class NonFiniteLoss(KmlmError, RuntimeError):
  """The loss or gradient became NaN/inf; the run stopped, checkpoints are intact."""

  exit_code = 3


class WriteError(KmlmError, OSError):
  """An output that cannot be written (read-only, full disk, no permission); the
  message names the path and the system's reason, and nothing half-written is left."""

  exit_code = 1
