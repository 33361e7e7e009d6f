"""`launch.bench --quick` runs end to end and writes the DESIGN.md section 3 JSON."""

import json
import math
import subprocess
import sys

import pytest

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


def _number(x):
  return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


@pytest.fixture(scope="module")
def result(tmp_path_factory):
  out = tmp_path_factory.mktemp("bench") / "B.json"
  subprocess.run([sys.executable, "-m", "launch.bench", "--quick", "--nohf",
                  f"--out={out}"], cwd=ROOT, check=True, capture_output=True,
                 timeout=300)
  return json.loads(out.read_text())


def test_machine_and_measured_ceilings(result):
  m = result["machine"]
  assert isinstance(m["cpu"], str) and m["cpu"]
  assert isinstance(m["devices"], int) and m["devices"] >= 1
  assert isinstance(m["jax"], str)
  assert _number(result["matmul_peak_gflops"]) and result["matmul_peak_gflops"] > 0
  assert _number(result["copy_bandwidth_gbs"]) and result["copy_bandwidth_gbs"] > 0


def test_rollout_rows_follow_the_contract(result):
  rows = result["rollout"]
  assert {r["temperature"] for r in rows} == {0.0, 1.0}
  for r in rows:
    for key in ("preset", "batch", "prompt_len", "new_tokens", "decode_tokens_per_sec",
                "prefill_tokens_per_sec", "compiles", "bandwidth_gbs",
                "hf_decode_tokens_per_sec", "ratio_vs_hf"):
      assert key in r, key
    assert r["compiles"] == 1  # one trace for both temperatures
    for key in ("decode_tokens_per_sec", "prefill_tokens_per_sec", "bandwidth_gbs",
                "floor_ms_per_step", "decode_ms_per_step"):
      assert _number(r[key]) and r[key] > 0, key
    # Without transformers (--nohf) the peer fields are null, not invented.
    assert r["hf_decode_tokens_per_sec"] is None and r["ratio_vs_hf"] is None


def test_train_grpo_and_similarity_rows(result):
  (row,) = result["train"]
  assert set(row) >= {"preset", "batch", "seq_len", "tokens_per_sec", "mfu", "compiles"}
  assert row["compiles"] == 1 and 0 < row["mfu"] and _number(row["tokens_per_sec"])
  (g,) = result["grpo"]
  assert set(g) >= {"preset", "prompts", "samples", "new_tokens", "step_sec", "trl_step_sec",
                    "ratio_vs_trl"}
  assert g["compiles"] == 1 and g["step_sec"] > 0
  sim = result["srl_similarity"]
  assert sim["similarity_sec"] > 0 and sim["decode_sec_same_tokens"] > 0


def test_minimal_hf_export_matches_our_logits(tmp_path):
  """The exporter's weight mapping, checked against transformers if installed."""
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  import jax
  import numpy as np
  from jaxrl_post import model as M
  from launch import bench
  cfg = M.get_preset("nano")
  params = M.init_params(cfg, jax.random.key(3))
  params = jax.tree.map(lambda x: x + 0.05 * jax.random.normal(jax.random.key(4), x.shape),
                        params)  # non-trivial norms and biases
  bench._export_qwen2_minimal(params, cfg, str(tmp_path))
  hf = transformers.Qwen2ForCausalLM.from_pretrained(str(tmp_path), torch_dtype=torch.float32)
  tokens = np.array([[1, 5, 9, 3, 7, 11, 4]])
  ours, _ = M.forward(params, cfg, tokens, np.arange(7)[None])
  with torch.no_grad():
    theirs = hf(torch.as_tensor(tokens)).logits.numpy()
  np.testing.assert_allclose(np.asarray(ours), theirs, atol=1e-4)
