"""The reward contract, combinators, and the host escape hatch.

A reward is a `flax.struct` dataclass: per-example data are leaves with a
leading batch axis [B, ...]; settings are static (`pytree_node=False`).
`reward(tokens int32[B, T], mask bool[B, T]) -> (float32[B], aux)` where aux
maps term names to float32[B]. Rewards are passed into the jitted step as
part of the batch, so they compile with it; the trainer repeats their leaves
G times for the samples of a group and slices them by round.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from jaxrl_post import sharding as shd


@flax.struct.dataclass
class WeightedSum:
  """sum_i w_i * term_i; aux holds every term as `reward/<name>`."""

  terms: tuple
  weights: tuple = flax.struct.field(pytree_node=False)
  names: tuple = flax.struct.field(pytree_node=False)

  def __call__(self, tokens, mask):
    total = jnp.zeros((tokens.shape[0],), jnp.float32)
    aux = {}
    for term, w, name in zip(self.terms, self.weights, self.names):
      r, sub = term(tokens, mask)
      total = total + w * r
      aux[f"reward/{name}"] = r
      aux.update({k if k.startswith("reward/") else f"reward/{name}/{k}": v for k, v in sub.items()})
    return total, aux


def weighted_sum(**terms_and_weights) -> WeightedSum:
  """weighted_sum(correct=(reward, 1.0), format=(fmt, 0.5))."""
  names = tuple(terms_and_weights)
  return WeightedSum(terms=tuple(terms_and_weights[n][0] for n in names),
                     weights=tuple(float(terms_and_weights[n][1]) for n in names), names=names)


class HostReward:
  """HOST ESCAPE HATCH: arbitrary Python scoring on decoded strings.

  Runs outside jit (in the trainer loop, after the rollout), under the same
  [B] contract: `fn(texts: list[str], examples: list) -> list[float]`. Use it
  only for rewards nobody can express in JAX: it costs a device->host copy
  of the completions and a host round trip per step.
  """

  def __init__(self, fn: Callable[[Sequence[str], Sequence[Any]], Sequence[float]], tokenizer):
    self.fn = fn
    self.tokenizer = tokenizer

  def __call__(self, tokens, mask, examples) -> np.ndarray:
    tokens, mask = shd.to_host((tokens, mask))
    texts = [self.tokenizer.decode([int(t) for t, m in zip(row, mrow) if m])
             for row, mrow in zip(tokens, mask)]
    out = np.asarray(self.fn(texts, examples), np.float32)
    if out.shape != (len(texts),):
      raise ValueError(f"HostReward returned shape {out.shape}, expected ({len(texts)},)")
    return np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)
