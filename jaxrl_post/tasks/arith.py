"""A broad arithmetic corpus to pretrain a tiny base model with some OOD skill.

Mixture (fractions of the examples):
  45%  24-point hands under BOTH rules (ID hands from `id_seen` multisets, OOD
       hands from `ood_train`; the held-out multisets of either rule never
       appear), in the exact gp24 prompt/completion format;
  15%  card values under a stated rule (`Cards: A J 7. <rule> Values?` -> `1, 11, 7`);
  20%  single operations on values 1..13 (`Compute 7*8.` -> `7*8=56`);
  20%  three-number reductions to a target, half in the SRL step format
       (`<think>...</think>` then the step), so a base knows that format.
`hand_fraction` (0.45) and `ood_hand_share` (0.5, the OOD part of the hands)
change the first line; the other three keep their 15 : 20 : 20 proportions.
A larger OOD share gives a base more OOD skill per pretraining step, which is
what an SFT -> RL study on a CPU budget needs (configs/study.py).
"""

from __future__ import annotations

import numpy as np

from jaxrl_post.tasks import gp24, steps
from jaxrl_post.tasks.base import Example
from jaxrl_post.tasks.solver import solve

SPLITS = ("train", "test")


def _card_values(rng) -> Example:
  rule = "id" if rng.random() < 0.5 else "ood"
  ranks = [int(r) for r in rng.integers(1, 14, size=int(rng.integers(2, 5)))]
  names = " ".join(gp24.rank_name(r) for r in ranks)
  vals = ", ".join(str(gp24.card_value(r, rule)) for r in ranks)
  return Example(id="", prompt=f"Cards: {names}. {gp24.RULE_TEXT[rule]} Values?\n",
                 completion=vals, answer=vals, steps=(vals,), meta={"rule": rule})


def _single_op(rng) -> Example:
  while True:
    a, b = (int(x) for x in rng.integers(1, 14, size=2))
    op = "+-*/"[int(rng.integers(4))]
    if op == "-" and a < b:
      a, b = b, a
    if op == "/" and a % b:
      a = a * b
    v = {"+": a + b, "-": a - b, "*": a * b, "/": a // b if b else 0}[op]
    line = f"{a}{op}{b}={v}"
    return Example(id="", prompt=f"Compute {a}{op}{b}.\n", completion=line,
                   answer=str(v), steps=(line,), meta={})


def _reduction(rng, srl_format: bool) -> Example:
  while True:
    nums = tuple(int(x) for x in rng.integers(1, 14, size=3))
    target = int(rng.integers(1, 40))
    sols = [s for s in solve(tuple(sorted(nums)), target) if s[2]]
    if sols:
      break
  formula, st, _ = sols[int(rng.integers(len(sols)))]
  ex = Example(id="", prompt=f"Make {target} from {', '.join(map(str, nums))}.\n",
               completion="\n".join(st) + f"\nAnswer: {formula}", answer=formula,
               steps=tuple(st), meta={"values": nums, "target": target})
  if not srl_format:
    return ex
  insts = steps.step_instances(ex)
  return insts[int(rng.integers(len(insts)))]


class ArithTask:
  name = "arith"
  splits = SPLITS
  generator_version = gp24.Gp24Task.generator_version  # it embeds gp24 hands

  def __init__(self, all_solutions: bool = True, hand_fraction: float = 0.45,
               ood_hand_share: float = 0.5):
    if not 0.0 <= hand_fraction <= 1.0:
      raise ValueError(f"hand_fraction must be in [0, 1], got {hand_fraction}")
    if not 0.0 <= ood_hand_share <= 1.0:
      raise ValueError(f"ood_hand_share must be in [0, 1], got {ood_hand_share}")
    self.gp24 = gp24.Gp24Task(all_solutions=all_solutions)
    self.hand_fraction = float(hand_fraction)
    self.ood_hand_share = float(ood_hand_share)

  def examples(self, split: str, n: int, seed: int = 0) -> list[Example]:
    if split not in SPLITS:
      raise ValueError(f"arith has no split {split!r}; known: {SPLITS}")
    rng = np.random.default_rng((seed, 5, SPLITS.index(split)))
    n_hands = int(self.hand_fraction * n)
    n_id = int((1.0 - self.ood_hand_share) * n_hands)  # n_hands // 2 at the default
    hands = (self.gp24.examples("id_seen", n_id, seed=seed * 2 + SPLITS.index(split)) +
             self.gp24.examples("ood_train", n_hands - n_id, seed=seed * 2 + SPLITS.index(split)))
    out = list(hands)
    while len(out) < n:
      u = rng.random()
      if u < 0.15 / 0.55:
        out.append(_card_values(rng))
      elif u < 0.35 / 0.55:
        out.append(_single_op(rng))
      else:
        out.append(_reduction(rng, srl_format=rng.random() < 0.5))
    order = rng.permutation(len(out))
    return [_with_id(out[i], f"arith-{split}-{seed}-{k}") for k, i in enumerate(order)]

  def verify(self, example: Example, text: str) -> bool:
    return text.strip() == example.completion.strip()


def _with_id(ex: Example, uid: str) -> Example:
  import dataclasses
  return dataclasses.replace(ex, id=uid)
