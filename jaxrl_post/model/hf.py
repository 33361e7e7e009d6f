"""Hugging Face checkpoint directories: import and export (safetensors).

`import_hf(directory)` reads a `LlamaForCausalLM` / `Qwen2ForCausalLM`
directory (config.json + model.safetensors, or shards listed in
model.safetensors.index.json) tensor by tensor into our layout, optionally
placing every parameter on its sharding as soon as it is assembled.
`export_hf(params, cfg, directory)` writes config.json + model.safetensors
(float32, streamed one tensor at a time) that `transformers` loads, plus the
tokenizer (and its chat template) when one is given. `load_hf_tokenizer`
finds a checkpoint's tokenizer (byte-level BPE tokenizer.json, or a
sentencepiece tokenizer.model).

Layout mapping (per layer l; ours <- HF, PREAMBLE):
  q[l] [D, H, Dh]  <- q_proj.weight [H*Dh, D] transposed; q_bias[l] [H, Dh] <- q_proj.bias
  k/v likewise with KV heads; o[l] [H, Dh, D] <- o_proj.weight [D, H*Dh] transposed
  gate/up[l] [D, F] <- gate_proj/up_proj.weight [F, D] transposed
  down[l] [F, D] <- down_proj.weight [D, F] transposed
  attn_norm <- input_layernorm; mlp_norm <- post_attention_layernorm
  embed [V, D] <- model.embed_tokens.weight; final_norm <- model.norm.weight
  lm_head [D, V] <- lm_head.weight [V, D] transposed (untied models only)
Both use the same half-split ("rotate_half") RoPE, so q/k need no permutation.
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable, Mapping

import numpy as np

from jaxrl_post.model.config import ModelConfig, RopeScaling

ARCHITECTURES = ("Qwen2ForCausalLM", "LlamaForCausalLM")
LAYER_KEYS = ("attn_norm", "q", "k", "v", "o", "mlp_norm", "gate", "up", "down")
BIAS_KEYS = ("q_bias", "k_bias", "v_bias")

# A placement: None (host numpy), a pytree of shardings like params, or a
# callable (path like "layers/q", host array) -> array.
Placement = None | Mapping | Callable[[str, np.ndarray], Any]


# --------------------------------------------------------------------------
# Our layout.
# --------------------------------------------------------------------------


def param_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
  """Flat {"embed": (V, D), "layers/q": (L, D, H, Dh), ...} of our layout."""
  L, D, F = cfg.num_layers, cfg.hidden_size, cfg.intermediate_size
  H, KV, Dh, V = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.vocab_size
  out = {"embed": (V, D), "final_norm": (D,)}
  if not cfg.tie_embeddings:
    out["lm_head"] = (D, V)
  layer = {"attn_norm": (D,), "q": (D, H, Dh), "k": (D, KV, Dh), "v": (D, KV, Dh),
           "o": (H, Dh, D), "mlp_norm": (D,), "gate": (D, F), "up": (D, F), "down": (F, D)}
  if cfg.qkv_bias:
    layer.update(q_bias=(H, Dh), k_bias=(KV, Dh), v_bias=(KV, Dh))
  out.update({f"layers/{k}": (L, *s) for k, s in layer.items()})
  return out


def _sharding_of(shardings: Mapping, path: str):
  node = shardings
  for key in path.split("/"):
    if not isinstance(node, Mapping) or key not in node:
      raise ValueError(f"shardings has no entry for parameter {path!r}")
    node = node[key]
  return node


def _placer(shardings: Placement, paths) -> Callable[[str, np.ndarray], Any]:
  """(path, host array) -> placed array, for the `shardings` argument.

  A sharding pytree is checked for every path before anything is read.
  """
  if shardings is None:
    return lambda path, x: x
  if callable(shardings) and not isinstance(shardings, Mapping):
    return shardings
  import jax
  table = {path: _sharding_of(shardings, path) for path in paths}
  return lambda path, x: jax.device_put(x, table[path])


class ShapeChecked(Exception):
  """Raised by a source's tensor getter in dry-run mode, after its checks."""


