"""The 24-point card game ("SFT Memorizes, RL Generalizes"; papers.md 2.1).

Four cards of ranks 1..13 (shown A, 2..10, J, Q, K); hands are redrawn until
solvable. ID rule: J, Q, K count as 10. OOD rule: J, Q, K count as 11, 12, 13
and every OOD hand holds at least one face card. The prompt states the rule.

Splits (the value multisets are split once, with a fixed seed, so that every
run holds out the same problems):
  train / id_seen  ID hands whose value multiset is in the seen part (80%)
  id_heldout       ID hands whose multiset training never sees (20%)
  ood              OOD hands whose multiset is in the OOD held-out part
  ood_train        OOD hands the arith pretraining corpus may use

Completion format: the expert steps, one operation per line (`5*3=15`), then
`Answer: <formula>`; with `confidence=True` a last line `Confidence: q`, where q
is 1.0 (`confidence_prior="one"`) or drawn uniformly from 0.0, 0.1, ..., 1.0
(`"uniform"`: an SFT prior that lets RL explore every stated confidence; the
target carries no information about correctness, so calibration must be
learned by the reward, as in RLCR, papers.md 5). `confidence_fraction=f`
puts that fraction of the `train` split (each example independently, seeded)
in the confidence format and leaves the rest and every eval split plain: one
SFT then teaches both prompts, so a calibration run can start from an SFT
snapshot that solves the confidence prompt as well as the plain one.
"""

from __future__ import annotations

import functools
import itertools
import json
import os
from collections import Counter
from typing import Sequence

import numpy as np

from jaxrl_post.tasks.base import (Example, FormulaError, answer_value,
                                   evaluate_formula, extract_answer)
from jaxrl_post.tasks.solver import solvable, solve

RANK_NAMES = {1: "A", 11: "J", 12: "Q", 13: "K"}
TARGET = 24
SPLIT_SEED = 20250101
HELDOUT_FRACTION = 0.2
OOD_HELDOUT_FRACTION = 0.4
RULE_TEXT = {"id": "J Q K are 10.", "ood": "J Q K are 11 12 13."}
SPLITS = ("train", "id_seen", "id_heldout", "ood", "ood_train")
CONFIDENCE_PRIORS = ("one", "uniform")


def rank_name(r: int) -> str:
  return RANK_NAMES.get(r, str(r))


def card_value(rank: int, rule: str) -> int:
  if rule not in RULE_TEXT:
    raise ValueError(f"unknown rule {rule!r}; expected 'id' or 'ood'")
  return min(rank, 10) if rule == "id" else rank


@functools.lru_cache(maxsize=None)
def value_multisets(rule: str) -> tuple[tuple[int, ...], ...]:
  """All value multisets of a hand under the rule (OOD: at least one face)."""
  if rule == "id":
    return tuple(itertools.combinations_with_replacement(range(1, 11), 4))
  return tuple(m for m in itertools.combinations_with_replacement(range(1, 14), 4)
               if max(m) >= 11)


_SOLVABLE_FILE = os.path.join(os.path.dirname(__file__), "data", "gp24_solvable.json")


@functools.lru_cache(maxsize=None)
def solvable_multisets(rule: str, recompute: bool = False) -> tuple[tuple[int, ...], ...]:
  """The solvable value multisets of a rule (715 -> 566 for ID).

  Read from the shipped table (tests check it against `solvable`), or
  recomputed with the exact solver (about 6 s) when `recompute`.
  """
  if recompute or not os.path.exists(_SOLVABLE_FILE):
    return tuple(m for m in value_multisets(rule) if solvable(m, TARGET))
  with open(_SOLVABLE_FILE) as f:
    return tuple(tuple(m) for m in json.load(f)[rule])


@functools.lru_cache(maxsize=None)
def split_multisets() -> dict[str, tuple[tuple[int, ...], ...]]:
  """The fixed split of solvable multisets into seen / held-out parts."""
  rng = np.random.default_rng(SPLIT_SEED)
  out = {}
  for rule, frac, names in (("id", HELDOUT_FRACTION, ("id_seen", "id_heldout")),
                            ("ood", OOD_HELDOUT_FRACTION, ("ood_train", "ood"))):
    ms = list(solvable_multisets(rule))
    perm = rng.permutation(len(ms))
    n_hold = int(round(frac * len(ms)))
    hold = sorted(ms[i] for i in perm[:n_hold])
    seen = sorted(ms[i] for i in perm[n_hold:])
    out[names[0]], out[names[1]] = tuple(seen), tuple(hold)
  return out


def prompt_text(cards: Sequence[int], rule: str, confidence: bool = False) -> str:
  """`Cards: K 8 10 7. J Q K are 10. Make 24.` (+ ` State confidence.`).

  Short on purpose: the prompt is masked out of the SFT loss but paid for in
  every forward pass. It still states the rule in words and the task.
  """
  hand = " ".join(rank_name(r) for r in cards)
  tail = " State confidence." if confidence else ""
  return f"Cards: {hand}. {RULE_TEXT[rule]} Make 24.{tail}\n"


