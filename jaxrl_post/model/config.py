"""Model configuration: one frozen dataclass and the named size presets.

A `ModelConfig` fully determines the parameter shapes of the decoder
(Llama / Qwen2 family). It is hashable so that it can be a static argument of
jitted functions, and it is built once, outside jit.
"""

from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass(frozen=True)
class RopeScaling:
  """Llama-3 style RoPE frequency scaling (HF `rope_type="llama3"`)."""

  factor: float = 32.0
  low_freq_factor: float = 1.0
  high_freq_factor: float = 4.0
  original_max_position_embeddings: int = 8192


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Shapes and numerics of a decoder-only transformer.

  Attributes:
    vocab_size: V, rows of the embedding table.
    hidden_size: D, the residual width.
    intermediate_size: F, the SwiGLU width.
    num_layers: L, stacked and run under a scan.
    num_heads: H query heads.
    num_kv_heads: KV heads (grouped-query attention; H % KV == 0).
    head_dim: Dh per head (not necessarily D / H).
    rope_theta: RoPE base.
    rope_scaling: optional Llama-3 frequency scaling.
    rms_norm_eps: epsilon of RMSNorm.
    qkv_bias: q/k/v projections carry a bias (Qwen2).
    tie_embeddings: the output head is the transposed embedding table.
    max_seq_len: longest sequence the model is meant for (bounds caches).
    param_dtype: dtype the parameters are stored in ("float32"/"bfloat16").
    dtype: dtype of activations and matmul inputs; softmax, norms and logits
      are always float32.
  """

  vocab_size: int
  hidden_size: int
  intermediate_size: int
  num_layers: int
  num_heads: int
  num_kv_heads: int
  head_dim: int
  rope_theta: float = 10_000.0
  rope_scaling: RopeScaling | None = None
  rms_norm_eps: float = 1e-6
  qkv_bias: bool = False
  tie_embeddings: bool = True
  max_seq_len: int = 2048
  param_dtype: str = "float32"
  dtype: str = "float32"

  def __post_init__(self):
    for name in ("vocab_size", "hidden_size", "intermediate_size", "num_layers",
                 "num_heads", "num_kv_heads", "head_dim", "max_seq_len"):
      value = getattr(self, name)
      if not isinstance(value, int) or value <= 0:
        raise ValueError(f"ModelConfig.{name} must be a positive int, got {value!r}")
    if self.num_heads % self.num_kv_heads:
      raise ValueError(
          f"ModelConfig.num_heads={self.num_heads} is not a multiple of "
          f"num_kv_heads={self.num_kv_heads} (grouped-query attention needs it)")
    for name in ("param_dtype", "dtype"):
      if getattr(self, name) not in ("float32", "bfloat16", "float16"):
        raise ValueError(
            f"ModelConfig.{name}={getattr(self, name)!r}: expected float32, "
            "bfloat16 or float16")

  @property
  def num_groups(self) -> int:
    """Query heads per KV head."""
    return self.num_heads // self.num_kv_heads

  def replace(self, **changes: Any) -> "ModelConfig":
    return dataclasses.replace(self, **changes)

  def num_params(self) -> int:
    """Exact parameter count of this configuration."""
    d, f, h, kv, dh = (self.hidden_size, self.intermediate_size, self.num_heads,
                       self.num_kv_heads, self.head_dim)
    per_layer = (d * h * dh + 2 * d * kv * dh + h * dh * d  # q, k, v, o
                 + 3 * d * f + 2 * d)  # gate, up, down, two norms
    if self.qkv_bias:
      per_layer += (h + 2 * kv) * dh
    total = self.num_layers * per_layer + self.vocab_size * d + d
    if not self.tie_embeddings:
      total += d * self.vocab_size
    return total

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
    d = dict(d)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(d) - known
    if unknown:
      raise ValueError(f"unknown ModelConfig fields: {sorted(unknown)}")
    if d.get("rope_scaling") is not None and not isinstance(d["rope_scaling"], RopeScaling):
      d["rope_scaling"] = RopeScaling(**d["rope_scaling"])
    return cls(**d)


_LLAMA3_SCALING = RopeScaling()

PRESETS: dict[str, ModelConfig] = {
    # Tests: a few thousand parameters, compiles in seconds.
    "nano": ModelConfig(vocab_size=64, hidden_size=32, intermediate_size=64,
                        num_layers=2, num_heads=4, num_kv_heads=2, head_dim=8,
                        qkv_bias=True, max_seq_len=128),
    # CPU studies in minutes: about 0.8M parameters at vocab 128.
    "mini": ModelConfig(vocab_size=128, hidden_size=128, intermediate_size=384,
                        num_layers=4, num_heads=4, num_kv_heads=2, head_dim=32,
                        qkv_bias=True, max_seq_len=256),
    # The bench's fixed shape (DESIGN.md section 3): 3,035,392 parameters.
    "tiny": ModelConfig(vocab_size=512, hidden_size=256, intermediate_size=688,
                        num_layers=4, num_heads=4, num_kv_heads=2, head_dim=64,
                        qkv_bias=True, max_seq_len=512),
    # CPU studies, about 10M parameters at vocab 512.
    "small": ModelConfig(vocab_size=512, hidden_size=384, intermediate_size=1024,
                         num_layers=6, num_heads=6, num_kv_heads=2, head_dim=64,
                         qkv_bias=True, max_seq_len=512),
    "qwen2.5-0.5b": ModelConfig(vocab_size=151936, hidden_size=896,
                                intermediate_size=4864, num_layers=24,
                                num_heads=14, num_kv_heads=2, head_dim=64,
                                rope_theta=1_000_000.0, qkv_bias=True,
                                tie_embeddings=True, max_seq_len=32768),
    "qwen2.5-1.5b": ModelConfig(vocab_size=151936, hidden_size=1536,
                                intermediate_size=8960, num_layers=28,
                                num_heads=12, num_kv_heads=2, head_dim=128,
                                rope_theta=1_000_000.0, qkv_bias=True,
                                tie_embeddings=True, max_seq_len=32768),
    "qwen2.5-7b": ModelConfig(vocab_size=152064, hidden_size=3584,
                              intermediate_size=18944, num_layers=28,
                              num_heads=28, num_kv_heads=4, head_dim=128,
                              rope_theta=1_000_000.0, qkv_bias=True,
                              tie_embeddings=False, max_seq_len=32768),
    "llama-3.2-1b": ModelConfig(vocab_size=128256, hidden_size=2048,
                                intermediate_size=8192, num_layers=16,
                                num_heads=32, num_kv_heads=8, head_dim=64,
                                rope_theta=500_000.0, rope_scaling=_LLAMA3_SCALING,
                                rms_norm_eps=1e-5, tie_embeddings=True,
                                max_seq_len=131072),
    "llama-3.2-3b": ModelConfig(vocab_size=128256, hidden_size=3072,
                                intermediate_size=8192, num_layers=28,
                                num_heads=24, num_kv_heads=8, head_dim=128,
                                rope_theta=500_000.0, rope_scaling=_LLAMA3_SCALING,
                                rms_norm_eps=1e-5, tie_embeddings=True,
                                max_seq_len=131072),
    "smollm2-135m": ModelConfig(vocab_size=49152, hidden_size=576,
                                intermediate_size=1536, num_layers=30,
                                num_heads=9, num_kv_heads=3, head_dim=64,
                                rope_theta=100_000.0, rms_norm_eps=1e-5,
                                tie_embeddings=True, max_seq_len=8192),
}


def get_preset(name: str, **overrides: Any) -> ModelConfig:
  """Returns the named preset, with optional field overrides (e.g. vocab)."""
  if name not in PRESETS:
    raise ValueError(f"unknown model preset {name!r}; known: {sorted(PRESETS)}")
  return PRESETS[name].replace(**overrides) if overrides else PRESETS[name]
