"""Multi-host start-up: `jax.distributed.initialize` on real clusters.

`maybe_initialize()` calls it when the environment says this process is one
of several: SLURM (`SLURM_NTASKS` > 1), a Cloud TPU pod slice (JAX detects
it), or explicit `JAX_COORDINATOR_ADDRESS` + `JAX_NUM_PROCESSES` +
`JAX_PROCESS_ID` (the launch scripts set these). On one host it does
nothing.
"""

from __future__ import annotations

import os

import jax

from kmlm_jax.errors import InputError


def _int_env(name: str, default: str | None = None) -> int:
  raw = os.environ.get(name, default)
  if raw is None:
    raise InputError(f"{name} is not set; JAX_COORDINATOR_ADDRESS needs JAX_NUM_PROCESSES and "
                     "JAX_PROCESS_ID as well")
  try:
    return int(raw)
  except ValueError:
    raise InputError(f"{name}={raw!r}: expected an integer") from None


def maybe_initialize(force: bool = False) -> bool:
  explicit = "JAX_COORDINATOR_ADDRESS" in os.environ
  slurm = _int_env("SLURM_NTASKS", "1") > 1
  tpu_pod = "TPU_WORKER_HOSTNAMES" in os.environ and "," in os.environ["TPU_WORKER_HOSTNAMES"]
  if not (force or explicit or slurm or tpu_pod):
    return False
  if explicit:
    jax.distributed.initialize(coordinator_address=os.environ["JAX_COORDINATOR_ADDRESS"],
                               num_processes=_int_env("JAX_NUM_PROCESSES"),
                               process_id=_int_env("JAX_PROCESS_ID"))
  else:
    jax.distributed.initialize()  # SLURM and TPU pods are auto-detected
  return True
