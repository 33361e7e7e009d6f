"""The Example record and the exact formula parser shared by the card tasks."""

from __future__ import annotations

import dataclasses
import re
from fractions import Fraction
from typing import Any, Mapping

ANSWER_PREFIX = "Answer:"
FORMULA_CHARS = set("0123456789+-*/() ")
# A longer formula is illegal (the JAX verifiers read this many characters).
MAX_FORMULA_CHARS = 96


@dataclasses.dataclass(frozen=True)
class Example:
  """One problem.

  prompt: what the model sees. completion: the expert target for SFT.
  answer: canonical answer text. steps: the expert steps (one per line).
  meta: task data for verifiers and rewards (cards, values, target, ...).
  """

  id: str
  prompt: str
  completion: str
  answer: str
  steps: tuple[str, ...]
  meta: Mapping[str, Any]


class FormulaError(ValueError):
  """An illegal formula: bad characters, syntax, parentheses, division by 0."""


def extract_answer(text: str, prefix: str = ANSWER_PREFIX) -> str | None:
  """The text after the LAST `prefix` up to the next newline (None if absent)."""
  at = text.rfind(prefix)
  if at < 0:
    return None
  return text[at + len(prefix):].split("\n", 1)[0].strip()


_TOKEN = re.compile(r"\s*(?:(\d+)|(.))")


def _tokens(formula: str) -> list[str]:
  out = []
  for m in _TOKEN.finditer(formula):
    if m.group(1) is not None:
      out.append(m.group(1))
    elif m.group(2) is not None and not m.group(2).isspace():
      out.append(m.group(2))
  return out


def evaluate_formula(formula: str, max_digits: int = 4) -> tuple[Fraction, list[int]]:
  """Exact value of an infix formula and the integer literals it uses.

  Grammar: expr := term (('+'|'-') term)*; term := factor (('*'|'/') factor)*;
  factor := INT | '(' expr ')'. No unary minus; at most MAX_FORMULA_CHARS
  characters. Raises FormulaError.
  """
  if not formula or set(formula) - FORMULA_CHARS:
    raise FormulaError(f"illegal characters in {formula!r}")
  if len(formula) > MAX_FORMULA_CHARS:
    raise FormulaError(f"formula of {len(formula)} characters (at most {MAX_FORMULA_CHARS})")
  toks = _tokens(formula)
  pos = 0
  numbers: list[int] = []

  def peek():
    return toks[pos] if pos < len(toks) else None

  def take():
    nonlocal pos
    pos += 1
    return toks[pos - 1]

  def factor():
    t = peek()
    if t is None:
      raise FormulaError("unexpected end")
    if t.isdigit():
      take()
      if len(t) > max_digits or (len(t) > 1 and t[0] == "0"):
        raise FormulaError(f"bad number {t!r}")
      numbers.append(int(t))
      return Fraction(int(t))
    if t == "(":
      take()
      v = expr()
      if peek() != ")":
        raise FormulaError("unbalanced parentheses")
      take()
      return v
    raise FormulaError(f"unexpected {t!r}")

  def term():
    v = factor()
    while peek() in ("*", "/"):
      op = take()
      w = factor()
      if op == "*":
        v = v * w
      else:
        if w == 0:
          raise FormulaError("division by zero")
        v = v / w
    return v

  def expr():
    v = term()
    while peek() in ("+", "-"):
      op = take()
      w = term()
      v = v + w if op == "+" else v - w
    return v

  value = expr()
  if pos != len(toks):
    raise FormulaError(f"trailing {toks[pos]!r}")
  return value, numbers


def answer_value(text: str) -> tuple[Fraction, list[int]] | None:
  """(value, literals) of the formula after the last `Answer:`; None if absent or illegal."""
  formula = extract_answer(text)
  if formula is None:
    return None
  try:
    return evaluate_formula(formula)
  except FormulaError:
    return None


def fmt_value(v: Fraction) -> str:
  return str(v.numerator) if v.denominator == 1 else f"{v.numerator}/{v.denominator}"