def _ranks_for(values: Sequence[int], rule: str, rng: np.random.Generator) -> list[int]:
  ranks = []
  for v in values:
    if rule == "id" and v == 10:
      ranks.append(int(rng.choice([10, 11, 12, 13])))
    else:
      ranks.append(v)
  rng.shuffle(ranks)
  return ranks


def make_example(ranks: Sequence[int], rule: str, rng: np.random.Generator, *,
                 all_solutions: bool = True, confidence: bool = False,
                 confidence_prior: str = "one", uid: str = "") -> Example:
  """An Example for a hand; the expert target is a random solution (all_solutions)
  or the first, canonical one."""
  values = tuple(card_value(r, rule) for r in ranks)
  sols = solve(tuple(sorted(values)), TARGET)
  if not sols:
    raise ValueError(f"hand {ranks} has no solution under rule {rule!r}")
  integer = [s for s in sols if s[2]] or list(sols)
  formula, steps, _ = integer[int(rng.integers(len(integer)))] if all_solutions else integer[0]
  completion = "\n".join(steps) + f"\nAnswer: {formula}"
  if confidence:
    q = 1.0 if confidence_prior == "one" else int(rng.integers(11)) / 10
    completion += f"\nConfidence: {q:.1f}"
  return Example(
      id=uid or f"gp24-{rule}-{'-'.join(map(str, ranks))}",
      prompt=prompt_text(ranks, rule, confidence), completion=completion,
      answer=formula, steps=tuple(steps),
      meta={"cards": tuple(ranks), "values": values, "rule": rule, "target": TARGET})


class Gp24Task:
  """examples(split, n, seed), verify(example, text), score(example, text)."""

  name = "gp24"
  splits = SPLITS
  # Bumped whenever the text of an example changes (keys the tfds cache).
  generator_version = "2: short prompt"

  def __init__(self, all_solutions: bool = True, confidence: bool = False,
               confidence_prior: str = "one", confidence_fraction: float = 0.0):
    if confidence_prior not in CONFIDENCE_PRIORS:
      raise ValueError(f"confidence_prior {confidence_prior!r} not in {CONFIDENCE_PRIORS}")
    if not 0.0 <= confidence_fraction <= 1.0:
      raise ValueError(f"confidence_fraction must be in [0, 1], got {confidence_fraction}")
    if confidence and confidence_fraction:
      raise ValueError("confidence=True already puts every example in the confidence "
                       "format; confidence_fraction is for mixing it into plain SFT data")
    self.all_solutions = all_solutions
    self.confidence = confidence
    self.confidence_prior = confidence_prior
    self.confidence_fraction = float(confidence_fraction)

  def examples(self, split: str, n: int, seed: int = 0) -> list[Example]:
    """n examples, deterministic given seed. Eval splits cycle through their
    multisets in a seeded order (distinct problems while n <= the pool)."""
    if split not in SPLITS:
      raise ValueError(f"gp24 has no split {split!r}; known: {SPLITS}")
    pool_name = "id_seen" if split == "train" else split
    pool = split_multisets()[pool_name]
    rule = "ood" if pool_name.startswith("ood") else "id"
    rng = np.random.default_rng((seed, SPLITS.index(split)))
    # Which train examples carry the confidence format: a seeded stream of its own.
    mix = np.random.default_rng((seed, SPLITS.index(split), 1))
    fraction = self.confidence_fraction if split == "train" else 0.0
    order = rng.permutation(len(pool))
    out = []
    for i in range(n):
      confidence = self.confidence or bool(mix.random() < fraction)
      values = pool[order[i % len(pool)]] if split != "train" else pool[int(rng.integers(len(pool)))]
      if rule == "ood":
        ranks = list(values)
        rng.shuffle(ranks)
      else:
        ranks = _ranks_for(values, rule, rng)
      out.append(make_example(ranks, rule, rng,
                              all_solutions=self.all_solutions, confidence=confidence,
                              confidence_prior=self.confidence_prior,
                              uid=f"gp24-{split}-{seed}-{i}"))
    return out

  def verify(self, example: Example, text: str) -> bool:
    return verify_values(example.meta["values"], text)

  def score(self, example: Example, text: str) -> float:
    return score_levels(example.meta["values"], text)


def verify_values(values: Sequence[int], text: str, target: int = TARGET) -> bool:
  """True iff the last `Answer:` formula uses exactly `values` and equals target."""
  parsed = answer_value(text)
  if parsed is None:
    return False
  value, numbers = parsed
  return Counter(numbers) == Counter(values) and value == target


def score_levels(values: Sequence[int], text: str, target: int = TARGET) -> float:
  """The paper's reward levels (papers.md 2.1), one attempt:

  +5 correct; +1 an unfinished formula that is a prefix of a known solution;
  -1 the right numbers but the wrong value; -2 wrong, unused or over-used
  numbers; -3 an illegal formula (bad characters or syntax) or no answer.
  """
  formula = extract_answer(text)
  if formula is None:
    return -3.0
  try:
    value, numbers = evaluate_formula(formula)
  except FormulaError:
    compact = formula.replace(" ", "")
    sols = solve(tuple(sorted(values)), target)
    if compact and any(f.startswith(compact) for f, _, _ in sols):
      return 1.0
    return -3.0
  if Counter(numbers) != Counter(values):
    return -2.0
  return 5.0 if value == target else -1.0
