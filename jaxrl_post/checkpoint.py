"""Orbax snapshots: save, resume, corruption handling, streaming reads.

Layout: `<dir>/<step>/state` (the train-state pytree) and `<dir>/<step>/meta`
(JSON). Orbax finalises a step by an atomic rename, so a save interrupted by
a crash never shows up as a step; old steps are deleted only after a newer
one is final. A finalised step that cannot be read (truncated or corrupted
files) is reported and skipped: `restore` falls back to the newest good one.

For analysis, `CheckpointSource(dir, step)` reads one parameter at a time
(Orbax partial restore), so memory stays bounded by a few matrices;
`DictSource(params)` offers the same interface over an in-memory pytree.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Iterable

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from absl import logging


class CheckpointError(RuntimeError):
  """No usable snapshot, or a snapshot that cannot be read."""


@dataclasses.dataclass(frozen=True)
class SnapshotPolicy:
  """Save every `every` steps; keep the newest `keep` (None: all) plus every
  `keep_period`-th step."""

  every: int = 100
  keep: int | None = None
  keep_period: int | None = None


def list_steps(directory: str) -> list[int]:
  """Finalised snapshot steps under `directory`, ascending."""
  if not os.path.isdir(directory):
    return []
  return sorted(int(d) for d in os.listdir(directory)
                if d.isdigit() and os.path.isdir(os.path.join(directory, d)))


def _is_finite(tree) -> bool:
  """Whether every floating-point leaf is finite.

  Reduced on device to one replicated bool: a restored array can span
  processes, and this process cannot read the others' shards.
  """
  leaves = [x for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.floating)]
  return not leaves or bool(_all_finite(leaves))


@jax.jit
def _all_finite(leaves: list) -> jax.Array:
  return jnp.all(jnp.stack([jnp.isfinite(x).all() for x in leaves]))


class Checkpointer:
  """The run's snapshot manager (async saves, keep policy, safe resume)."""

  def __init__(self, directory: str, policy: SnapshotPolicy = SnapshotPolicy()):
    self.directory = os.path.abspath(directory)
    self.policy = policy
    options = ocp.CheckpointManagerOptions(
        max_to_keep=policy.keep, keep_period=policy.keep_period,
        enable_async_checkpointing=True, create=True)
    self._mgr = ocp.CheckpointManager(self.directory, options=options,
                                      item_names=("state", "meta"))

  def save(self, step: int, state: Any, meta: dict | None = None):
    """Starts an async save of `state` (and JSON `meta`) at `step`."""
    self._mgr.save(step, args=ocp.args.Composite(
        state=ocp.args.PyTreeSave(state), meta=ocp.args.JsonSave(meta or {})), force=True)

  def wait(self):
    self._mgr.wait_until_finished()

  def close(self):
    self._mgr.wait_until_finished()
    self._mgr.close()

  def latest_step(self) -> int | None:
    steps = list_steps(self.directory)
    return steps[-1] if steps else None

  def restore(self, abstract: Any, shardings: Any, step: int | None = None,
              reject_nonfinite: bool = True) -> tuple[Any, int]:
    """(state, step) of the newest good snapshot (or exactly `step`).

    abstract: a pytree of ShapeDtypeStructs (or arrays) like the saved state;
    shardings: matching NamedShardings (any mesh: restore reshards).
    """
    steps = list_steps(self.directory)
    if step is not None:
      if step not in steps:
        raise CheckpointError(f"{self.directory}: no snapshot at step {step}; have {steps}")
      candidates = [step]
    else:
      candidates = steps[::-1]
    if not candidates:
      raise CheckpointError(f"{self.directory}: no snapshot to restore")
    target = jax.tree.map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings)
    restore_args = jax.tree.map(lambda s: ocp.ArrayRestoreArgs(sharding=s), shardings)
    for s in candidates:
      try:
        out = self._mgr.restore(s, args=ocp.args.Composite(
            state=ocp.args.PyTreeRestore(item=target, restore_args=restore_args)))
        state = out["state"]
        if reject_nonfinite and not _is_finite(state):
          raise CheckpointError("non-finite values")
        return state, s
      except Exception as e:  # noqa: BLE001  (any read failure means: skip it)
        if step is not None:
          raise CheckpointError(f"snapshot {os.path.join(self.directory, str(s))} "
                                f"is unreadable: {e}") from e
        logging.warning("snapshot %s is unreadable (%s: %s); trying the previous one",
                        os.path.join(self.directory, str(s)), type(e).__name__, e)
    raise CheckpointError(f"{self.directory}: every snapshot is unreadable ({candidates})")


# --------------------------------------------------------------------------
# Reading parameters without a trainer.
# --------------------------------------------------------------------------


def _state_dir(directory: str, step: int) -> str:
  # Absolute: Orbax's readers find no metadata under a relative path (it
  # failed as "'NoneType' object is not iterable" for `--workdir=runs/study`).
  path = os.path.abspath(os.path.join(directory, str(step), "state"))
  if not os.path.isdir(path):
    raise CheckpointError(f"{path}: no such snapshot (have steps {list_steps(directory)})")
  return path


