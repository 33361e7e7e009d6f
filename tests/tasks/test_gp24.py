"""gp24: exact solver vs brute force, splits, rules, verifier, expert steps."""

import itertools
from fractions import Fraction

import numpy as np
import pytest

from jaxrl_post.tasks import arith, gp24
from jaxrl_post.tasks.base import evaluate_formula
from jaxrl_post.tasks.solver import solvable, solve


def _brute_force_values(nums):
  """Every value of every expression tree over all of nums (independent code)."""
  nums = [Fraction(n) for n in nums]
  if len(nums) == 1:
    return {nums[0]}
  out = set()
  for r in range(1, len(nums)):
    for left in itertools.combinations(range(len(nums)), r):
      a = [nums[i] for i in left]
      b = [nums[i] for i in range(len(nums)) if i not in left]
      for x in _brute_force_values(a):
        for y in _brute_force_values(b):
          out |= {x + y, x - y, x * y}
          if y:
            out.add(x / y)
  return out


def test_counts_of_the_paper_setting():
  assert len(gp24.value_multisets("id")) == 715
  assert len(gp24.solvable_multisets("id")) == 566


@pytest.mark.parametrize("rule", ["id", "ood"])
def test_shipped_solvable_table_matches_the_solver(rule):
  assert gp24.solvable_multisets(rule) == gp24.solvable_multisets(rule, recompute=True)


def test_solvability_matches_brute_force_on_random_hands():
  rng = np.random.default_rng(0)
  for _ in range(60):
    hand = tuple(sorted(int(x) for x in rng.integers(1, 14, 4)))
    assert solvable(hand) == (Fraction(24) in _brute_force_values(hand)), hand


def test_every_solution_is_verified_and_perturbations_are_rejected():
  for hand in [(3, 3, 8, 8), (1, 2, 3, 4), (4, 7, 8, 8), (10, 10, 4, 4), (1, 5, 5, 5)]:
    sols = solve(hand)
    assert sols, hand
    for formula, steps, _ in sols:
      assert gp24.verify_values(hand, f"Answer: {formula}")
      assert gp24.score_levels(hand, f"x\nAnswer: {formula}") == 5.0
      assert steps[-1].endswith("=24")
    formula = sols[0][0]
    assert not gp24.verify_values(hand, f"Answer: {formula}+1")          # wrong numbers
    assert not gp24.verify_values(hand[:3] + (hand[3] + 1,), f"Answer: {formula}")
    assert not gp24.verify_values(hand, f"Answer: ({formula}")            # unbalanced


def test_fraction_solution_is_exact():
  assert gp24.verify_values((3, 3, 8, 8), "Answer: 8/(3-8/3)")
  assert solve((3, 3, 8, 8))[0][0] == "8/(3-(8/3))"


def test_reward_levels():
  v = (1, 2, 3, 4)
  assert gp24.score_levels(v, "Answer: 1*2*3*4") == 5.0
  assert gp24.score_levels(v, "Answer: 1+2+3+4") == -1.0
  assert gp24.score_levels(v, "Answer: 1+2+3") == -2.0
  assert gp24.score_levels(v, "Answer: 1+2+)3+4") == -3.0
  assert gp24.score_levels(v, "no answer") == -3.0


def test_rules_and_prompts():
  task = gp24.Gp24Task()
  for ex in task.examples("ood", 50, seed=1):
    assert max(ex.meta["cards"]) >= 11  # every OOD hand holds a face card
    assert ex.meta["values"] == tuple(ex.meta["cards"])
    assert gp24.RULE_TEXT["ood"] in ex.prompt
    assert task.verify(ex, ex.completion)
  for ex in task.examples("train", 50, seed=1):
    assert ex.meta["values"] == tuple(min(c, 10) for c in ex.meta["cards"])
    assert gp24.RULE_TEXT["id"] in ex.prompt
    assert task.verify(ex, ex.completion)
    assert ex.completion.split("\n")[-1].startswith("Answer: ")


