"""The train state shared by every trainer, its optimizer, and sharded init."""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax

from jaxrl_post import sharding as shd
from jaxrl_post.hparams import OptimHParams
from jaxrl_post.model import ModelConfig, init_params, param_logical_axes


@flax.struct.dataclass
class TrainState:
  """step: int32 scalar; params; opt_state (optax); rng: uint32[2] key data.

  The rng is stored as raw key data so that Orbax saves it as a plain array;
  per-step randomness is `jax.random.fold_in(key(state.rng), state.step)`.
  """

  step: jax.Array
  params: Any
  opt_state: Any
  rng: jax.Array

  def step_key(self) -> jax.Array:
    return jax.random.fold_in(jax.random.wrap_key_data(self.rng), self.step)


def make_schedule(hp: OptimHParams, num_steps: int) -> optax.Schedule:
  """Linear warmup to lr, then cosine decay to lr * end_lr_factor (or constant)."""
  warm = max(hp.warmup_steps, 0)
  if hp.schedule == "constant":
    if warm == 0:
      return optax.constant_schedule(hp.learning_rate)
    return optax.join_schedules(
        [optax.linear_schedule(0.0, hp.learning_rate, warm),
         optax.constant_schedule(hp.learning_rate)], [warm])
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0 if warm else hp.learning_rate, peak_value=hp.learning_rate,
      warmup_steps=warm, decay_steps=max(num_steps, warm + 1),
      end_value=hp.learning_rate * hp.end_lr_factor)


def make_optimizer(hp: OptimHParams, num_steps: int) -> optax.GradientTransformation:
  """AdamW + global-norm clipping with the schedule above."""
  return optax.chain(
      optax.clip_by_global_norm(hp.grad_clip) if hp.grad_clip > 0 else optax.identity(),
      optax.adamw(make_schedule(hp, num_steps), b1=hp.b1, b2=hp.b2,
                  weight_decay=hp.weight_decay))


def state_shardings(cfg: ModelConfig, optimizer, mesh, rules=shd.TRAIN_RULES):
  """(abstract TrainState, its NamedShardings) without allocating anything.

  Optimizer moments follow their parameter's sharding; scalars replicate.
  """
  logical = param_logical_axes(cfg)
  abstract_params = jax.eval_shape(lambda: init_params(cfg, jax.random.key(0)))
  p_sh = shd.tree_shardings(abstract_params, logical, mesh, rules)
  abstract_opt = jax.eval_shape(optimizer.init, abstract_params)
  repl = shd.replicated(mesh)
  # Moments have the params' tree structure inside the optax state; map by
  # shape-and-position: any leaf whose shape equals a param leaf of the same
  # path suffix gets that param's sharding.
  flat_p = {tuple(str(getattr(k, "key", k)) for k in path): s
            for path, s in jax.tree_util.tree_leaves_with_path(p_sh)}

  def opt_leaf(path, leaf):
    keys = tuple(str(getattr(k, "key", k)) for k in path)
    for n in range(len(keys)):
      if keys[n:] in flat_p:
        return flat_p[keys[n:]]
    return repl

  o_sh = jax.tree_util.tree_map_with_path(opt_leaf, abstract_opt)
  abstract = TrainState(step=jax.ShapeDtypeStruct((), jnp.int32),
                        params=abstract_params, opt_state=abstract_opt,
                        rng=jax.ShapeDtypeStruct((2,), jnp.uint32))
  shardings = TrainState(step=repl, params=p_sh, opt_state=o_sh, rng=repl)
  return abstract, shardings


def init_state(cfg: ModelConfig, optimizer, seed: int, shardings,
               params=None) -> TrainState:
  """Creates the state directly in its shardings (jit with out_shardings).

  With `params` given (e.g. from an SFT snapshot), they are used instead of a
  fresh init.
  """
  def make(p):
    key = jax.random.key(seed)
    if p is None:
      p = init_params(cfg, jax.random.fold_in(key, 1))
    return TrainState(step=jnp.int32(0), params=p, opt_state=optimizer.init(p),
                      rng=jax.random.key_data(jax.random.fold_in(key, 2)))

  if params is None:
    return jax.jit(lambda: make(None), out_shardings=shardings)()
  params = shd.shard_tree(params, shardings.params)
  return jax.jit(make, out_shardings=shardings)(params)
