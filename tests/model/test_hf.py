"""Logits parity with Hugging Face transformers on the same weights (float32).

The committed fixtures (tests/fixtures/make_hf_fixtures.py) hold random tiny
Qwen2 (qkv bias, tied) and Llama (untied, Llama-3 RoPE scaling) checkpoints
saved by transformers with its logits, so this test needs no torch. With
torch + transformers installed, export -> transformers load -> same logits
is checked live too.
"""

import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrl_post import model as M
from jaxrl_post.model import hf

FIX = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures", "hf")


@pytest.mark.parametrize("name", ["qwen2", "llama"])
def test_logits_match_transformers_fixture(name):
  d = os.path.join(FIX, name)
  params, cfg = hf.import_hf(d)
  tokens = np.load(os.path.join(d, "tokens.npy")).astype(np.int32)
  pos = jnp.arange(tokens.shape[1])[None]
  logits, _ = M.forward(jax.tree.map(jnp.asarray, params), cfg, jnp.asarray(tokens), pos)
  want = np.load(os.path.join(d, "logits.npy"))
  assert np.abs(np.asarray(logits) - want).max() <= 1e-4


def test_export_import_round_trip(tmp_path):
  cfg = M.get_preset("nano")
  params = jax.device_get(M.init_params(cfg, jax.random.key(0)))
  hf.export_hf(params, cfg, str(tmp_path))
  back, cfg2 = hf.import_hf(str(tmp_path))
  assert cfg2.num_layers == cfg.num_layers and cfg2.qkv_bias and cfg2.tie_embeddings
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, b), params, back)


def test_bad_checkpoints_name_the_problem(tmp_path):
  d = str(tmp_path / "m")
  shutil.copytree(os.path.join(FIX, "qwen2"), d)
  cfg = json.load(open(os.path.join(d, "config.json")))
  cfg["hidden_size"] = 48
  json.dump(cfg, open(os.path.join(d, "config.json"), "w"))
  with pytest.raises(ValueError, match=r"tensor .model\.layers\.0\..* has shape"):
    hf.import_hf(d)
  cfg["architectures"] = ["GPT2LMHeadModel"]
  json.dump(cfg, open(os.path.join(d, "config.json"), "w"))
  with pytest.raises(ValueError, match="unsupported architecture"):
    hf.import_hf(d)


def test_live_export_loads_in_transformers(tmp_path):
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  cfg = M.get_preset("nano")
  params = jax.device_get(M.init_params(cfg, jax.random.key(1)))
  params["layers"]["q_bias"] = np.random.default_rng(0).normal(size=params["layers"]["q_bias"].shape).astype(np.float32)
  hf.export_hf(params, cfg, str(tmp_path))
  model = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path), dtype=torch.float32).eval()
  tokens = np.array([[1, 4, 9, 16, 25, 36]])
  with torch.no_grad():
    want = model(torch.from_numpy(tokens)).logits.numpy()
  got, _ = M.forward(params, cfg, jnp.asarray(tokens, jnp.int32), jnp.arange(6)[None])
  assert np.abs(np.asarray(got) - want).max() <= 1e-4