def test_determinism_and_heldout_separation():
  task = gp24.Gp24Task()
  a = task.examples("train", 40, seed=3)
  assert [e.prompt for e in a] == [e.prompt for e in task.examples("train", 40, seed=3)]
  assert [e.prompt for e in a] != [e.prompt for e in task.examples("train", 40, seed=4)]
  held = set(gp24.split_multisets()["id_heldout"])
  ood_held = set(gp24.split_multisets()["ood"])
  for e in task.examples("train", 400, seed=0):
    assert tuple(sorted(e.meta["values"])) not in held
  corpus = arith.ArithTask().examples("train", 300, seed=0)
  for e in corpus:
    if "values" in e.meta and e.prompt.startswith("Cards:") and "Make 24." in e.prompt:
      ms = tuple(sorted(e.meta["values"]))
      assert ms not in held and ms not in ood_held
  heldout = task.examples("id_heldout", 50, seed=0)
  assert all(tuple(sorted(e.meta["values"])) in held for e in heldout)
  assert len({e.meta["values"] for e in heldout}) > 40  # distinct problems


def test_bad_split_is_an_error():
  with pytest.raises(ValueError, match="no split"):
    gp24.Gp24Task().examples("validation", 1)


def _reference_solve(values, target=24):
  """The solver's definition with Fractions and eager strings (slow, obvious)."""
  def operand(v):
    s = str(v.numerator) if v.denominator == 1 else f"{v.numerator}/{v.denominator}"
    return f"({s})" if (v.denominator != 1 or v < 0) else s

  def combine(a, b):
    (va, ea, sa, ia), (vb, eb, sb, ib) = a, b
    cands = [(va + vb, "+", a, b), (va * vb, "*", a, b), (va - vb, "-", a, b),
             (vb - va, "-", b, a)]
    if vb != 0:
      cands.append((va / vb, "/", a, b))
    if va != 0:
      cands.append((vb / va, "/", b, a))
    for v, op, x, y in cands:
      val = str(v.numerator) if v.denominator == 1 else f"{v.numerator}/{v.denominator}"
      yield (v, f"({x[1]}{op}{y[1]})", x[2] + y[2] + (f"{operand(x[0])}{op}{operand(y[0])}={val}",),
             x[3] and y[3] and v.denominator == 1 and v >= 0)

  out = {}

  def search(items):
    for it in items:
      if it[0] == target and len(items) == 1 and it[2]:
        out.setdefault(it[1][1:-1] if it[1].startswith("(") else it[1], (it[2], it[3]))
    if len(items) == 1:
      return
    for i, j in itertools.combinations(range(len(items)), 2):
      rest = tuple(items[k] for k in range(len(items)) if k not in (i, j))
      for c in combine(items[i], items[j]):
        search(rest + (c,))

  search(tuple((Fraction(v), str(v), (), True) for v in sorted(values)))
  sols = sorted(((f, s, i) for f, (s, i) in out.items()), key=lambda s: (not s[2], len(s[1]), s[0]))
  return tuple(sols)


@pytest.mark.parametrize("hand", [(3, 3, 8, 8), (1, 2, 3, 4), (1, 1, 1, 8), (13, 12, 11, 1),
                                  (2, 7, 10, 10), (1, 5, 5, 5), (6, 6, 6, 6)])
def test_solver_equals_the_fraction_reference(hand):
  assert solve(hand) == _reference_solve(hand)


def test_solution_steps_replay_exactly():
  """Each step's arithmetic holds in exact rationals; the last step makes 24."""
  for hand in [(3, 3, 8, 8), (1, 5, 5, 5), (4, 4, 10, 10)]:
    for formula, steps, _ in solve(hand):
      for line in steps:
        lhs, rhs = line.split("=")
        assert evaluate_formula(lhs)[0] == Fraction(rhs), line
      assert steps[-1].split("=")[1] == "24"
      assert evaluate_formula(formula)[0] == 24


