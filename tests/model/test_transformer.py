"""Model tests: shapes, axis names, KV-cache consistency, padding, presets."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrl_post import model as M
from jaxrl_post.testing import nano_config


@pytest.fixture(scope="module")
def nano():
  cfg = nano_config()
  return cfg, M.init_params(cfg, jax.random.key(0))


def test_param_count_matches_formula_and_bench_shape():
  cfg = M.get_preset("tiny")
  params = M.abstract_params(cfg)
  assert sum(np.prod(x.shape) for x in jax.tree.leaves(params)) == cfg.num_params()
  assert cfg.num_params() == 3_035_392  # DESIGN.md section 3, the bench shape.


def test_every_param_has_logical_axes_of_its_rank(nano):
  cfg, params = nano
  axes = M.param_logical_axes(cfg)
  flat_p = jax.tree_util.tree_leaves_with_path(params)
  flat_a = dict(jax.tree_util.tree_leaves_with_path(
      axes, is_leaf=lambda x: isinstance(x, tuple)))
  for path, leaf in flat_p:
    assert len(flat_a[path]) == leaf.ndim, path


@pytest.mark.parametrize("name", sorted(M.PRESETS))
def test_presets_are_consistent(name):
  cfg = M.get_preset(name)
  assert cfg.num_heads % cfg.num_kv_heads == 0
  abstract = M.abstract_params(cfg)
  assert abstract["layers"]["q"].shape == (
      cfg.num_layers, cfg.hidden_size, cfg.num_heads, cfg.head_dim)


def test_known_real_model_sizes():
  # Parameter counts of the real checkpoints these presets mirror.
  assert M.get_preset("smollm2-135m").num_params() == 134_515_008
  assert M.get_preset("qwen2.5-0.5b").num_params() == 494_032_768
  assert M.get_preset("llama-3.2-1b").num_params() == 1_235_814_400


def test_bad_config_fails_clearly():
  with pytest.raises(ValueError, match="num_kv_heads"):
    nano_config(num_heads=3)
  with pytest.raises(ValueError, match="unknown model preset"):
    M.get_preset("gpt5")
  with pytest.raises(ValueError, match="hidden_size"):
    nano_config(hidden_size=0)


def test_incremental_cache_decoding_matches_full_forward(nano):
  cfg, params = nano
  b, t = 3, 12
  tokens = jax.random.randint(jax.random.key(1), (b, t), 0, cfg.vocab_size)
  pos = jnp.broadcast_to(jnp.arange(t), (b, t))
  full, _ = M.forward(params, cfg, tokens, pos)
  cache = M.init_cache(cfg, b, 16)
  out, cache = M.forward(params, cfg, tokens[:, :5], pos[:, :5], cache=cache)
  outs = [out]
  for i in range(5, t):
    out, cache = M.forward(params, cfg, tokens[:, i:i + 1], pos[:, i:i + 1],
                           cache=cache, cache_index=i)
    outs.append(out)
  np.testing.assert_allclose(jnp.concatenate(outs, 1), full, atol=2e-5)


def test_left_and_right_padding_do_not_change_logits(nano):
  cfg, params = nano
  seq = jnp.array([[5, 9, 3, 7, 11]])
  ref, _ = M.forward(params, cfg, seq, jnp.arange(5)[None])
  # Left padding with explicit positions, through the cache path.
  left = jnp.concatenate([jnp.zeros((1, 3), jnp.int32), seq], 1)
  seg = jnp.array([[0, 0, 0, 1, 1, 1, 1, 1]])
  pos = jnp.maximum(jnp.cumsum(seg, 1) - 1, 0)
  cache = M.init_cache(cfg, 1, 8)
  out, _ = M.forward(params, cfg, left, pos, segment_ids=seg, cache=cache)
  np.testing.assert_allclose(out[:, 3:], ref, atol=2e-5)
  # Right padding through the full-sequence path.
  right = jnp.concatenate([seq, jnp.zeros((1, 3), jnp.int32)], 1)
  seg_r = jnp.array([[1, 1, 1, 1, 1, 0, 0, 0]])
  out_r, _ = M.forward(params, cfg, right, jnp.arange(8)[None], segment_ids=seg_r)
  np.testing.assert_allclose(out_r[:, :5], ref, atol=2e-5)


def test_packed_segments_equal_separate_sequences(nano):
  cfg, params = nano
  a = jnp.array([[4, 8, 15]])
  b = jnp.array([[16, 23, 42, 7]])
  ra, _ = M.forward(params, cfg, a, jnp.arange(3)[None])
  rb, _ = M.forward(params, cfg, b, jnp.arange(4)[None])
  packed = jnp.concatenate([a, b], 1)
  pos = jnp.array([[0, 1, 2, 0, 1, 2, 3]])
  seg = jnp.array([[1, 1, 1, 2, 2, 2, 2]])
  out, _ = M.forward(params, cfg, packed, pos, segment_ids=seg)
  np.testing.assert_allclose(out[:, :3], ra, atol=2e-5)
  np.testing.assert_allclose(out[:, 3:], rb, atol=2e-5)


def test_matches_independent_numpy_reference(nano):
  """A from-scratch NumPy transcription of the Llama/Qwen2 equations."""
  cfg, params = nano
  p = jax.tree.map(np.asarray, params)
  tokens = np.array([3, 1, 4, 1, 5, 9])
  t = len(tokens)

  def rms(x, w):
    return w * x / np.sqrt((x * x).mean(-1, keepdims=True) + cfg.rms_norm_eps)

  inv = 1.0 / cfg.rope_theta ** (np.arange(0, cfg.head_dim, 2) / cfg.head_dim)
  ang = np.arange(t)[:, None] * inv[None]
  cos, sin = np.cos(np.concatenate([ang, ang], -1)), np.sin(np.concatenate([ang, ang], -1))

  def rope(x):  # [T, N, Dh]
    h = x.shape[-1] // 2
    rot = np.concatenate([-x[..., h:], x[..., :h]], -1)
    return x * cos[:, None] + rot * sin[:, None]

  x = p["embed"][tokens]
  lp = p["layers"]
  for l in range(cfg.num_layers):
    h = rms(x, lp["attn_norm"][l])
    q = rope(np.einsum("td,dhk->thk", h, lp["q"][l]) + lp["q_bias"][l])
    k = rope(np.einsum("td,dhk->thk", h, lp["k"][l]) + lp["k_bias"][l])
    v = np.einsum("td,dhk->thk", h, lp["v"][l]) + lp["v_bias"][l]
    k = np.repeat(k, cfg.num_groups, axis=1)
    v = np.repeat(v, cfg.num_groups, axis=1)
    s = np.einsum("qhk,shk->hqs", q, k) / np.sqrt(cfg.head_dim)
    s = np.where(np.tril(np.ones((t, t), bool))[None], s, -np.inf)
    a = np.exp(s - s.max(-1, keepdims=True))
    a /= a.sum(-1, keepdims=True)
    o = np.einsum("hqs,shk->qhk", a, v)
    x = x + np.einsum("thk,hkd->td", o, lp["o"][l])
    h = rms(x, lp["mlp_norm"][l])
    g = h @ lp["gate"][l]
    x = x + ((g / (1 + np.exp(-g))) * (h @ lp["up"][l])) @ lp["down"][l]
  ref = rms(x, p["final_norm"]) @ p["embed"].T
  out, _ = M.forward(params, cfg, jnp.asarray(tokens)[None], jnp.arange(t)[None])
  np.testing.assert_allclose(out[0], ref, atol=1e-5)


def test_nnx_module_call_equals_pure_forward(nano):
  cfg, params = nano
  from flax import nnx
  module = M.Transformer(cfg, rngs=nnx.Rngs(params=jax.random.key(0)))
  tokens = jnp.array([[1, 2, 3]])
  pos = jnp.arange(3)[None]
  a, _ = module(tokens, pos)
  b, _ = M.forward(params, cfg, tokens, pos)
  np.testing.assert_allclose(a, b, atol=1e-6)


def test_bfloat16_params_run_and_stay_close(nano):
  cfg, params = nano
  cfg16 = cfg.replace(param_dtype="bfloat16", dtype="bfloat16")
  p16 = jax.tree.map(lambda x: x.astype(jnp.bfloat16), params)
  tokens = jnp.array([[1, 2, 3, 4]])
  pos = jnp.arange(4)[None]
  a, _ = M.forward(params, cfg, tokens, pos)
  b, _ = M.forward(p16, cfg16, tokens, pos)
  assert b.dtype == jnp.float32
  np.testing.assert_allclose(a, b, atol=5e-2)


def test_causal_chunked_attention_equals_full_attention_and_its_gradient():
  """`_attend_causal` skips the all-masked key blocks; numbers and gradients
  must equal the dense `_attend` (packed segments included)."""
  from jaxrl_post.model import transformer as T
  cfg = nano_config()
  b, t = 2, 48
  ks = jax.random.split(jax.random.key(3), 3)
  q = jax.random.normal(ks[0], (b, t, cfg.num_heads, cfg.head_dim))
  k = jax.random.normal(ks[1], (b, cfg.num_kv_heads, t, cfg.head_dim))
  v = jax.random.normal(ks[2], (b, cfg.num_kv_heads, cfg.head_dim, t))
  seg = jnp.array([[1] * 20 + [2] * 20 + [0] * 8, [1] * 48])
  mask = T._self_mask(seg)
  attend = jax.jit(T._attend, static_argnums=4)
  causal = jax.jit(T._attend_causal, static_argnums=4, static_argnames="chunk")
  dense = attend(q, k, v, mask, cfg)
  for chunk in (8, 16, 48, 64):  # several chunks, one chunk, chunk > T
    np.testing.assert_allclose(causal(q, k, v, mask, cfg, chunk=chunk), dense, atol=1e-5)

  def grads(fn):
    loss = lambda q, k, v: jnp.sum(jnp.sin(fn(q, k, v, mask, cfg)))
    return jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(q, k, v)

  g_dense = grads(T._attend)
  g_chunk = grads(lambda *x: T._attend_causal(*x, chunk=16))
  for a, c in zip(g_dense, g_chunk):
    np.testing.assert_allclose(c, a, atol=1e-5)


def test_long_forward_takes_the_chunked_path_and_matches_the_cache_path(nano):
  # T = 128 > the 64-token query chunk: the training forward is chunked, the
  # cached forward is not; both must give the same logits.
  cfg, params = nano
  b, t = 2, cfg.max_seq_len
  tokens = jax.random.randint(jax.random.key(4), (b, t), 0, cfg.vocab_size)
  pos = jnp.broadcast_to(jnp.arange(t), (b, t))
  full, _ = M.forward(params, cfg, tokens, pos)
  cached, _ = M.forward(params, cfg, tokens, pos, cache=M.init_cache(cfg, b, t))
  np.testing.assert_allclose(full, cached, atol=2e-5)


def test_rope_table_lookup_is_bitwise_the_direct_angles_and_nan_outside():
  """`max_position` reads cos/sin from one table: the same float32 numbers as
  computing them per position (Llama-3 scaling included); a position outside
  the table reads NaN instead of a clamped angle."""
  for cfg in (nano_config(), M.get_preset("llama-3.2-1b")):
    pos = jnp.asarray([[0, 1, 5, 17], [63, 2, 2, 40]], jnp.int32)
    direct = M.transformer.rope_tables(cfg, pos)
    table = M.transformer.rope_tables(cfg, pos, max_position=64)
    for a, b in zip(direct, table):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  cos, sin = M.transformer.rope_tables(nano_config(), jnp.asarray([3, 64, -1]), max_position=64)
  assert np.isfinite(np.asarray(cos[0])).all()
  assert np.isnan(np.asarray(cos[1:])).all() and np.isnan(np.asarray(sin[1:])).all()


def test_forward_with_a_position_bound_equals_forward_without(nano):
  cfg, params = nano
  tokens = jax.random.randint(jax.random.key(3), (2, 12), 0, cfg.vocab_size)
  seg = jnp.asarray([[0, 0, 0] + [1] * 9, [1] * 5 + [2] * 7])
  pos = jnp.asarray([[0, 0, 0, *range(9)], [*range(5), *range(7)]])
  ref, _ = M.forward(params, cfg, tokens, pos, segment_ids=seg)
  out, _ = M.forward(params, cfg, tokens, pos, segment_ids=seg, max_position=12)
  np.testing.assert_array_equal(np.asarray(out), np.asarray(ref))
  # The cached path too (a prefill).
  ref_c, _ = M.forward(params, cfg, tokens, pos, segment_ids=seg, cache=M.init_cache(cfg, 2, 16))
  out_c, _ = M.forward(params, cfg, tokens, pos, segment_ids=seg, cache=M.init_cache(cfg, 2, 16),
                       max_position=12)
  np.testing.assert_array_equal(np.asarray(out_c), np.asarray(ref_c))
