"""Supervised fine-tuning: token cross-entropy on completion tokens.

`make_train_step(cfg, optimizer, grad_accum)` returns the pure
`train_step(state, batch) -> (state, metrics)`; `run(hp, workdir)` builds the
mesh, data, checkpoints and metrics around it.

Departures from a plain SFT loop, and why:
* gradient accumulation scans over micro-batches and divides the summed NLL by
  the *global* number of completion tokens of the step, so the objective is
  the same token mean whatever the accumulation factor;
* at eval steps it logs `gen_loss` (token-mean NLL on held-out examples of
  the SFT distribution, the "generalization loss" of Kang et al. 2025) and
  task accuracy sampled through THE rollout kernel.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxrl_post.model import ModelConfig, forward
from jaxrl_post.trainers.state import TrainState


def token_nll(params, cfg: ModelConfig, batch) -> tuple[jax.Array, jax.Array]:
  """Summed NLL over weighted targets and the weight sum.

  batch: tokens/targets/positions/segment_ids int32[B, T], weights f32[B, T];
  positions in [0, T) (each packed example counts from 0, `data.make_batch`).
  """
  logits, _ = forward(params, cfg, batch["tokens"], batch["positions"],
                      segment_ids=batch["segment_ids"], max_position=batch["tokens"].shape[1])
  logp = jax.nn.log_softmax(logits, axis=-1)
  nll = -jnp.take_along_axis(logp, batch["targets"][..., None], axis=-1)[..., 0]
  w = batch["weights"]
  return jnp.sum(nll * w), jnp.sum(w)


def make_train_step(cfg: ModelConfig, optimizer: optax.GradientTransformation,
                    grad_accum: int = 1, schedule=None):
  """Returns train_step(state, batch) -> (state, metrics), pure and jittable.

  With grad_accum = A the batch's leading axis B is split into A micro-batches
  of B / A rows, scanned in sequence (memory of one micro-batch).
  """

  def micro_grads(params, micro):
    (nll, count), grads = jax.value_and_grad(
        lambda p: token_nll(p, cfg, micro), has_aux=True)(params)
    return nll, count, grads

  def train_step(state: TrainState, batch: dict[str, Any]):
    if grad_accum == 1:
      nll, count, grads = micro_grads(state.params, batch)
    else:
      micro = jax.tree.map(
          lambda x: x.reshape(grad_accum, x.shape[0] // grad_accum, *x.shape[1:]), batch)

      def body(acc, mb):
        nll, count, grads = micro_grads(state.params, mb)
        return jax.tree.map(jnp.add, acc, (nll, count, grads)), None

      zeros = (jnp.float32(0), jnp.float32(0),
               jax.tree.map(jnp.zeros_like, state.params))
      (nll, count, grads), _ = jax.lax.scan(body, zeros, micro)
    denom = jnp.maximum(count, 1.0)
    grads = jax.tree.map(lambda g: g / denom, grads)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {"loss": nll / denom, "grad_norm": optax.tree.norm(grads),
               "tokens": count}
    if schedule is not None:
      metrics["lr"] = schedule(state.step)
    return state.replace(step=state.step + 1, params=params,
                         opt_state=opt_state), metrics

  return train_step


def make_eval_loss(cfg: ModelConfig):
  """Returns eval_loss(params, batch) -> (nll_sum, token_count)."""
  return functools.partial(_eval_loss, cfg=cfg)


def _eval_loss(params, batch, *, cfg):
  return token_nll(params, cfg, batch)


def mean_nll(eval_fn, params, batches) -> float:
  """Token-mean NLL over a list of batches (one host sync at the end)."""
  sums = [eval_fn(params, b) for b in batches]
  total = sum(float(s[0]) for s in sums)
  count = sum(float(s[1]) for s in sums)
  return total / max(count, 1.0)
