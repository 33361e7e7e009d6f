"""Exact search over +, -, *, / combinations of a few numbers (card games).

Every solution carries its formula (fully parenthesised, outer parentheses
dropped) and its steps, one arithmetic operation per line (`5*3=15`).
Intermediate values are exact rationals: 8/(3-8/3) is 24.
"""

from __future__ import annotations

import functools
import itertools
import math
from fractions import Fraction

# A search node: (num, den, op, left, right, all_integer). Values are exact
# rationals kept as a reduced int pair (den > 0), several times cheaper than
# `Fraction` in the inner loop; a leaf has op None and its literal in `left`.
# Formulas and steps are rendered only for the nodes that hit the target, so
# the search itself builds no strings.
Node = tuple


def _leaf(v: int) -> Node:
  return (v, 1, None, str(v), None, True)


def _ratio(n: int, d: int) -> tuple[int, int]:
  if d < 0:
    n, d = -n, -d
  g = math.gcd(n, d)
  return (n // g, d // g) if g > 1 else (n, d)


def _combine(a: Node, b: Node):
  """Every node a op b (and b op a for - and /), in a fixed order."""
  an, ad, bn, bd = a[0], a[1], b[0], b[1]
  ints = a[5] and b[5]
  for (n, d), op, x, y in (
      (_ratio(an * bd + bn * ad, ad * bd), "+", a, b),
      (_ratio(an * bn, ad * bd), "*", a, b),
      (_ratio(an * bd - bn * ad, ad * bd), "-", a, b),
      (_ratio(bn * ad - an * bd, ad * bd), "-", b, a)):
    yield (n, d, op, x, y, ints and d == 1 and n >= 0)
  if bn != 0:
    n, d = _ratio(an * bd, ad * bn)
    yield (n, d, "/", a, b, ints and d == 1 and n >= 0)
  if an != 0:
    n, d = _ratio(bn * ad, bd * an)
    yield (n, d, "/", b, a, ints and d == 1 and n >= 0)


def _value_text(n: int, d: int) -> str:
  return str(n) if d == 1 else f"{n}/{d}"


def _operand(node: Node) -> str:
  s = _value_text(node[0], node[1])
  return f"({s})" if (node[1] != 1 or node[0] < 0) else s


def _expr(node: Node) -> str:
  if node[2] is None:
    return node[3]
  return f"({_expr(node[3])}{node[2]}{_expr(node[4])})"


def _steps(node: Node) -> tuple[str, ...]:
  if node[2] is None:
    return ()
  x, y = node[3], node[4]
  step = f"{_operand(x)}{node[2]}{_operand(y)}={_value_text(node[0], node[1])}"
  return _steps(x) + _steps(y) + (step,)


def _search(items: tuple[Node, ...], target: int, use_all: bool, out: dict):
  for it in items:
    if it[0] == target and it[1] == 1 and it[2] is not None and (not use_all or len(items) == 1):
      expr = _expr(it)
      formula = expr[1:-1] if expr.startswith("(") else expr
      if formula not in out:
        out[formula] = (_steps(it), it[5])
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
  Sorted: integer-only solutions first, then by formula. A formula's steps
  are those of the first derivation the search meets (combining pairs in
  index order, operations in the order + * - / ).
  """
  items = tuple(_leaf(int(v)) for v in sorted(values))
  out: dict = {}
  if not use_all:
    for r in range(1, len(items) + 1):
      for sub in itertools.combinations(items, r):
        _search(sub, int(target), True, out)
  else:
    _search(items, int(target), True, out)
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
