"""THE rollout kernel: one jitted prefill + `lax.while_loop` decode over a KV cache.

Every trainer and every evaluation samples through `Sampler.generate`; nothing
else in jaxrl_post decodes. Design (gemma's sampler loop, made pure):

* Static: model config, batch, prompt bucket P, completion buffer N, top-k,
  stop ids. Dynamic (traced, changing them never recompiles): temperature,
  top-p, the rng, the parameters.
* Prompts are left-padded to a bucket length (`pad_prompts`), so a training
  loop compiles once per bucket. Each row carries explicit RoPE positions,
  so rows of different prompt lengths share one cache.
* The loop runs on device with no per-token host transfer; it exits early
  once every row has emitted a stop token.
* `prefill` and `decode` are separate pure functions over a `DecodeState`
  (a pytree), so a multi-turn caller can append tokens and continue decoding
  from the same cache.

Log-probs and entropies are those of the distribution actually sampled from
(temperature-scaled, top-k/top-p filtered). With temperature 0 (greedy) they
are those of the temperature-1 distribution.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Sequence

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from jaxrl_post import sharding as shd
from jaxrl_post.model import KVCache, ModelConfig, forward, init_cache
from jaxrl_post.model.transformer import (StepWeights, layer_act_width,
                                           step_forward, step_weights)

_NEG_INF = -1e30

# Automatic decode phases (SamplingConfig.decode_phases = 0): one per this
# many new tokens, at most _MAX_AUTO_PHASES (see `phase_sizes`).
_AUTO_PHASE_TOKENS = 32
_MAX_AUTO_PHASES = 4

DEFAULT_BUCKETS = (16, 32, 48, 64, 96, 128, 160, 192, 256, 320, 384, 512, 768, 1024,
                   1536, 2048, 3072, 4096, 8192)


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
  """Static sampling settings (part of the compiled shape).

  Attributes:
    max_new_tokens: N, the completion buffer length.
    top_k: keep the k most likely tokens (0 = off). Static: it sizes a top_k.
    stop_ids: token ids that end a row (e.g. EOS); empty = run to N.
    pad_id: written after a row has stopped.
    block_ids: token ids that are never sampled (e.g. to force full-length
      rows in benchmarks).
    decode_phases: the decode runs as this many loops over caches of growing
      static size (`phase_sizes`); 0 = one phase per 32 new tokens, at most 4.
  """

  max_new_tokens: int
  top_k: int = 0
  stop_ids: tuple[int, ...] = ()
  pad_id: int = 0
  block_ids: tuple[int, ...] = ()
  decode_phases: int = 0

  def __post_init__(self):
    if self.max_new_tokens <= 0:
      raise ValueError(f"SamplingConfig.max_new_tokens={self.max_new_tokens} must be > 0")
    if self.top_k < 0:
      raise ValueError(f"SamplingConfig.top_k={self.top_k} must be >= 0")
    if self.decode_phases < 0:
      raise ValueError(f"SamplingConfig.decode_phases={self.decode_phases} must be >= 0")

  @property
  def num_phases(self) -> int:
    """Phases of the decode loop (`decode_phases`, or its automatic value)."""
    if self.decode_phases:
      return min(self.decode_phases, self.max_new_tokens)
    return max(1, min(_MAX_AUTO_PHASES, self.max_new_tokens // _AUTO_PHASE_TOKENS))


@flax.struct.dataclass
class SamplingParams:
  """Dynamic sampling settings: traced, so changing them does not recompile.

  temperature: float32 scalar, 0 means greedy. top_p: float32 scalar in (0, 1].
  """

  temperature: jax.Array
  top_p: jax.Array

  @classmethod
  def make(cls, temperature: float = 1.0, top_p: float = 1.0) -> "SamplingParams":
    if temperature < 0:
      raise ValueError(f"temperature={temperature} must be >= 0")
    if not 0.0 < top_p <= 1.0:
      raise ValueError(f"top_p={top_p} must be in (0, 1]")
    return cls(temperature=jnp.float32(temperature), top_p=jnp.float32(top_p))


@flax.struct.dataclass
class DecodeState:
  """Loop state of the decode kernel.

  step: int32 scalar, index of the next completion token.
  tokens, logprobs, entropy: [B, N] completion buffers.
  done: bool[B], the row has emitted a stop token.
  logits: float32[B, V], next-token logits (from the last fed token).
  positions: int32[B], RoPE position of the next completion token.
  prompt_slots: int32 scalar P, the cache slot of completion token 0.
  cache: the KV cache (P + N slots).
  rng: the sampling key.
  acts: None, or (decoding with capture) float[L, B, N, A], column t each
    layer's product outputs on completion token t, packed
    (`transformer.pack_layer_acts`).
  """

  step: jax.Array
  tokens: jax.Array
  logprobs: jax.Array
  entropy: jax.Array
  done: jax.Array
  logits: jax.Array
  positions: jax.Array
  prompt_slots: jax.Array
  cache: KVCache
  rng: jax.Array
  acts: jax.Array | dict | None = None


@flax.struct.dataclass
class RolloutActivations:
  """The model's product outputs on a rollout's tokens (`generate(capture=True)`).

  Each is float[L, rows, length, A]: per layer and token the outputs of the
  seven weight products (`transformer.LAYER_ACTS`: q, k, v, o, gate, up,
  down) side by side, A = `transformer.layer_act_width(cfg)` values
  (`transformer.unpack_layer_acts` gives them by name), computed by the
  rollout with the parameters it sampled from: what a teacher-forced pass
  with those parameters would compute, so the policy update's forward can
  take them instead (`forward_shared_prefix(given=...)`). Packed, so that
  the decode writes one buffer per step and the update reads it in place.

  prompt: [L, Bp, P, A] over the distinct prompts passed to `generate`.
  completion: [L, B, N, A]; column t holds completion token t's. Columns
    after a row's stop token hold the pad token's; columns never decoded
    (every row had stopped) and the last column (token N - 1 is sampled but
    not fed, `decode(feed_last=False)`) hold zeros. None reaches a loss
    term: nothing valid attends to them, and token N - 1's outputs would
    only predict a token N + 1.
  """

  prompt: jax.Array
  completion: jax.Array


@flax.struct.dataclass
class Rollout:
  """What the kernel returns.

  prompt_tokens: int32[B, P] left-padded prompts; prompt_mask: bool[B, P].
  tokens: int32[B, N] completions (pad after a stop).
  mask: bool[B, N] generated tokens, the stop token included.
  logprobs, entropy: float32[B, N] under the sampling distribution (0 where
    ~mask).
  lengths: int32[B] = mask.sum(-1).
  finished: bool[B] the row emitted a stop token (else it was truncated).
  activations: RolloutActivations with `generate(capture=True)`, else None.
  """

  prompt_tokens: jax.Array
  prompt_mask: jax.Array
  tokens: jax.Array
  mask: jax.Array
  logprobs: jax.Array
  entropy: jax.Array
  lengths: jax.Array
  finished: jax.Array
  activations: RolloutActivations | None = None


# --------------------------------------------------------------------------
# Host-side prompt preparation.
# --------------------------------------------------------------------------


def bucket_length(n: int, buckets: Sequence[int] = DEFAULT_BUCKETS) -> int:
  """The smallest bucket >= n."""
  for b in sorted(buckets):
    if b >= n:
      return b
  raise ValueError(f"prompt of {n} tokens is longer than the largest bucket {max(buckets)}")


def pad_prompts(prompts: Sequence[Sequence[int]], pad_id: int,
                buckets: Sequence[int] = DEFAULT_BUCKETS,
                length: int | None = None) -> tuple[np.ndarray, np.ndarray]:
  """Left-pads token lists to a bucket length.

  Returns (tokens int32[B, P], mask bool[B, P]). Empty prompts are rejected:
  a row needs at least one token (e.g. BOS) to condition on.
  """
  if not prompts:
    raise ValueError("pad_prompts: no prompts")
  longest = max(len(p) for p in prompts)
  if min(len(p) for p in prompts) == 0:
    raise ValueError("pad_prompts: a prompt is empty (prepend BOS)")
  p_len = length if length is not None else bucket_length(longest, buckets)
  if longest > p_len:
    raise ValueError(f"prompt of {longest} tokens exceeds prompt length {p_len}")
  tokens = np.full((len(prompts), p_len), pad_id, np.int32)
  mask = np.zeros((len(prompts), p_len), bool)
  for i, p in enumerate(prompts):
    tokens[i, p_len - len(p):] = p
    mask[i, p_len - len(p):] = True
  return tokens, mask


def repeat_prompts(tokens: np.ndarray, mask: np.ndarray, n: int):
  """n samples per prompt: row i*n + j is sample j of prompt i."""
  return np.repeat(tokens, n, axis=0), np.repeat(mask, n, axis=0)


# --------------------------------------------------------------------------
# Token selection (pure).
# --------------------------------------------------------------------------


def _first_argmax(x: jax.Array) -> jax.Array:
  """argmax over the last axis (first index of the max). XLA:CPU compiles
  `jnp.argmax` to a slow scalar loop; max + index-of-first-max vectorises."""
  iota = jax.lax.broadcasted_iota(jnp.int32, x.shape, x.ndim - 1)
  hit = x == jnp.max(x, axis=-1, keepdims=True)
  return jnp.min(jnp.where(hit, iota, x.shape[-1]), axis=-1)


def _top_p_filter(logits: jax.Array, top_p: jax.Array) -> jax.Array:
  """Nucleus filter: keep the smallest set of top tokens with mass >= top_p."""
  probs = jax.nn.softmax(logits, axis=-1)
  sorted_p = -jnp.sort(-probs, axis=-1)
  before = jnp.cumsum(sorted_p, axis=-1) - sorted_p  # mass strictly above
  keep_sorted = before < top_p
  threshold = jnp.min(jnp.where(keep_sorted, sorted_p, 2.0), axis=-1, keepdims=True)
  return jnp.where(probs >= threshold, logits, _NEG_INF)


def sampling_logits(logits: jax.Array, sp: SamplingParams,
                    sc: SamplingConfig) -> jax.Array:
  """The logits of the distribution actually sampled from. logits: f32[B, V]."""
  logits = logits.astype(jnp.float32)
  if sc.block_ids:
    logits = logits.at[:, jnp.asarray(sc.block_ids)].set(_NEG_INF)
  temp = jnp.where(sp.temperature > 0, sp.temperature, 1.0)
  scaled = logits / temp
  if sc.top_k:
    kth = jax.lax.top_k(scaled, sc.top_k)[0][:, -1:]
    scaled = jnp.where(scaled >= kth, scaled, _NEG_INF)
  return jax.lax.cond(sp.top_p < 1.0, _top_p_filter, lambda x, _: x, scaled,
                      sp.top_p)


def select_tokens(logits: jax.Array, rng: jax.Array, sp: SamplingParams,
                  sc: SamplingConfig):
  """Samples one token per row (Gumbel-max), or argmax when temperature == 0.

  Returns (token int32[B], logprob f32[B], entropy f32[B]).
  """
  filtered = sampling_logits(logits, sp, sc)
  logp = jax.nn.log_softmax(filtered, axis=-1)
  gumbel = jax.random.gumbel(rng, filtered.shape, jnp.float32)
  noise = jnp.where(sp.temperature > 0, gumbel, 0.0)
  token = _first_argmax(filtered + noise)
  token_logp = jnp.take_along_axis(logp, token[:, None], axis=-1)[:, 0]
  probs = jnp.exp(logp)
  entropy = -jnp.sum(jnp.where(probs > 0, probs * logp, 0.0), axis=-1)
  return token, token_logp, entropy


# --------------------------------------------------------------------------
# Prefill and decode (pure).
# --------------------------------------------------------------------------


def prefill(params, cfg: ModelConfig, sc: SamplingConfig, prompt_tokens: jax.Array,
            prompt_mask: jax.Array, rng: jax.Array,
            cache_sharding=None, return_acts: bool = False):
  """Runs the prompt through the model and returns the initial DecodeState.

  prompt_tokens: int32[B, P] left-padded; prompt_mask: bool[B, P].
  return_acts: return (state, acts), acts the prompt's product outputs
  float[L, B, P, A] (`transformer.pack_layer_acts`).
  """
  b, p = prompt_tokens.shape
  n = sc.max_new_tokens
  cache = init_cache(cfg, b, p + n)
  if cache_sharding is not None:
    cache = jax.lax.with_sharding_constraint(cache, cache_sharding)
  mask_i = prompt_mask.astype(jnp.int32)
  positions = jnp.maximum(jnp.cumsum(mask_i, axis=1) - 1, 0)
  logits, cache, *acts = forward(params, cfg, prompt_tokens, positions,
                                 segment_ids=mask_i, cache=cache, cache_index=0,
                                 max_position=p, return_acts=return_acts)
  state = DecodeState(
      step=jnp.int32(0),
      tokens=jnp.full((b, n), sc.pad_id, jnp.int32),
      logprobs=jnp.zeros((b, n), jnp.float32),
      entropy=jnp.zeros((b, n), jnp.float32),
      done=jnp.zeros((b,), jnp.bool_),
      logits=logits[:, -1].astype(jnp.float32),
      positions=mask_i.sum(axis=1),
      prompt_slots=jnp.int32(p),
      cache=cache,
      rng=rng)
  return (state, acts[0]) if return_acts else state


# Sampling noise for all N steps is drawn before the loop (one RNG call
# instead of one per step) when it takes at most this many float32 values;
# larger vocabularies draw per step from fold_in(rng, step).
_MAX_PRESAMPLED_NOISE = 1 << 24


def _select_with_noise(logits: jax.Array, noise: jax.Array, sp: SamplingParams,
                       sc: SamplingConfig):
  """`select_tokens` with the Gumbel noise f32[B, V] given."""
  filtered = sampling_logits(logits, sp, sc)
  logp = jax.nn.log_softmax(filtered, axis=-1)
  token = _first_argmax(jnp.where(sp.temperature > 0, filtered + noise, filtered))
  token_logp = jnp.take_along_axis(logp, token[:, None], axis=-1)[:, 0]
  probs = jnp.exp(logp)
  entropy = -jnp.sum(jnp.where(probs > 0, probs * logp, 0.0), axis=-1)
  return token, token_logp, entropy


def _sample_step(sc: SamplingConfig, sp: SamplingParams, noise_fn,
                 s: DecodeState) -> tuple[jax.Array, DecodeState]:
  """Samples completion token `s.step` from `s.logits` into the buffers.

  Returns (token int32[B] (the pad id on rows already done), the state with
  column `s.step` written, `done` updated and `step` + 1); the cache, logits
  and positions are left for the feed.
  """
  token, logp, ent = _select_with_noise(s.logits, noise_fn(s), sp, sc)
  live = ~s.done
  token = jnp.where(live, token, sc.pad_id)
  col = s.step
  tokens = s.tokens.at[:, col].set(token)
  logprobs = s.logprobs.at[:, col].set(jnp.where(live, logp, 0.0))
  entropy = s.entropy.at[:, col].set(jnp.where(live, ent, 0.0))
  stopped = jnp.isin(token, jnp.asarray(sc.stop_ids, jnp.int32)) if sc.stop_ids else (
      jnp.zeros_like(live))
  done = s.done | (live & stopped)
  return token, s.replace(step=s.step + 1, tokens=tokens, logprobs=logprobs,
                          entropy=entropy, done=done)


def _decode_step(w: StepWeights, cfg: ModelConfig, sc: SamplingConfig,
                 sp: SamplingParams, noise_fn, s: DecodeState) -> DecodeState:
  """Samples completion token `s.step` and feeds it to the model.

  The cache of `s` holds per-layer tuples (see `decode`).
  """
  live = ~s.done
  col = s.step
  token, s = _sample_step(sc, sp, noise_fn, s)
  c = s.cache
  logits, ks, vs, valid, acts = step_forward(w, cfg, token, s.positions, live, c.k, c.v,
                                             c.valid, s.prompt_slots + col)
  if s.acts is not None:  # capture: this token's products into column `col`
    row = acts.astype(s.acts.dtype)[:, :, None, :]  # [L, B, 1, A]
    acts = jax.lax.dynamic_update_slice(s.acts, row, (0, 0, col, 0))
  else:
    acts = None
  return s.replace(logits=logits, positions=s.positions + 1,
                   cache=KVCache(k=ks, v=vs, valid=valid), acts=acts)


def _activation_buffer(cfg: ModelConfig, batch: int, n: int) -> jax.Array:
  """Zeros float[L, B, N, A] for the decode's packed product rows."""
  return jnp.zeros((cfg.num_layers, batch, n, layer_act_width(cfg)), jnp.dtype(cfg.dtype))


