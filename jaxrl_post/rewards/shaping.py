"""Format, length and calibration rewards (DAPO overlong penalty, RLCR)."""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp

from jaxrl_post.rewards import chars as C

FORMATS = ("answer", "think", "confidence")


@flax.struct.dataclass
class FormatReward:
  """1 if the completion has the required structure, else `penalty`.

  kind: "answer" (an `Answer:` line), "think" (`<think>` ... `</think>` then
  text), "confidence" (an `Answer:` line and a later `Confidence: q` with q a
  decimal in [0, 1]).
  """

  table: C.CharTable = flax.struct.field(pytree_node=False)
  kind: str = flax.struct.field(pytree_node=False, default="answer")
  penalty: float = flax.struct.field(pytree_node=False, default=0.0)
  width: int = flax.struct.field(pytree_node=False, default=256)

  def ok(self, chars, n):
    if self.kind == "answer":
      return C.find_last(chars, n, "Answer:") >= 0
    if self.kind == "think":
      o, c = C.find_first(chars, n, "<think>"), C.find_first(chars, n, "</think>")
      return (o >= 0) & (c > o) & (c + 8 < n)
    if self.kind == "confidence":
      _, valid = parse_confidence(chars, n)
      return (C.find_last(chars, n, "Answer:") >= 0) & valid
    raise ValueError(f"FormatReward.kind {self.kind!r} not in {FORMATS}")

  def __call__(self, tokens, mask):
    chars, n = C.token_chars(tokens, mask, self.table, self.width)
    ok = jax.vmap(self.ok)(chars, n)
    return jnp.where(ok, 1.0, self.penalty).astype(jnp.float32), {}


@flax.struct.dataclass
class OverlongPenalty:
  """DAPO soft overlong punishment on the completion length L in tokens:
  0 if L <= max_len - cache; ((max_len - cache) - L) / cache if
  max_len - cache < L <= max_len; -1 beyond (research/papers.md 6.2)."""

  max_len: int = flax.struct.field(pytree_node=False, default=64)
  cache: int = flax.struct.field(pytree_node=False, default=16)

  def __call__(self, tokens, mask):
    del tokens
    length = jnp.sum(mask, axis=1).astype(jnp.float32)
    soft = self.max_len - self.cache
    r = jnp.where(length <= soft, 0.0,
                  jnp.where(length <= self.max_len, (soft - length) / self.cache, -1.0))
    return r.astype(jnp.float32), {}


# The spaces and the number after `Confidence:` must fit in this many characters.
CONFIDENCE_WIDTH = 12


def parse_confidence(chars, n, prefix: str = "Confidence:"):
  """q after the last `Confidence:`: skip spaces, take the run of digits and
  dots; valid iff it has at most one '.', at least one digit, a value in
  [0, 1], and the spaces and the run fit in CONFIDENCE_WIDTH characters (a
  longer one is malformed, never silently cut). Returns (q f32, valid bool).

  chars: int32[C] code points of one completion, n: its length.
  """
  at = C.find_last(chars, n, prefix)
  w = CONFIDENCE_WIDTH + 1  # one character of lookahead to see a longer run
  seg, seg_len = C.segment(chars, at + len(prefix), n, w)
  idx = jnp.arange(w)
  first = jnp.argmin((seg == 32) & (idx < seg_len))
  is_digit = (seg >= 48) & (seg <= 57)
  is_dot = seg == 46
  in_run = jnp.cumprod(((is_digit | is_dot) & (idx < seg_len)) | (idx < first)) * (idx >= first)
  run = in_run > 0
  dots = jnp.sum(run & is_dot)
  ndig = jnp.sum(run & is_digit)
  dot_pos = jnp.where(jnp.any(run & is_dot), jnp.argmax(run & is_dot), first + jnp.sum(run))
  d = (seg - 48).astype(jnp.float32)
  int_part = jnp.sum(jnp.where(run & is_digit & (idx < dot_pos),
                               d * 10.0 ** (dot_pos - 1 - idx).astype(jnp.float32), 0.0))
  frac_part = jnp.sum(jnp.where(run & is_digit & (idx > dot_pos),
                                d * 10.0 ** (dot_pos - idx).astype(jnp.float32), 0.0))
  q = int_part + frac_part
  fits = first + jnp.sum(run) <= CONFIDENCE_WIDTH
  valid = (at >= 0) & (dots <= 1) & (ndig > 0) & (q <= 1.0) & fits
  return jnp.where(valid, q, 0.0), valid


@flax.struct.dataclass
class CalibrationReward:
  """RLCR (research/papers.md 5.2): correct - (q - correct)^2 with q the
  stated confidence; a missing or malformed confidence gets `penalty`.

  verifier: any reward whose aux has "correct" (e.g. Gp24Reward).
  """

  verifier: object
  table: C.CharTable = flax.struct.field(pytree_node=False)
  penalty: float = flax.struct.field(pytree_node=False, default=-1.0)
  width: int = flax.struct.field(pytree_node=False, default=256)

  def __call__(self, tokens, mask):
    _, vaux = self.verifier(tokens, mask)
    correct = vaux["correct"]
    chars, n = C.token_chars(tokens, mask, self.table, self.width)
    q, valid = jax.vmap(parse_confidence)(chars, n)
    r = jnp.where(valid, correct - (q - correct) ** 2, self.penalty)
    return r.astype(jnp.float32), {"correct": correct, "confidence": q,
                                   "brier": jnp.where(valid, (q - correct) ** 2, 1.0),
                                   "confidence_ok": valid.astype(jnp.float32)}
