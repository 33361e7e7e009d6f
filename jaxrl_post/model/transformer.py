"""A Llama / Qwen2 decoder in Flax NNX with a pure, scanned forward pass.

The NNX module `Transformer` is the definition: it creates every parameter with
its logical axis names (`logical_axes` metadata, mapped to the mesh by
`jaxrl_post.sharding`). Everything downstream works on the pure parameter
pytree (`params`, a nested dict of arrays, see `PARAM_LAYOUT`) and calls
`forward(params, cfg, ...)`, a pure function: trainers, the rollout kernel,
checkpoints, conversion and the spectral analysis never touch module objects.

Layers are stored stacked (leading axis L) and run under `jax.lax.scan`, so
compile time does not grow with depth.

Parameter layout (shapes for L layers, D hidden, H heads, KV kv-heads, Dh head
dim, F intermediate, V vocab)::

  embed                 [V, D]          (vocab, embed)
  layers/attn_norm      [L, D]          (layers, norm)
  layers/q              [L, D, H, Dh]   (layers, embed, heads, head_dim)
  layers/k, layers/v    [L, D, KV, Dh]  (layers, embed, kv_heads, head_dim)
  layers/q_bias         [L, H, Dh]      (qkv_bias only)
  layers/k_bias/v_bias  [L, KV, Dh]     (qkv_bias only)
  layers/o              [L, H, Dh, D]   (layers, heads, head_dim, embed)
  layers/mlp_norm       [L, D]
  layers/gate, up       [L, D, F]       (layers, embed, mlp)
  layers/down           [L, F, D]       (layers, mlp, embed)
  final_norm            [D]
  lm_head               [D, V]          (untied only)
"""

from __future__ import annotations

import functools
import math
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
from flax import nnx

from jaxrl_post.model.config import ModelConfig

Params = dict[str, Any]

_INIT_STD = 0.02
_UNROLL_MAX_LAYERS = 8  # the training forward's layer scan is unrolled up to this depth


def _dtype(name: str) -> jnp.dtype:
  return jnp.dtype(name)


class Transformer(nnx.Module):
  """The module definition: parameters with their logical axis names."""

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    pd = _dtype(cfg.param_dtype)
    L, D, H, KV, Dh, F, V = (cfg.num_layers, cfg.hidden_size, cfg.num_heads,
                             cfg.num_kv_heads, cfg.head_dim,
                             cfg.intermediate_size, cfg.vocab_size)

    def normal(shape, axes, fan_in=None):
      del fan_in
      value = _INIT_STD * jax.random.normal(rngs.params(), shape, jnp.float32)
      return nnx.Param(value.astype(pd), logical_axes=axes)

    def const(shape, axes, fill):
      return nnx.Param(jnp.full(shape, fill, pd), logical_axes=axes)

    self.embed = normal((V, D), ("vocab", "embed"))
    layers = {
        "attn_norm": const((L, D), ("layers", "norm"), 1.0),
        "q": normal((L, D, H, Dh), ("layers", "embed", "heads", "head_dim")),
        "k": normal((L, D, KV, Dh), ("layers", "embed", "kv_heads", "head_dim")),
        "v": normal((L, D, KV, Dh), ("layers", "embed", "kv_heads", "head_dim")),
        "o": normal((L, H, Dh, D), ("layers", "heads", "head_dim", "embed")),
        "mlp_norm": const((L, D), ("layers", "norm"), 1.0),
        "gate": normal((L, D, F), ("layers", "embed", "mlp")),
        "up": normal((L, D, F), ("layers", "embed", "mlp")),
        "down": normal((L, F, D), ("layers", "mlp", "embed")),
    }
    if cfg.qkv_bias:
      layers["q_bias"] = const((L, H, Dh), ("layers", "heads", "head_dim"), 0.0)
      layers["k_bias"] = const((L, KV, Dh), ("layers", "kv_heads", "head_dim"), 0.0)
      layers["v_bias"] = const((L, KV, Dh), ("layers", "kv_heads", "head_dim"), 0.0)
    self.layers = nnx.Dict(layers)
    self.final_norm = const((D,), ("norm",), 1.0)
    if not cfg.tie_embeddings:
      self.lm_head = normal((D, V), ("embed", "vocab"))

  def __call__(self, tokens, positions, **kwargs):
    params = nnx.to_pure_dict(nnx.state(self, nnx.Param))
    return forward(params, self.cfg, tokens, positions, **kwargs)


def init_params(cfg: ModelConfig, key: jax.Array) -> Params:
  """Returns freshly initialised parameters as a pure pytree (nested dicts)."""
  model = Transformer(cfg, rngs=nnx.Rngs(params=key))
  return nnx.to_pure_dict(nnx.state(model, nnx.Param))


