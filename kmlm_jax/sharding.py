"""Device mesh, logical axis rules and the `Partitioner`.

Parameters carry logical axis names in Flax's own `out_sharding` metadata
(`nnx.Param(x, out_sharding=("vocab", "embed"))`, so `nnx.get_partition_spec`
under `nnx.logical_axis_rules` reads them too). `MeshConfig.rules` maps each
logical name onto zero or more mesh axes. A dimension that the mapped mesh
axes do not divide evenly is replicated instead (e.g. XLM-R's 250,002-row
vocabulary over a tensor axis of 4), so every preset runs on every mesh.

`Partitioner` is the one place that turns these into shardings: of any
abstract state (`shardings`), of host batches (`put_batch`), and of jitted
functions that trace with the model's activation constraints (`jit`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import threading
from typing import Any, Callable, Sequence

import jax
import numpy as np
from flax import nnx
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from kmlm_jax.config import MeshConfig
from kmlm_jax.errors import InputError

LogicalAxes = Sequence[str | None]


def resolve_mesh_shape(shape: Sequence[int], num_devices: int,
                       platform: str | None = None) -> tuple[int, ...]:
  """Fills in a single -1 and checks that the mesh uses exactly `num_devices` (of
  `platform`: on "cpu" the message says how to simulate more devices)."""
  shape = tuple(int(s) for s in shape)
  if shape.count(-1) > 1:
    raise InputError(f"mesh.shape {shape}: at most one axis may be -1")
  known = math.prod(s for s in shape if s != -1)
  if any(s == 0 or s < -1 for s in shape):
    raise InputError(f"mesh.shape {shape}: axis sizes must be positive or -1")
  if (num_devices % known if -1 in shape else known != num_devices):
    fit = known * max(1, -(-num_devices // known)) if -1 in shape else known
    needs = f"a multiple of {known} devices" if -1 in shape else f"{known} devices"
    hint = (f"; on CPU, simulate {fit} devices with "
            f"XLA_FLAGS=--xla_force_host_platform_device_count={fit}" if platform == "cpu" else "")
    raise InputError(
        f"mesh.shape {shape} needs {needs} but {num_devices} {platform or 'jax'} "
        f"device{' is' if num_devices == 1 else 's are'} available; expected sizes whose "
        f"product is {num_devices} (e.g. mesh.shape=-1,1,1){hint}")
  return tuple(num_devices // known if s == -1 else s for s in shape)


def make_mesh(config: MeshConfig, devices: Sequence[jax.Device] | None = None) -> Mesh:
  """Builds a mesh with Auto axes (GSPMD propagates what we do not pin)."""
  devices = list(devices if devices is not None else jax.devices())
  shape = resolve_mesh_shape(config.shape, len(devices), devices[0].platform)
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


def state_shardings(state: Any, mesh: Mesh, rules) -> Any:
  """NamedShardings of a tree: a Variable's from its `out_sharding` logical axes (the
  result is then a pure dict), any other leaf replicated."""

  def one(v):
    if isinstance(v, nnx.Variable):
      axes = v.get_metadata().get("out_sharding")
      return NamedSharding(mesh, logical_to_spec(axes, rules, mesh, v.shape))
    return NamedSharding(mesh, PartitionSpec())

  out = jax.tree.map(one, state, is_leaf=lambda x: isinstance(x, nnx.Variable))
  return nnx.to_pure_dict(out) if isinstance(out, nnx.State) else out


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


def batch_ways(mesh_shape: dict[str, int], rules) -> int:
  """Devices a batch is split over: the product of the batch rule's mesh axes."""
  axes = dict(rules).get("batch") or ()
  axes = (axes,) if isinstance(axes, str) else tuple(axes)
  return math.prod(mesh_shape[a] for a in axes)


def host_shares(mesh: Mesh, rules) -> dict[int, int]:
  """The share of every global batch that each process of the mesh loads: {process:
  share}, of `max + 1` equal, contiguous shares in batch order. Processes whose devices
  hold the same rows (the batch axes do not span them, e.g. a tensor axis across hosts)
  have the same share and load the same rows. Raises an `InputError` for a device order
  that gives a process rows that are not one such share."""
  ways = batch_ways(dict(mesh.shape), rules)
  rows: dict[int, set] = {}
  for device, index in batch_sharding(mesh, rules, 1).devices_indices_map((ways,)).items():
    rows.setdefault(device.process_index, set()).update(range(ways)[index[0]])
  size = len(rows[min(rows)])
  shares = {}
  for process in sorted(rows):
    held = sorted(rows[process])
    if len(held) != size or held != list(range(held[0], held[0] + size)) or held[0] % size:
      raise InputError(f"mesh.shape {tuple(mesh.shape.values())}: the devices of process "
                       f"{process} hold batch rows {held} of {ways}; expected each host to hold "
                       "one contiguous, equal share (order mesh devices by host)")
    shares[process] = held[0] // size
  return shares


