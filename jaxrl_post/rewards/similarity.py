"""Sequence similarity in JAX: difflib's Ratcliff-Obershelp ratio, exactly.

`sequence_ratio(a, a_len, b, b_len)` equals
`difflib.SequenceMatcher(None, a, b, autojunk=False).ratio()` = 2M / (|a|+|b|)
(1.0 when both are empty), where M sums the sizes of the matching blocks:
the longest common block of the range (difflib's tie-breaking: the block
that starts earliest in a, then earliest in b), then recursively the ranges
left and right of it. Under jit with static maximum lengths: the common-
suffix table is built once per pair by a scan, and each range query is a
masked max over it, driven by an explicit stack in a `lax.while_loop`.

`StepSimilarityReward` is SRL's step reward (research/papers.md 1.4).
"""

from __future__ import annotations

import difflib

import flax.struct
import jax
import jax.numpy as jnp

from jaxrl_post.rewards import chars as C


def _matched(a, la, b, lb):
  """M for one pair: a int32[La], b int32[Lb] (first la / lb entries count)."""
  na, nb = a.shape[0], b.shape[0]
  ii = jnp.arange(na)[:, None]
  jj = jnp.arange(nb)[None, :]
  eq = (a[:, None] == b[None, :]) & (ii < la) & (jj < lb)

  def row(prev, eq_i):
    cur = jnp.where(eq_i, jnp.concatenate([jnp.zeros((1,), jnp.int32), prev[:-1]]) + 1, 0)
    return cur, cur

  _, suffix = jax.lax.scan(row, jnp.zeros((nb,), jnp.int32), eq)  # [La, Lb]
  depth = na + nb + 2
  stack = jnp.zeros((depth, 4), jnp.int32).at[0].set(jnp.stack([0, la, 0, lb]))

  def cond(c):
    return c[1] > 0

  def body(c):
    stack, sp, m = c
    alo, ahi, blo, bhi = stack[sp - 1]
    sp = sp - 1
    inside = (ii >= alo) & (ii < ahi) & (jj >= blo) & (jj < bhi)
    run = jnp.where(inside, jnp.minimum(suffix, jnp.minimum(ii - alo + 1, jj - blo + 1)), 0)
    k = jnp.max(run)
    flat = jnp.argmax((run == k).reshape(-1))  # row-major: earliest end in a, then in b
    i = flat // nb - k + 1
    j = flat % nb - k + 1
    found = k > 0
    push_left = found & (alo < i) & (blo < j)
    stack = jnp.where(push_left, stack.at[sp].set(jnp.stack([alo, i, blo, j])), stack)
    sp = sp + push_left
    push_right = found & (i + k < ahi) & (j + k < bhi)
    stack = jnp.where(push_right, stack.at[sp].set(jnp.stack([i + k, ahi, j + k, bhi])), stack)
    sp = sp + push_right
    return stack, sp, m + jnp.where(found, k, 0)

  _, _, m = jax.lax.while_loop(cond, body, (stack, jnp.int32(1), jnp.int32(0)))
  return m


def sequence_ratio(a: jax.Array, a_len: jax.Array, b: jax.Array, b_len: jax.Array) -> jax.Array:
  """2M/T per row. a: int32[B, La], a_len: int32[B], b: int32[B, Lb], b_len: int32[B]."""
  a_len = jnp.clip(a_len, 0, a.shape[1]).astype(jnp.int32)
  b_len = jnp.clip(b_len, 0, b.shape[1]).astype(jnp.int32)
  m = jax.vmap(_matched)(a.astype(jnp.int32), a_len, b.astype(jnp.int32), b_len)
  total = a_len + b_len
  return jnp.where(total > 0, 2.0 * m / jnp.maximum(total, 1), 1.0).astype(jnp.float32)


def host_sequence_ratio(a: str, b: str, autojunk: bool = False) -> float:
  """The host reference (difflib), also with autojunk=True for comparison."""
  return difflib.SequenceMatcher(None, a, b, autojunk=autojunk).ratio()


@flax.struct.dataclass
class StepSimilarityReward:
  """SRL: ratio(action, expert step) on characters; format failure -> -1.

  The action is the text after the first `</think>`, with surrounding newlines
  stripped; the output must contain `<think>` before that `</think>`. An empty
  action or one longer than `max_action` characters is a format failure.
  expert: int32[B, Lb] code points of the expert step, expert_len int32[B].
  """

  expert: jax.Array
  expert_len: jax.Array
  table: C.CharTable = flax.struct.field(pytree_node=False)
  max_action: int = flax.struct.field(pytree_node=False, default=64)
  width: int = flax.struct.field(pytree_node=False, default=256)

  def _action(self, chars, n):
    open_at = C.find_first(chars, n, "<think>")
    close_at = C.find_first(chars, n, "</think>")
    ok = (open_at >= 0) & (close_at >= 0) & (open_at < close_at)
    start, stop = C.strip(chars, close_at + 8, n, "\n")
    seg, seg_len = C.segment(chars, start, stop, self.max_action)
    length = stop - start
    ok = ok & (length > 0) & (length <= self.max_action)
    return seg, seg_len, ok

  def __call__(self, tokens, mask):
    chars, n = C.token_chars(tokens, mask, self.table, self.width)
    seg, seg_len, ok = jax.vmap(self._action)(chars, n)
    ratio = sequence_ratio(seg, seg_len, self.expert, self.expert_len)
    r = jnp.where(ok, ratio, -1.0).astype(jnp.float32)
    return r, {"similarity": jnp.where(ok, ratio, 0.0), "format_ok": ok.astype(jnp.float32)}


def step_similarity_reward(examples, table, max_action: int = 64,
                           width: int = 256) -> StepSimilarityReward:
  """width: characters of each completion read (`chars.completion_width`)."""
  exp, ln = C.encode_strings([e.meta["expert_step"] for e in examples], max_action)
  return StepSimilarityReward(expert=jnp.asarray(exp), expert_len=jnp.asarray(ln), table=table,
                              max_action=max_action, width=width)
