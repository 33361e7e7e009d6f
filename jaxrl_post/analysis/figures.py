"""PNG figures of a spectral comparison (matplotlib, Agg)."""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _save(fig, path):
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


def angle_histograms(result: dict, path: str, title: str = "") -> str:
  """Principal angles (left subspace) pooled per matrix type."""
  by_type: dict[str, list] = {}
  for row in result["matrices"].values():
    by_type.setdefault(row["type"], []).extend(row["principal_angles_deg_left"])
  types = sorted(by_type)
  fig, axes = plt.subplots(1, len(types), figsize=(2.6 * len(types), 2.8), squeeze=False)
  for ax, t in zip(axes[0], types):
    ax.hist(by_type[t], bins=18, range=(0, 90), color="tab:blue")
    ax.set_title(t)
    ax.set_xlabel("angle (deg)")
  axes[0][0].set_ylabel("count")
  fig.suptitle(title or "Principal angles between top-k left singular subspaces")
  return _save(fig, path)


def angle_vs_index(result: dict, path: str) -> str:
  """Mean principal angle at each index (sorted ascending), per matrix type."""
  by_type: dict[str, list] = {}
  for row in result["matrices"].values():
    by_type.setdefault(row["type"], []).append(row["principal_angles_deg_left"])
  fig, ax = plt.subplots(figsize=(6, 3.6))
  for t, rows in sorted(by_type.items()):
    n = min(len(r) for r in rows)
    ax.plot(np.mean([r[:n] for r in rows], axis=0), label=t)
  ax.set_xlabel("principal angle index (ascending)")
  ax.set_ylabel("angle (deg)")
  ax.set_title("Principal angles by index")
  ax.legend(fontsize=7, ncol=3)
  return _save(fig, path)


def spectra(result: dict, path: str, names: list[str] | None = None) -> str:
  """Singular values before/after for a few matrices."""
  names = names or list(result["matrices"])[:4]
  fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 3), squeeze=False)
  for ax, n in zip(axes[0], names):
    row = result["matrices"][n]
    ax.semilogy(row["sv_ref"], label="reference")
    ax.semilogy(row["sv_target"], "--", label="target")
    ax.set_title(n, fontsize=8)
    ax.set_xlabel("index")
  axes[0][0].set_ylabel("singular value")
  axes[0][0].legend(fontsize=7)
  return _save(fig, path)


def sparsity_per_layer(result: dict, path: str) -> str:
  layers = sorted(result["sparsity_per_layer_bfloat16"], key=int)
  fig, ax = plt.subplots(figsize=(5, 3))
  ax.bar(layers, [result["sparsity_per_layer_bfloat16"][l] for l in layers])
  ax.set_xlabel("layer")
  ax.set_ylabel("fraction unchanged (bf16)")
  ax.set_ylim(0, 1)
  ax.set_title("Update sparsity per layer")
  return _save(fig, path)


def restoration_curve(rows: list[dict], path: str) -> str:
  fig, ax = plt.subplots(figsize=(6, 3.4))
  x = np.arange(len(rows))
  for key, style in (("acc/id_heldout", "-s"), ("acc/ood", "-o")):
    ax.plot(x, [r.get(key) for r in rows], style, label=key)
  ax.set_xticks(x, [r["spec"] for r in rows], rotation=20, fontsize=8)
  ax.set_ylabel("accuracy")
  ax.set_title("Restoration sweep")
  ax.legend(fontsize=8)
  return _save(fig, path)


def all_figures(result: dict, out_dir: str, prefix: str) -> list[str]:
  os.makedirs(out_dir, exist_ok=True)
  return [angle_histograms(result, os.path.join(out_dir, f"{prefix}_angles.png")),
          angle_vs_index(result, os.path.join(out_dir, f"{prefix}_angle_index.png")),
          spectra(result, os.path.join(out_dir, f"{prefix}_spectra.png")),
          sparsity_per_layer(result, os.path.join(out_dir, f"{prefix}_sparsity.png"))]


def series_plot(rows_by_run: dict[str, list[dict]], path: str) -> str:
  """Mean principal angle and mean |relative sv change| against each snapshot."""
  fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
  for run, rows in rows_by_run.items():
    steps = [int(r["label"].rsplit(":", 1)[1]) for r in rows]
    axes[0].plot(steps, [r.get("mean_angle_deg_left", np.nan) for r in rows], "-o", label=run)
    axes[1].plot(steps, [r.get("mean_abs_sv_rel_change", np.nan) for r in rows], "-o", label=run)
  axes[0].set_ylabel("mean principal angle (deg)")
  axes[1].set_ylabel("mean |relative sv change|")
  for ax in axes:
    ax.set_xlabel("snapshot step")
  axes[0].legend(fontsize=7)
  fig.suptitle("Reference vs every snapshot: directions vs spectrum")
  return _save(fig, path)
