"""Evaluation statistics: unbiased pass@k, ECE, Brier, Spearman (NumPy)."""

from __future__ import annotations

import numpy as np


def pass_at_k(n, c, k: int) -> np.ndarray:
  """Unbiased pass@k (Chen et al. 2021): 1 - C(n-c, k) / C(n, k), per problem.

  Stable product form: 1 - prod_{i=n-c+1}^{n} (1 - k / i); exactly 1 when
  n - c < k. n, c: int arrays (or scalars) of samples and correct samples.
  """
  n = np.atleast_1d(np.asarray(n, np.int64))
  c = np.atleast_1d(np.asarray(c, np.int64))
  if np.any(k > n):
    raise ValueError(f"pass@{k} needs k <= n for every problem (min n = {n.min()})")
  if np.any((c < 0) | (c > n)):
    raise ValueError("need 0 <= c <= n")
  out = np.ones(n.shape, np.float64)
  for j, (nj, cj) in enumerate(zip(n, c)):
    if nj - cj >= k:
      i = np.arange(nj - cj + 1, nj + 1, dtype=np.float64)
      out[j] = 1.0 - np.exp(np.sum(np.log1p(-k / i)))
  return out


def mean_pass_at_k(n, c, k: int) -> float:
  return float(np.mean(pass_at_k(n, c, k)))


def brier_score(conf, correct) -> float:
  """mean (q - c)^2."""
  q, c = np.asarray(conf, np.float64), np.asarray(correct, np.float64)
  return float(np.mean((q - c) ** 2)) if q.size else float("nan")


def expected_calibration_error(conf, correct, n_bins: int = 10) -> float:
  """ECE with equal-width bins on [0, 1], outer edges at -inf/+inf (as RLCR's eval).

  ECE = sum_b (n_b / N) |mean q_b - mean c_b|.
  """
  q, c = np.asarray(conf, np.float64), np.asarray(correct, np.float64)
  if q.size == 0:
    return float("nan")
  edges = np.linspace(0.0, 1.0, n_bins + 1)
  edges[0], edges[-1] = -np.inf, np.inf
  bins = np.clip(np.digitize(q, edges) - 1, 0, n_bins - 1)
  ece = 0.0
  for b in range(n_bins):
    m = bins == b
    if m.any():
      ece += m.mean() * abs(q[m].mean() - c[m].mean())
  return float(ece)


def _ranks(x: np.ndarray) -> np.ndarray:
  """Average ranks (ties share the mean rank), 1-based."""
  order = np.argsort(x, kind="mergesort")
  ranks = np.empty(len(x), np.float64)
  sx = x[order]
  i = 0
  while i < len(x):
    j = i
    while j + 1 < len(x) and sx[j + 1] == sx[i]:
      j += 1
    ranks[order[i:j + 1]] = (i + j) / 2.0 + 1.0
    i = j + 1
  return ranks


def spearman(x, y) -> float:
  """Spearman rank correlation (Pearson of average ranks); nan if constant."""
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  if x.shape != y.shape or x.size < 2:
    raise ValueError("spearman needs two equal-length arrays of >= 2 values")
  rx, ry = _ranks(x), _ranks(y)
  sx, sy = rx.std(), ry.std()
  if sx == 0 or sy == 0:
    return float("nan")
  return float(((rx - rx.mean()) * (ry - ry.mean())).mean() / (sx * sy))
