"""Which parameters are matrices, how they are named, and how they are read.

Stacked layer tensors (`layers/*`, leading axis L) are split per layer and
named `<path>/<layer>` (e.g. `layers/q/3`). Projection tensors become 2-D:
q/k/v [D, H, Dh] -> [D, H*Dh]; o [H, Dh, D] -> [H*Dh, D]; gate/up [D, F];
down [F, D]; embed [V, D]; lm_head [D, V]. Norm scales and biases are
vectors: not in the SVD metrics, but counted in sparsity.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

MATRIX_KEYS = ("layers/q", "layers/k", "layers/v", "layers/o", "layers/gate", "layers/up",
               "layers/down", "embed", "lm_head")


def matrix_type(key: str) -> str:
  return key.split("/")[1] if key.startswith("layers/") else key


def is_matrix_key(key: str) -> bool:
  return key in MATRIX_KEYS


def as_matrices(key: str, array: np.ndarray) -> np.ndarray:
  """[L, m, n] for stacked layer tensors, [1, m, n] for embed / lm_head."""
  a = np.asarray(array)
  if key.startswith("layers/"):
    if key == "layers/o":
      return a.reshape(a.shape[0], a.shape[1] * a.shape[2], a.shape[3])
    return a.reshape(a.shape[0], a.shape[1], -1)
  if a.ndim != 2:
    raise ValueError(f"{key}: expected a 2-D matrix, got shape {a.shape}")
  return a[None]


def matrix_names(key: str, count: int) -> list[str]:
  return [f"{key}/{l}" for l in range(count)] if key.startswith("layers/") else [key]


def check_compatible(ref, target):
  """Same parameter paths and shapes, or a ValueError naming the first mismatch."""
  rk, tk = set(ref.keys()), set(target.keys())
  if rk != tk:
    raise ValueError(f"snapshots differ in parameters: only in reference {sorted(rk - tk)}, "
                     f"only in target {sorted(tk - rk)} (different architectures?)")
  for k in sorted(rk):
    if tuple(ref.shape(k)) != tuple(target.shape(k)):
      raise ValueError(f"parameter {k!r}: shape {ref.shape(k)} in the reference vs "
                       f"{target.shape(k)} in the target")


def iter_pairs(ref, target) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
  """(key, ref array, target array), one parameter at a time (bounded memory)."""
  check_compatible(ref, target)
  for k in ref.keys():
    yield k, np.asarray(ref.read(k), np.float32), np.asarray(target.read(k), np.float32)
