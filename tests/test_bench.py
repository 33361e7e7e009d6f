"""launch.bench --quick writes the DESIGN.md JSON contract."""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_bench_quick_schema(tmp_path):
  out = tmp_path / "b.json"
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="")
  p = subprocess.run([sys.executable, "-m", "launch.bench", f"--out={out}", "--quick", "--repeats=1"],
                     cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert p.returncode == 0, p.stderr[-3000:]
  b = json.load(open(out))
  assert set(b["machine"]) == {"cpu", "devices", "jax"}
  assert b["matmul_peak_gflops"] > 0 and b["copy_bandwidth_gbs"] > 0
  for row in b["rollout"]:
    for k in ("preset", "batch", "prompt_len", "new_tokens", "decode_tokens_per_sec",
              "prefill_tokens_per_sec", "compiles", "bandwidth_gbs", "hf_decode_tokens_per_sec",
              "ratio_vs_hf"):
      assert k in row
    assert row["compiles"] == 1 and row["decode_tokens_per_sec"] > 0
  t = b["train"][0]
  assert t["compiles"] == 1 and 0 < t["mfu"] < 1.5
  g = b["grpo"][0]
  assert g["compiles"] == 1 and g["step_sec"] > 0
  assert b["srl_similarity"]["sec"] > 0
