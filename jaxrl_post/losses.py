"""Token losses: cross-entropy, the GRPO-family policy loss, the k3 KL.

Policy loss (research/papers.md 0.2-0.4, 6): with ratio r = exp(logp - old),

  l_{i,t} = min(r A_i, clip(r, 1 - eps_low, 1 + eps_high) A_i)
  loss    = -agg(l) + beta * agg(KL_k3),  KL_k3 = exp(ref - logp) - (ref - logp) - 1

Aggregations: `seq_mean_token_mean` (GRPO: mean over sequences of the token
mean), `token_mean` (DAPO: sum over all tokens / number of tokens),
`constant_norm` (Dr. GRPO: sum / (G * max_len)). Ratio levels: `token`,
`sequence` (GSPO: s_i = exp(mean_t (logp - old)), one ratio per sequence),
`sequence_token` (GSPO-token: value of s_i, gradient of each token's logp).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

AGGREGATIONS = ("seq_mean_token_mean", "token_mean", "constant_norm")
RATIO_LEVELS = ("token", "sequence", "sequence_token")


def token_log_probs(logits: jax.Array, targets: jax.Array) -> jax.Array:
  """log p(target) f32[B, T] from logits f32[B, T, V] and targets int32[B, T]."""
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  return jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]


def token_entropy(logits: jax.Array) -> jax.Array:
  """Entropy of each next-token distribution, f32[B, T]."""
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  return -jnp.sum(jnp.exp(logp) * logp, axis=-1)


def cross_entropy_loss(logits, targets, weights):
  """Token-mean NLL over weighted targets. Returns (loss, {"tokens": count})."""
  nll = -token_log_probs(logits, targets)
  count = jnp.sum(weights)
  return jnp.sum(nll * weights) / jnp.maximum(count, 1.0), {"tokens": count}


@dataclasses.dataclass(frozen=True)
class PolicyLossConfig:
  epsilon_low: float = 0.2
  epsilon_high: float = 0.2
  beta: float = 0.0
  aggregation: str = "seq_mean_token_mean"
  ratio_level: str = "token"
  max_len: int = 1  # L_const of constant_norm

  def __post_init__(self):
    if self.aggregation not in AGGREGATIONS:
      raise ValueError(f"aggregation {self.aggregation!r} not in {AGGREGATIONS}")
    if self.ratio_level not in RATIO_LEVELS:
      raise ValueError(f"ratio_level {self.ratio_level!r} not in {RATIO_LEVELS}")
    if self.epsilon_low < 0 or self.epsilon_high < 0 or self.beta < 0:
      raise ValueError("epsilon_low, epsilon_high and beta must be >= 0")
    if self.max_len < 1:
      raise ValueError("max_len must be >= 1")


def aggregate(x: jax.Array, mask: jax.Array, mode: str, max_len: int,
              normaliser: jax.Array | None = None) -> jax.Array:
  """Reduces per-token values x f32[B, T] under mask f32[B, T] to a scalar.

  normaliser: for token_mean, an explicit global token count (e.g. of the
  whole optimizer step under gradient accumulation) instead of mask.sum().
  """
  if mode == "seq_mean_token_mean":
    per_seq = jnp.sum(x * mask, axis=1) / jnp.maximum(jnp.sum(mask, axis=1), 1.0)
    return jnp.mean(per_seq)
  if mode == "token_mean":
    denom = jnp.sum(mask) if normaliser is None else normaliser
    return jnp.sum(x * mask) / jnp.maximum(denom, 1.0)
  if mode == "constant_norm":
    return jnp.sum(x * mask) / (x.shape[0] * max_len)
  raise ValueError(f"aggregation {mode!r} not in {AGGREGATIONS}")


def k3_kl(logp: jax.Array, ref_logp: jax.Array) -> jax.Array:
  """Schulman's k3 estimator of KL(pi || ref) per token: exp(d) - d - 1, d = ref - logp."""
  d = ref_logp - logp
  return jnp.exp(d) - d - 1.0


def policy_loss(logp, old_logp, advantages, mask, *, ref_logp=None,
                hp: PolicyLossConfig, normaliser=None):
  """The clipped surrogate loss. Returns (loss scalar, aux dict of scalars).

  logp, old_logp, mask: f32[B, T]; advantages f32[B] (per sequence) or
  f32[B, T] (per token); ref_logp: optional f32[B, T] for the KL term.
  """
  mask = mask.astype(jnp.float32)
  adv = advantages[:, None] if advantages.ndim == 1 else advantages
  log_ratio = logp - old_logp
  if hp.ratio_level == "token":
    ratio = jnp.exp(log_ratio)
  else:
    seq_log = jnp.sum(log_ratio * mask, axis=1) / jnp.maximum(jnp.sum(mask, axis=1), 1.0)
    if hp.ratio_level == "sequence":
      ratio = jnp.broadcast_to(jnp.exp(seq_log)[:, None], logp.shape)
    else:  # sequence_token: value s_i, gradient through each token's logp
      ratio = jnp.exp(jax.lax.stop_gradient(seq_log)[:, None] + logp - jax.lax.stop_gradient(logp))
  lo, hi = 1.0 - hp.epsilon_low, 1.0 + hp.epsilon_high
  unclipped = ratio * adv
  clipped = jnp.clip(ratio, lo, hi) * adv
  per_token = jnp.minimum(unclipped, clipped)
  if hp.ratio_level == "sequence":
    # GSPO: one term per sequence, (1/G) sum_i min(s_i A_i, clip(s_i) A_i).
    seq_mask = (jnp.sum(mask, axis=1) > 0).astype(jnp.float32)
    objective = jnp.sum(per_token[:, 0] * seq_mask) / jnp.maximum(jnp.sum(seq_mask), 1.0)
  else:
    objective = aggregate(per_token, mask, hp.aggregation, hp.max_len, normaliser)
  loss = -objective
  n = jnp.maximum(jnp.sum(mask), 1.0)
  is_low = (ratio < lo) & (adv < 0)
  is_high = (ratio > hi) & (adv > 0)
  aux = {
      "clip_frac": jnp.sum((is_low | is_high) * mask) / n,
      "clip_frac_low": jnp.sum(is_low * mask) / n,
      "clip_frac_high": jnp.sum(is_high * mask) / n,
      "ratio_mean": jnp.sum(ratio * mask) / n,
      "kl": jnp.zeros(()),
  }
  if ref_logp is not None:
    kl = k3_kl(logp, ref_logp)
    aux["kl"] = jnp.sum(kl * mask) / n
    if hp.beta > 0:
      loss = loss + hp.beta * aggregate(kl, mask, hp.aggregation, hp.max_len, normaliser)
  return loss, aux
