"""The JAX sequence ratio equals difflib's, exactly."""

import difflib

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given, settings, strategies as st

from jaxrl_post.rewards import CharTable, StepSimilarityReward, sequence_ratio
from jaxrl_post.rewards.chars import encode_strings
from jaxrl_post.tokenizers import CharTokenizer

_ratio = jax.jit(sequence_ratio)
W = 64


def _difflib(a, b):
  return difflib.SequenceMatcher(None, list(a), list(b), autojunk=False).ratio()


def _check(a_rows, b_rows):
  a = np.zeros((len(a_rows), W), np.int32)
  b = np.zeros((len(b_rows), W), np.int32)
  la = np.array([len(r) for r in a_rows], np.int32)
  lb = np.array([len(r) for r in b_rows], np.int32)
  for i, (x, y) in enumerate(zip(a_rows, b_rows)):
    a[i, :len(x)] = x
    b[i, :len(y)] = y
  got = np.asarray(_ratio(jnp.asarray(a), jnp.asarray(la), jnp.asarray(b), jnp.asarray(lb)))
  want = np.array([_difflib(x, y) for x, y in zip(a_rows, b_rows)])
  np.testing.assert_allclose(got, want, atol=1e-6)


def test_ten_thousand_random_pairs():
  rng = np.random.default_rng(0)
  total = 0
  for alphabet in (2, 4, 30, 500):
    for _ in range(5):
      n = 512
      a_rows, b_rows = [], []
      for i in range(n):
        la, lb = rng.integers(0, W + 1, 2)
        x = list(rng.integers(0, alphabet, la))
        y = list(rng.integers(0, alphabet, lb))
        if i % 8 == 0:  # long repeats
          x = [1] * la
          y = [1] * (lb // 2) + y[lb // 2:]
        if i % 13 == 0:  # an empty side
          y = []
        a_rows.append(x)
        b_rows.append(y)
      _check(a_rows, b_rows)
      total += n
  assert total >= 10_000


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.integers(0, 5), max_size=W), min_size=8, max_size=8),
       st.lists(st.lists(st.integers(0, 5), max_size=W), min_size=8, max_size=8))
def test_property_equals_difflib(a_rows, b_rows):
  _check(a_rows, b_rows)


def test_both_empty_is_one_and_symmetry_of_identity():
  _check([[], [1, 2, 3]], [[], [1, 2, 3]])


def test_step_reward_with_char_tokens_equals_difflib_on_strings():
  tok = CharTokenizer()
  table = CharTable.from_tokenizer(tok)
  expert = ["12*2=24", "Answer: 3*8", "10-8=2"]
  outputs = ["<think>x</think>12*2=24", "<think>hm</think>Answer: 8*3", "no think 10-8=2"]
  exp, ln = encode_strings(expert, 32)
  reward = StepSimilarityReward(expert=jnp.asarray(exp), expert_len=jnp.asarray(ln), table=table,
                                max_action=32)
  toks = [tok.encode(o) for o in outputs]
  t = np.zeros((3, 40), np.int32)
  m = np.zeros((3, 40), bool)
  for i, x in enumerate(toks):
    t[i, :len(x)] = x
    m[i, :len(x)] = True
  r, aux = jax.jit(lambda rw, a, b: rw(a, b))(reward, jnp.asarray(t), jnp.asarray(m))
  r = np.asarray(r)
  assert r[0] == 1.0
  np.testing.assert_allclose(r[1], difflib.SequenceMatcher(None, "Answer: 8*3", "Answer: 3*8",
                                                           autojunk=False).ratio(), atol=1e-6)
  assert r[2] == -1.0  # format failure
