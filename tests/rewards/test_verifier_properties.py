"""Property tests: every JAX text reward equals its host reference on random
and generated strings, and never raises or yields NaN on random tokens.

The verifiers' `score(chars, n, ...)` methods run on code points, so the
strings here are not limited to one tokenizer's alphabet (tabs, carriage
returns, non-ASCII characters); the `__call__` path (token ids -> characters)
is covered by tests/rewards/test_verifiers.py and by the random-token test
below.
"""

import functools
import random
import re

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import HealthCheck, given, settings, strategies as st

from jaxrl_post import rewards as R
from jaxrl_post.rewards.chars import encode_strings
from jaxrl_post.rewards.shaping import parse_confidence
from jaxrl_post.tasks import countdown, gp24, gsm8k, solver
from jaxrl_post.tasks.base import FormulaError, evaluate_formula
from jaxrl_post.tokenizers import CharTokenizer

TOK = CharTokenizer()
TABLE = R.CharTable.from_tokenizer(TOK)
WIDTH = 256  # the verifiers' default character width
HANDS = gp24.solvable_multisets("id") + gp24.solvable_multisets("ood")
PROPS = settings(max_examples=60, deadline=None,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# ---------------------------------------------------------------------------
# Generators.
# ---------------------------------------------------------------------------


def random_formula(rng: random.Random, numbers) -> str:
  """A random infix formula over `numbers` (each used once, in a random
  order and tree), with random parentheses and spaces."""
  items = [str(x) for x in numbers]
  rng.shuffle(items)
  while len(items) > 1:
    i = rng.randrange(len(items) - 1)
    op = rng.choice("+-*/")
    a, b = items[i], items[i + 1]
    if rng.random() < 0.6:
      a = f"({a})" if rng.random() < 0.2 else a
      b = f"({b})" if len(b) > 2 or rng.random() < 0.2 else b
    sp = " " if rng.random() < 0.2 else ""
    expr = f"{a}{sp}{op}{sp}{b}"
    items[i:i + 2] = [f"({expr})" if rng.random() < 0.7 else expr]
  return items[0]


def _host_value(formula: str):
  """The formula's exact value on the host (None if illegal)."""
  try:
    return evaluate_formula(formula)[0]
  except FormulaError:
    return None


def mutate(rng: random.Random, text: str) -> str:
  """1-3 random edits: drop or duplicate a character, or insert a fragment."""
  frags = ["(", ")", "+", "-", "*", "/", " ", "0", "13", "24", "\n", "\t", "\r", "Answer:",
           "Answer: ", "é", "1/0", "()", "9999"]
  for _ in range(rng.randint(1, 3)):
    i = rng.randrange(len(text) + 1)
    u = rng.random()
    if u < 0.3 and text:
      text = text[:i] + text[i + 1:]
    elif u < 0.5 and text:
      j = min(i, len(text) - 1)
      text = text[:j] + text[j] + text[j:]
    else:
      text = text[:i] + rng.choice(frags) + text[i:]
  return text


FORMULA_PIECES = st.sampled_from(list("0123456789+-*/() ") + ["10", "11", "12", "13", "24",
                                 "\n", "\t", "\r", "Answer:", "Answer: ", "x", "é", "1/0"])
formula_text = st.lists(FORMULA_PIECES, max_size=40).map("".join)


_SCORERS = {}


def _pad8(texts, *columns):
  """Rows padded to a multiple of 8 (repeating the last row), so that
  hypothesis' examples share a few compiled shapes."""
  pad = -len(texts) % 8
  texts = list(texts) + [texts[-1]] * pad
  columns = [np.concatenate([np.asarray(c), np.repeat(np.asarray(c)[-1:], pad, 0)])
             for c in columns]
  chars, n = encode_strings(texts, WIDTH)
  return pad, jnp.asarray(chars), jnp.asarray(n), [jnp.asarray(c) for c in columns]


def _score(reward, texts, *columns):
  """reward.score vmapped over strings (code points) with per-row `columns`,
  jitted once per reward settings (the pytree structure with its static
  fields; `score` reads its data from `columns`, not from the reward)."""
  leaves, treedef = jax.tree.flatten(reward)
  if treedef not in _SCORERS:
    settings_only = treedef.unflatten(leaves)
    _SCORERS[treedef] = jax.jit(lambda c, n, *cols: jax.vmap(settings_only.score)(c, n, *cols))
  pad, chars, n, columns = _pad8(texts, *columns)
  out = _SCORERS[treedef](chars, n, *columns)
  return jax.tree.map(lambda x: x[:x.shape[0] - pad], out)


# ---------------------------------------------------------------------------
# gp24.
# ---------------------------------------------------------------------------


def _gp24_host_levels(hand, text):
  level = gp24.score_levels(hand, text)
  return -3.0 if level == 1.0 else level  # the +1 partial-prefix level is host-only


def _check_gp24(hands, texts):
  values = np.array(hands, np.int32)
  binary = R.Gp24Reward(values=values, table=TABLE)
  levels = R.Gp24Reward(values=values, table=TABLE, levels=True)
  got_b, _ = _score(binary, texts, values)
  got_l, _ = _score(levels, texts, values)
  want_b = np.array([gp24.verify_values(h, s) for h, s in zip(hands, texts)], np.float32)
  want_l = np.array([_gp24_host_levels(h, s) for h, s in zip(hands, texts)], np.float32)
  bad = np.flatnonzero((np.asarray(got_b) != want_b) | (np.asarray(got_l) != want_l))
  assert not bad.size, [(hands[i], texts[i], float(got_b[i]), want_b[i], float(got_l[i]),
                         want_l[i]) for i in bad[:5]]
  return want_b


def test_gp24_agrees_with_host_on_thousands_of_generated_formulas():
  rng = random.Random(0)
  hands, texts = [], []
  for _ in range(500):
    hand = rng.choice(HANDS)
    f = random_formula(rng, hand)
    sol = rng.choice(solver.solve(tuple(sorted(hand))))[0]
    long = f"Answer: {'(' * 45}{sol}{')' * 45}"  # legal, but over MAX_FORMULA_CHARS
    for text in (f"Answer: {f}", f"step\nAnswer: {mutate(rng, f)}", mutate(rng, f"Answer: {f}"),
                 f"Answer: {sol}", f"Answer:\t{sol} \r", mutate(rng, f"Answer: {sol}"),
                 long[:rng.randint(len(long) - 12, len(long))]):
      hands.append(hand)
      texts.append(text)
  want = _check_gp24(hands, texts)
  assert len(texts) >= 3500 and want.sum() > 1000 and (want == 0).sum() > 1000


@PROPS
@given(st.sampled_from(HANDS), st.lists(formula_text, min_size=1, max_size=8))
def test_gp24_agrees_with_host_on_random_text(hand, bodies):
  texts = [f"Answer: {b}" if i % 2 else b for i, b in enumerate(bodies)]
  _check_gp24([hand] * len(texts), texts)


# ---------------------------------------------------------------------------
# countdown.
# ---------------------------------------------------------------------------


def _check_countdown(numbers, targets, texts):
  nums = np.full((len(texts), 4), -1, np.int32)
  for i, ns in enumerate(numbers):
    nums[i, :len(ns)] = ns
  reward = R.CountdownReward(numbers=nums, target=np.asarray(targets, np.int32), table=TABLE)
  got = np.asarray(_score(reward, texts, nums, np.asarray(targets, np.int32)))
  want = np.array([countdown.verify_numbers(n, t, s)
                   for n, t, s in zip(numbers, targets, texts)], bool)
  bad = np.flatnonzero(got != want)
  assert not bad.size, [(numbers[i], targets[i], texts[i], bool(got[i])) for i in bad[:5]]
  return want


def test_countdown_agrees_with_host_on_thousands_of_generated_formulas():
  rng = random.Random(1)
  examples = countdown.CountdownTask().examples("train", 300, seed=3)
  numbers, targets, texts = [], [], []
  for e in examples:
    ns = list(e.meta["numbers"])
    subset = rng.sample(ns, rng.randint(1, len(ns)))
    f = random_formula(rng, subset)
    v = _host_value(f)
    # The formula's own value as the target when it is a whole number: a positive case.
    target = int(v) if v is not None and v.denominator == 1 and rng.random() < 0.7 else (
        e.meta["target"])
    for text in (f"Answer: {f}", e.completion, f"Answer: {mutate(rng, f)}",
                 f"Answer: {f}+{ns[0]}", mutate(rng, e.completion), f"Answer: {f}\n"):
      numbers.append(ns)
      targets.append(target)
      texts.append(text[-WIDTH:])
  want = _check_countdown(numbers, targets, texts)
  assert len(texts) >= 1800 and want.sum() > 400 and (~want).sum() > 400


@PROPS
@given(st.lists(st.integers(1, 100), min_size=1, max_size=4), st.integers(-50, 1000),
       st.lists(formula_text, min_size=1, max_size=8))
def test_countdown_agrees_with_host_on_random_text(ns, target, bodies):
  texts = [f"Answer: {b}" for b in bodies]
  _check_countdown([ns] * len(texts), [target] * len(texts), texts)


# ---------------------------------------------------------------------------
# gsm8k.
# ---------------------------------------------------------------------------


def _check_gsm8k(answers, texts):
  reward = R.gsm8k_reward([type("E", (), {"meta": {"answer": a}})() for a in answers], TABLE)
  got = np.asarray(_score(reward, texts, reward.answer, reward.answer_len))
  want = np.array([gsm8k.parse_final(s) == a for s, a in zip(texts, answers)], bool)
  bad = np.flatnonzero(got != want)
  assert not bad.size, [(answers[i], texts[i], bool(got[i])) for i in bad[:5]]
  return want


def test_gsm8k_agrees_with_host_on_thousands_of_completions():
  rng = random.Random(2)
  data = gsm8k.load("train")[:400]
  answers, texts = [], []
  for e in data:
    a = e.meta["answer"]
    with_commas = f"{int(a):,}" if re.fullmatch(r"-?\d+", a) else a
    variants = (e.completion, f"#### {with_commas}", f"x\n####{a}.", f"#### {a} dollars",
                f"#### {a}\n#### {a}1", mutate(rng, f"so\n#### {a}"), f"####  -{a}",
                f"####{' ' * rng.randint(20, 80)}{a}", f"#### {a}{',' * rng.randint(20, 60)}5")
    for text in variants:
      answers.append(a)
      texts.append(text[-WIDTH:])
  want = _check_gsm8k(answers, texts)
  assert len(texts) >= 3000 and want.sum() > 1000 and (~want).sum() > 1000


GSM_PIECES = st.sampled_from(list("0123456789-., \n\tab$") + ["####", "#### ", "1,000", "é"])


@PROPS
@given(st.sampled_from(["18", "-3", "1000", "2.5", "0", "123456"]),
       st.lists(st.lists(GSM_PIECES, max_size=30).map("".join), min_size=1, max_size=8))
def test_gsm8k_agrees_with_host_on_random_text(answer, texts):
  _check_gsm8k([answer] * len(texts), texts)


# ---------------------------------------------------------------------------
# Confidence (RLCR) and format.
# ---------------------------------------------------------------------------


def strict_confidence(text: str):
  """Host reference of the training-time rule (`shaping.parse_confidence`):
  after the last `Confidence:`, skip spaces, take the run of digits and dots;
  valid iff it has at most one dot, at least one digit, a value <= 1, and the
  spaces and the number fit in the 12 characters after the prefix."""
  at = text.rfind("Confidence:")
  if at < 0:
    return None
  rest = text[at + len("Confidence:"):]
  body = rest.lstrip(" ")
  run = re.match(r"[0-9.]*", body).group(0)
  if len(rest) - len(body) + len(run) > 12 or run.count(".") > 1 or not re.search(r"\d", run):
    return None
  q = float(run)
  return q if q <= 1.0 else None


_parse_confidence = jax.jit(jax.vmap(parse_confidence))

CONF_PIECES = st.sampled_from(list("0123456789. \n\tx") + ["Confidence:", "Confidence: ",
                                                          "0.", ".5", "1", "100", "é"])


def _check_confidence(texts):
  pad, chars, n, _ = _pad8(texts)
  q, valid = _parse_confidence(chars, n)
  for t, qi, vi in zip(texts, np.asarray(q), np.asarray(valid)):
    want = strict_confidence(t)
    assert bool(vi) == (want is not None), (t, float(qi), want)
    if want is not None:
      assert abs(float(qi) - want) < 1e-6, (t, float(qi), want)


@PROPS
@given(st.lists(st.lists(CONF_PIECES, max_size=20).map("".join), min_size=1, max_size=8))
def test_confidence_parse_agrees_with_strict_host_rule(texts):
  _check_confidence(texts)


def test_confidence_parse_on_generated_statements():
  rng = random.Random(4)
  texts = []
  for _ in range(1500):
    q = rng.choice([f"{rng.random():.{rng.randint(0, 14)}f}", str(rng.randint(0, 100)),
                    f".{rng.randint(0, 99)}", f"{rng.random() * 2:.3f}", "1.0", "0",
                    "0" * rng.randint(1, 14) + "1", f"{rng.random():.3f}".ljust(14, "0")])
    texts.append(rng.choice(["Answer: 3\n", "", "Confidence: 0.3\n"]) + "Confidence:"
                 + " " * rng.randint(0, 4) + q + rng.choice(["", "\n", " sure", ".", "5"]))
  _check_confidence(texts)
  valid = sum(strict_confidence(t) is not None for t in texts)
  assert valid > 500 and len(texts) - valid > 300  # both outcomes, many times


def _host_format(kind: str, text: str) -> bool:
  if kind == "answer":
    return "Answer:" in text
  if kind == "think":
    o, c = text.find("<think>"), text.find("</think>")
    return o >= 0 and c > o and len(text) > c + len("</think>")
  return "Answer:" in text and strict_confidence(text) is not None


@functools.partial(jax.jit, static_argnums=0)
def _format_ok(reward, chars, n):
  return jax.vmap(reward.ok)(chars, n)


FMT_PIECES = st.sampled_from(["<think>", "</think>", "Answer:", "Confidence: 0.5", "Confidence:",
                              "x", " ", "\n", "<", ">", "think", "/"])


@PROPS
@given(st.sampled_from(["answer", "think", "confidence"]),
       st.lists(st.lists(FMT_PIECES, max_size=12).map("".join), min_size=1, max_size=8))
def test_format_reward_agrees_with_host_rule(kind, texts):
  reward = R.FormatReward(table=TABLE, kind=kind, penalty=-1.0)
  pad, chars, n, _ = _pad8(texts)
  ok = np.asarray(_format_ok(reward, chars, n))[:len(texts)]
  want = np.array([_host_format(kind, t) for t in texts])
  assert (ok == want).all(), [(t, bool(o)) for t, o, w in zip(texts, ok, want) if o != w][:5]


# ---------------------------------------------------------------------------
# Random token ids: every reward is finite and has the [B] contract.
# ---------------------------------------------------------------------------


@jax.jit
def _call(reward, tokens, mask):
  return reward(tokens, mask)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.lists(st.integers(0, TOK.vocab_size - 1), max_size=64), min_size=4,
                max_size=4))
