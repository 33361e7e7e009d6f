"""Hugging Face checkpoint directories: export and import (safetensors).

`export_hf(params, cfg, directory)` writes `config.json` + `model.safetensors`
that `transformers` loads as `Qwen2ForCausalLM` (qkv bias) or
`LlamaForCausalLM`; `import_hf(directory)` reads such a directory (single or
sharded safetensors) back, tensor by tensor, into our layout. Layout mapping
(per layer l; ours -> HF):
  q[l] [D, H, Dh]  -> q_proj.weight [H*Dh, D] (transposed), bias [H*Dh]
  k/v likewise; o[l] [H, Dh, D] -> o_proj.weight [D, H*Dh]
  gate/up[l] [D, F] -> gate_proj/up_proj.weight [F, D]; down[l] [F, D] -> down_proj.weight [D, F]
  attn_norm -> input_layernorm; mlp_norm -> post_attention_layernorm
"""

from __future__ import annotations

import json
import os

import numpy as np

from jaxrl_post.model.config import ModelConfig, RopeScaling


def _hf_config(cfg: ModelConfig, architecture: str) -> dict:
  out = {
      "architectures": [architecture],
      "model_type": "qwen2" if architecture.startswith("Qwen2") else "llama",
      "vocab_size": cfg.vocab_size, "hidden_size": cfg.hidden_size,
      "intermediate_size": cfg.intermediate_size, "num_hidden_layers": cfg.num_layers,
      "num_attention_heads": cfg.num_heads, "num_key_value_heads": cfg.num_kv_heads,
      "head_dim": cfg.head_dim, "rope_theta": cfg.rope_theta, "rms_norm_eps": cfg.rms_norm_eps,
      "tie_word_embeddings": cfg.tie_embeddings, "max_position_embeddings": cfg.max_seq_len,
      "hidden_act": "silu", "torch_dtype": "float32", "use_cache": True,
      "attention_bias": cfg.qkv_bias, "bos_token_id": 1, "eos_token_id": 2,
  }
  if cfg.rope_scaling is not None:
    s = cfg.rope_scaling
    out["rope_scaling"] = {"rope_type": "llama3", "factor": s.factor,
                           "low_freq_factor": s.low_freq_factor,
                           "high_freq_factor": s.high_freq_factor,
                           "original_max_position_embeddings": s.original_max_position_embeddings}
  if architecture.startswith("Qwen2"):
    out["use_sliding_window"] = False
    out["sliding_window"] = cfg.max_seq_len
    out["max_window_layers"] = cfg.num_layers
  return out


def export_hf(params, cfg: ModelConfig, directory: str, architecture: str | None = None) -> str:
  """Writes an HF directory loadable by `transformers` (float32)."""
  from safetensors.numpy import save_file
  if architecture is None:
    architecture = "Qwen2ForCausalLM" if cfg.qkv_bias else "LlamaForCausalLM"
  if architecture not in ("Qwen2ForCausalLM", "LlamaForCausalLM"):
    raise ValueError(f"unsupported architecture {architecture!r}")
  p = {k: (np.asarray(v, np.float32) if not isinstance(v, dict) else
           {kk: np.asarray(vv, np.float32) for kk, vv in v.items()}) for k, v in params.items()}
  L, D = cfg.num_layers, cfg.hidden_size
  t = {"model.embed_tokens.weight": p["embed"], "model.norm.weight": p["final_norm"]}
  if not cfg.tie_embeddings:
    t["lm_head.weight"] = p["lm_head"].T
  lp = p["layers"]
  for l in range(L):
    pre = f"model.layers.{l}."
    for name in ("q", "k", "v"):
      t[pre + f"self_attn.{name}_proj.weight"] = lp[name][l].reshape(D, -1).T
      if cfg.qkv_bias:
        t[pre + f"self_attn.{name}_proj.bias"] = lp[f"{name}_bias"][l].reshape(-1)
    t[pre + "self_attn.o_proj.weight"] = lp["o"][l].reshape(-1, D).T
    t[pre + "mlp.gate_proj.weight"] = lp["gate"][l].T
    t[pre + "mlp.up_proj.weight"] = lp["up"][l].T
    t[pre + "mlp.down_proj.weight"] = lp["down"][l].T
    t[pre + "input_layernorm.weight"] = lp["attn_norm"][l]
    t[pre + "post_attention_layernorm.weight"] = lp["mlp_norm"][l]
  os.makedirs(directory, exist_ok=True)
  save_file({k: np.ascontiguousarray(v) for k, v in t.items()},
            os.path.join(directory, "model.safetensors"), metadata={"format": "pt"})
  with open(os.path.join(directory, "config.json"), "w") as f:
    json.dump(_hf_config(cfg, architecture), f, indent=1)
  return directory