def phase_sizes(cache_size: int, new_tokens: int, phases: int) -> tuple[int, ...]:
  """Static cache sizes S_1 < ... < S_K = cache_size of the K decode phases.

  The last `new_tokens` slots (the completion's) are split into K equal
  parts; phase k decodes while the slot being written is < S_k, over the
  cache's first S_k slots only. A decode step reads its whole (static-shape)
  cache, and at long lengths that read is a large share of a step (the KV
  reads are memory-bound), so a phased decode reads
  N * P + N^2 (K + 1) / 2K slots instead of N * (P + N), for K - 1 growing
  copies of the cache.
  """
  base = cache_size - new_tokens
  sizes = [max(1, base + -(-new_tokens * k // phases)) for k in range(1, phases + 1)]
  return tuple(sorted(set(sizes)))


def _slots(x: jax.Array, lo: int, hi: int, axis: int) -> jax.Array:
  """Slots lo .. hi - 1 of a cache buffer along its slot axis."""
  return jax.lax.slice_in_dim(x, lo, hi, axis=axis % x.ndim)


def _slice_cache(c: KVCache, size: int) -> KVCache:
  """The first `size` slots of a per-layer (tuple) cache."""
  return KVCache(k=tuple(_slots(k, 0, size, KVCache.K_SLOT_AXIS) for k in c.k),
                 v=tuple(_slots(v, 0, size, KVCache.V_SLOT_AXIS) for v in c.v),
                 valid=c.valid[:, :size])


def _grow_cache(small: KVCache, full: KVCache, hi: int) -> KVCache:
  """`small` (the first S_k slots) followed by `full`'s slots S_k .. hi."""
  lo = small.size

  def grow(parts, whole, axis):
    return tuple(jnp.concatenate([a, _slots(b, lo, hi, axis)], axis=axis % a.ndim)
                 for a, b in zip(parts, whole))

  return KVCache(k=grow(small.k, full.k, KVCache.K_SLOT_AXIS),
                 v=grow(small.v, full.v, KVCache.V_SLOT_AXIS),
                 valid=jnp.concatenate([small.valid, full.valid[:, lo:hi]], axis=1))


def decode(params, cfg: ModelConfig, sc: SamplingConfig, sp: SamplingParams,
           state: DecodeState, capture: bool = False,
           feed_last: bool = True) -> DecodeState:
  """Decodes until every row stopped or the buffer of N tokens is full.

  capture: also record every completion token's product outputs into
  `state.acts` (see `DecodeState`, `RolloutActivations`).
  feed_last: also feed the N-th token to the model, so the final state's
  cache holds all N tokens and its logits predict token N + 1 (a decode
  that continues from it needs both). False: the N-th token is only
  sampled, one model step fewer (1/N of the decode); the final cache then
  lacks that token, its logits are the N-th token's distribution, and with
  `capture` its activation column stays zero. `generate` passes False: a
  Rollout keeps neither the cache nor the logits, and the policy update
  never needs the last token's activations (it predicts nothing).

  Inside the loop the cache is split into per-layer buffers and the weights
  are fused once (`step_weights`), so each step runs `step_forward` with no
  per-layer slicing copies; the stacked cache is rebuilt at the end.

  The loop runs in `sc.num_phases` phases over caches of growing static size
  (`phase_sizes`): each is a `while_loop` over only the slots written so far
  plus the phase's own, so early steps do not read the empty end of the
  cache. The same tokens and, up to float rounding (1e-6), the same
  log-probs as one loop over the full cache: a slot beyond the one being
  written is masked and adds exp(-1e30 - max) = 0 to the softmax. Measured
  (rollout alone, every row 128 new tokens): `tiny` 8 x 4 1.79 -> 1.54 s,
  `small` 8 x 8 8.9 -> 7.0 s with 4 phases (after the cache's layout change
  made attention cheaper: `tiny` 8 x 4 -5 to -10%); at 32 new tokens phases
  do not pay (hence one per 32 tokens), and each phase compiles its own
  loop body.
  """
  n = sc.max_new_tokens
  b, v_size = state.logits.shape
  # A row's position never exceeds its cache slot, so the cache size bounds
  # every position: the RoPE table is computed once, outside the loop.
  w = step_weights(params, cfg, max_position=state.cache.size)
  if n * b * v_size <= _MAX_PRESAMPLED_NOISE:
    all_noise = jax.random.gumbel(state.rng, (n, b, v_size), jnp.float32)
    noise_fn = lambda s: jax.lax.dynamic_index_in_dim(all_noise, s.step, 0, False)
  else:
    noise_fn = lambda s: jax.random.gumbel(jax.random.fold_in(s.rng, s.step),
                                           (b, v_size), jnp.float32)

  c = state.cache
  layers = range(cfg.num_layers)
  full = KVCache(k=tuple(c.k[l] for l in layers), v=tuple(c.v[l] for l in layers),
                 valid=c.valid)
  body = functools.partial(_decode_step, w, cfg, sc, sp, noise_fn)
  sizes = phase_sizes(c.size, n, sc.num_phases)
  acts = _activation_buffer(cfg, b, n) if capture else None
  out = state.replace(cache=_slice_cache(full, sizes[0]), acts=acts)
  fed = n if feed_last else n - 1  # tokens sampled and fed inside the loops
  for i, size in enumerate(sizes):
    if i:
      out = out.replace(cache=_grow_cache(out.cache, full, size))

    def cond(s, size=size):
      return (s.step < fed) & ~jnp.all(s.done) & (s.prompt_slots + s.step < size)

    out = jax.lax.while_loop(cond, body, out)
  if not feed_last:  # token N - 1: sampled, not fed (unless every row stopped)
    sampled = _sample_step(sc, sp, noise_fn, out)[1]
    go = (out.step == n - 1) & ~jnp.all(out.done)
    pick = lambda name: jnp.where(go, getattr(sampled, name), getattr(out, name))
    out = out.replace(**{name: pick(name) for name in
                         ("step", "tokens", "logprobs", "entropy", "done")})
  c = out.cache
  return out.replace(cache=KVCache(k=jnp.stack(c.k), v=jnp.stack(c.v), valid=c.valid))


def finish(state: DecodeState, prompt_tokens, prompt_mask,
           sc: SamplingConfig, prompt_acts: jax.Array | None = None) -> Rollout:
  """Turns a final DecodeState into a Rollout (mask after the stop token).

  prompt_acts: the prefill's product outputs; with `state.acts` (a capturing
  `decode`) they become `Rollout.activations`.
  """
  n = sc.max_new_tokens
  cols = jnp.arange(n)[None, :]
  if sc.stop_ids:
    is_stop = jnp.isin(state.tokens, jnp.asarray(sc.stop_ids, jnp.int32))
    # Index of the first stop token per row (n if none).
    first = jnp.min(jnp.where(is_stop & (cols < state.step), cols, n), axis=1)
  else:
    first = jnp.full((state.tokens.shape[0],), n, jnp.int32)
  finished = first < n
  length = jnp.where(finished, first + 1, jnp.minimum(state.step, n))
  mask = cols < length[:, None]
  return Rollout(
      prompt_tokens=prompt_tokens, prompt_mask=prompt_mask,
      tokens=jnp.where(mask, state.tokens, sc.pad_id), mask=mask,
      logprobs=jnp.where(mask, state.logprobs, 0.0),
      entropy=jnp.where(mask, state.entropy, 0.0),
      lengths=length.astype(jnp.int32), finished=finished,
      activations=None if state.acts is None else RolloutActivations(
          prompt=prompt_acts, completion=state.acts))


def repeat_rows(state: DecodeState, n: int, cache_sharding=None) -> DecodeState:
  """Each row of a DecodeState n times (rows i*n .. i*n + n - 1 copy row i).

  After `prefill` on distinct prompts this is the prefill of every prompt
  repeated n times (the same cache and logits), at 1/n of the work.
  """
  rep = lambda x: jnp.repeat(x, n, axis=0)
  c = state.cache
  cache = KVCache(k=jnp.repeat(c.k, n, axis=1), v=jnp.repeat(c.v, n, axis=1),
                  valid=rep(c.valid))
  if cache_sharding is not None:
    cache = jax.lax.with_sharding_constraint(cache, cache_sharding)
  return state.replace(tokens=rep(state.tokens), logprobs=rep(state.logprobs),
                       entropy=rep(state.entropy), done=rep(state.done),
                       logits=rep(state.logits), positions=rep(state.positions), cache=cache)


def generate(params, cfg: ModelConfig, sc: SamplingConfig,
             prompt_tokens: jax.Array, prompt_mask: jax.Array, rng: jax.Array,
             sp: SamplingParams, cache_sharding=None, samples_per_prompt: int = 1,
             capture: bool = False) -> Rollout:
  """prefill + decode + finish, a pure function (jit it with statics bound).

  samples_per_prompt n > 1: prompt_tokens/prompt_mask hold distinct prompts
  [B, P]; each is prefilled once and decoded n times, and the Rollout has
  B * n rows (row i*n + j: sample j of prompt i), as if the prompts had been
  repeated before the call.
  capture: the Rollout also carries the model's product outputs on its
  tokens (`RolloutActivations`: prompt [L, B, P, A], completion
  [L, B * n, N, A]), for a policy update that need not recompute them.
  """
  state = prefill(params, cfg, sc, prompt_tokens, prompt_mask, rng,
                  cache_sharding=cache_sharding, return_acts=capture)
  prompt_acts = None
  if capture:
    state, prompt_acts = state
  if samples_per_prompt > 1:
    state = repeat_rows(state, samples_per_prompt, cache_sharding)
    prompt_tokens = jnp.repeat(prompt_tokens, samples_per_prompt, axis=0)
    prompt_mask = jnp.repeat(prompt_mask, samples_per_prompt, axis=0)
  state = decode(params, cfg, sc, sp, state, capture=capture, feed_last=False)
  return finish(state, prompt_tokens, prompt_mask, sc, prompt_acts)


# --------------------------------------------------------------------------
# The jitted entry point.
# --------------------------------------------------------------------------


class Sampler:
  """Holds the jitted kernel for one (model config, sampling config, mesh).

  `generate(params, prompt_tokens, prompt_mask, rng, temperature, top_p)`
  compiles once per (batch, prompt bucket) and never for new temperatures or
  top-p values. `num_traces` counts how many times the kernel was traced.
  """

  def __init__(self, cfg: ModelConfig, sc: SamplingConfig, mesh=None,
               param_shardings=None):
    self.cfg = cfg
    self.sc = sc
    self.mesh = mesh
    self.param_shardings = param_shardings if mesh is not None else None
    self.num_traces = 0
    if mesh is not None:
      batch2 = shd.batch_sharding(mesh, 2)
      cache_sharding = KVCache(
          k=jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(
              None, shd.BATCH_AXES)),
          v=jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(
              None, shd.BATCH_AXES)),
          valid=batch2)
    else:
      cache_sharding = None

    def kernel(params, prompt_tokens, prompt_mask, rng, sp):
      self.num_traces += 1  # Python side effect: runs once per trace.
      return generate(params, cfg, sc, prompt_tokens, prompt_mask, rng, sp,
                      cache_sharding=cache_sharding)

    if mesh is not None:
      batch1 = shd.batch_sharding(mesh, 1)
      repl = shd.replicated(mesh)
      out = Rollout(prompt_tokens=batch2, prompt_mask=batch2, tokens=batch2,
                    mask=batch2, logprobs=batch2, entropy=batch2,
                    lengths=batch1, finished=batch1)
      self._jitted = jax.jit(
          kernel, in_shardings=(param_shardings, batch2, batch2, repl, repl),
          out_shardings=out)
    else:
      self._jitted = jax.jit(kernel)

  def generate(self, params, prompt_tokens, prompt_mask, rng,
               temperature: float | jax.Array = 1.0,
               top_p: float | jax.Array = 1.0) -> Rollout:
    """Samples completions. prompt_tokens/mask: [B, P] (see `pad_prompts`)."""
    if self.mesh is not None:
      shd.check_batch_divisible(prompt_tokens.shape[0], self.mesh, "rollout batch")
    if prompt_tokens.shape[1] + self.sc.max_new_tokens > self.cfg.max_seq_len:
      raise ValueError(
          f"prompt length {prompt_tokens.shape[1]} + max_new_tokens "
          f"{self.sc.max_new_tokens} exceeds the model's max_seq_len "
          f"{self.cfg.max_seq_len}")
    sp = SamplingParams(temperature=jnp.float32(temperature),
                        top_p=jnp.float32(top_p))
    if self.param_shardings is not None:
      # Parameters laid out for training (sharded over fsdp) are gathered to
      # the kernel's layout here: jit reshards a mismatched argument only when
      # one process holds all of it, and raises across processes.
      params = jax.device_put(params, self.param_shardings)
    if self.mesh is not None and not isinstance(prompt_tokens, jax.Array):
      # Host prompts: every process passes the same global batch (as jit
      # would place them on one process; across processes it cannot).
      prompt_tokens, prompt_mask = shd.shard_batch((prompt_tokens, prompt_mask), self.mesh)
    return self._jitted(params, prompt_tokens, prompt_mask, rng, sp)


def sequences(rollout: Rollout):
  """Prompt + completion as one teacher-forcing batch for the policy loss.

  Returns (tokens int32[B, P+N], positions int32[B, P+N], segment_ids
  int32[B, P+N] (0 = padding), completion_mask bool[B, P+N]) where
  completion_mask marks the completion tokens (the loss targets; the logits
  that predict token t sit at index t - 1).
  """
  tokens = jnp.concatenate([rollout.prompt_tokens, rollout.tokens], axis=1)
  valid = jnp.concatenate([rollout.prompt_mask, rollout.mask], axis=1)
  positions = jnp.maximum(jnp.cumsum(valid.astype(jnp.int32), axis=1) - 1, 0)
  p = rollout.prompt_tokens.shape[1]
  completion = jnp.zeros_like(valid).at[:, p:].set(rollout.mask)
  return tokens, positions, valid.astype(jnp.int32), completion
