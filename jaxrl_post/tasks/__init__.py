"""Tasks: gp24 (24-point cards, ID/OOD rules), countdown, GSM8K, arith corpus.

`get_task(name, **options)` returns an object with `name`, `splits`,
`examples(split, n, seed) -> list[Example]` (deterministic given seed) and
`verify(example, text) -> bool` (the host verifier).
"""

from jaxrl_post.tasks.base import Example, FormulaError, evaluate_formula, extract_answer

TASKS = ("gp24", "countdown", "gsm8k", "arith")


def get_task(name: str, **options):
  if name == "gp24":
    from jaxrl_post.tasks.gp24 import Gp24Task
    return Gp24Task(**options)
  if name == "countdown":
    from jaxrl_post.tasks.countdown import CountdownTask
    return CountdownTask(**options)
  if name == "gsm8k":
    from jaxrl_post.tasks.gsm8k import Gsm8kTask
    return Gsm8kTask(**options)
  if name == "arith":
    from jaxrl_post.tasks.arith import ArithTask
    return ArithTask(**options)
  raise ValueError(f"unknown task {name!r}; known: {TASKS}")