def param_logical_axes(cfg: ModelConfig) -> Params:
  """A pytree like `init_params(cfg)` whose leaves are logical-axis tuples."""
  abstract = nnx.eval_shape(lambda: Transformer(cfg, rngs=nnx.Rngs(0)))
  state = nnx.state(abstract, nnx.Param)
  axes = jax.tree.map(lambda v: v.get_metadata()["logical_axes"], state,
                      is_leaf=lambda x: isinstance(x, nnx.Variable))
  return nnx.to_pure_dict(axes)


def abstract_params(cfg: ModelConfig) -> Params:
  """`jax.ShapeDtypeStruct` leaves of the parameters (no allocation)."""
  return jax.eval_shape(functools.partial(init_params, cfg), jax.random.key(0))


# --------------------------------------------------------------------------
# Building blocks (pure functions).
# --------------------------------------------------------------------------


def rms_norm(x: jax.Array, scale: jax.Array, eps: float) -> jax.Array:
  """RMSNorm as Llama/Qwen2 compute it: float32 statistics, then cast, then scale.

  x: [..., D]; scale: [D].
  """
  x32 = x.astype(jnp.float32)
  normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)
  return scale.astype(x.dtype) * normed.astype(x.dtype)


def rope_inv_freq(cfg: ModelConfig) -> jax.Array:
  """Inverse RoPE frequencies float32[Dh/2], with optional Llama-3 scaling."""
  dh = cfg.head_dim
  inv = 1.0 / (cfg.rope_theta ** (jnp.arange(0, dh, 2, dtype=jnp.float32) / dh))
  s = cfg.rope_scaling
  if s is None:
    return inv
  low_wavelen = s.original_max_position_embeddings / s.low_freq_factor
  high_wavelen = s.original_max_position_embeddings / s.high_freq_factor
  wavelen = 2 * math.pi / inv
  smooth = (s.original_max_position_embeddings / wavelen - s.low_freq_factor) / (
      s.high_freq_factor - s.low_freq_factor)
  smoothed = (1 - smooth) * inv / s.factor + smooth * inv
  scaled = jnp.where(wavelen > low_wavelen, inv / s.factor, inv)
  is_medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
  return jnp.where(is_medium, smoothed, scaled)


def rope_tables(cfg: ModelConfig, positions: jax.Array,
                max_position: int | None = None) -> tuple[jax.Array, jax.Array]:
  """cos, sin float32[..., Dh] for integer positions int32[...] (HF layout).

  max_position: optional static bound, every position in [0, max_position).
  The angles are then computed once per position value, in a
  [max_position, Dh] table (`rope_table`), and gathered: XLA:CPU otherwise
  fuses the trigonometry into each consumer and evaluates it once per head,
  layer and pass (measured at the GRPO bench shape: 5% of the step). The
  same angles bitwise (the same float32 operations on the same values); a
  surrounding computation may fuse differently, so gradients can move by
  float rounding. A position outside the bound reads NaN, so a wrong bound
  fails loudly.
  """
  if max_position is not None:
    return rope_lookup(rope_table(cfg, max_position), positions)
  freqs = positions.astype(jnp.float32)[..., None] * rope_inv_freq(cfg)
  emb = jnp.concatenate([freqs, freqs], axis=-1)
  return jnp.cos(emb), jnp.sin(emb)


def rope_table(cfg: ModelConfig, size: int) -> tuple[jax.Array, jax.Array]:
  """cos, sin float32[size, Dh] of positions 0 .. size - 1 (see `rope_tables`)."""
  return rope_tables(cfg, jnp.arange(size, dtype=jnp.int32))


def rope_lookup(table: tuple[jax.Array, jax.Array],
                positions: jax.Array) -> tuple[jax.Array, jax.Array]:
  """cos, sin float32[..., Dh] of positions int32[...] from a `rope_table`.

  A position outside the table gives NaN (never a silently clamped angle).
  """
  size = table[0].shape[0]
  positions = jnp.where(positions < 0, size, positions)  # take() would wrap negatives
  return tuple(jnp.take(t, positions, axis=0, mode="fill", fill_value=jnp.nan)
               for t in table)


def apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
  """Rotary embedding, half-split ("rotate_half") convention. x: [B, T, N, Dh]."""
  half = x.shape[-1] // 2
  x32 = x.astype(jnp.float32)
  rotated = jnp.concatenate([-x32[..., half:], x32[..., :half]], axis=-1)
  out = x32 * cos[:, :, None, :] + rotated * sin[:, :, None, :]
  return out.astype(x.dtype)


# --------------------------------------------------------------------------
# KV cache.
# --------------------------------------------------------------------------