def _flatten(tree, prefix=()) -> dict[str, Any]:
  out = {}
  if isinstance(tree, dict):
    for k, v in tree.items():
      out.update(_flatten(v, prefix + (str(k),)))
  else:
    out["/".join(prefix)] = tree
  return out


def _nest(flat: dict[str, Any]) -> dict:
  out: dict = {}
  for path, v in flat.items():
    node = out
    keys = path.split("/")
    for k in keys[:-1]:
      node = node.setdefault(k, {})
    node[keys[-1]] = v
  return out


def read_param_shapes(directory: str, step: int, subtree: str = "params") -> dict[str, tuple]:
  """{path: (shape, dtype)} of the parameters in a snapshot (no array read)."""
  meta = ocp.PyTreeCheckpointer().metadata(_state_dir(directory, step))
  tree = meta.item_metadata if hasattr(meta, "item_metadata") else meta
  tree = getattr(tree, "tree", tree)
  flat = _flatten(dict(tree)[subtree] if subtree else dict(tree))
  return {k: (tuple(v.shape), np.dtype(v.dtype)) for k, v in flat.items()}


def read_param_arrays(directory: str, step: int, paths: Iterable[str],
                      subtree: str = "params") -> dict[str, np.ndarray]:
  """Reads only the named parameters (partial restore) as host arrays."""
  paths = list(paths)
  shapes = read_param_shapes(directory, step, subtree)
  missing = [p for p in paths if p not in shapes]
  if missing:
    raise KeyError(f"snapshot {directory}/{step} has no parameter(s) {missing}")
  item = {subtree: _nest({p: np.zeros((), np.float32) for p in paths})} if subtree else \
      _nest({p: np.zeros((), np.float32) for p in paths})
  restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), item)
  try:
    out = ocp.PyTreeCheckpointer().restore(
        _state_dir(directory, step),
        args=ocp.args.PyTreeRestore(item=item, restore_args=restore_args, partial_restore=True))
  except Exception as e:  # noqa: BLE001
    raise CheckpointError(f"snapshot {directory}/{step} is unreadable: {e}") from e
  flat = _flatten(out[subtree] if subtree else out)
  return {p: np.asarray(flat[p]) for p in paths}


def resolve_step(directory: str, step: int | None) -> int:
  steps = list_steps(directory)
  if not steps:
    raise CheckpointError(f"{directory}: no snapshot")
  if step is None:
    return steps[-1]
  if step not in steps:
    raise CheckpointError(f"{directory}: no snapshot at step {step}; have {steps}")
  return step


def load_params(directory: str, step: int | None = None) -> tuple[dict, int]:
  """(params as host arrays, step) of a snapshot; falls back past unreadable
  newest snapshots when `step` is None."""
  candidates = [resolve_step(directory, step)] if step is not None else list_steps(directory)[::-1]
  if not candidates:
    raise CheckpointError(f"{directory}: no snapshot")
  err = None
  for s in candidates:
    try:
      keys = list(read_param_shapes(directory, s))
      arrays = read_param_arrays(directory, s, keys)
      if not _is_finite(arrays):
        raise CheckpointError("non-finite parameters")
      return _nest(arrays), s
    except Exception as e:  # noqa: BLE001
      err = e
      logging.warning("snapshot %s/%d unusable (%s); trying the previous one", directory, s, e)
  raise CheckpointError(f"{directory}: no readable snapshot ({err})")


class CheckpointSource:
  """Parameters of one snapshot, read one at a time (keys like `layers/q`)."""

  def __init__(self, directory: str, step: int | None = None):
    self.directory = directory
    self.step = resolve_step(directory, step)
    self._shapes = read_param_shapes(directory, self.step)

  def keys(self) -> list[str]:
    return sorted(self._shapes)

  def shape(self, key: str) -> tuple:
    return self._shapes[key][0]

  def dtype(self, key: str):
    return self._shapes[key][1]

  def read(self, key: str) -> np.ndarray:
    if key not in self._shapes:
      raise KeyError(f"snapshot {self.directory}/{self.step} has no parameter {key!r}")
    return read_param_arrays(self.directory, self.step, [key])[key]

  def __repr__(self):
    return f"CheckpointSource({self.directory}, step={self.step})"


class DictSource:
  """The same interface over an in-memory parameter pytree."""

  def __init__(self, params: dict, name: str = "params"):
    self._flat = {k: v for k, v in _flatten(params).items()}
    self.name = name

  def keys(self) -> list[str]:
    return sorted(self._flat)

  def shape(self, key: str) -> tuple:
    return tuple(np.shape(self._flat[key]))

  def dtype(self, key: str):
    return np.asarray(self._flat[key]).dtype

  def read(self, key: str) -> np.ndarray:
    if key not in self._flat:
      raise KeyError(f"{self.name} has no parameter {key!r}")
    return np.asarray(self._flat[key])