def check_params(cfg: ModelConfig, fetch: Callable[[str, int | None], np.ndarray]) -> None:
  """Dry run of `assemble_params`: every source tensor exists with the right
  shape (the source's getter raises ShapeChecked instead of reading)."""
  for path in param_shapes(cfg):
    for l in (range(cfg.num_layers) if path.startswith("layers/") else (None,)):
      try:
        fetch(path, l)
      except ShapeChecked:
        pass


def assemble_params(cfg: ModelConfig, fetch: Callable[[str, int | None], np.ndarray],
                    shardings: Placement = None, dtype: str = "float32") -> dict:
  """Builds our params pytree one parameter at a time.

  fetch(path, layer) returns one slice in our layout (layer=None for the
  unstacked `embed`, `final_norm`, `lm_head`); stacked parameters are filled
  layer by layer into one preallocated [L, ...] buffer, which is placed
  (`shardings`) before the next parameter is read. Host memory peaks at the
  final parameters plus one source tensor (plus one stacked parameter when
  placing onto devices).
  """
  import jax.numpy as jnp
  place = _placer(shardings, param_shapes(cfg))
  np_dtype = np.dtype(jnp.dtype(dtype))
  params: dict = {"layers": {}}
  for path, shape in param_shapes(cfg).items():
    if path.startswith("layers/"):
      buf = np.empty(shape, np_dtype)
      for l in range(cfg.num_layers):
        x = fetch(path, l)
        if x.shape != shape[1:]:
          raise ValueError(f"parameter {path}[{l}] has shape {x.shape}, expected {shape[1:]}")
        buf[l] = x
      params["layers"][path.split("/", 1)[1]] = place(path, buf)
    else:
      x = fetch(path, None)
      if x.shape != shape:
        raise ValueError(f"parameter {path} has shape {x.shape}, expected {shape}")
      x = np.ascontiguousarray(x, np_dtype)
      if not x.flags.writeable:  # e.g. a view into a read-only file mapping
        x = x.copy()
      params[path] = place(path, x)
  return params


# --------------------------------------------------------------------------
# Config.
# --------------------------------------------------------------------------


def config_from_hf(hf: dict) -> ModelConfig:
  """Our ModelConfig from an HF config.json dict (transformers 4.x or 5.x).

  Raises:
    ValueError: an unsupported architecture, activation or RoPE scaling.
  """
  arch = (hf.get("architectures") or ["?"])[0]
  if arch not in ARCHITECTURES:
    raise ValueError(f"unsupported architecture {arch!r}: expected one of {ARCHITECTURES}")
  if hf.get("hidden_act", "silu") != "silu":
    raise ValueError(f"config.json hidden_act={hf['hidden_act']!r}: only silu is supported")
  if hf.get("mlp_bias", False):
    raise ValueError("config.json mlp_bias=true is not supported")
  # transformers >= 5 writes `rope_parameters` (theta included); older
  # versions `rope_theta` + `rope_scaling`.
  rp = dict(hf.get("rope_parameters") or {})
  theta = rp.get("rope_theta", hf.get("rope_theta", 10000.0))
  rs = hf.get("rope_scaling") or (rp if rp.get("rope_type", "default") != "default" else None)
  scaling = None
  if rs:
    kind = rs.get("rope_type", rs.get("type"))
    if kind != "llama3":
      raise ValueError(f"unsupported RoPE scaling {kind!r} ({rs}): only llama3 is implemented")
    scaling = RopeScaling(factor=float(rs["factor"]), low_freq_factor=float(rs["low_freq_factor"]),
                          high_freq_factor=float(rs["high_freq_factor"]),
                          original_max_position_embeddings=int(
                              rs["original_max_position_embeddings"]))
  heads = hf["num_attention_heads"]
  if hf.get("partial_rotary_factor", 1.0) != 1.0:
    raise ValueError("config.json partial_rotary_factor != 1 is not supported")
  return ModelConfig(
      vocab_size=hf["vocab_size"], hidden_size=hf["hidden_size"],
      intermediate_size=hf["intermediate_size"], num_layers=hf["num_hidden_layers"],
      num_heads=heads, num_kv_heads=hf.get("num_key_value_heads") or heads,
      head_dim=hf.get("head_dim") or hf["hidden_size"] // heads,
      rope_theta=float(theta), rope_scaling=scaling,
      rms_norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
      qkv_bias=arch == "Qwen2ForCausalLM" or bool(hf.get("attention_bias", False)),
      tie_embeddings=bool(hf.get("tie_word_embeddings", arch == "Qwen2ForCausalLM")),
      max_seq_len=int(hf.get("max_position_embeddings", 2048)))


