"""`kmlm-jax train --dry-run`: compile the train step ahead of time and report its memory.

Builds the mesh and the trainer as training does (`loop.pretraining_trainer`), lowers
and compiles the step for the config's shapes from abstract inputs (the state from
`jax.eval_shape`, the batch as `ShapeDtypeStruct`s: nothing is allocated and no data is
read), and reports the parameter count, the FLOPs per step (analytic, `flops.py`, and
XLA's cost analysis when the backend gives one) and the compiled `memory_analysis()`
per device. A total above the memory budget (given in GiB, or the device's memory when
JAX reports it) is a `DoesNotFit` error (exit 2).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import numpy as np

from kmlm_jax import sharding
from kmlm_jax.config import ExperimentConfig
from kmlm_jax.errors import InputError
from kmlm_jax.training import flops, loop
from kmlm_jax.training.data import SyntheticBatches

GIB = 1 << 30
MEMORY_ROWS = (("arguments", "argument_size_in_bytes"), ("outputs", "output_size_in_bytes"),
               ("aliased", "alias_size_in_bytes"), ("temps", "temp_size_in_bytes"),
               ("generated code", "generated_code_size_in_bytes"))


class DoesNotFit(InputError):
  """The compiled step needs more memory per device than the budget."""


@dataclasses.dataclass
class DryRunReport:
  name: str
  devices: int
  device_kind: str
  mesh: dict
  parameters: int
  analytic_flops: float  # per step, all devices
  compiled_flops: float | None  # per device, XLA's count
  memory: dict  # bytes per device: MEMORY_ROWS' names and "total"
  budget: float | None  # bytes per device; None: not checked

  @property
  def fits(self) -> bool:
    return self.budget is None or self.memory["total"] <= self.budget

  def lines(self) -> list[str]:
    mesh = " x ".join(f"{k}={v}" for k, v in self.mesh.items())
    out = [f"dry run of {self.name}: {self.devices} x {self.device_kind} (mesh {mesh})",
           f"parameters          {self.parameters:,}",
           f"FLOPs per step      {self.analytic_flops:.4g} analytic (all devices)"]
    if self.compiled_flops is not None:
      out.append(f"                    {self.compiled_flops:.4g} XLA cost analysis (per device; "
                 "a loop body counted once)")
    out.append(f"memory per device {'GiB':>10} {'bytes':>17}")
    for name in [name for name, _ in MEMORY_ROWS] + ["total"]:
      out.append(f"  {name:<15} {self.memory[name] / GIB:10.3f} {self.memory[name]:17,}")
    budget = "not checked" if self.budget is None else f"{self.budget / GIB:.3f} GiB"
    out.append(f"budget              {budget}")
    return out

  def verdict(self) -> str:
    """One line: fits, or the figure against the budget."""
    total = self.memory["total"] / GIB
    if self.budget is None:
      return f"dry run: {total:.3f} GiB per device (no memory budget known)"
    if self.fits:
      return f"dry run: fits: {total:.3f} GiB per device <= budget {self.budget / GIB:.3f} GiB"
    return (f"does not fit: the train step needs {total:.3f} GiB per device > budget "
            f"{self.budget / GIB:.3f} GiB (lower data.batch_size, raise "
            "train.grad_accum_steps, set model.remat_policy, or shard over more devices)")


def device_memory(device: jax.Device) -> float | None:
  """Bytes of memory of `device` when JAX reports it (GPUs, TPUs), else None (CPUs)."""
  try:
    stats = device.memory_stats()
  except Exception:  # noqa: BLE001 -- backends without the query raise various errors
    return None
  return float(stats["bytes_limit"]) if stats and stats.get("bytes_limit") else None


def abstract_batch(config: ExperimentConfig, partitioner: sharding.Partitioner) -> dict:
  """The global batch the step sees, as sharded ShapeDtypeStructs (keys, shapes and dtypes
  of a generated batch: no data read)."""
  host = next(SyntheticBatches(config.data, config.model.vocab_size))
  return {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=sharding.batch_sharding(
      partitioner.mesh, partitioner.rules, v.ndim)) for k, v in host.items()}


def compile_step(config: ExperimentConfig, devices=None):
  """(trainer, compiled step) of `config` from abstract inputs."""
  trainer = loop.pretraining_trainer(config, devices)
  p = trainer.partitioner
  with sharding.activation_sharding(p.mesh, p.rules):
    lowered = trainer.step_fn.jitted.lower(trainer.abstract_state(), abstract_batch(config, p))
  return trainer, lowered.compile()


def memory_per_device(compiled) -> dict:
  """The compiled step's memory per device in bytes; the total counts donated (aliased)
  buffers once."""
  stats = compiled.memory_analysis()
  memory = {name: int(getattr(stats, field, 0) or 0) for name, field in MEMORY_ROWS}
  memory["total"] = (memory["arguments"] + memory["outputs"] - memory["aliased"]
                     + memory["temps"] + memory["generated code"])
  return memory


def _compiled_flops(compiled) -> float | None:
  try:
    cost = compiled.cost_analysis()
  except Exception:  # noqa: BLE001 -- not every backend implements it
    return None
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else None
  value = (cost or {}).get("flops")
  return float(value) if value is not None and value >= 0 else None


def dry_run(config: ExperimentConfig, budget_gib: float | None = None,
            devices=None) -> DryRunReport:
  """Compiles `config`'s train step and reports its memory against the budget
  (`budget_gib`, or the first device's memory when JAX reports it)."""
  if budget_gib is not None and not (budget_gib > 0 and math.isfinite(budget_gib)):
    raise InputError(f"--memory-budget: {budget_gib} is not a positive number of GiB")
  trainer, compiled = compile_step(config, devices)
  device = trainer.partitioner.mesh.devices.flat[0]
  budget = budget_gib * GIB if budget_gib is not None else device_memory(device)
  params = jax.eval_shape(trainer.init_state).params
  data = config.data
  return DryRunReport(
      name=config.name, devices=trainer.partitioner.mesh.size, device_kind=device.device_kind,
      mesh=dict(trainer.partitioner.mesh.shape),
      parameters=sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params)),
      analytic_flops=flops.train_flops_per_step(config.model, data.batch_size, data.seq_length,
                                                data.max_predictions),
      compiled_flops=_compiled_flops(compiled), memory=memory_per_device(compiled),
      budget=budget)