def test_every_reward_is_finite_on_random_tokens(rows):
  t = np.zeros((4, 64), np.int32)
  m = np.zeros((4, 64), bool)
  for i, r in enumerate(rows):
    t[i, :len(r)] = r
    m[i, :len(r)] = True
  values = np.array([[1, 2, 3, 4]] * 4, np.int32)
  gp = R.Gp24Reward(values=values, table=TABLE)
  cd = R.CountdownReward(numbers=values, target=np.full((4,), 10, np.int32), table=TABLE)
  gs = R.gsm8k_reward([type("E", (), {"meta": {"answer": "12"}})()] * 4, TABLE)
  rewards = [gp, R.Gp24Reward(values=values, table=TABLE, levels=True), cd, gs,
             R.CalibrationReward(verifier=gp, table=TABLE),
             R.OverlongPenalty(max_len=48, cache=16),
             *[R.FormatReward(table=TABLE, kind=k) for k in ("answer", "think", "confidence")],
             R.weighted_sum(a=(gp, 1.0), b=(R.OverlongPenalty(max_len=48, cache=16), 0.5))]
  for reward in rewards:
    r, aux = _call(reward, jnp.asarray(t), jnp.asarray(m))
    assert r.shape == (4,) and r.dtype == jnp.float32, type(reward).__name__
    assert np.isfinite(np.asarray(r)).all(), type(reward).__name__
    for v in aux.values():
      assert np.isfinite(np.asarray(v)).all()
