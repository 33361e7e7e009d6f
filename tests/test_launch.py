"""The command-line tools: --help, clear errors before compiling, output contracts."""

import json
import os
import subprocess
import sys

import pytest

from tests import _env

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = _env.subprocess_env()


def _run(*args, check=True):
  p = subprocess.run([sys.executable, "-m", *args], cwd=ROOT, env=ENV, capture_output=True,
                     text=True, timeout=300)
  if check and p.returncode != 0:
    raise AssertionError(p.stderr[-3000:])
  return p


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  w = str(tmp_path_factory.mktemp("run") / "w")
  _run("launch.train", "--config=configs/gp24_sft.py:quick", f"--workdir={w}",
       "--config.num_steps=10", "--config.snapshot.every=5", "--config.eval.every=0",
       "--config.eval.num_problems=2", "--config.num_train_examples=64",
       "--config.eval.gen_loss_examples=8", "--config.batch_size=8")
  return w


@pytest.mark.parametrize("tool", ["train", "sample", "evaluate", "analyze", "study"])
def test_help_lists_flags(tool):
  p = _run(f"launch.{tool}", "--help", check=False)
  out = p.stdout + p.stderr
  assert "--" in out and ("workdir" in out or "init_from" in out or "ref" in out)


def test_train_outputs(workdir):
  for f in ("config.json", "model_config.json", "metrics.jsonl", "tokenizer/tokenizer.json"):
    assert os.path.exists(os.path.join(workdir, f)), f
  assert os.listdir(os.path.join(workdir, "tb"))
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["10", "5"]
  rows = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
  assert all("step" in r and "loss" in r for r in rows)
  assert {"gen_loss", "grad_norm", "lr", "tokens_per_sec"} <= set(rows[-1])


def test_bad_config_values_fail_before_compiling(tmp_path):
  p = _run("launch.train", "--config=configs/gp24_sft.py:quick", f"--workdir={tmp_path}/x",
           "--config.optim.learning_rate=-1", check=False)
  assert p.returncode != 0 and "config.optim.learning_rate" in p.stderr
  p = _run("launch.train", "--config=configs/gp24_sft.py:quick", f"--workdir={tmp_path}/y",
           "--config.task=chess", check=False)
  assert p.returncode != 0 and "config.task" in p.stderr
  p = _run("launch.train", "--config=configs/gp24_sft.py:bogus", f"--workdir={tmp_path}/z", check=False)
  assert p.returncode != 0 and "unknown config arg" in p.stderr
  assert not os.path.exists(f"{tmp_path}/x/checkpoints")


def test_a_missing_init_from_is_a_usage_error(tmp_path):
  p = _run("launch.train", "--config=configs/gp24_grpo.py:quick", f"--workdir={tmp_path}/x",
           f"--config.init_from={tmp_path}/missing", check=False)
  assert p.returncode != 0 and "--config.init_from" in p.stderr and "does not exist" in p.stderr
  assert "Traceback" not in p.stderr
  p = _run("launch.sample", f"--init_from={tmp_path}", "--prompt=hi", check=False)
  assert p.returncode != 0 and "not a jaxrl_post workdir" in p.stderr
  assert "Traceback" not in p.stderr


def test_evaluate_writes_the_contract(workdir):
  out = _run("launch.evaluate", f"--workdir={workdir}", "--split=id,ood", "--num_samples=4",
             "--k=1,4", "--num_problems=3", "--max_new_tokens=8").stdout.strip().splitlines()[-1]
  assert out.endswith("eval/step_10.json")
  res = json.load(open(out))
  for split in ("id_seen", "id_heldout", "ood"):
    r = res[split]
    assert set(r) >= {"accuracy", "pass@k", "ece", "brier", "n_problems", "n_samples", "per_problem"}
    assert r["n_problems"] == 3 and r["n_samples"] == 12
    assert set(r["pass@k"]) == {"1", "4"}
    assert all(set(p) == {"id", "n", "c"} for p in r["per_problem"])


def test_compile_cache_dir_setting_and_use(workdir, tmp_path, monkeypatch):
  from launch import common
  monkeypatch.delenv(common.COMPILE_CACHE_ENV, raising=False)
  assert common.compile_cache_dir().endswith(os.path.join(".cache", "jaxrl_post", "xla"))
  for off in ("", "off", "0"):
    monkeypatch.setenv(common.COMPILE_CACHE_ENV, off)
    assert common.compile_cache_dir() == ""
  cache = tmp_path / "xla"
  env = dict(ENV, JAXRL_POST_COMPILE_CACHE=str(cache))
  p = subprocess.run([sys.executable, "-m", "launch.evaluate", f"--workdir={workdir}",
                      "--split=id_seen", "--num_problems=2", "--max_new_tokens=8",
                      f"--out={tmp_path}/e.json"], cwd=ROOT, env=env, capture_output=True,
                     text=True, timeout=300)
  assert p.returncode == 0, p.stderr[-2000:]
  assert os.listdir(cache), "the rollout kernel's executable was not cached"


