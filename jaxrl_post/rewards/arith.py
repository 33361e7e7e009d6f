"""Exact rational evaluation of infix formulas on characters, in JAX.

`evaluate_chars(chars, length)` parses one row with a shunting-yard loop
(`lax.fori_loop` over the static width, inner `while_loop`s to reduce the
operator stack) and evaluates with int32 numerator/denominator pairs reduced
by their gcd. It mirrors `jaxrl_post.tasks.base.evaluate_formula`: grammar
`expr := term (('+'|'-') term)*`, `term := factor (('*'|'/') factor)*`,
`factor := INT | '(' expr ')'`, spaces between tokens, no unary minus,
integers of at most 4 digits without leading zeros. Anything else is
invalid, never an exception or NaN.

int32 is exact whenever the literals are the task's (at most 4 numbers of at
most 13): every reduced intermediate stays far below 2^31. Formulas with
other literals are rejected by the number check before their value matters.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

MAX_LITERALS = 8
_PLUS, _MINUS, _TIMES, _DIV, _LPAREN = 1, 2, 3, 4, 5


def _gcd(a, b):
  a, b = jnp.abs(a), jnp.abs(b)

  def body(c):
    x, y = c
    return y, jnp.where(y == 0, 0, x % jnp.where(y == 0, 1, y))

  a, _ = jax.lax.while_loop(lambda c: c[1] != 0, body, (a, b))
  return jnp.maximum(a, 1)


def _apply(op, an, ad, bn, bd):
  """(an/ad) op (bn/bd) -> (num, den, divided_by_zero), reduced, den > 0."""
  num = jnp.select([op == _PLUS, op == _MINUS, op == _TIMES],
                   [an * bd + bn * ad, an * bd - bn * ad, an * bn], an * bd)
  den = jnp.where(op == _DIV, ad * bn, ad * bd)
  divzero = (op == _DIV) & (bn == 0)
  den = jnp.where(divzero, 1, den)
  sign = jnp.where(den < 0, -1, 1)
  num, den = num * sign, den * sign
  g = _gcd(num, den)
  return num // g, den // g, divzero


def _prec(op):
  return jnp.where((op == _TIMES) | (op == _DIV), 2, jnp.where(op == _LPAREN, 0, 1))


def evaluate_chars(chars: jax.Array, length: jax.Array, max_digits: int = 4):
  """One formula: chars int32[W] (code points), length int32.

  Returns dict(valid bool, num int32, den int32, divzero bool,
  literals int32[MAX_LITERALS] (-1 padded), count int32).
  """
  w = chars.shape[0]
  zeros = jnp.zeros((w + 1,), jnp.int32)
  init = dict(vn=zeros, vd=jnp.ones((w + 1,), jnp.int32), vsp=jnp.int32(0),
              ops=zeros, osp=jnp.int32(0), cur=jnp.int32(0), in_num=jnp.bool_(False),
              ndig=jnp.int32(0), lead0=jnp.bool_(False), expect=jnp.bool_(True),
              err=jnp.bool_(False), divzero=jnp.bool_(False),
              lits=jnp.full((MAX_LITERALS,), -1, jnp.int32), count=jnp.int32(0))

  def reduce_top(s):
    op = s["ops"][s["osp"] - 1]
    i = s["vsp"]
    ok = i >= 2
    an, ad = s["vn"][jnp.maximum(i - 2, 0)], s["vd"][jnp.maximum(i - 2, 0)]
    bn, bd = s["vn"][jnp.maximum(i - 1, 0)], s["vd"][jnp.maximum(i - 1, 0)]
    num, den, dz = _apply(op, an, ad, bn, bd)
    j = jnp.maximum(i - 2, 0)
    s = dict(s, vn=s["vn"].at[j].set(num), vd=s["vd"].at[j].set(den),
             vsp=jnp.where(ok, i - 1, i), osp=s["osp"] - 1,
             err=s["err"] | ~ok, divzero=s["divzero"] | (dz & ok))
    return s

  def reduce_while(s, cond):
    return jax.lax.while_loop(lambda t: cond(t) & ~t["err"], reduce_top, s)

  def finish_number(s):
    bad = (s["ndig"] > max_digits) | ((s["ndig"] > 1) & s["lead0"])
    i = s["vsp"]
    push = s["in_num"]
    s = dict(s,
             vn=jnp.where(push, s["vn"].at[i].set(s["cur"]), s["vn"]),
             vd=jnp.where(push, s["vd"].at[i].set(1), s["vd"]),
             vsp=jnp.where(push, i + 1, i),
             lits=jnp.where(push & (s["count"] < MAX_LITERALS),
                            s["lits"].at[jnp.minimum(s["count"], MAX_LITERALS - 1)].set(s["cur"]),
                            s["lits"]),
             count=jnp.where(push, s["count"] + 1, s["count"]),
             err=s["err"] | (push & bad),
             expect=jnp.where(push, False, s["expect"]),
             in_num=jnp.bool_(False))
    return s

  def step(i, s):
    ch = jnp.where(i < length, chars[jnp.minimum(i, w - 1)], -1)
    at_end = i == length
    active = i <= length
    is_digit = (ch >= 48) & (ch <= 57)
    d = ch - 48

    def on_digit(s):
      start = ~s["in_num"]
      err = s["err"] | (start & ~s["expect"])
      cur = jnp.where(start, d, jnp.where(s["ndig"] < 9, s["cur"] * 10 + d, s["cur"]))
      return dict(s, cur=cur, in_num=jnp.bool_(True), err=err,
                  ndig=jnp.where(start, 1, s["ndig"] + 1),
                  lead0=jnp.where(start, d == 0, s["lead0"]))

    def on_other(s):
      s = finish_number(s)
      is_space = ch == 32
      is_l, is_r = ch == 40, ch == 41
      op = jnp.select([ch == 43, ch == 45, ch == 42, ch == 47], [_PLUS, _MINUS, _TIMES, _DIV], 0)
      is_op = op > 0
      known = is_space | is_l | is_r | is_op | at_end
      s = dict(s, err=s["err"] | ~known)

      def lparen(s):
        return dict(s, err=s["err"] | ~s["expect"], ops=s["ops"].at[s["osp"]].set(_LPAREN),
                    osp=s["osp"] + 1)

      def rparen(s):
        s = dict(s, err=s["err"] | s["expect"])
        s = reduce_while(s, lambda t: (t["osp"] > 0) & (t["ops"][t["osp"] - 1] != _LPAREN))
        ok = s["osp"] > 0
        return dict(s, err=s["err"] | ~ok, osp=jnp.where(ok, s["osp"] - 1, s["osp"]))

      def operator(s):
        s = dict(s, err=s["err"] | s["expect"])
        p = _prec(op)
        s = reduce_while(s, lambda t: (t["osp"] > 0) & (t["ops"][t["osp"] - 1] != _LPAREN)
                         & (_prec(t["ops"][t["osp"] - 1]) >= p))
        return dict(s, ops=s["ops"].at[s["osp"]].set(op), osp=s["osp"] + 1,
                    expect=jnp.bool_(True))

      def end(s):
        s = dict(s, err=s["err"] | s["expect"])
        s = reduce_while(s, lambda t: (t["osp"] > 0) & (t["ops"][t["osp"] - 1] != _LPAREN))
        return dict(s, err=s["err"] | (s["osp"] > 0) | (s["vsp"] != 1))

      branch = jnp.select([at_end, is_l, is_r, is_op], [3, 1, 2, 4], 0)
      return jax.lax.switch(branch, [lambda s: s, lparen, rparen, end, operator], s)

    new = jax.lax.cond(is_digit & ~at_end, on_digit, on_other, s)
    return jax.tree.map(lambda a, b: jnp.where(active, a, b), new, s)

  s = jax.lax.fori_loop(0, w + 1, step, init)
  valid = ~s["err"] & ~s["divzero"] & (length > 0)
  return dict(valid=valid, num=s["vn"][0], den=s["vd"][0], divzero=s["divzero"],
              literals=s["lits"], count=s["count"])


def multiset_equal(lits: jax.Array, count: jax.Array, values: jax.Array) -> jax.Array:
  """The literals (first `count`) are exactly the multiset `values` int32[K]."""
  k = values.shape[0]
  a = jnp.sort(jnp.where(jnp.arange(lits.shape[0]) < count, lits, 1 << 20))[:k]
  return (count == k) & jnp.all(a == jnp.sort(values))


def multiset_subset(lits: jax.Array, count: jax.Array, values: jax.Array) -> jax.Array:
  """Each literal uses a distinct entry of `values` (each number at most once)."""
  n = lits.shape[0]
  used = jnp.arange(n) < count
  # Count of each literal among the used literals <= its count in values.
  same_l = (lits[:, None] == lits[None, :]) & used[None, :]
  in_v = lits[:, None] == values[None, :]
  ok = jnp.sum(same_l, axis=1) <= jnp.sum(in_v, axis=1)
  return (count <= n) & jnp.all(ok | ~used)