def _hf_config(cfg: ModelConfig, architecture: str, bos_id: int | None,
               eos_id: int | None) -> dict:
  out = {
      "architectures": [architecture],
      "model_type": "qwen2" if architecture.startswith("Qwen2") else "llama",
      "vocab_size": cfg.vocab_size, "hidden_size": cfg.hidden_size,
      "intermediate_size": cfg.intermediate_size, "num_hidden_layers": cfg.num_layers,
      "num_attention_heads": cfg.num_heads, "num_key_value_heads": cfg.num_kv_heads,
      "head_dim": cfg.head_dim, "rope_theta": cfg.rope_theta, "rms_norm_eps": cfg.rms_norm_eps,
      "tie_word_embeddings": cfg.tie_embeddings, "max_position_embeddings": cfg.max_seq_len,
      "hidden_act": "silu", "torch_dtype": "float32", "use_cache": True,
      "attention_bias": cfg.qkv_bias, "bos_token_id": bos_id, "eos_token_id": eos_id,
  }
  rope = {"rope_type": "default", "rope_theta": cfg.rope_theta}
  if cfg.rope_scaling is not None:
    s = cfg.rope_scaling
    out["rope_scaling"] = {"rope_type": "llama3", "factor": s.factor,
                           "low_freq_factor": s.low_freq_factor,
                           "high_freq_factor": s.high_freq_factor,
                           "original_max_position_embeddings": s.original_max_position_embeddings}
    rope.update(out["rope_scaling"])
  out["rope_parameters"] = rope
  if architecture.startswith("Qwen2"):
    out["use_sliding_window"] = False
    out["sliding_window"] = None
    out["max_window_layers"] = cfg.num_layers
  return out


# --------------------------------------------------------------------------
# Import.
# --------------------------------------------------------------------------


