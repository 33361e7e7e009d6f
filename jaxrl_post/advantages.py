"""Group advantages for GRPO-family training (research/papers.md 0.1, 0.5)."""

from __future__ import annotations

import jax.numpy as jnp

MODES = ("group_std", "mean_only", "batch_std")


def _groups(rewards, group_size: int):
  r = jnp.asarray(rewards, jnp.float32)
  if r.ndim == 1:
    if r.shape[0] % group_size:
      raise ValueError(f"{r.shape[0]} rewards do not split into groups of {group_size}")
    r = r.reshape(-1, group_size)
  return r


def group_advantages(rewards, group_size: int, mode: str = "group_std",
                     eps: float = 1e-4, ddof: int = 1):
  """A_i for rewards f32[B*G] (rows i*G..i*G+G-1 are one prompt's group).

  group_std (GRPO): (r - mean_g) / (std_g + eps) with the sample std (ddof=1,
  as TRL and the RLCR code); mean_only (Dr. GRPO): r - mean_g; batch_std:
  (r - mean_g) / (std over the whole batch + eps). Returns f32[B*G].
  """
  if mode not in MODES:
    raise ValueError(f"advantage mode {mode!r} not in {MODES}")
  r = _groups(rewards, group_size)
  centred = r - r.mean(axis=1, keepdims=True)
  if mode == "mean_only":
    return centred.reshape(-1)
  if mode == "group_std":
    std = jnp.std(r, axis=1, keepdims=True, ddof=ddof)
  else:
    std = jnp.std(r, ddof=ddof)
  return (centred / (std + eps)).reshape(-1)


def group_reward_std(rewards, group_size: int, ddof: int = 0):
  """Per-group std f32[B] (population std by default, SRL's filter)."""
  return jnp.std(_groups(rewards, group_size), axis=1, ddof=ddof)


def zero_std_groups(rewards, group_size: int, eps: float = 0.0):
  """bool[B]: groups whose population std <= eps (dropped by dynamic sampling)."""
  return group_reward_std(rewards, group_size) <= eps