@flax.struct.dataclass
class KVCache:
  """A preallocated cache of S slots for every layer.

  k: [L, B, KV, Dh, S] and v: [L, B, KV, S, Dh]: each the right-hand
  operand of a decode step's product in plain [contract, out] order,
  q [G, Dh] x k [Dh, S] and probs [G, S] x v [S, Dh], which XLA:CPU's
  batched dot runs fastest, read in place with no transpose per step
  (profiled at `tiny`, batch 32, 64 slots, per layer and step: q.k 0.14 ms
  against 0.28 ms with k as [S, Dh], probs.v 0.12-0.14 ms against 0.22 ms
  with v as [Dh, S]); valid: bool[B, S] marks slots that hold
  a real (non-padding) token. Slot s of every row is written at the same
  decode step; each row's RoPE position is passed explicitly, so rows with
  different prompt lengths (left padding) share one cache.
  """

  k: jax.Array
  v: jax.Array
  valid: jax.Array

  # The slot (S) axis of k and of v, counted from the end: the same for the
  # stacked [L, ...] cache and for one layer's [B, ...] buffers.
  K_SLOT_AXIS = -1
  V_SLOT_AXIS = -2

  @property
  def size(self) -> int:
    return self.valid.shape[1]


def init_cache(cfg: ModelConfig, batch: int, size: int) -> KVCache:
  """An empty cache of `size` slots (zeros, nothing valid)."""
  dt = _dtype(cfg.dtype)
  shape_k = (cfg.num_layers, batch, cfg.num_kv_heads, cfg.head_dim, size)
  shape_v = (cfg.num_layers, batch, cfg.num_kv_heads, size, cfg.head_dim)
  return KVCache(k=jnp.zeros(shape_k, dt), v=jnp.zeros(shape_v, dt),
                 valid=jnp.zeros((batch, size), jnp.bool_))


# --------------------------------------------------------------------------
# Forward pass.
# --------------------------------------------------------------------------


def _dense(x: jax.Array, w: jax.Array, **kw) -> jax.Array:
  """x [..., K] @ w [K, ...] as ONE 2-D matmul: [prod(lead), K] x [K, prod(rest)].

  The same numbers as the einsum; written so because XLA:CPU runs the weight
  gradient of a 3-D einsum (contracting batch and time at once) several
  times slower than that of a 2-D matmul (measured: MLP forward+backward
  164 -> 108 ms at the bench's `tiny` shape).
  """
  k = x.shape[-1]
  out = jnp.dot(x.reshape(-1, k), w.reshape(k, -1).astype(x.dtype), **kw)
  return out.reshape(*x.shape[:-1], *w.shape[1:])


@jax.custom_vjp
def dense_given(x: jax.Array, w: jax.Array, y: jax.Array) -> jax.Array:
  """`_dense(x, w)` whose value is already known: returns y, differentiates x @ w.

  y must equal `_dense(x, w)` (up to float rounding), e.g. the same product
  computed by the rollout's decode step. The forward then costs nothing and
  the backward is exactly `_dense`'s: dx = dy w^T, dw = x^T dy (y itself is
  data and gets a zero cotangent). x [..., K]; w [K, ...]; y [..., *w.shape[1:]].
  """
  del x, w
  return y


def _dense_given_fwd(x, w, y):
  return y, (x, w)


def _dense_given_bwd(res, dy):
  x, w = res
  _, pullback = jax.vjp(_dense, x, w)  # the unused primal product is dead code
  dx, dw = pullback(dy)
  return dx, dw, jnp.zeros_like(dy)


dense_given.defvjp(_dense_given_fwd, _dense_given_bwd)


def _linear(x: jax.Array, w: jax.Array, name: str, given: dict | None,
            out: dict) -> jax.Array:
  """x @ w (`_dense`), or its known value given[name] (`dense_given`); the
  product is recorded as out[name] (the layer's activations, `LAYER_ACTS`)."""
  y = _dense(x, w) if given is None else dense_given(x, w, given[name])
  out[name] = y
  return y


def _scores(spec: str, q: jax.Array, k: jax.Array) -> jax.Array:
  """einsum(spec, q, k) accumulated and returned in float32 (attention scores).

  XLA:CPU (jax 0.10.2) runs some batched dots through a generic kernel that
  has no bfloat16 x bfloat16 -> float32 variant (UNIMPLEMENTED at run time),
  so on CPU bfloat16 operands are upcast first; accelerators keep them.
  """
  if q.dtype != jnp.float32 and jax.default_backend() == "cpu":
    q, k = q.astype(jnp.float32), k.astype(jnp.float32)
  return jnp.einsum(spec, q, k, preferred_element_type=jnp.float32)


def _project_qkv(p, h, cfg: ModelConfig, cos, sin, given=None, acts=None):
  """h: [B, T, D] -> q [B, T, H, Dh], k/v [B, T, KV, Dh] with RoPE on q, k.

  given/acts: see `_block` (the products before bias and RoPE).
  """
  acts = {} if acts is None else acts
  q = _linear(h, p["q"], "q", given, acts)
  k = _linear(h, p["k"], "k", given, acts)
  v = _linear(h, p["v"], "v", given, acts)
  if cfg.qkv_bias:
    q = q + p["q_bias"].astype(h.dtype)
    k = k + p["k_bias"].astype(h.dtype)
    v = v + p["v_bias"].astype(h.dtype)
  return apply_rope(q, cos, sin), apply_rope(k, cos, sin), v


