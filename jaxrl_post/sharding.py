"""The device mesh and logical-axis rules: the only module that names mesh axes.

One mesh per job with axes ("data", "fsdp", "tensor"). Models annotate only
logical names (`vocab`, `embed`, `heads`, ...); `TRAIN_RULES` and
`SAMPLE_RULES` map them onto mesh axes. Sampling applies its rules to the same
mesh (parameters gathered over `fsdp`, the batch split over `data` x `fsdp`)
instead of building a second mesh.

A dimension that does not divide by the mesh axes it is mapped to raises a
`ShardingError` naming the parameter and axis: nothing is silently replicated.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")

Rules = Mapping[str, tuple[str, ...] | str | None]

# Training: parameters sharded over fsdp (embed dim) and tensor (heads / mlp /
# vocab); the batch over data x fsdp.
TRAIN_RULES: Rules = {
    "batch": BATCH_AXES,
    "vocab": "tensor",
    "embed": "fsdp",
    "heads": "tensor",
    "kv_heads": "tensor",
    "mlp": "tensor",
    "head_dim": None,
    "layers": None,
    "norm": None,
    "length": None,
}

# Sampling: parameters replicated over fsdp (no all-gather per decode step),
# still split over tensor; the batch over data x fsdp.
SAMPLE_RULES: Rules = dict(TRAIN_RULES, embed=None)


class ShardingError(ValueError):
  """A mesh or sharding request that cannot be satisfied."""


@dataclasses.dataclass(frozen=True)
class MeshConfig:
  """Mesh shape: sizes of ("data", "fsdp", "tensor"); at most one -1 (= fill)."""

  data: int = 1
  fsdp: int = -1
  tensor: int = 1

  def shape(self, num_devices: int) -> tuple[int, int, int]:
    sizes = [self.data, self.fsdp, self.tensor]
    if sizes.count(-1) > 1:
      raise ShardingError(f"mesh {sizes}: at most one axis may be -1")
    for name, s in zip(MESH_AXES, sizes):
      if s == 0 or s < -1:
        raise ShardingError(f"mesh axis {name}={s}: must be positive or -1")
    known = math.prod(s for s in sizes if s != -1)
    if -1 in sizes:
      if num_devices % known:
        raise ShardingError(
            f"mesh {dict(zip(MESH_AXES, sizes))}: {num_devices} devices do not "
            f"divide by the fixed axes (product {known})")
      sizes[sizes.index(-1)] = num_devices // known
    if math.prod(sizes) > num_devices:
      raise ShardingError(
          f"mesh {dict(zip(MESH_AXES, sizes))} needs {math.prod(sizes)} devices, "
          f"only {num_devices} available")
    return tuple(sizes)


def make_mesh(config: MeshConfig | None = None,
              devices: Sequence[jax.Device] | None = None) -> Mesh:
  """Builds the ("data", "fsdp", "tensor") mesh (Auto axis types).

  With a mesh smaller than the device list, the first devices are used.
  """
  config = config or MeshConfig()
  devices = list(devices if devices is not None else jax.devices())
  shape = config.shape(len(devices))
  used = np.asarray(devices[:math.prod(shape)]).reshape(shape)
  return Mesh(used, MESH_AXES,
              axis_types=(jax.sharding.AxisType.Auto,) * len(MESH_AXES))


def _axes_size(mesh: Mesh, axes) -> int:
  if axes is None:
    return 1
  if isinstance(axes, str):
    axes = (axes,)
  return math.prod(mesh.shape[a] for a in axes)


def logical_to_spec(logical: Sequence[str | None], rules: Rules) -> P:
  """Maps logical axis names to a PartitionSpec; unknown names raise."""
  out = []
  used: set[str] = set()
  for name in logical:
    if name is None:
      out.append(None)
      continue
    if name not in rules:
      raise ShardingError(f"logical axis {name!r} has no rule; known: {sorted(rules)}")
    axes = rules[name]
    axes_t = (axes,) if isinstance(axes, str) else (axes or ())
    # A mesh axis may shard only one dimension of an array.
    axes_t = tuple(a for a in axes_t if a not in used)
    used.update(axes_t)
    out.append(None if not axes_t else axes_t[0] if len(axes_t) == 1 else axes_t)
  return P(*out)


def _check_divisible(path: str, shape, spec: P, mesh: Mesh):
  for dim, (size, axes) in enumerate(zip(shape, tuple(spec) + (None,) * len(shape))):
    n = _axes_size(mesh, axes)
    if size % n:
      raise ShardingError(
          f"parameter {path!r} dimension {dim} (size {size}) does not divide by "
          f"mesh axes {axes} (size {n}); change the mesh or the model shape")


def _path_str(path) -> str:
  return "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)


def tree_shardings(abstract: Any, logical: Any, mesh: Mesh, rules: Rules) -> Any:
  """NamedShardings for a pytree given a matching pytree of logical-axis tuples.

  Args:
    abstract: pytree of arrays or ShapeDtypeStructs.
    logical: same structure, leaves are tuples of logical names (or None).
  """
  def one(path, leaf, axes):
    spec = logical_to_spec(axes, rules) if axes is not None else P()
    _check_divisible(_path_str(path), leaf.shape, spec, mesh)
    return NamedSharding(mesh, spec)

  return jax.tree_util.tree_map_with_path(
      one, abstract, logical,
      is_leaf=lambda x: isinstance(x, tuple) and all(
          isinstance(a, (str, type(None))) for a in x))


def batch_sharding(mesh: Mesh, ndim: int = 2) -> NamedSharding:
  """Sharding for [B, ...] arrays: batch over data x fsdp, rest replicated."""
  return NamedSharding(mesh, P(BATCH_AXES, *([None] * (ndim - 1))))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def check_batch_divisible(batch: int, mesh: Mesh, what: str = "batch"):
  n = _axes_size(mesh, BATCH_AXES)
  if batch % n:
    raise ShardingError(
        f"{what} size {batch} does not divide by the data x fsdp mesh size {n}")


def shard_batch(batch: Any, mesh: Mesh) -> Any:
  """Places a host pytree of [B, ...] arrays onto the mesh, split along B.

  Works multi-host: every process passes the global batch (the same arrays)
  and keeps only its addressable shards.
  """
  def put(x):
    x = np.asarray(x)
    check_batch_divisible(x.shape[0], mesh)
    sharding = batch_sharding(mesh, x.ndim)
    return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])

  return jax.tree.map(put, batch)


def shard_tree(tree: Any, shardings: Any) -> Any:
  """Places a pytree (host or device arrays) onto the given shardings."""
  def put(x, s):
    if isinstance(x, jax.Array) and jax.process_count() == 1:
      return jax.device_put(x, s)
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, s, lambda idx: x[idx])

  return jax.tree.map(put, tree, shardings)


def barrier(name: str) -> None:
  """Every process waits here until all have arrived (a no-op on one process)."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices(name)


def to_host(tree: Any) -> Any:
  """The global value of every array in `tree` as NumPy, on every process.

  One process: `jax.device_get`. Across processes an array split over the
  batch has shards this process cannot read, so it is all-gathered
  (`multihost_utils.process_allgather`, a collective: every process calls
  it, in the same order).
  """
  if jax.process_count() == 1:
    return jax.device_get(tree)
  from jax.experimental import multihost_utils
  return multihost_utils.process_allgather(tree, tiled=True)


def per_device_bytes(tree: Any) -> int:
  """Bytes of the largest per-device shard footprint of a pytree of arrays."""
  totals: dict[Any, int] = {}
  for leaf in jax.tree.leaves(tree):
    for shard in leaf.addressable_shards:
      totals[shard.device] = totals.get(shard.device, 0) + shard.data.nbytes
  return max(totals.values()) if totals else 0
