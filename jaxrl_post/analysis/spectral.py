"""Spectral comparison of two snapshots (research/papers.md 2.4 and 4).

Per 2-D matrix, reference W_b = U_b S_b V_b^T and target W_t (float32 SVDs,
jit-compiled and batched over the layers of a stacked tensor):
  * singular-value relative change (S_t - S_b) / S_b per index;
  * principal angles between the top-k left (and right) singular subspaces,
    theta_j = arccos(sigma_j(U_b[:, :k]^T U_t[:, :k])), degrees ascending;
  * matched-vector |cosine|: mean_i max_j |<u_b,i, u_t,j>| over the top k;
  * projection distance sqrt(2k - 2 ||U_b^T U_t||_F^2);
  * the update dW = W_t - W_b in the reference basis, C = U_b^T dW V_b:
    scaling energy ||diag C||^2 / ||dW||^2, rotation energy
    (||C||^2 - ||diag C||^2) / ||dW||^2;
  * update rank ratio rank(dW) / min(m, n) (matrix_rank's default tolerance);
  * update sparsity: fraction of entries with |delta| <= tol, delta computed
    in a stated dtype (bfloat16 as the Subnetworks paper's code, and float32),
    per matrix and globally over every parameter (vectors included).
"""

from __future__ import annotations

import functools
import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxrl_post.analysis import matrices as mx

DTYPES = ("bfloat16", "float32")


def resolve_k(k: float | int, m: int, n: int) -> int:
  """k as a count (int >= 1) or a fraction in (0, 1] of min(m, n)."""
  r = min(m, n)
  if isinstance(k, float) and 0 < k <= 1:
    return max(1, int(round(k * r)))
  if int(k) >= 1:
    return min(int(k), r)
  raise ValueError(f"k={k!r}: expected a count >= 1 or a fraction in (0, 1]")


@functools.partial(jax.jit, static_argnames=("k",))
def _compare_batch(wb, wt, *, k: int):
  """wb, wt: f32[L, m, n]. Returns per-layer metrics (arrays with leading L)."""

  def one(b, t):
    ub, sb, vbt = jnp.linalg.svd(b, full_matrices=False)
    ut, st, vtt = jnp.linalg.svd(t, full_matrices=False)
    vb, vt = vbt.T, vtt.T

    def angles(x, y):
      cos = jnp.linalg.svd(x[:, :k].T @ y[:, :k], compute_uv=False)
      cos = jnp.clip(cos, -1.0, 1.0)
      return jnp.sort(jnp.degrees(jnp.arccos(cos))), cos

    al, cl = angles(ub, ut)
    ar, cr = angles(vb, vt)
    match_l = jnp.mean(jnp.max(jnp.abs(ub[:, :k].T @ ut[:, :k]), axis=1))
    match_r = jnp.mean(jnp.max(jnp.abs(vb[:, :k].T @ vt[:, :k]), axis=1))
    proj_l = jnp.sqrt(jnp.maximum(2 * k - 2 * jnp.sum(cl ** 2), 0.0))
    proj_r = jnp.sqrt(jnp.maximum(2 * k - 2 * jnp.sum(cr ** 2), 0.0))
    dw = t - b
    c = ub.T @ dw @ vb
    total = jnp.sum(dw * dw)
    diag = jnp.sum(jnp.diagonal(c) ** 2)
    full = jnp.sum(c * c)
    safe = jnp.maximum(total, 1e-30)
    scaling = jnp.where(total > 0, diag / safe, 0.0)
    rotation = jnp.where(total > 0, (full - diag) / safe, 0.0)
    sd = jnp.linalg.svd(dw, compute_uv=False)
    tol = sd[0] * max(b.shape) * jnp.finfo(jnp.float32).eps
    rank = jnp.sum(sd > tol)
    rel = (st - sb) / jnp.where(sb > 0, sb, 1.0)
    return dict(angles_left=al, angles_right=ar, sv_ref=sb, sv_target=st, sv_rel_change=rel,
                matched_cos_left=match_l, matched_cos_right=match_r,
                projection_distance_left=proj_l, projection_distance_right=proj_r,
                scaling_energy=scaling, rotation_energy=rotation, update_energy=total,
                update_rank=rank)

  return jax.vmap(one)(wb, wt)


def unchanged_mask(ref: np.ndarray, target: np.ndarray, tol: float, dtype: str) -> np.ndarray:
  """bool mask of entries with |target - ref| <= tol, the difference taken in dtype."""
  if dtype not in DTYPES:
    raise ValueError(f"dtype {dtype!r} not in {DTYPES}")
  dt = jnp.bfloat16 if dtype == "bfloat16" else jnp.float32
  delta = jnp.asarray(target).astype(dt) - jnp.asarray(ref).astype(dt)
  return np.asarray(jnp.abs(delta.astype(jnp.float32)) <= tol)