def _attend(q, k, v, mask, cfg: ModelConfig):
  """Grouped-query attention.

  q: [B, T, H, Dh]; k: [B, KV, S, Dh]; v: [B, KV, Dh, S]; mask: bool[B, T, S].
  The decode cache stores the transposes (`KVCache`); here, in the
  teacher-forced forward and backward, neither transpose measured faster at
  the bench's GRPO update (v as [S, Dh] 1.00-1.04x, k as [Dh, S] 1.03-1.05x
  the time), so these paths keep their layouts.
  Returns [B, T, H, Dh]. Softmax in float32.
  """
  b, t, _, dh = q.shape
  qg = q.reshape(b, t, cfg.num_kv_heads, cfg.num_groups, dh)
  scores = _scores("btngk,bnsk->bngts", qg, k) / math.sqrt(dh)
  scores = jnp.where(mask[:, None, None, :, :], scores, -1e30)
  probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
  out = jnp.einsum("bngts,bnks->btngk", probs, v)
  return out.reshape(b, t, cfg.num_heads, dh)


# Query chunk of the causal self-attention below. Measured train steps: 64
# beats 128 (less work skipped) at mini 16 x 256 and small 32 x 128; 32 is
# within noise at 256 and slower at 128 (more, smaller ops).
_CAUSAL_CHUNK = 64


def _attend_causal(q, k, v, mask, cfg: ModelConfig, chunk: int = _CAUSAL_CHUNK):
  """`_attend` for causal self-attention, skipping the all-masked blocks.

  Query chunk i (rows [iC, (i+1)C)) can only see keys [0, (i+1)C), so it is
  scored against those alone: (n + 1) / 2n of the T x T work for n chunks
  (5/8 at T = 256, C = 64), in the forward and the backward. The same
  numbers as `_attend`: a masked score contributes exp(-1e30 - max) = 0.

  q: [B, T, H, Dh]; k: [B, KV, T, Dh]; v: [B, KV, Dh, T]; mask: bool[B, T, T]
  (causal, so mask[:, t, s] is False for s > t).
  """
  t = q.shape[1]
  if t <= chunk or t % chunk:
    return _attend(q, k, v, mask, cfg)
  outs = []
  for start in range(0, t, chunk):
    end = start + chunk
    outs.append(_attend(q[:, start:end], k[:, :, :end], v[..., :end],
                        mask[:, start:end, :end], cfg))
  return jnp.concatenate(outs, axis=1)


def _mlp(p, h, given=None, acts=None):
  """SwiGLU: down(silu(h gate) * (h up)); h [B, T, D] -> [B, T, D].

  given/acts: see `_block`.
  """
  acts = {} if acts is None else acts
  gate = _linear(h, p["gate"], "gate", given, acts)
  up = _linear(h, p["up"], "up", given, acts)
  return _linear(jax.nn.silu(gate) * up, p["down"], "down", given, acts)


# A layer's activations: the outputs of its seven weight products, for tokens
# [B, T] (bias and RoPE not applied): q [B, T, H, Dh]; k, v [B, T, KV, Dh];
# o [B, T, D]; gate, up [B, T, F]; down [B, T, D]. Everything else in a layer
# (norms, RoPE, attention, SiLU, residual sums) follows from these cheaply.
LAYER_ACTS = ("q", "k", "v", "o", "gate", "up", "down")


def layer_act_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
  """Per-token shape of each `LAYER_ACTS` product."""
  H, KV, Dh = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
  D, F = cfg.hidden_size, cfg.intermediate_size
  return {"q": (H, Dh), "k": (KV, Dh), "v": (KV, Dh), "o": (D,), "gate": (F,),
          "up": (F,), "down": (D,)}


def layer_act_width(cfg: ModelConfig) -> int:
  """A = values per token of one layer's packed products (`pack_layer_acts`)."""
  return sum(math.prod(s) for s in layer_act_shapes(cfg).values())


def pack_layer_acts(acts: dict, cfg: ModelConfig) -> jax.Array:
  """One layer's products (dict `LAYER_ACTS` -> [*lead, *shape]) -> [*lead, A].

  The values side by side in `LAYER_ACTS` order (q, k, v, o, gate, up, down):
  the layout the rollout records and the policy update reads
  (`unpack_layer_acts`), one buffer instead of seven.
  """
  shapes = layer_act_shapes(cfg)
  lead = acts["o"].shape[:-1]
  return jnp.concatenate([acts[n].reshape(lead + (math.prod(shapes[n]),))
                          for n in LAYER_ACTS], axis=-1)


def unpack_layer_acts(packed: jax.Array, cfg: ModelConfig) -> dict:
  """[*lead, A] (`pack_layer_acts`) -> dict `LAYER_ACTS` -> [*lead, *shape].

  Static slices of the last axis: inside a jitted forward XLA reads them in
  the ops that consume them (no copy of the buffer).
  """
  width = layer_act_width(cfg)
  if packed.shape[-1] != width:
    raise ValueError(f"packed activations have {packed.shape[-1]} values per token; this "
                     f"model's layer has {width} (`layer_act_width`)")
  lead = packed.shape[:-1]
  out, start = {}, 0
  for name, shape in layer_act_shapes(cfg).items():
    size = math.prod(shape)
    out[name] = packed[..., start:start + size].reshape(lead + shape)
    start += size
  return out