def check_batch(batch_size: int, name: str, accum: int, mesh_shape: dict[str, int], rules,
                shares: int = 1) -> None:
  """Raises an `InputError` when a global batch of `batch_size` rows cannot be split into
  `accum` micro-batches, over the batch axes of a mesh of `mesh_shape` and into the
  hosts' `shares`."""
  ways = batch_ways(mesh_shape, rules)
  if batch_size % accum:
    raise InputError(f"{name}={batch_size} is not divisible by the {accum} micro-batches "
                     "of gradient accumulation (train.grad_accum_steps)")
  if (batch_size // accum) % ways:
    raise InputError(
        f"the micro-batch of {batch_size // accum} rows ({name}"
        f"{f' / {accum} accumulation steps' if accum > 1 else ''}) cannot be split over "
        f"the {ways} devices of the batch axes (mesh {mesh_shape}); make "
        f"{name} a multiple of {ways * accum} or change mesh.shape")
  if batch_size % shares:
    raise InputError(f"{name}={batch_size} is not divisible by the {shares} host shares; "
                     f"make it a multiple of {shares}")


@dataclasses.dataclass(frozen=True)
class Partitioner:
  """A mesh and its logical rules: shardings, batch placement and jit (t5x's
  BasePartitioner, MaxText's logical rules)."""

  mesh: Mesh
  rules: Any

  @classmethod
  def from_config(cls, config: MeshConfig, devices: Sequence[jax.Device] | None = None):
    return cls(make_mesh(config, devices), config.rules)

  @property
  def replicated(self) -> NamedSharding:
    return NamedSharding(self.mesh, PartitionSpec())

  def shardings(self, tree: Any) -> Any:
    """NamedShardings of an abstract or concrete tree (Variables by their metadata)."""
    return state_shardings(tree, self.mesh, self.rules)

  def batch_ways(self) -> int:
    """Devices a batch is split over (the product of the batch rule's mesh axes)."""
    return batch_ways(dict(self.mesh.shape), self.rules)

  @functools.cached_property
  def host_share(self) -> tuple[int, int]:
    """(index, count): this process loads share `index` of `count` equal, contiguous shares
    of every global batch (see `host_shares`; (0, 1) on one process)."""
    shares, me = host_shares(self.mesh, self.rules), jax.process_index()
    if me not in shares:
      raise InputError(f"the mesh {dict(self.mesh.shape)} holds no device of process {me}; "
                       "expected a mesh over the devices of every process")
    return shares[me], max(shares.values()) + 1

  def check_batch(self, batch_size: int, name: str, accum: int = 1) -> None:
    """Fails before compiling when a global batch cannot be split as asked."""
    check_batch(batch_size, name, accum, dict(self.mesh.shape), self.rules,
                self.host_share[1])

  def host_rows(self, batch: dict) -> dict:
    """This host's share of a global batch that every host holds whole."""
    index, count = self.host_share
    return {k: v[index * len(v) // count:(index + 1) * len(v) // count]
            for k, v in batch.items()}

  def put_batch(self, batch: dict) -> dict:
    """This host's share ({name: [b, ...] numpy}) -> global arrays split over the batch
    axes (hosts of one share give the same rows)."""
    out = {}
    for name, array in batch.items():
      target = batch_sharding(self.mesh, self.rules, np.ndim(array))
      rows = np.shape(array)[0] * self.host_share[1]
      out[name] = (jax.device_put(array, target) if jax.process_count() == 1 else
                   jax.make_array_from_process_local_data(target, array,
                                                          (rows,) + np.shape(array)[1:]))
    return out

  def jit(self, fn: Callable, **jit_kwargs) -> Callable:
    """`jax.jit(fn, **jit_kwargs)` that traces with this mesh's activation constraints."""
    jitted = jax.jit(fn, **jit_kwargs)

    def call(*args):
      with activation_sharding(self.mesh, self.rules):
        return jitted(*args)

    call.jitted = jitted
    return call