def config_from_hf(hf: dict) -> ModelConfig:
  arch = (hf.get("architectures") or ["?"])[0]
  if arch not in ("Qwen2ForCausalLM", "LlamaForCausalLM"):
    raise ValueError(f"unsupported architecture {arch!r}: expected Qwen2ForCausalLM or LlamaForCausalLM")
  # transformers >= 5 writes `rope_parameters` (theta included); older
  # versions `rope_theta` + `rope_scaling`.
  rp = dict(hf.get("rope_parameters") or {})
  theta = rp.get("rope_theta", hf.get("rope_theta", 10000.0))
  rs = hf.get("rope_scaling") or (rp if rp.get("rope_type", "default") != "default" else None)
  scaling = None
  if rs:
    if rs.get("rope_type", rs.get("type")) != "llama3":
      raise ValueError(f"unsupported RoPE scaling {rs}: only llama3 is implemented")
    scaling = RopeScaling(factor=rs["factor"], low_freq_factor=rs["low_freq_factor"],
                          high_freq_factor=rs["high_freq_factor"],
                          original_max_position_embeddings=rs["original_max_position_embeddings"])
  heads = hf["num_attention_heads"]
  return ModelConfig(
      vocab_size=hf["vocab_size"], hidden_size=hf["hidden_size"],
      intermediate_size=hf["intermediate_size"], num_layers=hf["num_hidden_layers"],
      num_heads=heads, num_kv_heads=hf.get("num_key_value_heads", heads),
      head_dim=hf.get("head_dim") or hf["hidden_size"] // heads,
      rope_theta=float(theta), rope_scaling=scaling,
      rms_norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
      qkv_bias=arch == "Qwen2ForCausalLM" or bool(hf.get("attention_bias", False)),
      tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
      max_seq_len=int(hf.get("max_position_embeddings", 2048)))


def _open_tensors(directory: str):
  """name -> (file, safe_open handle), for single or sharded checkpoints."""
  from safetensors import safe_open
  index = os.path.join(directory, "model.safetensors.index.json")
  if os.path.exists(index):
    with open(index) as f:
      files = sorted(set(json.load(f)["weight_map"].values()))
  else:
    files = ["model.safetensors"]
  handles = {}
  for fname in files:
    path = os.path.join(directory, fname)
    if not os.path.exists(path):
      raise FileNotFoundError(f"{directory}: shard {fname} is missing")
    h = safe_open(path, framework="numpy")
    for name in h.keys():
      handles[name] = h
  return handles


def import_hf(directory: str):
  """(params, cfg) from an HF directory, read tensor by tensor."""
  with open(os.path.join(directory, "config.json")) as f:
    cfg = config_from_hf(json.load(f))
  handles = _open_tensors(directory)
  L, D, H, KV, Dh = cfg.num_layers, cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim

  def get(name, shape):
    if name not in handles:
      raise KeyError(f"{directory}: tensor {name!r} is missing")
    x = np.asarray(handles[name].get_tensor(name), np.float32)
    if x.shape != shape:
      raise ValueError(f"{directory}: tensor {name!r} has shape {x.shape}, expected {shape}")
    return x

  layers = {k: [] for k in ("q", "k", "v", "o", "gate", "up", "down", "attn_norm", "mlp_norm")}
  if cfg.qkv_bias:
    layers.update(q_bias=[], k_bias=[], v_bias=[])
  for l in range(L):
    pre = f"model.layers.{l}."
    for name, n in (("q", H), ("k", KV), ("v", KV)):
      layers[name].append(get(pre + f"self_attn.{name}_proj.weight", (n * Dh, D)).T.reshape(D, n, Dh))
      if cfg.qkv_bias:
        layers[f"{name}_bias"].append(get(pre + f"self_attn.{name}_proj.bias", (n * Dh,)).reshape(n, Dh))
    layers["o"].append(get(pre + "self_attn.o_proj.weight", (D, H * Dh)).T.reshape(H, Dh, D))
    layers["gate"].append(get(pre + "mlp.gate_proj.weight", (cfg.intermediate_size, D)).T)
    layers["up"].append(get(pre + "mlp.up_proj.weight", (cfg.intermediate_size, D)).T)
    layers["down"].append(get(pre + "mlp.down_proj.weight", (D, cfg.intermediate_size)).T)
    layers["attn_norm"].append(get(pre + "input_layernorm.weight", (D,)))
    layers["mlp_norm"].append(get(pre + "post_attention_layernorm.weight", (D,)))
  params = {"embed": get("model.embed_tokens.weight", (cfg.vocab_size, D)),
            "final_norm": get("model.norm.weight", (D,)),
            "layers": {k: np.stack(v) for k, v in layers.items()}}
  if not cfg.tie_embeddings:
    params["lm_head"] = get("lm_head.weight", (cfg.vocab_size, D)).T
  return params, cfg


def load_hf_tokenizer(directory: str):
  """The tokenizer saved with a jaxrl_post export (tokenizer/), if any."""
  from jaxrl_post import tokenizers
  tok_dir = os.path.join(directory, "tokenizer")
  if os.path.exists(os.path.join(tok_dir, "tokenizer.json")):
    return tokenizers.load_tokenizer(tok_dir)
  raise FileNotFoundError(
      f"{directory}: no jaxrl_post tokenizer/ (BPE tokenizer.json import is not supported yet)")