def _block(p, x, cfg: ModelConfig, cos, sin, kv_fn, causal: bool = False,
           given: dict | None = None):
  """One pre-norm decoder layer. kv_fn(k, v) -> (keys, values, mask, aux).

  causal: keys are the layer's own T tokens under a causal mask (no cache),
  so the all-masked blocks can be skipped (`_attend_causal`).
  given: optional dict of this layer's product outputs (`LAYER_ACTS`), known
  from an earlier pass with the same weights on the same tokens (the
  rollout): the products are then not recomputed (`dense_given`), only
  differentiated. Returns (x, aux, acts) with acts this layer's products.
  """
  acts = {}
  h = rms_norm(x, p["attn_norm"], cfg.rms_norm_eps)
  q, k, v = _project_qkv(p, h, cfg, cos, sin, given, acts)
  keys, values, mask, aux = kv_fn(k, v)
  attn = (_attend_causal if causal else _attend)(q, keys, values, mask, cfg)
  b, t = attn.shape[:2]
  x = x + _linear(attn.reshape(b, t, -1), p["o"].reshape(-1, p["o"].shape[-1]), "o",
                  given, acts)
  h = rms_norm(x, p["mlp_norm"], cfg.rms_norm_eps)
  return x + _mlp(p, h, given, acts), aux, acts


def _self_mask(segment_ids: jax.Array) -> jax.Array:
  """Causal, same-segment, non-padding mask bool[B, T, T] (segment 0 = pad)."""
  t = segment_ids.shape[1]
  causal = jnp.arange(t)[:, None] >= jnp.arange(t)[None, :]
  same = segment_ids[:, :, None] == segment_ids[:, None, :]
  return causal[None] & same & (segment_ids[:, None, :] != 0)


def _unroll(cfg: ModelConfig) -> int:
  """Layer-scan unroll of the training forward: shallow models are unrolled,
  since XLA:CPU otherwise zero-fills and dynamic-slices stacked per-layer
  residual buffers for the backward (measured, mini preset train step: -7% at
  16 x 256, -15% at 64 x 64)."""
  return cfg.num_layers if cfg.num_layers <= _UNROLL_MAX_LAYERS else 1


def unembed(params: Params, cfg: ModelConfig, x: jax.Array) -> jax.Array:
  """Final norm and output head: x [B, T, D] -> float32 logits [B, T, V]."""
  x = rms_norm(x, params["final_norm"], cfg.rms_norm_eps)
  head = params["embed"].T if cfg.tie_embeddings else params["lm_head"]
  return _dense(x, head, preferred_element_type=jnp.float32)


