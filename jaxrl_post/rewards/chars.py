"""Token ids -> characters, in JAX, for any tokenizer.

`CharTable.from_tokenizer(tok)` stores each token's text as code points
(int32[V, Lmax], lengths int32[V]); `token_chars` expands a batch of
completions to a compact character buffer of static width C (characters past
C are cut; `length` reports how many fit). Every text reward works on these
characters, so it behaves the same for char, sentencepiece or BPE tokens.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


class CharTable:
  """A hashable, static token -> text table (a setting of a reward, not data).

  codes: int32[V, Lmax] code points; lengths: int32[V]. Hashing by content
  lets rewards keep it as a static (pytree_node=False) field, so it becomes a
  compile-time constant of the reward.
  """

  def __init__(self, codes: np.ndarray, lengths: np.ndarray):
    self.codes = np.asarray(codes, np.int32)
    self.lengths = np.asarray(lengths, np.int32)
    self._key = (self.codes.shape, self.codes.tobytes(), self.lengths.tobytes())

  def __hash__(self):
    return hash(self._key)

  def __eq__(self, other):
    return isinstance(other, CharTable) and self._key == other._key

  @classmethod
  def from_tokenizer(cls, tokenizer, vocab_size: int | None = None) -> "CharTable":
    v = vocab_size or tokenizer.vocab_size
    pieces = [tokenizer.piece_text(i) if i < tokenizer.vocab_size else "" for i in range(v)]
    lmax = max(1, max(len(p) for p in pieces))
    codes = np.zeros((v, lmax), np.int32)
    for i, p in enumerate(pieces):
      codes[i, :len(p)] = [ord(c) for c in p]
    return cls(codes, np.asarray([len(p) for p in pieces], np.int32))


# The most characters `completion_width` asks a reward to read per completion.
MAX_COMPLETION_WIDTH = 16384


def completion_width(table: CharTable, num_tokens: int,
                     cap: int = MAX_COMPLETION_WIDTH) -> int:
  """Characters that hold any completion of `num_tokens` tokens whole:
  num_tokens x the longest token text (so a reward reads the text the host
  would decode, never a cut one). Capped at `cap`, with a warning: beyond it
  a reward sees only the first `cap` characters."""
  need = int(num_tokens) * max(1, int(table.codes.shape[1]))
  if need > cap:
    from absl import logging
    logging.warning("completions of %d tokens can hold %d characters (longest token: %d); "
                    "rewards read only the first %d", num_tokens, need,
                    table.codes.shape[1], cap)
  return max(1, min(need, cap))


def token_chars(tokens: jax.Array, mask: jax.Array, table: CharTable,
                width: int) -> tuple[jax.Array, jax.Array]:
  """tokens int32[B, T], mask bool[B, T] -> (chars int32[B, width], length int32[B]).

  Characters are code points; positions >= length hold 0.
  """
  lengths, codes_t = jnp.asarray(table.lengths), jnp.asarray(table.codes)
  lens = jnp.where(mask, lengths[tokens], 0)  # [B, T]
  starts = jnp.cumsum(lens, axis=1) - lens  # [B, T]
  lmax = table.codes.shape[1]
  codes = codes_t[tokens]  # [B, T, Lmax]
  offs = starts[..., None] + jnp.arange(lmax)  # [B, T, Lmax]
  valid = jnp.arange(lmax) < lens[..., None]
  b = tokens.shape[0]
  dest = jnp.where(valid & (offs < width), offs, width)  # width = dump slot
  out = jnp.zeros((b, width + 1), jnp.int32)
  out = out.at[jnp.arange(b)[:, None, None], dest].set(jnp.where(valid, codes, 0))
  total = jnp.sum(lens, axis=1)
  return out[:, :width], jnp.minimum(total, width).astype(jnp.int32)


def encode_strings(strings, width: int) -> tuple[np.ndarray, np.ndarray]:
  """Host helper: strings -> (int32[B, width] code points, int32[B] lengths)."""
  out = np.zeros((len(strings), width), np.int32)
  lens = np.zeros(len(strings), np.int32)
  for i, s in enumerate(strings):
    s = s[:width]
    out[i, :len(s)] = [ord(c) for c in s]
    lens[i] = len(s)
  return out, lens


def find_last(chars: jax.Array, length: jax.Array, pattern: str) -> jax.Array:
  """Index of the last occurrence of `pattern` in chars[:length] (-1 if none).

  chars: int32[C] (one row; vmap for batches).
  """
  c = chars.shape[0]
  p = len(pattern)
  pat = jnp.asarray([ord(x) for x in pattern], jnp.int32)
  idx = jnp.arange(c)
  windows = chars[jnp.clip(idx[:, None] + jnp.arange(p)[None, :], 0, c - 1)]
  hit = jnp.all(windows == pat[None, :], axis=1) & (idx + p <= length)
  return jnp.max(jnp.where(hit, idx, -1))


def find_first(chars: jax.Array, length: jax.Array, pattern: str, start=0) -> jax.Array:
  """Index of the first occurrence of `pattern` at or after `start` (-1 if none)."""
  c = chars.shape[0]
  p = len(pattern)
  pat = jnp.asarray([ord(x) for x in pattern], jnp.int32)
  idx = jnp.arange(c)
  windows = chars[jnp.clip(idx[:, None] + jnp.arange(p)[None, :], 0, c - 1)]
  hit = jnp.all(windows == pat[None, :], axis=1) & (idx + p <= length) & (idx >= start)
  return jnp.where(jnp.any(hit), jnp.argmax(hit), -1)


# Code points that Python's str.isspace() (and so str.strip()) treats as whitespace.
_WHITESPACE = np.array([c for c in range(0x3001) if chr(c).isspace()], np.int32)


def strip(chars: jax.Array, start, stop, strip_chars: str | None = None):
  """(start', stop') of chars[start:stop] without leading and trailing
  `strip_chars` (default: whitespace), as Python's `str.strip(strip_chars)`;
  start' == stop' if nothing else is left.

  chars: int32[C] (one row).
  """
  codes = _WHITESPACE if strip_chars is None else np.array([ord(c) for c in strip_chars])
  idx = jnp.arange(chars.shape[0])
  inside = (idx >= start) & (idx < stop)
  text = inside & ~jnp.any(chars[:, None] == jnp.asarray(codes, jnp.int32), axis=-1)
  first = jnp.where(jnp.any(text), jnp.argmax(text), stop)
  last = jnp.max(jnp.where(text, idx, first - 1))
  return first, jnp.maximum(last + 1, first)


def segment(chars: jax.Array, start, stop, width: int) -> tuple[jax.Array, jax.Array]:
  """chars[start:stop] copied to a fresh buffer of static width (0-padded)."""
  idx = start + jnp.arange(width)
  ok = idx < stop
  seg = jnp.where(ok, chars[jnp.clip(idx, 0, chars.shape[0] - 1)], 0)
  return seg, jnp.clip(stop - start, 0, width).astype(jnp.int32)
