"""GRPO and its variants (DAPO, Dr. GRPO, GSPO) as one pure, jitted step.

`make_rl_step(...)` returns `rl_step(state, batch) -> (state, metrics)` that
does everything on device: rollouts through THE rollout kernel (G samples per
prompt), the reward pytree, group advantages, then `num_iterations` (mu)
policy updates against the stored old log-probs. `batch` holds left-padded
prompts and the reward pytree whose leaves are per-prompt data, so a new
reward is compiled into the step, not called from the host.

Formulas: research/papers.md section 0 and 6 (DeepSeekMath eq. for GRPO,
DAPO clip-higher / token-mean / dynamic sampling / soft overlong penalty,
Dr. GRPO mean-only advantages and constant normaliser, GSPO sequence ratio).

Departures, and why:
* Dynamic sampling (DAPO) is done on device with static shapes: the batch
  carries `max_gen_rounds` rounds of candidate prompts; rounds are rolled out
  until enough groups with reward spread > eps are found; the kept groups are
  gathered first and any shortfall is filled with zero-weight groups (they
  add nothing to the gradient) instead of a host-side refill loop.
* Old log-probs are recomputed by a teacher-forced pass with the pre-update
  parameters (not taken from the sampler), so they are the policy's own
  temperature-1 log-probs whatever the sampling temperature. With one update
  per rollout (mu = 1) that pass would reproduce the gradient pass's own
  log-probs, so the step uses stop_gradient(logp) instead and skips it
  (measured: 14% of the bench's GRPO step).
* The rollout already computed every weight product of the update's first
  forward pass (same parameters, same tokens), so by default it records
  them (`generate(capture=True)`) and the first update differentiates
  through them without recomputing (`forward_shared_prefix(given=...)`):
  the same loss and gradient up to float rounding, a third less of the
  update's matmul work (`rl.reuse_rollout_activations`; not with dynamic
  sampling, where every round would pay for recording its activations and
  keep them, for one update's forward).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import optax

from jaxrl_post import advantages as adv_lib
from jaxrl_post import losses
from jaxrl_post import sampling as S
from jaxrl_post.hparams import RLHParams
from jaxrl_post.model import ModelConfig, forward, forward_shared_prefix, unembed
from jaxrl_post.tokenizers.base import prompt_ids
from jaxrl_post.trainers.state import TrainState


@dataclasses.dataclass(frozen=True)
class RLStepConfig:
  """Static settings of the RL step (hashable)."""

  hp: RLHParams
  sampling: S.SamplingConfig

  @property
  def group_size(self) -> int:
    return self.hp.group_size


def policy_loss_config(hp: RLHParams) -> losses.PolicyLossConfig:
  return losses.PolicyLossConfig(
      epsilon_low=hp.epsilon_low, epsilon_high=hp.epsilon_high, beta=hp.beta,
      aggregation=hp.aggregation, ratio_level=hp.ratio_level,
      max_len=hp.max_new_tokens)


def completion_logp(params, cfg: ModelConfig, seq, pos, seg, n_new: int, group_size: int = 1,
                    given: S.RolloutActivations | None = None):
  """Teacher-forced log-probs and entropies of the last n_new tokens.

  seq/pos/seg: int32[B, P+N], positions in [0, P+N) (as `S.sequences`
  makes them). Returns (logp f32[B, N], entropy f32[B, N]).
  group_size G > 1: rows i*G .. i*G + G - 1 share one prompt (a GRPO group),
  which then runs through the decoder once per group instead of once per row
  (`forward_shared_prefix`; the same numbers). Logits are computed only where
  they predict a completion token: the last prompt position and the first
  N - 1 completion positions.
  given: the rollout's activations on these sequences under these
  parameters (`generate(capture=True)` with samples_per_prompt = G, or 1 with
  G = 1): the forward then takes its weight products from them
  (`forward_shared_prefix`), the same numbers up to float rounding.
  """
  p = seq.shape[1] - n_new
  t = seq.shape[1]  # positions count valid tokens before each one (`S.sequences`): < t
  if group_size > 1 or given is not None:
    g = group_size
    fwd_given = None
    if given is not None:
      if given.prompt is None or given.completion is None:
        raise ValueError("completion_logp: `given` lacks the prompt's or the completion's "
                         "activations (generate(capture=True) records both)")
      rows = given.prompt.shape[1]
      if rows * g != seq.shape[0]:
        raise ValueError(f"completion_logp: activations of {rows} prompts for "
                         f"{seq.shape[0]} rows at group size {g}")
      # Completion token N - 1 predicts nothing: its column is not an input.
      fwd_given = (given.prompt, given.completion[:, :, :n_new - 1])
    h_pre, h_suf = forward_shared_prefix(
        params, cfg, seq[::g, :p], pos[::g, :p], seg[::g, :p],
        seq[:, p:-1], pos[:, p:-1], seg[:, p:-1], max_position=t, given=fwd_given)
    hidden = jnp.concatenate([jnp.repeat(h_pre[:, -1:], g, axis=0), h_suf], axis=1)
  else:
    _, _, hidden = forward(params, cfg, seq[:, :-1], pos[:, :-1], segment_ids=seg[:, :-1],
                           return_hidden=True, compute_logits=False, max_position=t)
    hidden = hidden[:, p - 1:]
  logits = unembed(params, cfg, hidden)
  targets = seq[:, -n_new:]
  return losses.token_log_probs(logits, targets), losses.token_entropy(logits)


def _repeat(tree, g: int):
  return jax.tree.map(lambda x: jnp.repeat(x, g, axis=0), tree)


def _rollout_round(params, cfg, rc: RLStepConfig, prompts, mask, reward_fn, key,
                   capture: bool = False):
  """One round: G samples for each prompt, their rewards and group stats.

  capture: the rollout also records its activations (`S.RolloutActivations`).
  """
  g = rc.group_size
  sp = S.SamplingParams(temperature=jnp.float32(rc.hp.temperature),
                        top_p=jnp.float32(rc.hp.top_p))
  # Each prompt is prefilled once for its G samples.
  rollout = S.generate(params, cfg, rc.sampling, prompts, mask, key, sp, samples_per_prompt=g,
                       capture=capture)
  rewards, aux = reward_fn(rollout.tokens, rollout.mask)
  std = adv_lib.group_reward_std(rewards, g)
  return rollout, rewards.astype(jnp.float32), aux, std


def _select_groups(keep: jax.Array, n: int) -> jax.Array:
  """Indices of n groups: kept ones first (stable), then the rest."""
  order = jnp.argsort(~keep, stable=True)
  return order[:n]


def collect(params, cfg: ModelConfig, rc: RLStepConfig, batch, key):
  """Rollouts (with on-device dynamic sampling) for one RL step.

  batch["prompt_tokens"]: int32[R * Pb, P], batch["prompt_mask"]: bool[R*Pb, P],
  batch["reward"]: a reward pytree with leaves [R * Pb, ...], where R =
  max_gen_rounds when dynamic sampling is on, else 1.
  Returns (rollout over Pb*G rows, rewards f32[Pb*G], aux, group_weight
  f32[Pb], stats). Without dynamic sampling and with
  `rl.reuse_rollout_activations`, the rollout carries its activations.
  """
  hp = rc.hp
  g = rc.group_size
  rounds = hp.max_gen_rounds if hp.dynamic_sampling else 1
  total = batch["prompt_tokens"].shape[0]
  pb = total // rounds

  def round_inputs(r):
    sl = lambda x: jax.lax.dynamic_slice_in_dim(x, r * pb, pb, 0)
    reward_fn = _repeat(jax.tree.map(sl, batch["reward"]), g)
    return sl(batch["prompt_tokens"]), sl(batch["prompt_mask"]), reward_fn

  if rounds == 1:
    p, m, reward_fn = round_inputs(0)
    rollout, rewards, aux, std = _rollout_round(params, cfg, rc, p, m, reward_fn, key,
                                                capture=hp.reuse_rollout_activations)
    keep = std > hp.dynamic_eps
    weight = jnp.ones((pb,), jnp.float32)
    stats = {"frac_reward_zero_std": 1.0 - keep.mean(), "gen_rounds": jnp.float32(1),
             "reward_mean_sampled": rewards.mean()}
    return rollout, rewards, aux, weight, stats

  # Dynamic sampling: roll out rounds until pb informative groups are found.
  p0, m0, rf0 = round_inputs(0)
  first = _rollout_round(params, cfg, rc, p0, m0, rf0, jax.random.fold_in(key, 0))
  buf = jax.tree.map(lambda x: jnp.zeros((rounds,) + x.shape, x.dtype), first)
  buf = jax.tree.map(lambda b, x: b.at[0].set(x), buf, first)

  def cond(carry):
    r, buf = carry
    done_rounds = jnp.arange(rounds)[:, None] < r
    kept = jnp.sum((buf[3] > hp.dynamic_eps) & done_rounds)
    return (r < rounds) & (kept < pb)

  def body(carry):
    r, buf = carry
    p, m, rf = round_inputs(r)
    out = _rollout_round(params, cfg, rc, p, m, rf, jax.random.fold_in(key, r))
    buf = jax.tree.map(lambda b, x: jax.lax.dynamic_update_index_in_dim(b, x, r, 0), buf, out)
    return r + 1, buf

  used, buf = jax.lax.while_loop(cond, body, (jnp.int32(1), buf))
  round_ids = jnp.repeat(jnp.arange(rounds), pb)
  std_all = buf[3].reshape(-1)
  keep_all = (std_all > hp.dynamic_eps) & (round_ids < used)
  groups = _select_groups(keep_all, pb)  # [pb] indices into rounds*pb groups
  rows = (groups[:, None] * g + jnp.arange(g)[None, :]).reshape(-1)
  flat = jax.tree.map(lambda x: x.reshape((rounds * x.shape[1],) + x.shape[2:]), buf)
  rollout, rewards, aux, _ = jax.tree.map(lambda x: x[rows], flat)
  weight = keep_all[groups].astype(jnp.float32)
  seen = (round_ids < used)
  stats = {"frac_reward_zero_std": 1.0 - jnp.sum(keep_all) / jnp.maximum(jnp.sum(seen), 1),
           "gen_rounds": used.astype(jnp.float32),
           "frac_groups_filled": weight.mean(),
           # The policy's own mean reward: the first round, before any group
           # is dropped (`reward_mean` is over the kept, informative groups).
           "reward_mean_sampled": first[1].mean()}
  return rollout, rewards, aux, weight, stats


def policy_update(params, opt_state, cfg: ModelConfig, rc: RLStepConfig,
                  optimizer: optax.GradientTransformation, seq, pos, seg, advantages, mask,
                  old_logp=None, ref_logp=None, given=None):
  """One policy update on a fixed rollout: loss, gradient, optimizer step.

  seq/pos/seg: int32[B, P+N] (`S.sequences`); advantages f32[B]; mask
  f32[B, N] (the tokens that count); old_logp f32[B, N] or None (one update
  per rollout: the old policy IS the current one, ratio 1, so the gradient
  pass's own log-probs, detached, stand in); ref_logp f32[B, N] or None;
  given: the rollout's activations, valid only while `params` are the
  parameters that sampled it (`completion_logp`).
  Returns (params, opt_state, (loss, loss aux, grad global norm)).
  """
  n_new = rc.sampling.max_new_tokens
  loss_cfg = policy_loss_config(rc.hp)

  def loss_fn(p):
    logp, _ = completion_logp(p, cfg, seq, pos, seg, n_new, rc.group_size, given)
    old = jax.lax.stop_gradient(logp) if old_logp is None else old_logp
    return losses.policy_loss(logp, old, advantages, mask, ref_logp=ref_logp, hp=loss_cfg)

  (loss, laux), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
  updates, opt_state = optimizer.update(grads, opt_state, params)
  return optax.apply_updates(params, updates), opt_state, (loss, laux, optax.tree.norm(grads))


def make_rl_step(cfg: ModelConfig, rc: RLStepConfig,
                 optimizer: optax.GradientTransformation, schedule=None,
                 token_class: jax.Array | None = None):
  """Returns rl_step(state, batch, ref_params) -> (state, metrics).

  token_class: optional bool[V]; entropy is also logged split by this class
  (e.g. digits/operators vs the rest, research/papers.md section 8).
  ref_params: frozen reference policy for the k3 KL (used when beta > 0;
  never donated).
  """
  hp = rc.hp
  g = rc.group_size
  n_new = rc.sampling.max_new_tokens

  def rl_step(state: TrainState, batch, ref_params=None):
    key = state.step_key()
    rollout, rewards, aux, group_w, stats = collect(state.params, cfg, rc, batch, key)
    seq, pos, seg, _ = S.sequences(rollout)
    advantages = adv_lib.group_advantages(rewards, g, mode=hp.advantage)
    row_w = jnp.repeat(group_w, g)
    mask = rollout.mask.astype(jnp.float32) * row_w[:, None]
    if hp.mask_truncated:
      mask = mask * rollout.finished[:, None].astype(jnp.float32)
    given = rollout.activations  # None unless the rollout recorded them
    if hp.num_iterations > 1:
      old_logp, _ = completion_logp(jax.lax.stop_gradient(state.params), cfg, seq, pos, seg,
                                    n_new, g, given)
      old_logp = jax.lax.stop_gradient(old_logp)
    else:  # one update per rollout: the old policy IS the current one (ratio 1)
      old_logp = None
    ref_logp = None
    if hp.beta > 0 and ref_params is not None:
      ref_logp, _ = completion_logp(ref_params, cfg, seq, pos, seg, n_new, g)
      ref_logp = jax.lax.stop_gradient(ref_logp)

    def update(carry, given):
      params, opt_state, out = policy_update(*carry, cfg, rc, optimizer, seq, pos, seg,
                                             advantages, mask, old_logp, ref_logp, given)
      return (params, opt_state), out

    # The first update runs at the rollout's parameters, so it can take the
    # rollout's activations; the other mu - 1 recompute theirs.
    carry, out = update((state.params, state.opt_state), given)
    if hp.num_iterations > 1:
      carry, rest = jax.lax.scan(lambda c, _: update(c, None), carry, None,
                                 length=hp.num_iterations - 1)
      out = jax.tree.map(lambda a, b: jnp.concatenate([a[None], b]), out, rest)
    else:
      out = jax.tree.map(lambda a: a[None], out)
    (params, opt_state), (loss, laux, gnorm) = carry, out

    tok = rollout.mask.astype(jnp.float32)
    ntok = jnp.maximum(tok.sum(), 1.0)
    metrics = {
        "loss": loss[0],
        "reward_mean": rewards.mean(),
        "reward_std": rewards.std(),
        "completion_len_mean": rollout.lengths.astype(jnp.float32).mean(),
        "frac_truncated": 1.0 - rollout.finished.astype(jnp.float32).mean(),
        "clip_frac": jnp.mean(laux["clip_frac"]),
        "kl": jnp.mean(laux.get("kl", jnp.zeros(()))),
        "entropy": jnp.sum(rollout.entropy * tok) / ntok,
        "grad_norm": gnorm[0],
        "tokens": tok.sum(),
        **stats,
    }
    if token_class is not None:
      tc = jnp.asarray(token_class)
      cls = tc[rollout.tokens] & rollout.mask
      other = (~tc[rollout.tokens]) & rollout.mask
      metrics["entropy/class"] = jnp.sum(rollout.entropy * cls) / jnp.maximum(cls.sum(), 1)
      metrics["entropy/other"] = jnp.sum(rollout.entropy * other) / jnp.maximum(other.sum(), 1)
    for name, value in aux.items():
      metrics[name if name.startswith("reward/") else f"reward/{name}"] = jnp.mean(value)
    if schedule is not None:
      metrics["lr"] = schedule(state.step)
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics

  return rl_step


# --------------------------------------------------------------------------
# Host side: prompts, reward pytrees, the loop.
# --------------------------------------------------------------------------


class PromptSource:
  """Deterministic prompt batches: examples for step s are pure in (seed, s).

  `rounds` x `prompts_per_step` examples per step (rounds > 1 feeds DAPO
  dynamic sampling). Prompts are left-padded to one fixed bucket so the step
  compiles once.
  """

  def __init__(self, examples, tokenizer, prompts_per_step: int, rounds: int, seed: int):
    import numpy as np
    if not examples:
      raise ValueError("PromptSource: no training examples")
    self.examples = list(examples)
    self.tokenizer = tokenizer
    self.per_step = prompts_per_step * rounds
    self.seed = seed
    self.ids = [prompt_ids(tokenizer, e.prompt) for e in self.examples]
    self.length = S.bucket_length(max(len(i) for i in self.ids))
    self._np = np

  def batch(self, step: int):
    """(examples, tokens int32[R*Pb, P], mask bool[R*Pb, P])."""
    rng = self._np.random.default_rng((self.seed, step))
    idx = rng.choice(len(self.examples), size=self.per_step,
                     replace=len(self.examples) < self.per_step)
    tokens, mask = S.pad_prompts([self.ids[i] for i in idx], self.tokenizer.pad_id,
                                 length=self.length)
    return [self.examples[i] for i in idx], tokens, mask


def run_rl(hp, workdir: str, config_dict: dict | None = None) -> dict:
  """The GRPO / SRL training loop (SRL: `hp.trainer == "srl"`)."""
  from jaxrl_post import sharding as shd
  from jaxrl_post.trainers import loop
  from jaxrl_post.trainers import rl_data
  from jaxrl_post.trainers import state as state_lib

  ctx = loop.setup(hp, workdir, config_dict)
  schedule = state_lib.make_schedule(hp.optim, hp.num_steps)
  optimizer = state_lib.make_optimizer(hp.optim, hp.num_steps)
  checkpointer = loop.make_checkpointer(ctx)
  state, st_sh, start = loop.init_or_restore(ctx, optimizer, checkpointer)
  ref_params = None
  if hp.rl.beta > 0:  # the frozen reference: the starting policy
    ref_params = ctx.init_params if ctx.init_params is not None else (
        loop.initial_params(ctx))
    ref_params = shd.shard_tree(ref_params, st_sh.params)
  source, build_reward = rl_data.make_source(ctx)
  rc = RLStepConfig(hp=hp.rl, sampling=S.SamplingConfig(
      max_new_tokens=hp.rl.max_new_tokens, stop_ids=(ctx.tokenizer.eos_id,),
      pad_id=ctx.tokenizer.pad_id))
  if source.length + hp.rl.max_new_tokens > ctx.cfg.max_seq_len:
    raise ValueError(f"prompt bucket {source.length} + rl.max_new_tokens "
                     f"{hp.rl.max_new_tokens} > model max_seq_len {ctx.cfg.max_seq_len}")
  token_class = rl_data.digit_operator_class(ctx.tokenizer, ctx.cfg.vocab_size)
  step_fn = jax.jit(make_rl_step(ctx.cfg, rc, optimizer, schedule, token_class),
                    in_shardings=(st_sh, None, st_sh.params if ref_params is not None else None),
                    out_shardings=(st_sh, None), donate_argnums=0)
  sampler = loop.make_sampler(ctx, hp.eval.max_new_tokens)
  evaluate = lambda st: loop.accuracy_metrics(ctx, sampler, st.params)
  repl = shd.replicated(ctx.mesh)
  runner = loop.RunLoop(ctx, checkpointer, start, f"{hp.trainer} {hp.task}")
  try:
    if start == 0 and hp.eval.every:
      runner.write(0, evaluate(state))
    for step in range(start, hp.num_steps):
      examples, tokens, mask = source.batch(step)
      batch = jax.device_put({"prompt_tokens": tokens, "prompt_mask": mask,
                              "reward": build_reward(examples)}, repl)
      state, m = step_fn(state, batch, ref_params)
      runner.after_step(step + 1, state, m, evaluate)
  finally:
    runner.close()
  return runner.last