def test_evaluate_bad_input(workdir, tmp_path):
  p = _run("launch.evaluate", f"--workdir={workdir}", "--split=val", check=False)
  assert p.returncode != 0 and "unknown split" in p.stderr
  p = _run("launch.evaluate", f"--workdir={workdir}", "--num_samples=2", "--k=4", check=False)
  assert p.returncode != 0 and "k <= num_samples" in p.stderr
  p = _run("launch.evaluate", f"--workdir={workdir}", "--task=chess", check=False)
  assert p.returncode != 0 and "--task='chess': unknown" in p.stderr
  os.makedirs(tmp_path / "empty")
  json.dump({"task": "gp24"}, open(tmp_path / "empty" / "config.json", "w"))
  p = _run("launch.evaluate", f"--workdir={tmp_path}/empty", check=False)
  assert p.returncode != 0 and "no snapshot" in p.stderr


def test_sample_json(workdir):
  out = _run("launch.sample", f"--init_from={workdir}:5", "--prompt=Cards: 1 2 3 4. J Q K are 10. Make 24.",
             "--num_samples=2", "--max_new_tokens=6", "--json").stdout.strip().splitlines()
  rows = [json.loads(l) for l in out]
  assert len(rows) == 2
  for r in rows:
    assert len(r["tokens"]) == len(r["logprobs"]) <= 6
    assert all(lp <= 0 for lp in r["logprobs"])
  rand = _run("launch.sample", "--init_from=preset:nano", "--prompt=hi", "--temperature=0",
              "--max_new_tokens=4", "--json").stdout.strip().splitlines()
  assert len(json.loads(rand[-1])["tokens"]) <= 4


def test_analyze_writes_json_and_figures(workdir, tmp_path):
  _run("launch.analyze", f"--ref={workdir}:5", f"--runs={workdir}:10", f"--out={tmp_path}/a")
  res = json.load(open(tmp_path / "a" / "spectral.json"))
  pair = res["pairs"][f"{workdir}:10"]
  m = pair["matrices"]["layers/q/0"]
  for key in ("k", "principal_angles_deg_left", "principal_angles_deg_right", "sv_rel_change",
              "sparsity", "rank_ratio", "scaling_energy", "rotation_energy"):
    assert key in m
  assert m["principal_angles_deg_left"] == sorted(m["principal_angles_deg_left"])
  assert any(f.endswith(".png") for f in os.listdir(tmp_path / "a"))
  p = _run("launch.analyze", f"--ref={workdir}:5", f"--runs={workdir}:99", f"--out={tmp_path}/b",
           check=False)
  assert p.returncode != 0 and "step 99" in p.stderr


def test_a_run_that_died_before_its_first_snapshot_restarts_from_init_from(workdir, tmp_path):
  """Regression: such a workdir must not silently fall back to a fresh init."""
  import shutil

  import numpy as np

  from configs import gp24_grpo
  from jaxrl_post import checkpoint
  from jaxrl_post.hparams import from_config
  from jaxrl_post.trainers import loop
  d = tmp_path / "died"
  d.mkdir()
  shutil.copy(os.path.join(workdir, "model_config.json"), d / "model_config.json")
  shutil.copytree(os.path.join(workdir, "tokenizer"), d / "tokenizer")
  c = gp24_grpo.get_config("quick")
  c.init_from = workdir
  c.mesh = (1, 1, 1)
  ctx = loop.setup(from_config(c), str(d))
  want, _ = checkpoint.load_params(os.path.join(workdir, "checkpoints"))
  np.testing.assert_array_equal(ctx.init_params["layers"]["q"], want["layers"]["q"])


def test_analyze_series_and_imported_reference(workdir, tmp_path):
  _run("launch.analyze", f"--ref={workdir}:5", f"--runs={workdir}", "--series", f"--out={tmp_path}/s")
  res = json.load(open(tmp_path / "s" / "spectral.json"))
  assert [r["label"] for r in res["series"][workdir]] == [f"{workdir}:5", f"{workdir}:10"]
  # A snapshot against itself: arccos near 1 turns float32 noise into ~0.01 deg.
  assert res["series"][workdir][0]["mean_angle_deg_left"] < 0.1
  assert os.path.getsize(tmp_path / "s" / "series.png") > 1000
  hf_dir = os.path.join(ROOT, "tests", "fixtures", "hf", "qwen2")
  _run("launch.analyze", f"--ref={hf_dir}", f"--runs={hf_dir}", f"--out={tmp_path}/h")
  pooled = next(iter(json.load(open(tmp_path / "h" / "spectral.json"))["pairs"].values()))["pooled"]
  assert pooled["sparsity_float32"] == 1.0