def forward(params: Params, cfg: ModelConfig, tokens: jax.Array,
            positions: jax.Array, *, segment_ids: jax.Array | None = None,
            cache: KVCache | None = None, cache_index: jax.Array | int = 0,
            return_hidden: bool = False, compute_logits: bool = True,
            max_position: int | None = None, return_acts: bool = False):
  """Runs the decoder over `tokens`.

  Args:
    params: the parameter pytree (see module docstring).
    cfg: the model config.
    tokens: int32[B, T].
    positions: int32[B, T] RoPE positions (explicit, so that rows of different
      prompt lengths share a batch).
    segment_ids: int32[B, T]; 0 marks padding. Without a cache, attention is
      causal within equal segment ids (example packing). With a cache only
      `segment_ids != 0` matters (which slots become valid). Default: all 1.
    cache: optional KV cache; the T new tokens are written to slots
      [cache_index, cache_index + T) and attend to every valid slot at or
      before their own.
    cache_index: int32 scalar slot of tokens[:, 0] in the cache.
    return_hidden: also return the final hidden states [B, T, D] (pre-norm).
    compute_logits: False skips the output head (logits None), for callers
      that unembed only some positions.
    max_position: optional static bound on `positions` (all in [0,
      max_position)); RoPE then reads one table (`rope_tables`).
    return_acts: also return every layer's product outputs, packed
      float[L, B, T, A] (`pack_layer_acts`; what `forward_shared_prefix` can
      take as `given`); with a cache only (the rollout's prefill).

  Returns:
    (logits float32[B, T, V], cache), then hidden if return_hidden, then
    acts if return_acts.
  """
  dt = _dtype(cfg.dtype)
  b, t = tokens.shape
  if segment_ids is None:
    segment_ids = jnp.ones((b, t), jnp.int32)
  x = params["embed"].astype(dt)[tokens]
  cos, sin = rope_tables(cfg, positions, max_position)
  layers = params["layers"]

  if cache is None:
    mask = _self_mask(segment_ids)

    def self_kv(k, v):
      return k.transpose(0, 2, 1, 3), v.transpose(0, 2, 3, 1), mask, None

    if return_acts:
      raise ValueError("forward: return_acts needs a cache (it records a prefill)")

    def body(x, p):
      x, _, _ = _block(p, x, cfg, cos, sin, self_kv, causal=True)
      return x, None

    x, _ = jax.lax.scan(body, x, layers, unroll=_unroll(cfg))
    new_cache = None
  else:
    idx = jnp.asarray(cache_index, jnp.int32)
    valid = jax.lax.dynamic_update_slice(cache.valid, segment_ids != 0, (0, idx))
    slots = jnp.arange(cache.size)
    q_slots = idx + jnp.arange(t)
    mask = valid[:, None, :] & (slots[None, None, :] <= q_slots[None, :, None])

    def body(carry, p):
      x, ck, cv, layer = carry

      def cached_kv(k, v):
        # Write the new keys/values for this layer, then read the whole layer.
        k_new = k.transpose(0, 2, 3, 1).astype(ck.dtype)[None]  # [1,B,KV,Dh,T]
        v_new = v.transpose(0, 2, 1, 3).astype(cv.dtype)[None]  # [1,B,KV,T,Dh]
        ck2 = jax.lax.dynamic_update_slice(ck, k_new, (layer, 0, 0, 0, idx))
        cv2 = jax.lax.dynamic_update_slice(cv, v_new, (layer, 0, 0, idx, 0))
        # `_attend` takes k [B, KV, S, Dh] and v [B, KV, Dh, S], the cache's
        # transposes: one copy of the layer per call (a prefill, not a step).
        keys, values = ck2[layer].swapaxes(-1, -2), cv2[layer].swapaxes(-1, -2)
        return keys, values, mask, (ck2, cv2)

      x, (ck, cv), acts = _block(p, x, cfg, cos, sin, cached_kv)
      return (x, ck, cv, layer + 1), (acts if return_acts else None)

    (x, ck, cv, _), stacked_acts = jax.lax.scan(
        body, (x, cache.k, cache.v, jnp.int32(0)), layers)
    new_cache = KVCache(k=ck, v=cv, valid=valid)

  logits = unembed(params, cfg, x) if compute_logits else None
  out = (logits, new_cache)
  if return_hidden:
    out += (x,)
  if return_acts:
    out += (pack_layer_acts(stacked_acts, cfg),)
  return out


def forward_shared_prefix(params: Params, cfg: ModelConfig, prefix: jax.Array,
                          prefix_positions: jax.Array, prefix_segments: jax.Array,
                          suffix: jax.Array, suffix_positions: jax.Array,
                          suffix_segments: jax.Array,
                          max_position: int | None = None,
                          given: tuple[dict, dict] | None = None) -> tuple[jax.Array, jax.Array]:
  """Teacher-forced decoder over G suffixes per prefix, each prefix run once.

  The same numbers (values and gradients) as `forward` without a cache on the
  rows [prefix_i ; suffix_r] for r = i*G .. i*G + G - 1, at G times less
  prefix work: a GRPO group shares its prompt. Suffix queries attend to the
  prefix keys (no causal constraint across the boundary, same-segment and
  non-padding as in `_self_mask`) and causally to their own.

  prefix, prefix_positions, prefix_segments: int32[Pb, P] (0 = padding).
  suffix, suffix_positions, suffix_segments: int32[Pb*G, N]; row r continues
    prefix r // G.
  max_position: optional static bound on every position (`rope_tables`).
  given: optional (prefix acts float[L, Pb, P, A], suffix acts
    float[L, Pb*G, N, A]), every layer's product outputs on these tokens
    with these parameters, packed (`pack_layer_acts`) and already computed
    (by the rollout's prefill and decode, `sampling.RolloutActivations`).
    The forward then recomputes only
    norms, RoPE, attention and SiLU from them, and the backward is unchanged
    (`dense_given`): the same values and gradients up to float rounding, at
    about a third less matmul work for a forward + backward.
  Returns the final hidden states (pre-norm; `unembed` gives logits):
    (prefix float[Pb, P, D], suffix float[Pb*G, N, D]).
  """
  dt = _dtype(cfg.dtype)
  pb, n_pre = prefix.shape
  g = suffix.shape[0] // pb
  if suffix.shape[0] != pb * g:
    raise ValueError(f"suffix rows {suffix.shape[0]} are not a multiple of prefix rows {pb}")
  embed = params["embed"].astype(dt)
  xp, xs = embed[prefix], embed[suffix]
  cos_p, sin_p = rope_tables(cfg, prefix_positions, max_position)
  cos_s, sin_s = rope_tables(cfg, suffix_positions, max_position)  # XLA shares the table
  pre_mask = _self_mask(prefix_segments)
  seg_rep = jnp.repeat(prefix_segments, g, axis=0)  # [Pb*G, P]
  cross = ((suffix_segments[:, :, None] == seg_rep[:, None, :]) &
           (seg_rep[:, None, :] != 0))  # [Pb*G, N, P]
  suf_mask = jnp.concatenate([cross, _self_mask(suffix_segments)], axis=2)  # [., N, P+N]
  def prefix_kv(k, v):  # the prefix layer's keys/values come out as aux
    k, v = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 3, 1)
    return k, v, pre_mask, (k, v)

  def body(carry, layer):
    xp, xs = carry
    p, given_p, given_s = layer
    if given_p is not None:
      given_p, given_s = unpack_layer_acts(given_p, cfg), unpack_layer_acts(given_s, cfg)
    xp, (kp, vp), _ = _block(p, xp, cfg, cos_p, sin_p, prefix_kv, causal=True,
                             given=given_p)

    def suffix_kv(k, v):  # each suffix row sees its prefix's keys, then its own
      keys = jnp.concatenate([jnp.repeat(kp, g, axis=0), k.transpose(0, 2, 1, 3)], axis=2)
      vals = jnp.concatenate([jnp.repeat(vp, g, axis=0), v.transpose(0, 2, 3, 1)], axis=3)
      return keys, vals, suf_mask, None

    xs, _, _ = _block(p, xs, cfg, cos_s, sin_s, suffix_kv, given=given_s)
    return (xp, xs), None

  given_p, given_s = (None, None) if given is None else given
  if given is not None:
    want = {"prefix": (cfg.num_layers, pb, n_pre), "suffix": (cfg.num_layers,) + suffix.shape}
    for part, a in (("prefix", given_p), ("suffix", given_s)):
      if a.shape[:-1] != want[part]:
        raise ValueError(f"forward_shared_prefix: {part} activations {a.shape}, expected "
                         f"{want[part]} + (A,) ([L, rows, tokens, A])")
  (xp, xs), _ = jax.lax.scan(body, (xp, xs), (params["layers"], given_p, given_s),
                             unroll=_unroll(cfg))
  return xp, xs


