"""HF safetensors import/export: logits parity with transformers (float32).

The committed fixtures (tests/fixtures/make_hf_fixtures.py) hold random tiny
Qwen2 (qkv bias, tied) and Llama (untied, head_dim != D/H, Llama-3 RoPE
scaling over all three frequency bands) checkpoints saved by transformers
together with its logits, so the parity tests need no torch. With torch +
transformers installed, export -> transformers load -> same logits is
checked live too.
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


def _logits(params, cfg, tokens):
  tokens = jnp.asarray(tokens, jnp.int32)
  pos = jnp.broadcast_to(jnp.arange(tokens.shape[1]), tokens.shape)
  return np.asarray(M.forward(jax.tree.map(jnp.asarray, params), cfg, tokens, pos)[0])


def _copy_fixture(tmp_path, name="qwen2"):
  d = str(tmp_path / name)
  shutil.copytree(os.path.join(FIX, name), d)
  return d


def _edit_config(d, **changes):
  path = os.path.join(d, "config.json")
  with open(path) as f:
    c = json.load(f)
  c.update(changes)
  with open(path, "w") as f:
    json.dump(c, f)


@pytest.mark.parametrize("name", ["qwen2", "llama"])
def test_logits_match_transformers_fixture(name):
  d = os.path.join(FIX, name)
  params, cfg = hf.import_hf(d)
  want = np.load(os.path.join(d, "logits.npy"))
  got = _logits(params, cfg, np.load(os.path.join(d, "tokens.npy")))
  assert np.abs(got - want).max() <= 1e-4


def test_fixture_configs_cover_the_features():
  _, q = hf.import_hf(os.path.join(FIX, "qwen2"))
  _, l = hf.import_hf(os.path.join(FIX, "llama"))
  assert q.qkv_bias and q.tie_embeddings and q.rope_scaling is None
  assert not l.qkv_bias and not l.tie_embeddings and l.rope_scaling is not None
  assert l.head_dim * l.num_heads != l.hidden_size
  # Llama-3 bands: wavelengths below orig/high kept, above orig/low divided.
  inv = 1.0 / l.rope_theta ** (np.arange(0, l.head_dim, 2) / l.head_dim)
  wl, s = 2 * np.pi / inv, l.rope_scaling
  orig = s.original_max_position_embeddings
  assert (wl < orig / s.high_freq_factor).any() and (wl > orig / s.low_freq_factor).any()
  assert ((wl >= orig / s.high_freq_factor) & (wl <= orig / s.low_freq_factor)).any()


def test_param_shapes_match_the_model():
  for cfg in (M.get_preset("nano"), M.get_preset("nano", tie_embeddings=False, qkv_bias=False)):
    abstract = jax.tree.map(lambda a: a.shape, M.abstract_params(cfg))
    flat = {"embed": abstract["embed"], "final_norm": abstract["final_norm"],
            **({"lm_head": abstract["lm_head"]} if "lm_head" in abstract else {}),
            **{f"layers/{k}": v for k, v in abstract["layers"].items()}}
    assert hf.param_shapes(cfg) == flat


@pytest.mark.parametrize("arch", ["auto", "LlamaForCausalLM", "Qwen2ForCausalLM"])
def test_export_import_round_trip(tmp_path, arch):
  cfg = M.get_preset("nano")
  params = jax.device_get(M.init_params(cfg, jax.random.key(0)))
  hf.export_hf(params, cfg, str(tmp_path), architecture=arch)
  back, cfg2 = hf.import_hf(str(tmp_path))
  assert cfg2 == cfg.replace(max_seq_len=cfg2.max_seq_len)
  jax.tree.map(np.testing.assert_array_equal, params, back)


def test_round_trip_untied_no_bias_with_scaling(tmp_path):
  src = os.path.join(FIX, "llama")
  params, cfg = hf.import_hf(src)
  hf.export_hf(params, cfg, str(tmp_path))
  back, cfg2 = hf.import_hf(str(tmp_path))
  assert cfg2 == cfg
  jax.tree.map(np.testing.assert_array_equal, params, back)
  assert json.load(open(os.path.join(tmp_path, "config.json")))["architectures"] == \
      ["LlamaForCausalLM"]


def test_sharded_index_and_bf16(tmp_path):
  """A checkpoint split over two shards (index.json) with bfloat16 tensors."""
  import ml_dtypes
  from safetensors import safe_open
  from safetensors.flax import save_file
  src = os.path.join(FIX, "llama")
  d = str(tmp_path / "sharded")
  os.makedirs(d)
  shutil.copy(os.path.join(src, "config.json"), d)
  with safe_open(os.path.join(src, "model.safetensors"), framework="numpy") as f:
    tensors = {k: f.get_tensor(k) for k in f.keys()}
  names = sorted(tensors)
  weight_map = {}
  for i, part in enumerate((names[: len(names) // 2], names[len(names) // 2:])):
    fname = f"model-0000{i + 1}-of-00002.safetensors"
    save_file({k: jnp.asarray(tensors[k], jnp.bfloat16) for k in part}, os.path.join(d, fname))
    weight_map.update({k: fname for k in part})
  with open(os.path.join(d, "model.safetensors.index.json"), "w") as f:
    json.dump({"metadata": {}, "weight_map": weight_map}, f)
  params, cfg = hf.import_hf(d)
  want = tensors["model.layers.1.mlp.down_proj.weight"].astype(ml_dtypes.bfloat16)
  np.testing.assert_array_equal(params["layers"]["down"][1].T, want.astype(np.float32))
  # A partial shard (the index lists a tensor the file lacks) and a missing
  # shard are named.
  second = os.path.join(d, "model-00002-of-00002.safetensors")
  with safe_open(second, framework="flax") as f:
    kept = {k: f.get_tensor(k) for k in list(f.keys())[1:]}
    dropped = list(f.keys())[0]
  save_file(kept, second)
  with pytest.raises(ValueError, match=rf"tensor '{dropped}' is listed in shard "
                                       r"model-00002-of-00002\.safetensors by the index but "
                                       r"that shard does not hold it \(partial shard\?\)"):
    hf.import_hf(d)
  os.remove(second)
  with pytest.raises(FileNotFoundError, match="shard model-00002-of-00002.safetensors is missing"):
    hf.import_hf(d)


def test_placement_on_shardings():
  from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
  mesh = Mesh(np.array(jax.devices()[:2]), ("x",))
  params, cfg = hf.import_hf(os.path.join(FIX, "qwen2"))
  shardings = jax.tree.map(lambda _: NamedSharding(mesh, P()), params)
  shardings["embed"] = NamedSharding(mesh, P("x", None))
  placed, _ = hf.import_hf(os.path.join(FIX, "qwen2"), shardings=shardings)
  assert placed["embed"].sharding == shardings["embed"]
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), b), placed, params)
  seen = []
  hf.import_hf(os.path.join(FIX, "qwen2"), shardings=lambda path, x: seen.append(path) or x)
  assert seen[0] == "embed" and "layers/q_bias" in seen
  with pytest.raises(ValueError, match="shardings has no entry for parameter 'final_norm'"):
    hf.import_hf(os.path.join(FIX, "qwen2"), shardings={"embed": shardings["embed"]})


def test_bfloat16_params():
  params, cfg = hf.import_hf(os.path.join(FIX, "qwen2"), dtype="bfloat16")
  assert cfg.param_dtype == "bfloat16" and params["layers"]["q"].dtype == jnp.bfloat16


def test_wrong_shape_names_the_tensor(tmp_path):
  d = _copy_fixture(tmp_path)
  _edit_config(d, intermediate_size=40)
  with pytest.raises(ValueError, match=r"tensor 'model\.layers\.0\.mlp\.gate_proj\.weight' "
                                       r"has shape \(48, 32\), expected \(40, 32\)"):
    hf.import_hf(d)


def test_unsupported_architecture_and_scaling(tmp_path):
  d = _copy_fixture(tmp_path)
  _edit_config(d, architectures=["GPT2LMHeadModel"])
  with pytest.raises(ValueError, match="unsupported architecture 'GPT2LMHeadModel'"):
    hf.import_hf(d)
  _edit_config(d, architectures=["LlamaForCausalLM"],
               rope_scaling={"rope_type": "yarn", "factor": 4.0})
  with pytest.raises(ValueError, match="unsupported RoPE scaling 'yarn'"):
    hf.import_hf(d)


def test_config_weights_mismatch(tmp_path):
  d = _copy_fixture(tmp_path)
  _edit_config(d, num_hidden_layers=1)  # the file holds 2 layers
  with pytest.raises(ValueError, match=r"not accounted for .*model\.layers\.1\."):
    hf.import_hf(d)
  _edit_config(d, num_hidden_layers=3)
  with pytest.raises(KeyError, match=r"tensor 'model\.layers\.2\.\S+' is missing"):
    hf.import_hf(d)
  _edit_config(d, num_hidden_layers=2, tie_word_embeddings=False)
  with pytest.raises(KeyError, match="tensor 'lm_head.weight' is missing"):
    hf.import_hf(d)


def test_truncated_file_and_missing_config(tmp_path):
  d = _copy_fixture(tmp_path)
  path = os.path.join(d, "model.safetensors")
  data = open(path, "rb").read()
  with open(path, "wb") as f:
    f.write(data[: len(data) // 2])
  with pytest.raises(ValueError, match="model.safetensors"):
    hf.import_hf(d)
  os.remove(os.path.join(d, "config.json"))
  with pytest.raises(FileNotFoundError, match="no config.json"):
    hf.import_hf(d)


def test_export_rejects_mismatched_params(tmp_path):
  cfg = M.get_preset("nano")
  params = jax.device_get(M.init_params(cfg, jax.random.key(0)))
  with pytest.raises(ValueError, match="parameter layers/q has shape"):
    hf.export_hf(params, cfg.replace(num_heads=8, num_kv_heads=4), str(tmp_path))
  with pytest.raises(ValueError, match="unsupported architecture 'Gemma'"):
    hf.export_hf(params, cfg, str(tmp_path), architecture="Gemma")


def test_tokenizer_of_a_checkpoint(tmp_path):
  """tokenizer.json (byte-level BPE) first; a sentencepiece tokenizer.model
  when there is no tokenizer.json or it is not byte-level (Llama-2 style)."""
  from jaxrl_post.tokenizers import SentencePieceTokenizer
  d = _copy_fixture(tmp_path)
  with pytest.raises(FileNotFoundError, match="no tokenizer.json, tokenizer.model"):
    hf.load_hf_tokenizer(d)
  corpus = ["the capital of france is paris", "two plus two is four"] * 50
  spm = SentencePieceTokenizer.train(corpus, str(tmp_path / "spm"), vocab_size=40, cache=False)
  spm.save(str(tmp_path / "spm"))
  shutil.copy(tmp_path / "spm" / "spm.model", os.path.join(d, "tokenizer.model"))
  tok = hf.load_hf_tokenizer(d)
  assert isinstance(tok, SentencePieceTokenizer)
  assert tok.encode("paris is four") == spm.encode("paris is four")
  # A byte-fallback BPE tokenizer.json (not byte-level) next to tokenizer.model.
  bpe = {"model": {"type": "BPE", "byte_fallback": True, "vocab": {"a": 0}, "merges": []}}
  with open(os.path.join(d, "tokenizer.json"), "w") as f:
    json.dump(bpe, f)
  assert isinstance(hf.load_hf_tokenizer(d), SentencePieceTokenizer)
  os.remove(os.path.join(d, "tokenizer.model"))
  with pytest.raises(ValueError, match="byte_fallback"):
    hf.load_hf_tokenizer(d)
  with open(os.path.join(d, "tokenizer.model"), "wb") as f:
    f.write(b"not a sentencepiece model")
  os.remove(os.path.join(d, "tokenizer.json"))
  with pytest.raises(ValueError, match="not a readable sentencepiece model"):
    hf.load_hf_tokenizer(d)


def test_chat_prompt():
  assert hf.chat_prompt("Hi") == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
  assert hf.chat_prompt("Hi", system="S").startswith("<|im_start|>system\nS<|im_end|>\n")


# --------------------------------------------------------------------------
# Live checks against transformers (skipped without torch).
# --------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["qwen2", "llama"])
def test_live_fixture_logits(name):
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  d = os.path.join(FIX, name)
  model = transformers.AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).eval()
  tokens = np.array([[3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8, 9, 7, 9, 3, 2, 3, 8, 4]])
  with torch.no_grad():
    want = model(torch.from_numpy(tokens)).logits.numpy()
  params, cfg = hf.import_hf(d)
  assert np.abs(_logits(params, cfg, tokens) - want).max() <= 1e-4


@pytest.mark.parametrize("arch,preset_changes", [
    ("Qwen2ForCausalLM", {}),
    ("LlamaForCausalLM", {"qkv_bias": False, "tie_embeddings": False, "head_dim": 16,
                          "rope_scaling": M.RopeScaling(8.0, 1.0, 4.0, 64)}),
    ("LlamaForCausalLM", {}),  # attention_bias: a zero o_proj bias is written
])
def test_live_export_loads_in_transformers(tmp_path, arch, preset_changes):
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  cfg = M.get_preset("nano", rope_theta=500_000.0, **preset_changes)
  params = jax.device_get(M.init_params(cfg, jax.random.key(1)))
  rng = np.random.default_rng(0)
  params = jax.tree.map(lambda x: x + rng.normal(0, 0.1, x.shape).astype(np.float32), params)
  hf.export_hf(params, cfg, str(tmp_path), architecture=arch)
  model = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path),
                                                            dtype=torch.float32).eval()
  assert type(model).__name__ == arch
  tokens = np.array([[1, 4, 9, 16, 25, 36, 49, 0, 63, 2, 7, 7]])
  with torch.no_grad():
    want = model(torch.from_numpy(tokens)).logits.numpy()
  assert np.abs(_logits(params, cfg, tokens) - want).max() <= 1e-4
