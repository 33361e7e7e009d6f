"""Task verifiers in JAX on token ids: gp24, countdown, gsm8k.

Each reads the completion's characters (via a static CharTable), finds the
text after the last `Answer:` (or `#### `) up to the next newline, and checks
it exactly; malformed output gets the defined penalty, never an exception.
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from jaxrl_post.rewards import arith
from jaxrl_post.rewards import chars as C
from jaxrl_post.tasks.base import MAX_FORMULA_CHARS

FORMULA_WIDTH = MAX_FORMULA_CHARS  # longer formulas are illegal, on the host too


def _answer_formula(row, n, prefix="Answer:", width=FORMULA_WIDTH):
  """The characters after the last prefix up to a newline, stripped of
  surrounding whitespace as the host's `tasks.base.extract_answer` (and a
  found flag: False without the prefix or when the stripped formula is
  longer than `width`). Inside the formula the parser skips spaces; any
  other whitespace there is illegal, on the host too."""
  at = C.find_last(row, n, prefix)
  nl = C.find_first(row, n, "\n", at + len(prefix))
  start, stop = C.strip(row, at + len(prefix), jnp.where(nl >= 0, nl, n))
  seg, seg_len = C.segment(row, start, stop, width)
  too_long = (stop - start) > width
  return seg, seg_len, (at >= 0) & ~too_long


@flax.struct.dataclass
class Gp24Reward:
  """24-point verifier. values: int32[B, 4] card values under the rule.

  levels=False: 1 if correct else 0. levels=True (papers.md 2.1): +5 correct,
  -1 right numbers but wrong value, -2 wrong/unused/over-used numbers, -3
  illegal formula or no answer. (The +1 "partial prefix" level needs the
  solution list and is only in the host `score_levels`.)
  """

  values: jax.Array
  table: C.CharTable = flax.struct.field(pytree_node=False)
  levels: bool = flax.struct.field(pytree_node=False, default=False)
  target: int = flax.struct.field(pytree_node=False, default=24)
  width: int = flax.struct.field(pytree_node=False, default=256)

  def score(self, chars, n, values):
    seg, seg_len, found = _answer_formula(chars, n)
    ev = arith.evaluate_chars(seg, seg_len)
    nums_ok = arith.multiset_equal(ev["literals"], ev["count"], values)
    correct = found & ev["valid"] & nums_ok & (ev["num"] == self.target) & (ev["den"] == 1)
    if not self.levels:
      return correct.astype(jnp.float32), correct
    syntax_ok = found & ev["valid"]
    r = jnp.where(correct, 5.0, jnp.where(~syntax_ok, -3.0, jnp.where(~nums_ok, -2.0, -1.0)))
    return r.astype(jnp.float32), correct

  def __call__(self, tokens, mask):
    chars, n = C.token_chars(tokens, mask, self.table, self.width)
    r, correct = jax.vmap(self.score)(chars, n, self.values)
    return r, {"correct": correct.astype(jnp.float32)}


@flax.struct.dataclass
class CountdownReward:
  """numbers: int32[B, 4]; target: int32[B]. 1 iff each number used at most
  once and the formula equals the target exactly."""

  numbers: jax.Array
  target: jax.Array
  table: C.CharTable = flax.struct.field(pytree_node=False)
  width: int = flax.struct.field(pytree_node=False, default=256)

  def score(self, chars, n, numbers, target):
    seg, seg_len, found = _answer_formula(chars, n)
    ev = arith.evaluate_chars(seg, seg_len)
    ok = found & ev["valid"] & (ev["count"] <= arith.MAX_LITERALS) & arith.multiset_subset(
        ev["literals"], ev["count"], numbers) & (ev["num"] == target) & (ev["den"] == 1)
    return ok

  def __call__(self, tokens, mask):
    chars, n = C.token_chars(tokens, mask, self.table, self.width)
    ok = jax.vmap(self.score)(chars, n, self.numbers, self.target)
    return ok.astype(jnp.float32), {"correct": ok.astype(jnp.float32)}


@flax.struct.dataclass
class Gsm8kReward:
  """answer: int32[B, A] code points of the reference number (commas removed),
  answer_len: int32[B]. 1 iff the text after the last `#### ` (commas
  removed, up to a newline) equals the reference characters."""

  answer: jax.Array
  answer_len: jax.Array
  table: C.CharTable = flax.struct.field(pytree_node=False)
  width: int = flax.struct.field(pytree_node=False, default=512)

  def score(self, chars, n, ref, ref_len):
    """Same rule as the host `tasks.gsm8k.parse_final`: after the last `####`,
    skip spaces, take the run of characters in `-0123456789.,`, drop commas."""
    at = C.find_last(chars, n, "####")
    # The whole rest (any run of spaces, digits and commas), and at least the reference.
    w = max(chars.shape[0], ref.shape[0])
    seg, seg_len = C.segment(chars, at + 4, n, w)
    idx = jnp.arange(w)
    is_space = (seg == 32) & (idx < seg_len)
    first = jnp.argmin(is_space)  # first non-space
    allowed = jnp.zeros(128, bool).at[jnp.asarray([ord(c) for c in "-0123456789.,"])].set(True)
    ok_char = allowed[jnp.clip(seg, 0, 127)] & (seg < 128) & (idx < seg_len) & (idx >= first)
    run = jnp.cumprod(ok_char | (idx < first)) * (idx >= first)
    keep = (run > 0) & (seg != ord(","))
    pos = jnp.cumsum(keep) - 1
    packed = jnp.zeros(w + 1, jnp.int32).at[jnp.where(keep, pos, w)].set(jnp.where(keep, seg, 0))[:w]
    plen = jnp.sum(keep)
    same = (plen == ref_len) & (plen > 0) & jnp.all(
        jnp.where(idx[:ref.shape[0]] < ref_len, packed[:ref.shape[0]] == ref, True))
    return (at >= 0) & same

  def __call__(self, tokens, mask):
    chars, n = C.token_chars(tokens, mask, self.table, self.width)
    ok = jax.vmap(self.score)(chars, n, self.answer, self.answer_len)
    return ok.astype(jnp.float32), {"correct": ok.astype(jnp.float32)}


def gp24_reward(examples, table, levels=False, width: int = 256) -> Gp24Reward:
  """width: characters of each completion read (`chars.completion_width`)."""
  return Gp24Reward(values=jnp.asarray(np.array([e.meta["values"] for e in examples], np.int32)),
                    table=table, levels=levels, width=width)


def countdown_reward(examples, table, width: int = 256) -> CountdownReward:
  nums = np.full((len(examples), 4), -1, np.int32)
  for i, e in enumerate(examples):
    nums[i, :len(e.meta["numbers"])] = e.meta["numbers"]
  return CountdownReward(numbers=jnp.asarray(nums),
                         target=jnp.asarray([e.meta["target"] for e in examples], jnp.int32),
                         table=table, width=width)


def gsm8k_reward(examples, table, answer_width: int = 24, width: int = 512) -> Gsm8kReward:
  """answer_width: characters kept of each reference answer."""
  ref, ln = C.encode_strings([e.meta["answer"] for e in examples], answer_width)
  return Gsm8kReward(answer=jnp.asarray(ref), answer_len=jnp.asarray(ln), table=table,
                     width=width)