# --------------------------------------------------------------------------
# One-token decode step (the rollout kernel's inner loop).
# --------------------------------------------------------------------------
#
# `forward` with a cache is general (any T, stacked cache, layers under a
# scan). Inside a decode loop XLA:CPU pays for that generality every step:
# the scan materialises each layer's `dynamic_slice` of the stacked weights
# and of the stacked cache, and q/k/v and gate/up are separate small matmuls.
# The functions below are the same math specialised to one new token per row:
# weights are fused and cast once per rollout (`step_weights`, outside the
# loop, so they are loop invariants), layers are unrolled (static Python
# loop, every layer's weights and cache are separate buffers), and each
# layer's cache is updated in place.


@flax.struct.dataclass
class StepWeights:
  """Decode-step weights, fused and split per layer (tuples of L arrays).

  qkv: [D, (H + 2 KV) Dh] = [q | k | v] of one layer; qkv_bias: [(H + 2 KV) Dh]
  (zeros without qkv_bias); o: [H Dh, D]; gate_up: [D, 2F] = [gate | up];
  down: [F, D]; attn_norm, mlp_norm: [D]; final_norm: [D]; head: [D, V];
  embed: [V, D]; rope: optional (cos, sin) [S, Dh] table of positions
  0 .. S - 1 (`rope_table`), read by every step instead of recomputing the
  angles (None: computed per step).
  """

  attn_norm: tuple
  qkv: tuple
  qkv_bias: tuple
  o: tuple
  mlp_norm: tuple
  gate_up: tuple
  down: tuple
  final_norm: jax.Array
  head: jax.Array
  embed: jax.Array
  rope: tuple | None = None


def step_weights(params: Params, cfg: ModelConfig,
                 max_position: int | None = None) -> StepWeights:
  """Fuses and casts the parameters for `step_forward` (call once per rollout).

  Pure relayout of `params` (the stored layout is unchanged): for layer l,
  qkv[l] = concat(q[l].reshape(D, H Dh), k[l].reshape(D, KV Dh),
  v[l].reshape(D, KV Dh)) and gate_up[l] = concat(gate[l], up[l]).
  max_position: static bound on the decode's positions; the RoPE table of
  positions 0 .. max_position - 1 is then computed here, once per rollout.
  """
  dt = _dtype(cfg.dtype)
  lp = params["layers"]
  L, D = cfg.num_layers, cfg.hidden_size
  H, KV, Dh = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
  qkv = jnp.concatenate([lp["q"].reshape(L, D, H * Dh), lp["k"].reshape(L, D, KV * Dh),
                         lp["v"].reshape(L, D, KV * Dh)], axis=-1).astype(dt)
  if cfg.qkv_bias:
    bias = jnp.concatenate([lp["q_bias"].reshape(L, H * Dh),
                            lp["k_bias"].reshape(L, KV * Dh),
                            lp["v_bias"].reshape(L, KV * Dh)], axis=-1).astype(dt)
  else:
    bias = jnp.zeros((L, (H + 2 * KV) * Dh), dt)
  gate_up = jnp.concatenate([lp["gate"], lp["up"]], axis=-1).astype(dt)
  o = lp["o"].reshape(L, H * Dh, D).astype(dt)
  down = lp["down"].astype(dt)
  if cfg.tie_embeddings:
    head = params["embed"].T.astype(dt)
  else:
    head = params["lm_head"].astype(dt)
  split = lambda a: tuple(a[l] for l in range(L))
  return StepWeights(
      attn_norm=split(lp["attn_norm"]), qkv=split(qkv), qkv_bias=split(bias),
      o=split(o), mlp_norm=split(lp["mlp_norm"]), gate_up=split(gate_up),
      down=split(down), final_norm=params["final_norm"], head=head,
      embed=params["embed"].astype(dt),
      rope=None if max_position is None else rope_table(cfg, max_position))


