"""Spectral metrics against SciPy and constructed updates; restoration surgery."""

import numpy as np
import pytest
import scipy.linalg
import scipy.stats

from jaxrl_post.analysis import matrices, restore, spectral
from jaxrl_post.checkpoint import DictSource

RNG = np.random.default_rng(0)


def _angles_scipy(a, b, k):
  ua = np.linalg.svd(a, full_matrices=False)[0][:, :k]
  ub = np.linalg.svd(b, full_matrices=False)[0][:, :k]
  return np.sort(np.degrees(scipy.linalg.subspace_angles(ua, ub)))


@pytest.mark.parametrize("noise", [1.0, 1e-2])
def test_principal_angles_equal_scipy(noise):
  a = RNG.normal(size=(40, 24)).astype(np.float32)
  b = (a + noise * RNG.normal(size=a.shape)).astype(np.float32)
  row = spectral.compare_matrices(a, b, k=6)[0]
  np.testing.assert_allclose(row["principal_angles_deg_left"], _angles_scipy(a, b, 6), atol=0.05)
  np.testing.assert_allclose(row["principal_angles_deg_right"], _angles_scipy(a.T, b.T, 6), atol=0.05)


def test_pure_rotation_changes_directions_not_values():
  a = RNG.normal(size=(32, 16)).astype(np.float32)
  q = scipy.stats.ortho_group.rvs(32, random_state=1).astype(np.float32)
  row = spectral.compare_matrices(a, q @ a, k=4)[0]
  assert np.abs(row["sv_rel_change"]).max() < 1e-4
  assert np.mean(row["principal_angles_deg_left"]) > 30
  np.testing.assert_allclose(row["principal_angles_deg_right"], 0, atol=0.5)  # V unchanged
  # dW = (Q - I) W: the "-W" part lies on the diagonal of U^T dW V, the rest
  # off it; for a random Q in 32 dimensions the split is about half and half.
  assert 0.3 < row["scaling_energy"] < 0.7


def test_pure_scaling_changes_values_not_directions():
  a = RNG.normal(size=(32, 16)).astype(np.float32)
  u, s, vt = np.linalg.svd(a, full_matrices=False)
  b = (u * (s * np.linspace(1.5, 2.5, len(s)))) @ vt
  row = spectral.compare_matrices(a, b.astype(np.float32), k=4)[0]
  np.testing.assert_allclose(row["principal_angles_deg_left"], 0, atol=0.5)
  assert row["scaling_energy"] > 0.99 and row["rotation_energy"] < 0.01
  assert np.all(np.array(row["sv_rel_change"]) > 0.4)


def test_rank_and_sparsity_of_constructed_updates():
  a = RNG.normal(size=(64, 48)).astype(np.float32)
  low = (RNG.normal(size=(64, 3)) @ RNG.normal(size=(3, 48))).astype(np.float32)
  row = spectral.compare_matrices(a, a + low, k=4)[0]
  assert row["rank_ratio"] == pytest.approx(3 / 48)
  sparse = a.copy()
  idx = RNG.choice(a.size, a.size // 10, replace=False)
  sparse.flat[idx] += 1.0
  row = spectral.compare_matrices(a, sparse, k=4)[0]
  assert row["sparsity"]["float32"] == pytest.approx(0.9, abs=1e-3)
  # An update below half a bf16 ulp is invisible in bf16 but visible in f32.
  w = np.full((8, 8), 1.0, np.float32)
  tiny = w + 1e-3
  assert spectral.unchanged_mask(w, tiny, 1e-5, "bfloat16").all()
  assert not spectral.unchanged_mask(w, tiny, 1e-5, "float32").any()


def _params(L=2, D=8, H=2, Dh=4, F=12, V=16):
  return {"embed": RNG.normal(size=(V, D)).astype(np.float32),
          "final_norm": np.ones(D, np.float32),
          "layers": {"q": RNG.normal(size=(L, D, H, Dh)).astype(np.float32),
                     "o": RNG.normal(size=(L, H, Dh, D)).astype(np.float32),
                     "down": RNG.normal(size=(L, F, D)).astype(np.float32),
                     "attn_norm": np.ones((L, D), np.float32)}}


def test_compare_names_and_streams_sources():
  p = _params()
  t = {k: (v if not isinstance(v, dict) else {kk: vv.copy() for kk, vv in v.items()}) for k, v in p.items()}
  t["layers"]["q"] = t["layers"]["q"] + 0.1
  res = spectral.compare(DictSource(p), DictSource(t), k=0.5)
  assert set(res["matrices"]) == {"embed", "layers/q/0", "layers/q/1", "layers/o/0", "layers/o/1",
                                  "layers/down/0", "layers/down/1"}
  assert res["matrices"]["layers/q/0"]["shape"] == [8, 8]
  assert res["matrices"]["layers/o/1"]["update_energy"] == 0.0
  n_total = sum(np.size(x) for x in [p["embed"], p["final_norm"], *p["layers"].values()])
  assert res["pooled"]["sparsity_float32"] == pytest.approx(1 - p["layers"]["q"].size / n_total)
  bad = dict(t, embed=np.zeros((4, 8), np.float32))
  with pytest.raises(ValueError, match="embed"):
    spectral.compare(DictSource(p), DictSource(bad))


def test_overlap_with_random_baseline():
  p = {"w": np.zeros((10, 10), np.float32)}
  a = {"w": p["w"].copy()}
  b = {"w": p["w"].copy()}
  a["w"][:5] = 1.0   # 50 updated
  b["w"][3:8] = 1.0  # 50 updated, 20 shared
  o = spectral.overlap(DictSource(p), DictSource(a), DictSource(b), dtype="float32")
  assert (o["updated_1"], o["updated_2"], o["both"]) == (50, 50, 20)
  assert o["o1"] == pytest.approx(0.4) and o["random_o1"] == pytest.approx(0.5)


def test_svd_restore_extremes_and_specs():
  a = RNG.normal(size=(12, 9))
  b = RNG.normal(size=(12, 9))
  np.testing.assert_allclose(restore.svd_restore(a, b, 9, 0, "mixed"), a, atol=1e-10)
  np.testing.assert_allclose(restore.svd_restore(a, b, 0, 0), b, atol=1e-10)
  np.testing.assert_allclose(restore.svd_restore(a, b, 4, 5, "mixed"), a, atol=1e-10)
  p, t = _params(), _params()
  full = restore.restore_params(p, t, "top:1.0")
  np.testing.assert_allclose(full["layers"]["q"], p["layers"]["q"], atol=1e-4)
  none = restore.restore_params(p, t, "top:0.0")
  np.testing.assert_allclose(none["layers"]["q"], t["layers"]["q"], atol=1e-4)
  lay = restore.restore_params(p, t, "layers:0-0")
  np.testing.assert_array_equal(lay["layers"]["q"][0], p["layers"]["q"][0])
  np.testing.assert_array_equal(lay["layers"]["q"][1], t["layers"]["q"][1])
  np.testing.assert_array_equal(lay["embed"], p["embed"])
  for bad in ("top:2", "layers:3-1", "middle:0.5", "top:x"):
    with pytest.raises(ValueError, match="restore spec"):
      restore.parse_spec(bad)
  assert restore.recovery_fraction(0.5, 0.1, 0.3) == pytest.approx(0.5)
  assert restore.recovery_fraction(0.1, 0.5, 0.3) is None


def test_matrix_naming():
  assert matrices.matrix_names("layers/q", 2) == ["layers/q/0", "layers/q/1"]
  assert matrices.as_matrices("layers/o", np.zeros((2, 3, 4, 5))).shape == (2, 12, 5)
