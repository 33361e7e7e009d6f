"""Metric files (JSONL + TensorBoard) and console progress for long runs.

`W/metrics.jsonl` holds one JSON object per logged step with at least
"step"; non-finite floats are written as null with the key listed under
"nonfinite". Resuming with `resume_step=s` drops lines with step > s, so a
rerun after a crash reproduces the file of an uninterrupted run.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from typing import Any

import numpy as np


def _clean(v: Any):
  if isinstance(v, (np.generic, np.ndarray)):
    v = v.item() if np.ndim(v) == 0 else np.asarray(v).tolist()
  if hasattr(v, "item") and not isinstance(v, (list, dict)):
    try:
      v = v.item()
    except (TypeError, ValueError):
      pass
  return v


def read_metrics(path: str) -> list[dict]:
  """All rows of a metrics.jsonl file."""
  if os.path.isdir(path):
    path = os.path.join(path, "metrics.jsonl")
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


class MetricWriter:
  """Appends metrics to W/metrics.jsonl and TensorBoard event files in W/tb/."""

  def __init__(self, workdir: str, resume_step: int | None = None, tensorboard: bool = True):
    os.makedirs(workdir, exist_ok=True)
    self.path = os.path.join(workdir, "metrics.jsonl")
    if resume_step is not None and os.path.exists(self.path):
      keep = [r for r in read_metrics(self.path) if r.get("step", 0) <= resume_step]
      with open(self.path, "w") as f:
        for r in keep:
          f.write(json.dumps(r) + "\n")
    elif resume_step is None and os.path.exists(self.path):
      os.remove(self.path)
    self._f = open(self.path, "a")
    self._tb = None
    if tensorboard:
      from tensorboardX import SummaryWriter
      self._tb = SummaryWriter(os.path.join(workdir, "tb"), flush_secs=10)

  def write(self, step: int, metrics: dict[str, Any]):
    row: dict[str, Any] = {"step": int(step)}
    bad = []
    for k, v in metrics.items():
      v = _clean(v)
      if isinstance(v, float) and not math.isfinite(v):
        bad.append(k)
        v = None
      row[k] = v
      if self._tb is not None and isinstance(v, (int, float)) and not isinstance(v, bool):
        self._tb.add_scalar(k, v, step)
    if bad:
      row["nonfinite"] = bad
    self._f.write(json.dumps(row) + "\n")
    self._f.flush()

  def close(self):
    self._f.close()
    if self._tb is not None:
      self._tb.close()


_SHOW = ("loss", "reward_mean", "gen_loss", "acc/id_seen", "acc/id_heldout", "acc/ood",
         "kl", "entropy", "tokens_per_sec")


class Progress:
  """A tqdm bar on a TTY, and one metric line per logged step always."""

  def __init__(self, total: int, start: int = 0, desc: str = "", stream=None):
    self.total, self.start, self.desc = total, start, desc
    self.stream = stream or sys.stderr
    self.t0 = time.perf_counter()
    self._bar = None
    if self.stream.isatty() and not os.environ.get("CI"):
      from tqdm import tqdm
      self._bar = tqdm(total=total, initial=start, desc=desc, file=self.stream, leave=False)
    self._last = start

  def update(self, step: int, metrics: dict[str, Any]):
    if self._bar is not None:
      self._bar.update(step - self._last)
    self._last = step
    dt = time.perf_counter() - self.t0
    done = max(step - self.start, 1)
    eta = dt / done * (self.total - step)
    parts = [f"{k} {metrics[k]:.4g}" for k in _SHOW if isinstance(metrics.get(k), (int, float))]
    line = f"{self.desc} step {step}/{self.total} | " + " | ".join(parts) + f" | {dt:.0f} s | eta {eta:.0f} s"
    if self._bar is not None:
      self._bar.write(line, file=self.stream)
    else:
      print(line, file=self.stream, flush=True)

  def close(self):
    if self._bar is not None:
      self._bar.close()
