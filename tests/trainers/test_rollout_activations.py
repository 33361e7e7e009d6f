"""The rollout's activations stand in for the policy update's forward pass.

`generate(capture=True)` records every weight product the decoder computes
on the rollout's tokens; `completion_logp(given=...)` then differentiates
through them (`dense_given`) instead of recomputing them. These tests check
the contract against the plain recomputation: the same log-probs and
gradients, the recorded values really used, and the work actually saved.
"""

import dataclasses

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrl_post import model as M
from jaxrl_post import sampling as S
from jaxrl_post.model import transformer as T
from jaxrl_post.testing import mesh_of, nano_config
from jaxrl_post.trainers import grpo

from tests.trainers.test_grpo import _batch, _setup

PB, G, P, N = 3, 4, 10, 9
STOP = 5


def _rollout(cfg, params, capture, stop_ids=(STOP,)):
  """G samples for each of PB left-padded prompts of different lengths; a
  frequent stop token so rows end at different steps."""
  prompt = jax.random.randint(jax.random.key(1), (PB, P), 6, cfg.vocab_size)
  prompt_mask = jnp.arange(P)[None, :] >= jnp.array([[0], [3], [6]])
  sc = S.SamplingConfig(max_new_tokens=N, stop_ids=stop_ids)
  sp = S.SamplingParams.make(temperature=1.5)
  gen = jax.jit(lambda p, t, m: S.generate(p, cfg, sc, t, m, jax.random.key(7), sp,
                                           samples_per_prompt=G, capture=capture))
  return gen(params, jnp.where(prompt_mask, prompt, 0), prompt_mask)


@pytest.fixture(scope="module")
def setup():
  cfg = nano_config(vocab_size=64, max_seq_len=64, num_layers=3)
  params = M.init_params(cfg, jax.random.key(0))
  # Make the stop token likely, so some rows stop early and others run to N.
  params["embed"] = params["embed"].at[STOP].multiply(8.0)
  return cfg, params


def _objective(cfg, seq, pos, seg, weights, given):
  def f(params):
    logp, _ = grpo.completion_logp(params, cfg, seq, pos, seg, N, G, given)
    return jnp.sum(logp * weights), logp
  return jax.jit(jax.value_and_grad(f, has_aux=True))


def test_capture_changes_no_token_and_records_every_product(setup):
  cfg, params = setup
  plain, captured = _rollout(cfg, params, False), _rollout(cfg, params, True)
  assert plain.activations is None
  np.testing.assert_array_equal(captured.tokens, plain.tokens)
  np.testing.assert_array_equal(captured.mask, plain.mask)
  lengths = np.asarray(captured.lengths)
  assert lengths.min() < N and lengths.max() == N  # early stops and full rows
  acts = captured.activations
  L, H, KV, Dh = cfg.num_layers, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
  D, F = cfg.hidden_size, cfg.intermediate_size
  shapes = {"q": (H, Dh), "k": (KV, Dh), "v": (KV, Dh), "o": (D,), "gate": (F,),
            "up": (F,), "down": (D,)}
  assert T.layer_act_shapes(cfg) == shapes
  width = sum(int(np.prod(s)) for s in shapes.values())
  assert T.layer_act_width(cfg) == width
  assert acts.prompt.shape == (L, PB, P, width)
  assert acts.completion.shape == (L, PB * G, N, width)
  prompt, completion = (T.unpack_layer_acts(a, cfg) for a in (acts.prompt, acts.completion))
  assert set(prompt) == set(completion) == set(T.LAYER_ACTS) == set(shapes)
  for name, shape in shapes.items():
    assert prompt[name].shape == (L, PB, P) + shape, name
    assert completion[name].shape == (L, PB * G, N) + shape, name


