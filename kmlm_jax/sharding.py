"""Device mesh, logical axis rules and sharding helpers.

Parameters carry logical axis names in their `logical_axes` metadata
(`("vocab", "embed")`, ...). `MeshConfig.rules` maps each logical name onto
zero or more mesh axes. A dimension that the mapped mesh axes do not divide
evenly is replicated instead (e.g. XLM-R's 250,002-row vocabulary over a
tensor axis of 4), so every preset runs on every mesh.
"""

from __future__ import annotations

import contextlib
import math
import threading
from typing import Any, Sequence

import jax
import numpy as np
from flax import nnx
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from kmlm_jax.config import MeshConfig

LogicalAxes = Sequence[str | None]


def resolve_mesh_shape(shape: Sequence[int], num_devices: int) -> tuple[int, ...]:
  """Fills in a single -1 and checks that the mesh uses exactly `num_devices`."""
  shape = tuple(int(s) for s in shape)
  if shape.count(-1) > 1:
    raise ValueError(f"mesh shape {shape}: at most one axis may be -1")
  known = math.prod(s for s in shape if s != -1)
  if any(s == 0 or s < -1 for s in shape):
    raise ValueError(f"mesh shape {shape}: axis sizes must be positive or -1")
  if -1 in shape:
    if num_devices % known:
      raise ValueError(
          f"mesh shape {shape} does not fit {num_devices} devices: {num_devices} is not "
          f"divisible by {known}; change mesh.shape")
    shape = tuple(num_devices // known if s == -1 else s for s in shape)
  if math.prod(shape) != num_devices:
    raise ValueError(
        f"mesh shape {shape} needs {math.prod(shape)} devices but {num_devices} are "
        f"available; change mesh.shape so its product is {num_devices}")
  return shape


def make_mesh(config: MeshConfig, devices: Sequence[jax.Device] | None = None) -> Mesh:
  """Builds a mesh with Auto axes (GSPMD propagates what we do not pin)."""
  devices = list(devices if devices is not None else jax.devices())
  shape = resolve_mesh_shape(config.shape, len(devices))
  return jax.make_mesh(shape, config.axis_names, axis_types=(AxisType.Auto,) * len(shape),
                       devices=devices)


def logical_to_spec(logical_axes: LogicalAxes | None, rules, mesh: Mesh,
                    shape: Sequence[int] | None = None) -> PartitionSpec:
  """Maps logical axis names to a PartitionSpec.

  Each mesh axis is used at most once; a dimension not divisible by the
  product of its mesh axes is replicated.
  """
  if logical_axes is None:
    return PartitionSpec()
  table = dict(rules)
  used: set[str] = set()
  spec = []
  for i, name in enumerate(logical_axes):
    target = table.get(name) if name is not None else None
    if target is None:
      spec.append(None)
      continue
    axes = (target,) if isinstance(target, str) else tuple(target)
    axes = tuple(a for a in axes if a not in used and mesh.shape[a] > 1)
    size = math.prod(mesh.shape[a] for a in axes)
    if not axes or (shape is not None and shape[i] % size):
      spec.append(None)
      continue
    used.update(axes)
    spec.append(axes[0] if len(axes) == 1 else axes)
  return PartitionSpec(*spec)


def _is_variable(x) -> bool:
  return isinstance(x, nnx.Variable)


def state_shardings(state: Any, mesh: Mesh, rules) -> Any:
  """NamedShardings for an `nnx.State`, from each Variable's `logical_axes`."""

  def one(v):
    if _is_variable(v):
      axes = v.get_metadata().get("logical_axes")
      return v.replace(NamedSharding(mesh, logical_to_spec(axes, rules, mesh, v.shape)))
    return NamedSharding(mesh, PartitionSpec())

  return jax.tree.map(one, state, is_leaf=_is_variable)


def shard_state(state: Any, mesh: Mesh, rules) -> Any:
  """Places every array of `state` on the mesh according to its logical axes."""
  return jax.device_put(state, state_shardings(state, mesh, rules))


def batch_sharding(mesh: Mesh, rules, ndim: int) -> NamedSharding:
  """Sharding of a [batch, ...] input: batch over the batch rule's axes."""
  return NamedSharding(mesh, logical_to_spec(("batch",) + (None,) * (ndim - 1), rules, mesh))


# Activation constraints. The model calls `constrain(x, ("batch", "length",
# "embed"))` at block edges; it is a no-op unless a mesh has been activated.
_context = threading.local()


@contextlib.contextmanager
def activation_sharding(mesh: Mesh, rules):
  """Within this context, `constrain` pins activations to the mesh."""
  previous = getattr(_context, "value", None)
  _context.value = (mesh, rules)
  try:
    yield
  finally:
    _context.value = previous


def constrain(x: jax.Array, logical_axes: LogicalAxes) -> jax.Array:
  active = getattr(_context, "value", None)
  if active is None:
    return x
  mesh, rules = active
  spec = logical_to_spec(logical_axes, rules, mesh, x.shape)
  return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec))


def host_local_to_global(batch: dict[str, np.ndarray], mesh: Mesh, rules) -> dict[str, jax.Array]:
  """Assembles per-process batches into global arrays sharded on the batch axes."""
  out = {}
  for name, array in batch.items():
    sharding = batch_sharding(mesh, rules, np.ndim(array))
    if jax.process_count() == 1:
      out[name] = jax.device_put(array, sharding)
    else:
      out[name] = jax.make_array_from_process_local_data(sharding, array)
  return out