class _SafetensorsFiles:
  """Tensor name -> lazily read array over one or many safetensors files."""

  def __init__(self, directory: str):
    from safetensors import safe_open
    self.directory = directory
    index = os.path.join(directory, "model.safetensors.index.json")
    if os.path.exists(index):
      with open(index) as f:
        weight_map = json.load(f).get("weight_map")
      if not weight_map:
        raise ValueError(f"{index}: no weight_map")
    elif os.path.exists(os.path.join(directory, "model.safetensors")):
      weight_map = None
    else:
      raise FileNotFoundError(f"{directory}: neither model.safetensors nor "
                              "model.safetensors.index.json")
    files = sorted(set(weight_map.values())) if weight_map else ["model.safetensors"]
    self._handles, self._files, self._flax = {}, {}, {}
    for fname in files:
      path = os.path.join(directory, fname)
      if not os.path.exists(path):
        first = next(n for n, f in weight_map.items() if f == fname)
        raise FileNotFoundError(f"{directory}: shard {fname} is missing (it holds tensor "
                                f"{first!r} and others)")
      try:
        handle = safe_open(path, framework="numpy")
      except Exception as e:  # noqa: BLE001 - safetensors raises several types
        raise ValueError(f"{path}: not a readable safetensors file ({e})") from e
      self._handles[fname] = handle
      for name in handle.keys():
        self._files[name] = fname
    if weight_map:
      for name, fname in weight_map.items():
        if self._files.get(name) != fname:
          raise ValueError(f"{directory}: tensor {name!r} is listed in shard {fname} by the "
                           "index but that shard does not hold it (partial shard?)")
    self.used: set[str] = set()
    self.dry = False  # True: get() checks, then raises ShapeChecked

  def names(self) -> set[str]:
    return set(self._files)

  def get(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
    """The tensor as float32 (any stored float dtype), shape-checked."""
    fname = self._files.get(name)
    if fname is None:
      raise KeyError(f"{self.directory}: tensor {name!r} is missing")
    handle = self._handles[fname]
    got = tuple(handle.get_slice(name).get_shape())
    if got != shape:
      raise ValueError(f"{self.directory}: tensor {name!r} has shape {got}, expected {shape}")
    self.used.add(name)
    if self.dry:
      raise ShapeChecked(name)
    try:
      if handle.get_slice(name).get_dtype() == "BF16":  # numpy has no bfloat16
        if fname not in self._flax:
          from safetensors import safe_open
          self._flax[fname] = safe_open(os.path.join(self.directory, fname), framework="flax")
        x = np.asarray(self._flax[fname].get_tensor(name), np.float32)
      else:
        x = np.asarray(handle.get_tensor(name), np.float32)
    except Exception as e:  # noqa: BLE001
      raise ValueError(f"{self.directory}: tensor {name!r} cannot be read ({e})") from e
    return x


def _hf_fetch(files: _SafetensorsFiles, cfg: ModelConfig):
  """fetch(path, layer) for `assemble_params` over HF tensor names."""
  D, F, H, KV, Dh, V = (cfg.hidden_size, cfg.intermediate_size, cfg.num_heads,
                        cfg.num_kv_heads, cfg.head_dim, cfg.vocab_size)
  heads = {"q": H, "k": KV, "v": KV}

  def fetch(path: str, l: int | None) -> np.ndarray:
    if path == "embed":
      return files.get("model.embed_tokens.weight", (V, D))
    if path == "final_norm":
      return files.get("model.norm.weight", (D,))
    if path == "lm_head":
      return files.get("lm_head.weight", (V, D)).T
    key = path.split("/", 1)[1]
    pre = f"model.layers.{l}."
    if key in heads:
      n = heads[key]
      return files.get(pre + f"self_attn.{key}_proj.weight", (n * Dh, D)).T.reshape(D, n, Dh)
    if key in ("q_bias", "k_bias", "v_bias"):
      n = heads[key[0]]
      return files.get(pre + f"self_attn.{key[0]}_proj.bias", (n * Dh,)).reshape(n, Dh)
    if key == "o":
      return files.get(pre + "self_attn.o_proj.weight", (D, H * Dh)).T.reshape(H, Dh, D)
    if key in ("gate", "up"):
      return files.get(pre + f"mlp.{key}_proj.weight", (F, D)).T
    if key == "down":
      return files.get(pre + "mlp.down_proj.weight", (D, F)).T
    if key == "attn_norm":
      return files.get(pre + "input_layernorm.weight", (D,))
    if key == "mlp_norm":
      return files.get(pre + "post_attention_layernorm.weight", (D,))
    raise KeyError(f"no HF tensor for parameter {path!r}")
  return fetch


def import_hf(directory: str, *, shardings: Placement = None,
              dtype: str = "float32") -> tuple[dict, ModelConfig]:
  """(params, cfg) from an HF Llama/Qwen2 directory, read tensor by tensor.

  Args:
    directory: holds config.json and model.safetensors (or the shards of
      model.safetensors.index.json); float32/float16/bfloat16 tensors.
    shardings: None (host numpy arrays), a pytree of `jax.sharding.Sharding`
      like the params, or a callable (path, host array) -> array; each
      parameter is placed as soon as it is assembled.
    dtype: dtype the parameters are stored in (cfg.param_dtype follows).

  Raises:
    FileNotFoundError: no config.json / weights, or a missing shard.
    ValueError: unsupported architecture or config; a tensor with the wrong
      shape, an unreadable one, or tensors the config does not account for
      (each names the tensor). KeyError: a missing tensor (named).
  """
  cfg_path = os.path.join(directory, "config.json")
  if not os.path.exists(cfg_path):
    raise FileNotFoundError(f"{directory}: no config.json (not a Hugging Face model directory)")
  with open(cfg_path) as f:
    hf_cfg = json.load(f)
  cfg = config_from_hf(hf_cfg).replace(param_dtype=dtype)
  files = _SafetensorsFiles(directory)
  fetch = _hf_fetch(files, cfg)
  files.dry = True  # names, shapes and leftovers checked before reading anything
  check_params(cfg, fetch)
  files.dry = False
  if hf_cfg.get("architectures", ["?"])[0] == "LlamaForCausalLM" and cfg.qkv_bias:
    for l in range(cfg.num_layers):  # HF Llama's attention_bias also biases o_proj
      name = f"model.layers.{l}.self_attn.o_proj.bias"
      if name in files.names() and np.any(files.get(name, (cfg.hidden_size,)) != 0):
        raise ValueError(f"{directory}: tensor {name!r} is non-zero; an output-projection "
                         "bias is not supported")
  ignorable = ("rotary_emb.inv_freq",)
  tied_head = "lm_head.weight" if cfg.tie_embeddings else None  # some tied files keep it
  extra = sorted(n for n in files.names() - files.used
                 if not n.endswith(ignorable) and n != tied_head)
  if extra:
    raise ValueError(f"{directory}: tensors not accounted for by config.json "
                     f"(num_hidden_layers={cfg.num_layers}, tie_word_embeddings="
                     f"{cfg.tie_embeddings}): {extra[:5]}{' ...' if len(extra) > 5 else ''}")
  params = assemble_params(cfg, fetch, shardings, dtype)
  return params, cfg


# --------------------------------------------------------------------------
# Export.
# --------------------------------------------------------------------------


def write_safetensors(path: str, tensors: Mapping[str, tuple[tuple[int, ...],
                                                             Callable[[], np.ndarray]]],
                      metadata: Mapping[str, str] | None = None) -> None:
  """Writes float32 tensors as one safetensors file, one tensor at a time.

  tensors: name -> (shape, producer); each producer is called once, while
  writing, so host memory holds one tensor (safetensors' `save_file` builds
  the whole file in memory first). The format: u64 little-endian header
  length, the JSON header (dtype, shape, data_offsets per tensor; padded
  with spaces to 8 bytes), then the raw little-endian bytes in header order.
  Written to `path.tmp`, then renamed.
  """
  header: dict[str, Any] = {"__metadata__": dict(metadata)} if metadata else {}
  offset = 0
  for name, (shape, _) in tensors.items():
    n = 4 * int(np.prod(shape, dtype=np.int64))
    header[name] = {"dtype": "F32", "shape": [int(d) for d in shape],
                    "data_offsets": [offset, offset + n]}
    offset += n
  raw = json.dumps(header, separators=(",", ":")).encode()
  raw += b" " * (-len(raw) % 8)
  tmp = path + ".tmp"
  with open(tmp, "wb") as f:
    f.write(len(raw).to_bytes(8, "little"))
    f.write(raw)
    for name, (shape, make) in tensors.items():
      x = np.ascontiguousarray(make(), "<f4")
      if x.shape != tuple(shape):
        raise ValueError(f"tensor {name!r} has shape {x.shape}, expected {tuple(shape)}")
      x.tofile(f)
  os.replace(tmp, path)


def export_hf(params, cfg: ModelConfig, directory: str, architecture: str | None = "auto",
              tokenizer=None) -> str:
  """Writes an HF directory loadable by `transformers` (float32 weights).

  Args:
    params: our params pytree (host or device arrays, any float dtype).
    cfg: its config.
    directory: created if needed; gets config.json, model.safetensors,
      generation_config.json and, for a BPE tokenizer, tokenizer.json +
      tokenizer_config.json.
    architecture: "Qwen2ForCausalLM", "LlamaForCausalLM", or "auto"/None
      (Qwen2 when cfg.qkv_bias, else Llama). Qwen2 always has q/k/v biases
      (zeros are written when cfg has none); Llama with qkv_bias gets
      attention_bias=true and a zero o_proj bias.
    tokenizer: optional; its special ids go into the configs.

  Returns:
    directory.
  """
  if architecture in (None, "auto"):
    architecture = "Qwen2ForCausalLM" if cfg.qkv_bias else "LlamaForCausalLM"
  if architecture not in ARCHITECTURES:
    raise ValueError(f"unsupported architecture {architecture!r}: expected one of "
                     f"{ARCHITECTURES} or 'auto'")
  shapes = param_shapes(cfg)
  flat = {"embed": params["embed"], "final_norm": params["final_norm"]}
  if not cfg.tie_embeddings:
    flat["lm_head"] = params["lm_head"]
  flat.update({f"layers/{k}": v for k, v in params["layers"].items()})
  missing = sorted(set(shapes) - set(flat))
  if missing:
    raise ValueError(f"params lack {missing} required by the config")
  for path, shape in shapes.items():
    if tuple(flat[path].shape) != shape:
      raise ValueError(f"parameter {path} has shape {tuple(flat[path].shape)}, expected {shape} "
                       "from the config")

  def host(path, l=None):
    x = flat[path] if l is None else flat[path][l]
    return np.asarray(x, np.float32)

  # name -> (HF shape, producer of that tensor): one tensor in host memory at a time.
  L, D, Dh = cfg.num_layers, cfg.hidden_size, cfg.head_dim
  t: dict[str, tuple[tuple[int, ...], Callable[[], np.ndarray]]] = {
      "model.embed_tokens.weight": ((cfg.vocab_size, D), lambda: host("embed")),
      "model.norm.weight": ((D,), lambda: host("final_norm"))}
  if not cfg.tie_embeddings:
    t["lm_head.weight"] = ((cfg.vocab_size, D), lambda: host("lm_head").T)
  heads = {"q": cfg.num_heads, "k": cfg.num_kv_heads, "v": cfg.num_kv_heads}
  qwen2 = architecture == "Qwen2ForCausalLM"
  for l in range(L):
    pre = f"model.layers.{l}."
    for name, n in heads.items():
      t[pre + f"self_attn.{name}_proj.weight"] = (
          (n * Dh, D), lambda name=name, l=l: host(f"layers/{name}", l).reshape(D, -1).T)
      if cfg.qkv_bias:
        t[pre + f"self_attn.{name}_proj.bias"] = (
            (n * Dh,), lambda name=name, l=l: host(f"layers/{name}_bias", l).reshape(-1))
      elif qwen2:
        t[pre + f"self_attn.{name}_proj.bias"] = ((n * Dh,),
                                                  lambda n=n: np.zeros(n * Dh, np.float32))
    t[pre + "self_attn.o_proj.weight"] = (
        (D, cfg.num_heads * Dh), lambda l=l: host("layers/o", l).reshape(-1, D).T)
    if cfg.qkv_bias and not qwen2:
      t[pre + "self_attn.o_proj.bias"] = ((D,), lambda: np.zeros((D,), np.float32))
    for name in ("gate", "up", "down"):
      shape = (D, cfg.intermediate_size) if name == "down" else (cfg.intermediate_size, D)
      t[pre + f"mlp.{name}_proj.weight"] = (shape, lambda name=name, l=l:
                                            host(f"layers/{name}", l).T)
    t[pre + "input_layernorm.weight"] = ((D,), lambda l=l: host("layers/attn_norm", l))
    t[pre + "post_attention_layernorm.weight"] = ((D,), lambda l=l: host("layers/mlp_norm", l))
  os.makedirs(directory, exist_ok=True)
  write_safetensors(os.path.join(directory, "model.safetensors"), t, metadata={"format": "pt"})
  bos = eos = None
  if tokenizer is not None:
    bos, eos = int(tokenizer.bos_id), int(tokenizer.eos_id)
  with open(os.path.join(directory, "config.json"), "w") as f:
    json.dump(_hf_config(cfg, architecture, bos, eos), f, indent=1)
  with open(os.path.join(directory, "generation_config.json"), "w") as f:
    json.dump({"bos_token_id": bos, "eos_token_id": eos,
               "pad_token_id": getattr(tokenizer, "pad_id", None)}, f, indent=1)
  if tokenizer is not None and hasattr(tokenizer, "save_hf"):
    tokenizer.save_hf(directory)
  return directory


# --------------------------------------------------------------------------
# Tokenizer and chat template.
# --------------------------------------------------------------------------


def load_hf_tokenizer(directory: str):
  """The tokenizer of a model directory.

  In order: a jaxrl_post tokenizer saved under `directory/tokenizer/` (or
  in `directory` itself); an HF byte-level BPE `tokenizer.json` (+
  tokenizer_config.json; Llama-3, Qwen2, SmolLM2); a sentencepiece
  `tokenizer.model` (Llama-2 style, whose tokenizer.json is byte-fallback
  BPE rather than byte-level: used when tokenizer.json is absent or not
  byte-level).

  Raises:
    FileNotFoundError: none of these files. ValueError: an unsupported
      tokenizer.json with no tokenizer.model to fall back on (names what is
      unsupported), or a tokenizer.model whose bos/eos ids are not 1/2.
  """
  from jaxrl_post import tokenizers
  from jaxrl_post.tokenizers.bpe import BPETokenizer
  tok_dir = os.path.join(directory, "tokenizer")
  if os.path.exists(os.path.join(tok_dir, "tokenizer.json")):
    return tokenizers.load_tokenizer(tok_dir)
  path = os.path.join(directory, "tokenizer.json")
  spm_path = os.path.join(directory, "tokenizer.model")
  if os.path.exists(path):
    with open(path) as f:
      head = json.load(f)
    if "kind" in head:  # a jaxrl_post manifest in the model directory itself
      return tokenizers.load_tokenizer(directory)
    try:
      return BPETokenizer.from_tokenizer_json(path)
    except ValueError:
      if not os.path.exists(spm_path):
        raise
  if os.path.exists(spm_path):
    return _sentencepiece_tokenizer(spm_path)
  raise FileNotFoundError(f"{directory}: no tokenizer.json, tokenizer.model or jaxrl_post "
                          "tokenizer/")


def _sentencepiece_tokenizer(path: str):
  """A checkpoint's sentencepiece model as our SentencePieceTokenizer."""
  import sentencepiece as spm
  from jaxrl_post.tokenizers import SentencePieceTokenizer
  with open(path, "rb") as f:
    proto = f.read()
  try:
    sp = spm.SentencePieceProcessor(model_proto=proto)
  except Exception as e:  # noqa: BLE001 - sentencepiece raises RuntimeError
    raise ValueError(f"{path}: not a readable sentencepiece model ({e})") from e
  if (sp.bos_id(), sp.eos_id()) != (SentencePieceTokenizer.bos_id, SentencePieceTokenizer.eos_id):
    raise ValueError(f"{path}: bos/eos ids are ({sp.bos_id()}, {sp.eos_id()}); jaxrl_post's "
                     "SentencePieceTokenizer uses (1, 2)")
  return SentencePieceTokenizer(proto)


def chat_prompt(user: str, system: str | None = None, tokenizer=None) -> str:
  """The prompt of one user turn, ending where the assistant's reply starts.

  With a `tokenizer` that carries the model's chat template (an imported
  `BPETokenizer`), that template renders it, exactly as `transformers`'
  `apply_chat_template(..., add_generation_prompt=True)` (SmolLM2's adds its
  default system prompt when `system` is None). Otherwise ChatML (SmolLM2 /
  Qwen2 instruct): `<|im_start|>user\\n{user}<|im_end|>\\n<|im_start|>assistant\\n`,
  preceded by `<|im_start|>system\\n{system}<|im_end|>\\n` when `system` is given.
  """
  if getattr(tokenizer, "chat_template", None):
    messages = ([{"role": "system", "content": system}] if system is not None else [])
    return tokenizer.apply_chat_template(messages + [{"role": "user", "content": user}],
                                         add_generation_prompt=True)
  head = f"<|im_start|>system\n{system}<|im_end|>\n" if system is not None else ""
  return f"{head}<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"