def test_pack_and_unpack_layer_acts_are_inverse(setup):
  cfg, _ = setup
  shapes = T.layer_act_shapes(cfg)
  keys = jax.random.split(jax.random.key(0), len(shapes))
  acts = {n: jax.random.normal(k, (2, 3) + s) for k, (n, s) in zip(keys, shapes.items())}
  packed = T.pack_layer_acts(acts, cfg)
  assert packed.shape == (2, 3, T.layer_act_width(cfg))
  # Side by side in LAYER_ACTS order (an independent NumPy concatenation).
  ref = np.concatenate([np.asarray(acts[n]).reshape(2, 3, -1) for n in T.LAYER_ACTS], -1)
  np.testing.assert_array_equal(packed, ref)
  back = T.unpack_layer_acts(packed, cfg)
  for n in T.LAYER_ACTS:
    np.testing.assert_array_equal(back[n], acts[n])
  with pytest.raises(ValueError, match="values per token"):
    T.unpack_layer_acts(packed[..., 1:], cfg)


def test_recorded_products_equal_a_teacher_forced_pass(setup):
  """Independent reference: layer 0's q and gate products of the real tokens,
  computed by hand from the embeddings (h = rms_norm(embed[token]))."""
  cfg, params = setup
  r = _rollout(cfg, params, True)
  lp = params["layers"]
  # The last completion token is sampled, never fed (it predicts nothing):
  # its column is not recorded.
  recorded = r.mask & (jnp.arange(N) < N - 1)
  assert np.asarray(r.mask[:, N - 1]).any()
  assert not np.any(np.asarray(r.activations.completion)[:, :, N - 1])
  for tokens, mask, packed in ((r.prompt_tokens[::G], r.prompt_mask[::G], r.activations.prompt),
                               (r.tokens, recorded, r.activations.completion)):
    acts = T.unpack_layer_acts(packed, cfg)
    h = T.rms_norm(params["embed"][tokens], lp["attn_norm"][0], cfg.rms_norm_eps)
    q = np.einsum("btd,dhk->bthk", np.asarray(h), np.asarray(lp["q"][0]))
    m = np.asarray(mask)
    np.testing.assert_allclose(np.asarray(acts["q"][0])[m], q[m], rtol=1e-5, atol=1e-5)


# Three quarters of the vocabulary stop a row: every row stops before N, so
# the decode loop exits early and the last columns are never decoded (zeros
# recorded).
ALL_STOP_EARLY = tuple(i for i in range(64) if i % 4)


