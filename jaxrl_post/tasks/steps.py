"""SRL step instances (papers.md 1.3): predict the next expert step.

From an example whose expert solution has N steps (the arithmetic lines plus
the final answer line) we build N instances, k = 0..N-1: the prompt is the
problem, the first k expert steps, and an instruction to think inside
`<think>...</think>` and then write only the next step; the target is step k.
(The paper's N-1 instances drop one end; we keep the first step, whose context
is the bare problem, and the answer line, so SRL teaches the whole output.)
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from jaxrl_post.tasks.base import Example

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
INSTRUCTION = "Think in <think></think>, then write only the next step.\n"


def solution_steps(example: Example) -> tuple[str, ...]:
  """The expert steps plus the final answer line; validates them."""
  lines = [l for l in example.completion.split("\n")]
  if not example.steps:
    raise ValueError(f"example {example.id}: no expert steps to split")
  if any(not s.strip() for s in lines):
    raise ValueError(f"example {example.id}: an expert step is empty")
  return tuple(lines)


def think_for(step: str) -> str:
  """A short expert monologue for a step: its left-hand side (the operation)."""
  return step.split("=", 1)[0] if "=" in step else step.split(":", 1)[0]


def step_instances(example: Example, include_title: bool = False) -> list[Example]:
  steps = solution_steps(example)
  out = []
  for k, target in enumerate(steps):
    context = "".join(s + "\n" for s in steps[:k])
    title = f"Step {k + 1} of {len(steps)}. " if include_title else ""
    out.append(Example(
        id=f"{example.id}/step{k}",
        prompt=example.prompt + context + title + INSTRUCTION,
        completion=f"{THINK_OPEN}{think_for(target)}{THINK_CLOSE}{target}",
        answer=target, steps=(target,),
        meta=dict(example.meta, step_index=k, num_steps=len(steps), expert_step=target,
                  problem_id=example.id)))
  return out


def sample_instances(examples: Sequence[Example], n: int, seed: int,
                     include_title: bool = False) -> list[Example]:
  """n instances drawn across problems and depths (uniform over problems, then depth)."""
  rng = np.random.default_rng((seed, 11))
  per = [step_instances(e, include_title) for e in examples]
  out = []
  for _ in range(n):
    insts = per[int(rng.integers(len(per)))]
    out.append(insts[int(rng.integers(len(insts)))])
  return out


def action_of(text: str) -> str | None:
  """The action after the first `</think>` of a completion (None: bad format)."""
  if THINK_OPEN not in text or THINK_CLOSE not in text:
    return None
  if text.find(THINK_OPEN) > text.find(THINK_CLOSE):
    return None
  return text.split(THINK_CLOSE, 1)[1].strip("\n")


@dataclasses.dataclass(frozen=True)
class StepTask:
  """A task view whose examples are step instances of another task."""

  base: object
  include_title: bool = False

  @property
  def name(self):
    return f"{self.base.name}_steps"

  @property
  def splits(self):
    return self.base.splits

  def examples(self, split: str, n: int, seed: int = 0) -> list[Example]:
    problems = self.base.examples(split, n=max(1, n // 2), seed=seed)
    return sample_instances(problems, n, seed, self.include_title)

  def verify(self, example: Example, text: str) -> bool:
    return action_of(text) == example.meta["expert_step"]
