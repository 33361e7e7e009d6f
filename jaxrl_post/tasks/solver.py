"""Exact search over +, -, *, / combinations of a few numbers (card games).

Every solution carries its formula (fully parenthesised, outer parentheses
dropped) and its steps, one arithmetic operation per line (`5*3=15`).
Intermediate fractions are exact (`fractions.Fraction`): 8/(3-8/3) is 24.
"""

from __future__ import annotations

import functools
import itertools
from fractions import Fraction

from jaxrl_post.tasks.base import fmt_value

Item = tuple[Fraction, str, tuple[str, ...], bool]  # value, expr, steps, all-integer


def _operand(v: Fraction, expr_is_leaf: bool) -> str:
  s = fmt_value(v)
  return f"({s})" if (v.denominator != 1 or v < 0) else s


def _combine(a: Item, b: Item):
  (va, ea, sa, ia), (vb, eb, sb, ib) = a, b
  cands = [(va + vb, "+", a, b), (va * vb, "*", a, b), (va - vb, "-", a, b),
           (vb - va, "-", b, a)]
  if vb != 0:
    cands.append((va / vb, "/", a, b))
  if va != 0:
    cands.append((vb / va, "/", b, a))
  for v, op, x, y in cands:
    step = f"{_operand(x[0], True)}{op}{_operand(y[0], True)}={fmt_value(v)}"
    yield (v, f"({x[1]}{op}{y[1]})", x[2] + y[2] + (step,),
           x[3] and y[3] and v.denominator == 1 and v >= 0)


def _search(items: tuple[Item, ...], target: Fraction, use_all: bool, out: dict):
  for it in items:
    if it[0] == target and (not use_all or len(items) == 1) and it[2]:
      formula = it[1][1:-1] if it[1].startswith("(") else it[1]
      out.setdefault(formula, (it[2], it[3]))
  if len(items) == 1:
    return
  for i, j in itertools.combinations(range(len(items)), 2):
    rest = tuple(items[k] for k in range(len(items)) if k not in (i, j))
    for c in _combine(items[i], items[j]):
      _search(rest + (c,), target, use_all, out)


@functools.lru_cache(maxsize=None)
def solve(values: tuple[int, ...], target: int = 24, use_all: bool = True):
  """All distinct solutions: a tuple of (formula, steps, integer_only).

  use_all: every value exactly once (24 game) or at most once (countdown).
  Sorted: integer-only solutions first, then by formula.
  """
  items = tuple((Fraction(v), str(v), (), True) for v in sorted(values))
  out: dict = {}
  if not use_all:
    for r in range(1, len(items) + 1):
      for sub in itertools.combinations(items, r):
        _search(sub, Fraction(target), True, out)
  else:
    _search(items, Fraction(target), True, out)
  sols = [(f, steps, integer) for f, (steps, integer) in out.items()]
  sols.sort(key=lambda s: (not s[2], len(s[1]), s[0]))
  return tuple(sols)


def solvable(values: tuple[int, ...], target: int = 24) -> bool:
  """Whether all of `values`, each once, can make `target` (fast DP)."""
  return Fraction(target) in reachable(tuple(sorted(values)))


@functools.lru_cache(maxsize=None)
def reachable(values: tuple[int, ...]) -> frozenset:
  """Every exact value an expression using all `values` once can take.

  Dynamic programming over sub-multisets (values only, no formulas), so it is
  much faster than `solve` and serves to count and filter solvable hands.
  """
  if len(values) == 1:
    return frozenset([Fraction(values[0])])
  out = set()
  n = len(values)
  seen = set()
  for r in range(1, n // 2 + 1):
    for left_idx in itertools.combinations(range(n), r):
      left = tuple(values[i] for i in left_idx)
      right = tuple(values[i] for i in range(n) if i not in left_idx)
      key = (left, right) if left <= right else (right, left)
      if key in seen:
        continue
      seen.add(key)
      for a in reachable(left):
        for b in reachable(right):
          out.update((a + b, a * b, a - b, b - a))
          if b:
            out.add(a / b)
          if a:
            out.add(b / a)
  return frozenset(out)
