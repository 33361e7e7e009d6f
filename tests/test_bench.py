"""`launch.bench --quick` runs end to end and writes the DESIGN.md section 3 JSON.

The quick run also runs the TRL GRPO peer (`launch.bench_peers`) when trl is
importable: its fields are then measured, otherwise null.
"""

import importlib.util
import json
import math
import platform
import subprocess
import sys

import pytest

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


def _number(x):
  return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _trl_importable():
  from launch import bench_peers
  return bench_peers.trl_available()


@pytest.fixture(scope="module")
def result(tmp_path_factory):
  out = tmp_path_factory.mktemp("bench") / "B.json"
  subprocess.run([sys.executable, "-m", "launch.bench", "--quick", "--nohf",
                  f"--out={out}"], cwd=ROOT, check=True, capture_output=True,
                 timeout=600)  # with the TRL peer: minutes on a busy 2-core box
  return json.loads(out.read_text())


def test_machine_and_measured_ceilings(result):
  m = result["machine"]
  assert isinstance(m["cpu"], str) and m["cpu"]
  assert isinstance(m["devices"], int) and m["devices"] >= 1
  assert isinstance(m["jax"], str)
  # The host malloc set-up the run had (default: temp buffers reused, on glibc).
  assert m["host_malloc"] == ("retain" if platform.libc_ver()[0] == "glibc" else "system")
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
  # Model FLOPs as the step runs them: 2 N per rollout token (each prompt
  # prefilled once per group, new_tokens fed per row), 6 N per update token
  # (each prompt once, the first new_tokens - 1 completion tokens per row).
  from jaxrl_post import model as M
  n = M.get_preset(g["preset"]).num_params()
  rows, p_tok = g["prompts"] * g["samples"], g["prompts"] * g["prompt_len"]
  want = 2 * n * (p_tok + rows * g["new_tokens"]) + 6 * n * (p_tok + rows * (g["new_tokens"] - 1))
  assert g["model_flops"] == sum(g["model_flops_parts"].values()) == want
  assert g["mfu"] == pytest.approx(want / g["step_sec"] / (result["matmul_peak_gflops"] * 1e9))
  # The update's forward takes the rollout's weight products, so the compiled
  # step executes less than the nominal model FLOPs (which count that forward).
  assert g["reuse_rollout_activations"] and 0 < g["xla_flops"] < g["model_flops"]
  # The dense-matmul floor is a lower bound of the measured step.
  assert g["floor_sec"] == pytest.approx(g["floor_rollout_sec"] + g["floor_update_sec"])
  assert 0 < g["floor_rollout_sec"] and 0 < g["floor_update_sec"]
  assert g["floor_sec"] < g["step_sec"]
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


def test_grpo_row_against_trl(result):
  """TRL's GRPOTrainer ran on the same work: every completion full length, float32."""
  if not _trl_importable():
    pytest.skip("trl (or torch/transformers/datasets/tokenizers) is not installed")
  (g,) = result["grpo"]
  assert "trl_error" not in g, g.get("trl_error")
  assert _number(g["trl_step_sec"]) and g["trl_step_sec"] > 0
  assert g["ratio_vs_trl"] == pytest.approx(g["trl_step_sec"] / g["step_sec"])
  assert g["goal_sec"] == pytest.approx(g["trl_step_sec"] / 3)  # DESIGN.md section 4
  assert len(g["trl_step_secs"]) == len(g["step_secs"]) >= 1  # paired, after the warmup
  assert g["completion_len_mean"] == g["trl_completion_len_mean"] == g["new_tokens"]
  assert g["trl_prompt_len"] == g["prompt_len"]
  assert g["trl_dtype"] == "float32" and g["trl_activation_checkpointing"] is False
  assert g["compiles"] == 1  # our steps between TRL's did not recompile


def test_grpo_row_without_trl_is_null(result):
  if _trl_importable():
    pytest.skip("trl is installed: the measured path is tested above")
  (g,) = result["grpo"]
  assert g["trl_step_sec"] is None and g["ratio_vs_trl"] is None and g["goal_sec"] is None


def test_peer_tokenizer_round_trips_ids():
  pytest.importorskip("tokenizers")
  pytest.importorskip("transformers")
  from launch import bench_peers
  for vocab in (64, 512):
    tok = bench_peers.make_tokenizer(vocab)
    assert len(tok) == vocab and (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id) == (0, 1, 2)
    ids = [1, 3, 17, vocab - 1, 2, 40, 0, 5]
    text = bench_peers.text_of(ids)
    assert tok(text)["input_ids"] == ids
    assert tok.padding_side == "left"


def test_only_rejects_unknown_sections(tmp_path):
  out = subprocess.run([sys.executable, "-m", "launch.bench", "--only=grpo,bogus",
                        f"--out={tmp_path / 'B.json'}"], cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
  assert out.returncode != 0 and "bogus" in out.stderr
  assert not (tmp_path / "B.json").exists()


def test_grpo_shapes_parse_and_reject_bad_specs(tmp_path):
  from launch import bench
  assert bench.parse_grpo_shape("tiny:8x4x32") == ("tiny", 8, 4, 32)
  assert bench.DEFAULT_GRPO_SHAPES == (("tiny", 8, 4, 32),)  # DESIGN.md section 4's shape
  for bad in ("tiny:8x4", "huge:8x4x32", "tiny:8x0x32", "tiny:8x4x-1", "tiny"):
    with pytest.raises(ValueError, match="preset:PROMPTSxSAMPLESxNEW_TOKENS"):
      bench.parse_grpo_shape(bad)
  out = subprocess.run([sys.executable, "-m", "launch.bench", "--only=grpo",
                        "--grpo_shapes=tiny:8x4x32,tiny:8x4", f"--out={tmp_path / 'B.json'}"],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert out.returncode != 0 and "--grpo_shapes" in out.stderr and "'tiny:8x4'" in out.stderr
  assert not (tmp_path / "B.json").exists()
