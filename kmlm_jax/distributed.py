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


def maybe_initialize(force: bool = False) -> bool:
  explicit = "JAX_COORDINATOR_ADDRESS" in os.environ
  slurm = int(os.environ.get("SLURM_NTASKS", "1")) > 1
  tpu_pod = "TPU_WORKER_HOSTNAMES" in os.environ and "," in os.environ["TPU_WORKER_HOSTNAMES"]
  if not (force or explicit or slurm or tpu_pod):
    return False
  if explicit:
    jax.distributed.initialize(
        coordinator_address=os.environ["JAX_COORDINATOR_ADDRESS"],
        num_processes=int(os.environ["JAX_NUM_PROCESSES"]),
        process_id=int(os.environ["JAX_PROCESS_ID"]))
  else:
    jax.distributed.initialize()  # SLURM and TPU pods are auto-detected
  return True
