"""JAX verifiers agree with the host verifiers; malformed output never breaks them."""

import random

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given, settings, strategies as st

from jaxrl_post import rewards as R
from jaxrl_post.tasks import countdown, gp24, gsm8k, solver
from jaxrl_post.tokenizers import CharTokenizer

TOK = CharTokenizer()
TABLE = R.CharTable.from_tokenizer(TOK)
T = 96


def _batch(texts):
  t = np.zeros((len(texts), T), np.int32)
  m = np.zeros((len(texts), T), bool)
  for i, s in enumerate(texts):
    ids = TOK.encode(s)[:T]
    t[i, :len(ids)] = ids
    m[i, :len(ids)] = True
  return jnp.asarray(t), jnp.asarray(m)


@jax.jit
def _call(reward, tokens, mask):
  return reward(tokens, mask)


def _gp24_cases(n_hands=40, seed=0):
  rng = random.Random(seed)
  hands, texts = [], []
  alphabet = "0123456789+-*/() "
  ms = gp24.solvable_multisets("id")
  for h in range(n_hands):
    hand = ms[rng.randrange(len(ms))]
    sols = solver.solve(hand)
    for f, _, _ in sols[:6]:
      texts.append(f"1+1=2\nAnswer: {f}")
      # perturbations: swap a digit, drop a paren, add a term, garbage
      texts.append(f"Answer: {f.replace(str(hand[0]), str(hand[0] % 9 + 1), 1)}")
      texts.append(f"Answer: {f.replace('(', '', 1)}")
      texts.append(f"Answer: {f}+0")
      texts.append(f"Answer: {f}\nAnswer: {f}*1")
    for _ in range(12):
      texts.append("Answer: " + "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 20))))
    texts.append("no answer here")
    texts.append(f"Answer:{sols[0][0]} ")
    hands.extend([hand] * (len(texts) - len(hands)))
  return hands, texts


def test_gp24_binary_and_levels_agree_with_host():
  hands, texts = _gp24_cases()
  assert len(texts) > 1000
  tokens, mask = _batch(texts)
  values = jnp.asarray(np.array(hands, np.int32))
  binary, aux = _call(R.Gp24Reward(values=values, table=TABLE), tokens, mask)
  levels, _ = _call(R.Gp24Reward(values=values, table=TABLE, levels=True), tokens, mask)
  want = np.array([gp24.verify_values(h, s) for h, s in zip(hands, texts)], np.float32)
  np.testing.assert_array_equal(np.asarray(binary), want)
  want_levels = np.array([gp24.score_levels(h, s) for h, s in zip(hands, texts)])
  want_levels = np.where(want_levels == 1.0, -3.0, want_levels)  # partial-prefix is host-only
  np.testing.assert_array_equal(np.asarray(levels), want_levels)
  assert want.sum() > 200 and (want == 0).sum() > 200


def test_countdown_agrees_with_host():
  ex = countdown.CountdownTask().examples("train", 60, seed=1)
  texts, nums, tgts = [], [], []
  rng = random.Random(0)
  for e in ex:
    for s in (e.completion, e.completion + "+1", f"Answer: {e.meta['numbers'][0]}",
              "Answer: " + "".join(rng.choice("0123456789+-*/()") for _ in range(9))):
      texts.append(s)
      nums.append(e.meta["numbers"])
      tgts.append(e.meta["target"])
  tokens, mask = _batch(texts)
  reward = R.CountdownReward(numbers=jnp.asarray(np.array(nums, np.int32)),
                             target=jnp.asarray(np.array(tgts, np.int32)), table=TABLE)
  got, _ = _call(reward, tokens, mask)
  want = [countdown.verify_numbers(n, t, s) for n, t, s in zip(nums, tgts, texts)]
  np.testing.assert_array_equal(np.asarray(got), np.array(want, np.float32))


def test_gsm8k_agrees_with_host():
  data = gsm8k.load("test")[:40]
  texts, answers = [], []
  for e in data:
    for s in (e.completion, f"#### {e.answer}0", f"x\n#### {e.answer} apples", "####", "no"):
      texts.append(s[-T:])
      answers.append(e.meta["answer"])
  tokens, mask = _batch(texts)
  reward = R.gsm8k_reward([type("E", (), {"meta": {"answer": a}})() for a in answers], TABLE)
  got, _ = _call(reward, tokens, mask)
  want = [gsm8k.parse_final(s) == a for s, a in zip(texts, answers)]
  np.testing.assert_array_equal(np.asarray(got), np.array(want, np.float32))
  # A completion width below the reference width (a short max_new_tokens) still works.
  short = R.gsm8k_reward([type("E", (), {"meta": {"answer": "18"}})()] * 2, TABLE, width=8)
  got, _ = _call(short, *_batch(["#### 18", "#### 19"]))
  np.testing.assert_array_equal(np.asarray(got), [1.0, 0.0])


@settings(max_examples=40, deadline=None)
@given(st.lists(st.lists(st.integers(0, TOK.vocab_size - 1), max_size=T), min_size=4, max_size=4))
def test_random_tokens_never_raise_or_nan(rows):
  t = np.zeros((4, T), np.int32)
  m = np.zeros((4, T), bool)
  for i, r in enumerate(rows):
    t[i, :len(r)] = r
    m[i, :len(r)] = True
  values = jnp.asarray(np.array([[1, 2, 3, 4]] * 4, np.int32))
  for reward in (R.Gp24Reward(values=values, table=TABLE, levels=True),
                 R.CalibrationReward(verifier=R.Gp24Reward(values=values, table=TABLE), table=TABLE),
                 R.FormatReward(table=TABLE, kind="think")):
    r, _ = _call(reward, jnp.asarray(t), jnp.asarray(m))
    assert np.isfinite(np.asarray(r)).all()


def test_weighted_sum_jit_and_vmap_over_groups():
  texts = ["Answer: 1*2*3*4", "Answer: 1+2+3+4", "junk", "Answer: (1+2+3)*4"]
  tokens, mask = _batch(texts)
  values = jnp.asarray(np.array([[1, 2, 3, 4]] * 4, np.int32))
  total = R.weighted_sum(correct=(R.Gp24Reward(values=values, table=TABLE), 2.0),
                         fmt=(R.FormatReward(table=TABLE, kind="answer", penalty=-1.0), 0.5))
  r, aux = _call(total, tokens, mask)
  np.testing.assert_allclose(np.asarray(r), [2.5, 0.5, -0.5, 2.5])
  assert set(aux) >= {"reward/correct", "reward/fmt"}
  # vmap over a group axis: [2 groups, 2 samples]
  grouped = jax.tree.map(lambda x: x.reshape(2, 2, *x.shape[1:]), total)
  rg, _ = jax.vmap(lambda rw, t, m: rw(t, m))(grouped, tokens.reshape(2, 2, -1), mask.reshape(2, 2, -1))
  np.testing.assert_allclose(np.asarray(rg).reshape(-1), np.asarray(r))


class _LongPieceTokenizer:
  """The char tokenizer plus one token whose text is 10 characters (as BPE
  tokens can be): a completion of N tokens holds up to 10 N characters."""

  vocab_size = TOK.vocab_size + 1
  long_id = TOK.vocab_size

  def piece_text(self, i):
    return "blah blah " if i == self.long_id else TOK.piece_text(i)


def test_completion_width_holds_any_completion_whole():
  assert R.completion_width(TABLE, 64) == 64  # one character per char token
  long_table = R.CharTable.from_tokenizer(_LongPieceTokenizer())
  assert R.completion_width(long_table, 64) == 640
  assert R.completion_width(long_table, 64, cap=300) == 300  # capped (and logged)


def test_rl_rewards_read_the_whole_completion_of_long_tokens():
  """Regression: the task rewards read a fixed 256 characters, so an answer
  after 256 characters of long tokens scored 0 although the host says 1."""
  from types import SimpleNamespace

  from jaxrl_post.trainers.rl_data import task_reward_builder
  tok = _LongPieceTokenizer()
  table = R.CharTable.from_tokenizer(tok)
  ids = [tok.long_id] * 40 + TOK.encode("\nAnswer: (1+2+3)*4\nConfidence: 0.9")
  text = "".join(tok.piece_text(i) for i in ids)
  assert len(text) > 256 and gp24.verify_values((1, 2, 3, 4), text)
  example = SimpleNamespace(meta={"values": (1, 2, 3, 4)})
  tokens, mask = jnp.asarray([ids], jnp.int32), jnp.ones((1, len(ids)), bool)
  for kind, want in (("binary", 1.0), ("rlcr", 1.0 - 0.1 ** 2)):
    ctx = SimpleNamespace(hp=SimpleNamespace(task="gp24", rl=SimpleNamespace(
        reward=kind, max_new_tokens=len(ids), overlong_buffer=0)))
    r, _ = _call(task_reward_builder(ctx, table)([example]), tokens, mask)
    np.testing.assert_allclose(np.asarray(r), [want], rtol=1e-6)
