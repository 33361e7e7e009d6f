"""Overlong penalty, RLCR calibration reward, confidence parsing, host reward."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrl_post import evaluation
from jaxrl_post import rewards as R
from jaxrl_post.rewards.chars import encode_strings
from jaxrl_post.rewards.shaping import parse_confidence
from jaxrl_post.tokenizers import CharTokenizer

TOK = CharTokenizer()
TABLE = R.CharTable.from_tokenizer(TOK)


def _batch(texts, width=64):
  t = np.zeros((len(texts), width), np.int32)
  m = np.zeros((len(texts), width), bool)
  for i, s in enumerate(texts):
    ids = TOK.encode(s)
    t[i, :len(ids)] = ids
    m[i, :len(ids)] = True
  return jnp.asarray(t), jnp.asarray(m)


def test_overlong_penalty_formula():
  mask = jnp.asarray(np.arange(20)[None, :] < np.array([[8], [12], [14], [20]]))
  r, _ = R.OverlongPenalty(max_len=16, cache=6)(jnp.zeros((4, 20), jnp.int32), mask)
  # L <= 10: 0; 10 < L <= 16: (10 - L) / 6; L > 16: -1
  np.testing.assert_allclose(np.asarray(r), [0.0, -2 / 6, -4 / 6, -1.0], atol=1e-6)


@pytest.mark.parametrize("text,q", [("Confidence: 0.75", 0.75), ("Confidence:1", 1.0),
                                     ("Confidence: .5", 0.5), ("Confidence: 0", 0.0),
                                     ("Confidence: 1.5", None), ("Confidence: 0.5.1", None),
                                     ("Confidence: ", None), ("nothing", None),
                                     ("Confidence: 0.2\nConfidence: 0.9", 0.9),
                                     # 12 characters after the prefix at most, never cut:
                                     ("Confidence: 0.123456789", 0.123456789),
                                     ("Confidence: 0.1234567890123", None),
                                     ("Confidence:           .5", None)])
def test_parse_confidence(text, q):
  chars, n = encode_strings([text], 40)
  got, valid = jax.jit(parse_confidence)(jnp.asarray(chars[0]), jnp.asarray(n[0]))
  assert bool(valid) == (q is not None)
  if q is not None:
    assert abs(float(got) - q) < 1e-6
    assert abs(evaluation.parse_confidence(text) - q) < 1e-6


def test_rlcr_reward_is_correct_minus_brier():
  texts = ["Answer: 1*2*3*4\nConfidence: 0.8", "Answer: 1+2+3+4\nConfidence: 0.8",
           "Answer: 1*2*3*4", "Answer: 1+2+3+4\nConfidence: 0.1"]
  tokens, mask = _batch(texts)
  values = jnp.asarray(np.array([[1, 2, 3, 4]] * 4, np.int32))
  reward = R.CalibrationReward(verifier=R.Gp24Reward(values=values, table=TABLE), table=TABLE)
  r, aux = reward(tokens, mask)
  np.testing.assert_allclose(np.asarray(r), [1 - 0.04, -0.64, -1.0, -0.01], atol=1e-6)


def test_host_reward_contract():
  hr = R.HostReward(lambda texts, ex: [float(len(t)) for t in texts], TOK)
  tokens, mask = _batch(["ab", "abc"])
  np.testing.assert_array_equal(hr(tokens, mask, [None, None]), [2.0, 3.0])
  bad = R.HostReward(lambda texts, ex: [1.0], TOK)
  with pytest.raises(ValueError, match="shape"):
    bad(tokens, mask, [None, None])
