"""Weight surgery: put reference singular directions (or whole layers) back.

research/papers.md 2.4 item 6. `svd_restore` replaces the top-k_top and
bottom-k_tail singular triplets of a target matrix by the reference's
(`values="mixed"`: the reference's singular values too; `values="target"`:
directions only, the target's singular values kept). Mixing vectors from two
SVDs gives a non-orthonormal basis; the papers' scripts accept that, and so
do we. `restore_params` applies a spec to whole parameter pytrees:
  top:<frac>       top fraction of directions of every matrix (mixed)
  topdir:<frac>    the same, directions only
  bottom:<frac>    bottom fraction of directions
  layers:<a>-<b>   layers a..b (inclusive) reset wholesale, plus embed/head
"""

from __future__ import annotations

import re

import numpy as np

from jaxrl_post.analysis import matrices as mx

_SPEC = re.compile(r"^(top|topdir|bottom|layers):(.+)$")


def svd_restore(w_ref: np.ndarray, w_target: np.ndarray, k_top: int, k_tail: int = 0,
                values: str = "mixed") -> np.ndarray:
  """W_new = U_new diag(S_new) V_new^T with the chosen triplets from the reference."""
  if values not in ("mixed", "target"):
    raise ValueError(f"values={values!r}: expected 'mixed' or 'target'")
  ub, sb, vbt = np.linalg.svd(np.asarray(w_ref, np.float64), full_matrices=False)
  ut, st, vtt = np.linalg.svd(np.asarray(w_target, np.float64), full_matrices=False)
  r = len(sb)
  if k_top < 0 or k_tail < 0 or k_top + k_tail > r:
    raise ValueError(f"k_top={k_top}, k_tail={k_tail}: need 0 <= k_top + k_tail <= {r}")
  pick = np.zeros(r, bool)
  pick[:k_top] = True
  if k_tail:
    pick[r - k_tail:] = True
  u = np.where(pick[None, :], ub, ut)
  vt = np.where(pick[:, None], vbt, vtt)
  s = np.where(pick, sb, st) if values == "mixed" else st
  return ((u * s) @ vt).astype(np.asarray(w_target).dtype)


def parse_spec(spec: str):
  m = _SPEC.match(spec.strip())
  if not m:
    raise ValueError(f"restore spec {spec!r}: expected top:<frac>, topdir:<frac>, "
                     "bottom:<frac> or layers:<a>-<b>")
  kind, arg = m.groups()
  if kind == "layers":
    lm = re.match(r"^(\d+)-(\d+)$", arg)
    if not lm or int(lm.group(1)) > int(lm.group(2)):
      raise ValueError(f"restore spec {spec!r}: layers need <a>-<b> with a <= b")
    return kind, (int(lm.group(1)), int(lm.group(2)))
  try:
    frac = float(arg)
  except ValueError:
    raise ValueError(f"restore spec {spec!r}: {arg!r} is not a number") from None
  if not 0 <= frac <= 1:
    raise ValueError(f"restore spec {spec!r}: fraction must be in [0, 1]")
  return kind, frac


def restore_params(ref_params: dict, target_params: dict, spec: str) -> dict:
  """A new parameter pytree: the target with the spec's part taken from the reference."""
  kind, arg = parse_spec(spec)
  out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in target_params.items()}
  if kind == "layers":
    a, b = arg
    n_layers = next(iter(target_params["layers"].values())).shape[0]
    if b >= n_layers:
      raise ValueError(f"restore spec {spec!r}: the model has layers 0..{n_layers - 1}")
    for k, t in target_params["layers"].items():
      new = np.array(t)
      new[a:b + 1] = np.asarray(ref_params["layers"][k])[a:b + 1]
      out["layers"][k] = new
    for k in ("embed", "lm_head"):
      if k in target_params:
        out[k] = np.array(ref_params[k])
    return out
  for key in mx.MATRIX_KEYS:
    top, name = key.split("/") if "/" in key else (None, key)
    src_t = target_params.get(top, {}).get(name) if top else target_params.get(name)
    if src_t is None:
      continue
    src_r = ref_params[top][name] if top else ref_params[name]
    wt = mx.as_matrices(key, src_t)
    wr = mx.as_matrices(key, src_r)
    r = min(wt.shape[1:])
    k = int(round(arg * r))
    new = np.stack([svd_restore(wr[l], wt[l], k if kind != "bottom" else 0,
                                k if kind == "bottom" else 0,
                                "target" if kind == "topdir" else "mixed")
                    for l in range(wt.shape[0])])
    new = new.reshape(np.shape(src_t)) if top else new[0]
    if top:
      out[top][name] = new
    else:
      out[name] = new
  return out


def recovery_fraction(acc_ref: float, acc_target: float, acc_restored: float) -> float | None:
  """(restored - target) / (ref - target): the share of the lost accuracy
  recovered; None when nothing was lost (ref <= target)."""
  lost = acc_ref - acc_target
  if lost <= 0:
    return None
  return (acc_restored - acc_target) / lost
