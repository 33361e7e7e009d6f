"""Policy losses and advantages against NumPy transcriptions of the papers."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrl_post import advantages as A
from jaxrl_post import losses as L


def _np_loss(logp, old, adv, mask, ref, cfg):
  """research/papers.md 0.2-0.4 and 6, written out directly."""
  adv = adv[:, None] if adv.ndim == 1 else adv
  if cfg.ratio_level == "token":
    ratio = np.exp(logp - old)
  else:
    s = np.exp((((logp - old) * mask).sum(1) / np.maximum(mask.sum(1), 1)))[:, None]
    ratio = np.broadcast_to(s, logp.shape)
  lo, hi = 1 - cfg.epsilon_low, 1 + cfg.epsilon_high
  l = np.minimum(ratio * adv, np.clip(ratio, lo, hi) * adv)
  B = logp.shape[0]

  def agg(x):
    if cfg.aggregation == "seq_mean_token_mean":
      return np.mean([(x[i] * mask[i]).sum() / max(mask[i].sum(), 1) for i in range(B)])
    if cfg.aggregation == "token_mean":
      return (x * mask).sum() / max(mask.sum(), 1)
    return (x * mask).sum() / (B * cfg.max_len)

  if cfg.ratio_level == "sequence":
    obj = np.mean(l[:, 0])
  else:
    obj = agg(l)
  loss = -obj
  if ref is not None and cfg.beta > 0:
    d = ref - logp
    loss += cfg.beta * agg(np.exp(d) - d - 1)
  return loss


@pytest.mark.parametrize("agg,level,beta,eps_high,mu_gt_1", [
    (a, r, b, e, m) for a, r, b, e, m in itertools.product(
        L.AGGREGATIONS, ("token", "sequence"), (0.0, 0.05), (0.2, 0.28), (False, True))
    if not (r == "sequence" and a != "seq_mean_token_mean")])
def test_policy_loss_matches_numpy(agg, level, beta, eps_high, mu_gt_1):
  rng = np.random.default_rng(hash((agg, level, beta, eps_high, mu_gt_1)) % 2**32)
  B, T = 6, 9
  logp = rng.normal(-2, 0.5, (B, T)).astype(np.float32)
  old = logp + (rng.normal(0, 0.3, (B, T)).astype(np.float32) if mu_gt_1 else 0)
  ref = logp + rng.normal(0, 0.2, (B, T)).astype(np.float32)
  adv = rng.normal(0, 1, B).astype(np.float32)
  mask = (np.arange(T)[None] < rng.integers(1, T + 1, B)[:, None]).astype(np.float32)
  cfg = L.PolicyLossConfig(epsilon_low=0.2, epsilon_high=eps_high, beta=beta, aggregation=agg,
                           ratio_level=level, max_len=T)
  got, aux = L.policy_loss(jnp.asarray(logp), jnp.asarray(old), jnp.asarray(adv),
                           jnp.asarray(mask), ref_logp=jnp.asarray(ref), hp=cfg)
  want = _np_loss(logp, old, adv, mask, ref, cfg)
  np.testing.assert_allclose(float(got), want, rtol=1e-5, atol=1e-6)
  assert 0 <= float(aux["clip_frac"]) <= 1


def test_gradient_at_ratio_one_is_advantage_times_grad_logp():
  rng = np.random.default_rng(0)
  B, T, V = 3, 5, 7
  logits = jnp.asarray(rng.normal(size=(B, T, V)).astype(np.float32))
  targets = jnp.asarray(rng.integers(0, V, (B, T)))
  adv = jnp.asarray([1.0, -0.5, 2.0])
  mask = jnp.ones((B, T))
  cfg = L.PolicyLossConfig()
  old = jax.lax.stop_gradient(L.token_log_probs(logits, targets))

  def loss(lg):
    return L.policy_loss(L.token_log_probs(lg, targets), old, adv, mask, hp=cfg)[0]

  g = jax.grad(loss)(logits)
  # direct: -(1/B) sum_i A_i (1/T) sum_t grad log pi(o_it)
  direct = jax.grad(lambda lg: -jnp.mean(adv[:, None] * L.token_log_probs(lg, targets)))(logits)
  np.testing.assert_allclose(np.asarray(g), np.asarray(direct), atol=1e-6)


def test_cross_entropy_matches_numpy():
  rng = np.random.default_rng(1)
  logits = rng.normal(size=(2, 4, 6)).astype(np.float32)
  targets = rng.integers(0, 6, (2, 4))
  w = np.array([[0, 1, 1, 0], [1, 1, 0, 0]], np.float32)
  m = logits.max(-1, keepdims=True)
  logp = logits - m - np.log(np.exp(logits - m).sum(-1, keepdims=True))
  want = -(np.take_along_axis(logp, targets[..., None], -1)[..., 0] * w).sum() / w.sum()
  got, aux = L.cross_entropy_loss(jnp.asarray(logits), jnp.asarray(targets), jnp.asarray(w))
  np.testing.assert_allclose(float(got), want, rtol=1e-6)
  assert float(aux["tokens"]) == 4


def test_bad_loss_config():
  with pytest.raises(ValueError, match="aggregation"):
    L.PolicyLossConfig(aggregation="sum")
  with pytest.raises(ValueError, match="ratio_level"):
    L.PolicyLossConfig(ratio_level="word")


def test_group_advantages_hand_computed():
  r = jnp.asarray([1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0])
  a = np.asarray(A.group_advantages(r, 4, "group_std", eps=1e-4))
  s = np.std([1, 0, 0, 1], ddof=1)
  np.testing.assert_allclose(a[:4], np.array([0.5, -0.5, -0.5, 0.5]) / (s + 1e-4), rtol=1e-6)
  np.testing.assert_allclose(a[4:], 0.0)
  np.testing.assert_allclose(np.asarray(A.group_advantages(r, 4, "mean_only")),
                             [0.5, -0.5, -0.5, 0.5, 0, 0, 0, 0])
  b = np.asarray(A.group_advantages(r, 4, "batch_std", eps=0.0))
  np.testing.assert_allclose(b[:4], np.array([0.5, -0.5, -0.5, 0.5]) / np.std(np.asarray(r), ddof=1),
                             rtol=1e-6)
  np.testing.assert_array_equal(np.asarray(A.zero_std_groups(r, 4)), [False, True])
  np.testing.assert_allclose(np.asarray(A.group_reward_std(r, 4)), [0.5, 0.0])
  with pytest.raises(ValueError, match="groups of 3"):
    A.group_advantages(r, 3)
