"""Token batches for training: tokenisation, padding, packing, deterministic order.

A batch is a dict of host arrays, all [B, T]:
  tokens int32 (model input), targets int32 (next token), positions int32,
  segment_ids int32 (0 = padding; >0 = example index within the row),
  weights float32 (1 on completion targets: the prompt is masked).

The order of examples is a pure function of (seed, step), so a resumed run
sees exactly the batches an uninterrupted run would.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np
from absl import logging

from jaxrl_post.tokenizers.base import prompt_ids


@dataclasses.dataclass(frozen=True)
class Tokenized:
  """prompt: [bos] + prompt ids (bos per `prompt_ids`); completion: ids + [eos]."""

  prompt: tuple[int, ...]
  completion: tuple[int, ...]

  def __len__(self):
    return len(self.prompt) + len(self.completion)


def tokenize_examples(examples: Sequence, tokenizer, max_len: int | None = None,
                      what: str = "examples") -> list[Tokenized]:
  """Tokenises (prompt, completion) pairs; drops (and logs) too-long ones.

  Raises ValueError when nothing fits, naming the longest example.
  """
  out = []
  too_long = []
  for ex in examples:
    t = Tokenized(prompt=tuple(prompt_ids(tokenizer, ex.prompt)),
                  completion=(*tokenizer.encode(ex.completion), tokenizer.eos_id))
    if max_len is not None and len(t) > max_len:
      too_long.append((len(t), ex.id))
      continue
    out.append(t)
  if too_long:
    logging.warning("%d of %d %s exceed %d tokens and were dropped (longest: %s, %d tokens)",
                    len(too_long), len(examples), what, max_len, max(too_long)[1],
                    max(too_long)[0])
  if not out:
    raise ValueError(f"no {what} fit in {max_len} tokens (shortest dropped: "
                     f"{min(too_long)[0]} tokens)")
  return out


def _row_arrays(seqs: Sequence[Tokenized], seq_len: int, pad_id: int):
  """Packs seqs (in order) into one row of length seq_len + 1 (inputs+shift)."""
  length = seq_len + 1
  tokens = np.full(length, pad_id, np.int32)
  seg = np.zeros(length, np.int32)
  pos = np.zeros(length, np.int32)
  is_completion = np.zeros(length, bool)
  at = 0
  for i, s in enumerate(seqs, start=1):
    ids = s.prompt + s.completion
    n = len(ids)
    tokens[at:at + n] = ids
    seg[at:at + n] = i
    pos[at:at + n] = np.arange(n)
    is_completion[at + len(s.prompt):at + n] = True
    at += n
  # Inputs are positions [0, T), targets are [1, T+1); a target counts when it
  # is a completion token of the same segment as its input.
  same = (seg[1:] == seg[:-1]) & (seg[:-1] != 0)
  return dict(tokens=tokens[:-1], targets=tokens[1:], positions=pos[:-1],
              segment_ids=seg[:-1],
              weights=(same & is_completion[1:]).astype(np.float32))


def make_batch(rows: Sequence[Sequence[Tokenized]], seq_len: int,
               pad_id: int) -> dict[str, np.ndarray]:
  """Stacks rows (each a list of examples packed together) into a batch."""
  arrays = [_row_arrays(r, seq_len, pad_id) for r in rows]
  return {k: np.stack([a[k] for a in arrays]) for k in arrays[0]}


def pack_rows(seqs: Sequence[Tokenized], seq_len: int) -> list[list[Tokenized]]:
  """Greedy first-fit packing in order: each row holds <= seq_len + 1 tokens."""
  rows: list[list[Tokenized]] = []
  used: list[int] = []
  for s in seqs:
    for i, u in enumerate(used):
      if u + len(s) <= seq_len + 1:
        rows[i].append(s)
        used[i] += len(s)
        break
    else:
      rows.append([s])
      used.append(len(s))
  return rows


class BatchStream:
  """Deterministic batches over a fixed pool: batch(step) is pure in (seed, step).

  Each epoch is a fresh permutation drawn from (seed, epoch). With packing,
  `examples_per_row` examples are drawn per row and packed first-fit; rows
  that overflow spill into the next row's budget (never truncated).
  """

  def __init__(self, pool: Sequence[Tokenized], batch_size: int, seq_len: int,
               pad_id: int, seed: int, pack: bool = False):
    if not pool:
      raise ValueError("BatchStream: empty example pool")
    longest = max(len(s) for s in pool)
    if longest > seq_len + 1:
      raise ValueError(f"an example has {longest} tokens > seq_len + 1 = {seq_len + 1}")
    self.pool = list(pool)
    self.batch_size = batch_size
    self.seq_len = seq_len
    self.pad_id = pad_id
    self.seed = seed
    self.pack = pack
    mean_len = float(np.mean([len(s) for s in pool]))
    self.per_row = max(1, int((seq_len + 1) // mean_len)) if pack else 1

  def _indices(self, start: int, count: int) -> np.ndarray:
    n = len(self.pool)
    out = []
    while count > 0:
      epoch, offset = divmod(start, n)
      perm = np.random.default_rng((self.seed, epoch)).permutation(n)
      take = min(count, n - offset)
      out.append(perm[offset:offset + take])
      start += take
      count -= take
    return np.concatenate(out)

  def batch(self, step: int) -> dict[str, np.ndarray]:
    per_batch = self.batch_size * self.per_row
    idx = self._indices(step * per_batch, per_batch)
    seqs = [self.pool[i] for i in idx]
    if not self.pack:
      return make_batch([[s] for s in seqs], self.seq_len, self.pad_id)
    rows = pack_rows(seqs, self.seq_len)
    rows = (rows + [[] for _ in range(self.batch_size)])[:self.batch_size]
    return make_batch(rows, self.seq_len, self.pad_id)
