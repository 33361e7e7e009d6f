"""pass@k against exact combinatorics; ECE / Brier / Spearman against references."""

import math
from fractions import Fraction

import numpy as np
import pytest
import scipy.stats

from jaxrl_post import eval_metrics as E


def _exact(n, c, k):
  return 1 - Fraction(math.comb(n - c, k), math.comb(n, k))


@pytest.mark.parametrize("n", [1, 2, 5, 16, 64, 256])
def test_pass_at_k_exact(n):
  for c in sorted({0, 1, n // 3, n // 2, n - 1, n} - {-1}):
    if c < 0:
      continue
    for k in sorted({1, 2, n // 4 or 1, n // 2 or 1, n - c + 1, n} & set(range(1, n + 1))):
      got = E.pass_at_k(n, c, k)[0]
      assert abs(got - float(_exact(n, c, k))) < 1e-9, (n, c, k)


def test_pass_at_large_k_is_stable():
  got = E.pass_at_k(256, 3, 64)[0]
  assert abs(got - float(_exact(256, 3, 64))) < 1e-12
  assert E.pass_at_k(256, 200, 64)[0] == 1.0  # n - c < k
  np.testing.assert_allclose(E.pass_at_k([10, 10], [0, 10], 3), [0.0, 1.0])
  with pytest.raises(ValueError, match="k <= n"):
    E.pass_at_k(4, 1, 5)


def test_ece_and_brier_hand_computed():
  q = [0.05, 0.15, 0.95, 0.95, 0.55]
  c = [0, 0, 1, 0, 1]
  # bins: [0,.1): q .05 c 0 -> |.05-0|; [.1,.2): .15 vs 0; [.9,1]: mean q .95, acc .5; [.5,.6): .55 vs 1
  ece = (1 / 5) * 0.05 + (1 / 5) * 0.15 + (2 / 5) * 0.45 + (1 / 5) * 0.45
  assert abs(E.expected_calibration_error(q, c) - ece) < 1e-12
  assert abs(E.brier_score(q, c) - np.mean((np.array(q) - np.array(c)) ** 2)) < 1e-12
  assert E.expected_calibration_error([0.0, 1.0], [0, 1]) == 0.0


def test_spearman_matches_scipy_with_ties():
  rng = np.random.default_rng(0)
  for _ in range(20):
    x = rng.integers(0, 5, 12).astype(float)
    y = x + rng.integers(0, 3, 12)
    want = scipy.stats.spearmanr(x, y).statistic
    got = E.spearman(x, y)
    if np.isnan(want):
      assert np.isnan(got)
    else:
      assert abs(got - want) < 1e-12