def step_forward(w: StepWeights, cfg: ModelConfig, tokens: jax.Array,
                 positions: jax.Array, live: jax.Array, ks: tuple, vs: tuple,
                 valid: jax.Array, slot: jax.Array):
  """`forward` for one new token per row over per-layer caches.

  Args:
    w: from `step_weights`.
    tokens: int32[B] the new tokens; positions: int32[B] their RoPE positions.
    live: bool[B] rows whose token is real (its slot becomes valid).
    ks: L arrays [B, KV, Dh, S]; vs: L arrays [B, KV, S, Dh] (updated in place).
    valid: bool[B, S] slots holding real tokens.
    slot: int32 scalar, the cache slot of the new token.

  Returns:
    (logits float32[B, V], ks, vs, valid, acts) — the same numbers as
    `forward(params, cfg, tokens[:, None], positions[:, None], cache=...)`;
    acts: this token's product outputs, float[L, B, A] (each layer's
    `LAYER_ACTS` packed as `pack_layer_acts` does; unused, they cost
    nothing: XLA drops them).
  """
  dt = _dtype(cfg.dtype)
  b = tokens.shape[0]
  H, KV, G, Dh, F = (cfg.num_heads, cfg.num_kv_heads, cfg.num_groups,
                     cfg.head_dim, cfg.intermediate_size)
  valid = jax.lax.dynamic_update_slice(valid, live[:, None], (0, slot))
  mask = valid & (jnp.arange(valid.shape[1])[None, :] <= slot)  # [B, S]
  pos = positions[:, None]
  cos, sin = rope_tables(cfg, pos) if w.rope is None else rope_lookup(w.rope, pos)  # [B, 1, Dh]
  x = w.embed[tokens][:, None, :]  # [B, 1, D]
  scale = math.sqrt(Dh)
  new_ks, new_vs, all_acts = [], [], []
  for l in range(cfg.num_layers):
    h = rms_norm(x, w.attn_norm[l], cfg.rms_norm_eps)[:, 0]  # [B, D]
    qkv_raw = jnp.dot(h, w.qkv[l])  # [B, (H + 2KV) Dh]
    qkv = qkv_raw + w.qkv_bias[l]
    q = qkv[:, :H * Dh].reshape(b, 1, H, Dh)
    k = qkv[:, H * Dh:(H + KV) * Dh].reshape(b, 1, KV, Dh)  # [.., Dh] for RoPE
    v = qkv[:, (H + KV) * Dh:].reshape(b, KV, 1, Dh)
    q = apply_rope(q, cos, sin)
    k = apply_rope(k, cos, sin)
    ck = jax.lax.dynamic_update_slice(
        ks[l], k.reshape(b, KV, Dh, 1).astype(ks[l].dtype), (0, 0, 0, slot))
    cv = jax.lax.dynamic_update_slice(vs[l], v.astype(vs[l].dtype), (0, 0, slot, 0))
    new_ks.append(ck)
    new_vs.append(cv)
    qg = q.reshape(b, KV, G, Dh)
    scores = _scores("bngk,bnks->bngs", qg, ck) / scale
    scores = jnp.where(mask[:, None, None, :], scores, -1e30)
    probs = jax.nn.softmax(scores, axis=-1).astype(cv.dtype)
    attn = jnp.einsum("bngs,bnsk->bngk", probs, cv).reshape(b, H * Dh)
    o = jnp.dot(attn, w.o[l])
    x = x + o[:, None, :]
    h = rms_norm(x, w.mlp_norm[l], cfg.rms_norm_eps)[:, 0]
    gu = jnp.dot(h, w.gate_up[l])  # [B, 2F]
    act = jax.nn.silu(gu[:, :F]) * gu[:, F:]
    down = jnp.dot(act, w.down[l])
    x = x + down[:, None, :]
    # q, k, v | o | gate, up | down: `pack_layer_acts`'s order, whose fused
    # products are already side by side.
    all_acts.append(jnp.concatenate([qkv_raw, o, gu, down], axis=-1))
  x = rms_norm(x, w.final_norm, cfg.rms_norm_eps)[:, 0]
  logits = jnp.dot(x, w.head, preferred_element_type=jnp.float32)
  return logits, tuple(new_ks), tuple(new_vs), valid, jnp.stack(all_acts)