def test_confidence_priors():
  uniform = gp24.Gp24Task(confidence=True, confidence_prior="uniform").examples("train", 200, 0)
  qs = [float(e.completion.rsplit("Confidence: ", 1)[1]) for e in uniform]
  assert set(qs) <= {i / 10 for i in range(11)} and len(set(qs)) >= 9
  ones = gp24.Gp24Task(confidence=True).examples("train", 20, 0)
  assert all(e.completion.endswith("\nConfidence: 1.0") for e in ones)
  with pytest.raises(ValueError, match="confidence_prior"):
    gp24.Gp24Task(confidence_prior="beta")


def test_canonical_targets_give_one_answer_per_multiset():
  by_values = {}
  for e in gp24.Gp24Task(all_solutions=False).examples("train", 300, 0):
    by_values.setdefault(tuple(sorted(e.meta["values"])), set()).add(e.completion)
  assert all(len(c) == 1 for c in by_values.values())
  many = {}
  for e in gp24.Gp24Task(all_solutions=True).examples("train", 300, 0):
    many.setdefault(tuple(sorted(e.meta["values"])), set()).add(e.completion)
  assert any(len(c) > 1 for c in many.values())


def test_expert_all_solutions_reaches_the_task():
  from configs import gp24_sft
  from jaxrl_post.hparams import from_config
  hp = from_config(gp24_sft.get_config())
  assert dict(hp.task_options)["all_solutions"] is False
  c = gp24_sft.get_config()
  c.expert_all_solutions = True
  assert dict(from_config(c).task_options)["all_solutions"] is True


def test_confidence_fraction_mixes_only_the_train_split():
  f = 0.3
  task = gp24.Gp24Task(all_solutions=False, confidence_prior="uniform", confidence_fraction=f)
  train = task.examples("train", 2000, seed=0)
  conf = [e for e in train if e.prompt.endswith("State confidence.\n")]
  # Binomial(2000, 0.3): 600 +- 20.5; 5 standard deviations either side.
  assert abs(len(conf) - f * len(train)) < 5 * (len(train) * f * (1 - f)) ** 0.5
  for e in train:  # prompt and target agree on the format, and the target still solves
    has_q = "\nConfidence: " in e.completion
    assert has_q == e.prompt.endswith("State confidence.\n")
    assert task.verify(e, e.completion)
  qs = {e.completion.rsplit("Confidence: ", 1)[1] for e in conf}
  assert qs == {f"{i / 10:.1f}" for i in range(11)}  # the uniform prior
  for split in ("id_seen", "id_heldout", "ood"):  # evaluation stays on the plain prompt
    assert not any("Confidence" in e.completion for e in task.examples(split, 200, seed=0))
  assert [e.prompt for e in train] == [e.prompt for e in task.examples("train", 2000, seed=0)]
  plain = gp24.Gp24Task(all_solutions=False).examples("train", 50, seed=0)
  assert not any("Confidence" in e.completion for e in plain)


def test_confidence_fraction_rejects_bad_values():
  with pytest.raises(ValueError, match="confidence_fraction must be in"):
    gp24.Gp24Task(confidence_fraction=1.5)
  with pytest.raises(ValueError, match="already puts every example"):
    gp24.Gp24Task(confidence=True, confidence_fraction=0.5)


@pytest.mark.parametrize("hands,ood_share", [(0.45, 0.5), (0.6, 0.75), (0.2, 0.0)])
def test_arith_hand_mixture(hands, ood_share):
  n = 1000
  ex = arith.ArithTask(all_solutions=False, hand_fraction=hands,
                       ood_hand_share=ood_share).examples("train", n, seed=3)
  ood = sum(e.prompt.endswith("J Q K are 11 12 13. Make 24.\n") for e in ex)
  id_ = sum(e.prompt.endswith("J Q K are 10. Make 24.\n") for e in ex)
  assert len(ex) == n
  assert id_ + ood == int(hands * n)
  assert id_ == int((1 - ood_share) * int(hands * n))


def test_arith_hand_mixture_rejects_bad_values():
  with pytest.raises(ValueError, match="hand_fraction"):
    arith.ArithTask(hand_fraction=-0.1)
  with pytest.raises(ValueError, match="ood_hand_share"):
    arith.ArithTask(ood_hand_share=2.0)
