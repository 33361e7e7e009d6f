"""GRPO step: compiles once, 1 vs 8 devices, dynamic sampling selection."""

import jax
import jax.numpy as jnp
import numpy as np

from jaxrl_post import model as M
from jaxrl_post import rewards as R
from jaxrl_post import sampling as S
from jaxrl_post import sharding as shd
from jaxrl_post.hparams import OptimHParams, RLHParams
from jaxrl_post.tasks import gp24
from jaxrl_post.testing import mesh_of, nano_config
from jaxrl_post.tokenizers import CharTokenizer
from jaxrl_post.trainers import grpo
from jaxrl_post.trainers import state as St

TOK = CharTokenizer()


def _setup(mesh, **rl):
  cfg = nano_config(vocab_size=128, max_seq_len=256)
  hp = RLHParams(group_size=4, prompts_per_step=2, max_new_tokens=12, **rl)
  rc = grpo.RLStepConfig(hp=hp, sampling=S.SamplingConfig(max_new_tokens=12, stop_ids=(2,)))
  opt = St.make_optimizer(OptimHParams(learning_rate=1e-3), 10)
  _, sh = St.state_shardings(cfg, opt, mesh)
  state = St.init_state(cfg, opt, 0, sh)
  traces = []

  def counted(state, batch, ref=None):
    traces.append(1)
    return grpo.make_rl_step(cfg, rc, opt)(state, batch, ref)

  step = jax.jit(counted, in_shardings=(sh, None, None), out_shardings=(sh, None), donate_argnums=0)
  return state, step, traces


def _batch(step, rounds=1):
  task = gp24.Gp24Task()
  ex = task.examples("train", 2 * rounds, seed=step)
  table = R.CharTable.from_tokenizer(TOK, 128)
  ids = [[TOK.bos_id, *TOK.encode(e.prompt)] for e in ex]
  tokens, mask = S.pad_prompts(ids, 0, length=96)
  return {"prompt_tokens": tokens, "prompt_mask": mask,
          "reward": R.weighted_sum(task=(R.gp24_reward(ex, table, levels=True), 1.0))}


def test_step_compiles_once_and_updates():
  state, step, traces = _setup(mesh_of(1, 1, 1))
  p0 = jax.device_get(state.params)
  metrics = []
  for s in range(3):
    state, m = step(state, _batch(s), None)
    metrics.append(jax.device_get(m))
  assert len(traces) == 1
  assert int(state.step) == 3
  for m in metrics:
    for k in ("loss", "reward_mean", "reward_std", "frac_reward_zero_std", "completion_len_mean",
              "clip_frac", "kl", "entropy", "grad_norm", "reward/task"):
      assert np.isfinite(m[k]), k
  assert m["reward_mean"] <= -2.0  # a random model writes no valid formula: -3 or -2
  assert m["reward_mean_sampled"] == m["reward_mean"]  # no group dropped without dynamic sampling
  changed = jax.tree.map(lambda a, b: not np.array_equal(a, b), p0, jax.device_get(state.params))
  assert any(jax.tree.leaves(changed)) or all(mm["grad_norm"] == 0 for mm in metrics)


def test_one_vs_eight_devices():
  outs = []
  for mesh in (mesh_of(1, 1, 1), mesh_of(2, 2, 2)):
    state, step, _ = _setup(mesh)
    ms = []
    for s in range(2):
      state, m = step(state, _batch(s), None)
      ms.append(jax.device_get(m))
    outs.append(ms)
  for a, b in zip(*outs):
    for k in ("reward_mean", "completion_len_mean", "loss", "entropy"):
      np.testing.assert_allclose(a[k], b[k], rtol=1e-4, atol=1e-5)


def test_dynamic_sampling_keeps_informative_groups_first():
  keep = jnp.asarray([False, True, False, True, True])
  np.testing.assert_array_equal(np.asarray(grpo._select_groups(keep, 3)), [1, 3, 4])
  state, step, traces = _setup(mesh_of(1, 1, 1), dynamic_sampling=True, max_gen_rounds=3)
  state, m = step(state, _batch(0, rounds=3), None)
  m = jax.device_get(m)
  assert 1 <= m["gen_rounds"] <= 3
  assert 0 <= m["frac_groups_filled"] <= 1
  assert -3.0 <= m["reward_mean_sampled"] <= -2.0  # the first round, unfiltered