@pytest.mark.parametrize("stop_ids", [(STOP,), ALL_STOP_EARLY], ids=["mixed", "early_exit"])
def test_given_activations_give_the_recomputed_logp_and_gradient(setup, stop_ids):
  cfg, params = setup
  r = _rollout(cfg, params, True, stop_ids)
  if stop_ids == ALL_STOP_EARLY:
    last = int(r.lengths.max())
    assert last < N - 1
    assert not np.any(np.asarray(r.activations.completion)[:, :, last:])
  seq, pos, seg, _ = S.sequences(r)
  weights = jax.random.normal(jax.random.key(3), (PB * G, N)) * r.mask
  (v0, lp0), g0 = _objective(cfg, seq, pos, seg, weights, None)(params)
  (v1, lp1), g1 = _objective(cfg, seq, pos, seg, weights, r.activations)(params)
  m = np.asarray(r.mask)
  np.testing.assert_allclose(np.asarray(lp1)[m], np.asarray(lp0)[m], rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(v1, v0, rtol=1e-5, atol=1e-5)
  for path, a, b in zip(jax.tree.leaves_with_path(g0), jax.tree.leaves(g0), jax.tree.leaves(g1)):
    scale = float(np.max(np.abs(a))) + 1e-12
    np.testing.assert_allclose(np.asarray(b) / scale, np.asarray(a) / scale, atol=1e-4,
                               err_msg=jax.tree_util.keystr(path[0]))
  # The recorded values are really what the forward uses: corrupt one product
  # of the completions and the log-probs move.
  d = cfg.hidden_size  # "down", the last product of a packed row
  bad = dataclasses.replace(
      r.activations, completion=r.activations.completion.at[..., -d:].add(1.0))
  (_, lp_bad), _ = _objective(cfg, seq, pos, seg, weights, bad)(params)
  assert np.max(np.abs(np.asarray(lp_bad) - np.asarray(lp0))[m]) > 1e-3
  with pytest.raises(ValueError, match="lacks the prompt's"):
    _objective(cfg, seq, pos, seg, weights, dataclasses.replace(r.activations, prompt=None))(params)
  short = dataclasses.replace(r.activations, completion=r.activations.completion[:, :, :N - 3])
  with pytest.raises(ValueError, match="suffix activations"):
    _objective(cfg, seq, pos, seg, weights, short)(params)


def test_given_activations_save_the_forward_matmuls(setup):
  """XLA's own flop count of forward + backward drops by about the forward's
  weight products (a third of the matmul work; attention is recomputed)."""
  cfg, params = setup
  r = _rollout(cfg, params, True)
  seq, pos, seg, _ = S.sequences(r)
  weights = r.mask.astype(jnp.float32)

  def flops(given):
    f = _objective(cfg, seq, pos, seg, weights, given)
    cost = f.lower(params).compile().cost_analysis()
    return (cost[0] if isinstance(cost, list) else cost)["flops"]

  assert flops(r.activations) < 0.8 * flops(None)


def test_given_activations_dense_gradient_is_the_dense_gradient():
  x = jax.random.normal(jax.random.key(0), (2, 5, 8))
  w = jax.random.normal(jax.random.key(1), (8, 3, 4))
  y = T._dense(x, w)
  ct = jax.random.normal(jax.random.key(2), y.shape)
  out, pull = jax.vjp(lambda x, w: T.dense_given(x, w, y), x, w)
  _, ref_pull = jax.vjp(T._dense, x, w)
  np.testing.assert_array_equal(out, y)
  for a, b in zip(pull(ct), ref_pull(ct)):
    np.testing.assert_allclose(a, b, rtol=1e-6)
  np.testing.assert_allclose(
      pull(ct)[1], np.einsum("btk,btho->kho", np.asarray(x), np.asarray(ct)), rtol=1e-5)


@flax.struct.dataclass
class _DigitShare:
  """Reward: the share of a row's tokens that are `digit` (spread even for a
  random model, so the step has a gradient)."""

  digit: jax.Array  # int32[B]

  def __call__(self, tokens, mask):
    share = jnp.sum((tokens == self.digit[:, None]) & mask, axis=1) / jnp.maximum(
        jnp.sum(mask, axis=1), 1)
    return share.astype(jnp.float32), {"digit_share": share}


@pytest.mark.parametrize("iterations", [1, 2])
def test_rl_step_with_and_without_reuse_match(iterations):
  """One GRPO step from one state and batch, recomputing or reusing: the same
  loss, gradient norm and updated parameters (mu = 2 also reuses them for the
  old log-probs)."""
  batch = _batch(0)
  batch["reward"] = _DigitShare(digit=jnp.full((2,), 100, jnp.int32))
  out = {}
  for reuse in (False, True):
    state, step, _ = _setup(mesh_of(1, 1, 1), num_iterations=iterations,
                            reuse_rollout_activations=reuse)
    state, m = step(state, batch, None)
    out[reuse] = jax.device_get((state.params, m))
  (p0, m0), (p1, m1) = out[False], out[True]
  for k in ("loss", "grad_norm", "reward_mean", "entropy", "clip_frac"):
    np.testing.assert_allclose(m1[k], m0[k], rtol=1e-4, atol=1e-6, err_msg=k)
  assert m0["grad_norm"] > 0
  for a, b in zip(jax.tree.leaves(p0), jax.tree.leaves(p1)):
    np.testing.assert_allclose(b, a, rtol=1e-4, atol=2e-5)
