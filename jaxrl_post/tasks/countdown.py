"""Countdown: reach a target from a few numbers, each used at most once.

Numbers are 4 draws from 1..13 (the card-value domain, so tiny models can
learn it); the target is the value of a random solvable expression in 10..99.
Same verifier style and completion format as gp24 (steps, `Answer:`).
Splits: `train` and `test`, separated by a hash of the problem.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from typing import Sequence

import numpy as np

from jaxrl_post.tasks.base import Example, answer_value
from jaxrl_post.tasks.solver import solve

SPLITS = ("train", "test")


def prompt_text(numbers: Sequence[int], target: int) -> str:
  nums = ", ".join(map(str, numbers))
  return f"Numbers: {nums}. Target: {target}. Use each number at most once.\n"


def _split_of(numbers: Sequence[int], target: int) -> str:
  h = hashlib.sha256(f"{sorted(numbers)}|{target}".encode()).digest()[0]
  return "test" if h % 10 == 0 else "train"


def verify_numbers(numbers: Sequence[int], target: int, text: str) -> bool:
  """True iff the last `Answer:` formula uses each number at most once and equals target."""
  parsed = answer_value(text)
  if parsed is None:
    return False
  value, used = parsed
  avail = Counter(numbers)
  return all(avail[k] >= c for k, c in Counter(used).items()) and value == target


class CountdownTask:
  name = "countdown"
  splits = SPLITS

  def examples(self, split: str, n: int, seed: int = 0) -> list[Example]:
    if split not in SPLITS:
      raise ValueError(f"countdown has no split {split!r}; known: {SPLITS}")
    rng = np.random.default_rng((seed, 7, SPLITS.index(split)))
    out = []
    while len(out) < n:
      numbers = [int(x) for x in rng.integers(1, 14, size=4)]
      target = int(rng.integers(10, 100))
      if _split_of(numbers, target) != split:
        continue
      sols = solve(tuple(sorted(numbers)), target, use_all=False)
      integer = [s for s in sols if s[2]]
      if not integer:
        continue
      formula, steps, _ = integer[int(rng.integers(len(integer)))]
      out.append(Example(
          id=f"countdown-{split}-{seed}-{len(out)}", prompt=prompt_text(numbers, target),
          completion="\n".join(steps) + f"\nAnswer: {formula}", answer=formula,
          steps=tuple(steps), meta={"numbers": tuple(numbers), "target": target}))
    return out

  def verify(self, example: Example, text: str) -> bool:
    return verify_numbers(example.meta["numbers"], example.meta["target"], text)