def compare_matrices(wb: np.ndarray, wt: np.ndarray, k: float | int = 0.25,
                     tol: float = 1e-5) -> list[dict]:
  """Metrics for matrices [L, m, n] (or [m, n]); one dict per layer."""
  wb = np.asarray(wb, np.float32)
  wt = np.asarray(wt, np.float32)
  if wb.ndim == 2:
    wb, wt = wb[None], wt[None]
  if wb.shape != wt.shape:
    raise ValueError(f"matrix shapes differ: {wb.shape} vs {wt.shape}")
  _, m, n = wb.shape
  kk = resolve_k(k, m, n)
  res = jax.device_get(_compare_batch(jnp.asarray(wb), jnp.asarray(wt), k=kk))
  out = []
  for l in range(wb.shape[0]):
    row = {"k": kk, "shape": [m, n],
           "principal_angles_deg_left": res["angles_left"][l].tolist(),
           "principal_angles_deg_right": res["angles_right"][l].tolist(),
           "sv_rel_change": res["sv_rel_change"][l].tolist(),
           "sv_ref": res["sv_ref"][l].tolist(), "sv_target": res["sv_target"][l].tolist(),
           "rank_ratio": float(res["update_rank"][l]) / min(m, n)}
    for key in ("matched_cos_left", "matched_cos_right", "projection_distance_left",
                "projection_distance_right", "scaling_energy", "rotation_energy",
                "update_energy"):
      row[key] = float(res[key][l])
    row["sparsity"] = {dt: float(unchanged_mask(wb[l], wt[l], tol, dt).mean()) for dt in DTYPES}
    out.append(row)
  return out


def compare(ref, target, k: float | int = 0.25, tol: float = 1e-5) -> dict:
  """Every matrix and the pooled summary, streaming one parameter at a time.

  ref, target: parameter sources (`keys/shape/read`, see jaxrl_post.checkpoint).
  """
  per_matrix: dict[str, dict] = {}
  unchanged = {dt: 0 for dt in DTYPES}
  total = 0
  by_layer: dict[str, list] = {}
  for key, wb, wt in mx.iter_pairs(ref, target):
    for dt in DTYPES:
      unchanged[dt] += int(unchanged_mask(wb, wt, tol, dt).sum())
    total += wb.size
    if not mx.is_matrix_key(key):
      continue
    rows = compare_matrices(mx.as_matrices(key, wb), mx.as_matrices(key, wt), k, tol)
    for name, row in zip(mx.matrix_names(key, len(rows)), rows):
      row["type"] = mx.matrix_type(key)
      per_matrix[name] = row
      if key.startswith("layers/"):
        by_layer.setdefault(name.rsplit("/", 1)[1], []).append(row["sparsity"]["bfloat16"])
  return {"k": k, "tol": tol, "matrices": per_matrix, "pooled": pool(per_matrix, unchanged, total),
          "sparsity_per_layer_bfloat16": {l: float(np.mean(v)) for l, v in by_layer.items()}}


def pool(per_matrix: dict, unchanged: dict | None = None, total: int = 0) -> dict:
  """Summary over matrices: mean angles, energy shares (energy-weighted), etc."""
  rows = list(per_matrix.values())
  if not rows:
    return {}
  energy = np.array([r["update_energy"] for r in rows])
  e_sum = energy.sum()
  angles_l = np.concatenate([r["principal_angles_deg_left"] for r in rows])
  out = {
      "n_matrices": len(rows),
      "mean_angle_deg_left": float(angles_l.mean()),
      "mean_angle_deg_right": float(np.concatenate([r["principal_angles_deg_right"] for r in rows]).mean()),
      "frac_angles_over_10deg": float((angles_l > 10).mean()),
      "frac_angles_over_45deg": float((angles_l > 45).mean()),
      "mean_abs_sv_rel_change": float(np.mean([np.mean(np.abs(r["sv_rel_change"])) for r in rows])),
      "mean_matched_cos_left": float(np.mean([r["matched_cos_left"] for r in rows])),
      "scaling_energy": float(sum(r["scaling_energy"] * r["update_energy"] for r in rows) / e_sum) if e_sum > 0 else 0.0,
      "rotation_energy": float(sum(r["rotation_energy"] * r["update_energy"] for r in rows) / e_sum) if e_sum > 0 else 0.0,
      "mean_rank_ratio": float(np.mean([r["rank_ratio"] for r in rows])),
  }
  if unchanged is not None and total:
    for dt, u in unchanged.items():
      out[f"sparsity_{dt}"] = u / total
  return out


def overlap(ref, run1, run2, tol: float = 1e-5, dtype: str = "bfloat16") -> dict:
  """Overlap of the updated-parameter sets of two runs from the same reference.

  o1 = |I1 & I2| / |I1|, o2 = |I1 & I2| / |I2|; random baselines (I2 a random
  subset of its size): E[o1] = |I2| / n, E[o2] = |I1| / n.
  """
  mx.check_compatible(ref, run1)
  mx.check_compatible(ref, run2)
  n = i1 = i2 = both = 0
  for key in ref.keys():
    r = np.asarray(ref.read(key), np.float32)
    u1 = ~unchanged_mask(r, run1.read(key), tol, dtype)
    u2 = ~unchanged_mask(r, run2.read(key), tol, dtype)
    n += r.size
    i1 += int(u1.sum())
    i2 += int(u2.sum())
    both += int((u1 & u2).sum())
  return {"n": n, "updated_1": i1, "updated_2": i2, "both": both,
          "o1": both / i1 if i1 else 0.0, "o2": both / i2 if i2 else 0.0,
          "random_o1": i2 / n if n else 0.0, "random_o2": i1 / n if n else 0.0}


def series(ref, targets: Sequence[tuple[str, object]], k: float | int = 0.25,
           tol: float = 1e-5) -> list[dict]:
  """One reference against many snapshots: [{"label", **pooled}, ...]."""
  return [{"label": label, **compare(ref, src, k, tol)["pooled"]} for label, src in targets]
