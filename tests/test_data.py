"""Batching: prompt masking, packing, deterministic order."""

import numpy as np
import pytest

from jaxrl_post import data as D


def _seqs():
  return [D.Tokenized(prompt=(1, 10, 11), completion=(20, 21, 2)),
          D.Tokenized(prompt=(1, 12), completion=(22, 2)),
          D.Tokenized(prompt=(1, 13, 14, 15), completion=(23, 24, 25, 2))]


def test_batch_masks_the_prompt_and_shifts_targets():
  b = D.make_batch([[s] for s in _seqs()], seq_len=10, pad_id=0)
  row = 0  # prompt (1,10,11) completion (20,21,2)
  np.testing.assert_array_equal(b["tokens"][row, :6], [1, 10, 11, 20, 21, 2])
  np.testing.assert_array_equal(b["targets"][row, :5], [10, 11, 20, 21, 2])
  # Only targets that are completion tokens count: 20, 21, 2.
  np.testing.assert_array_equal(b["weights"][row, :6], [0, 0, 1, 1, 1, 0])
  assert b["weights"].sum() == 3 + 2 + 4
  assert (b["segment_ids"][row, 6:] == 0).all()


def test_packing_keeps_examples_separate():
  seqs = _seqs()
  rows = D.pack_rows(seqs, seq_len=12)
  assert sum(len(r) for r in rows) == 3 and all(sum(len(s) for s in r) <= 13 for r in rows)
  b = D.make_batch(rows, seq_len=12, pad_id=0)
  assert b["weights"].sum() == 3 + 2 + 4  # no target crosses a segment boundary
  row = b["segment_ids"][0]
  # positions restart at each segment
  starts = np.flatnonzero(np.diff(np.r_[0, row]) != 0)
  for st in starts:
    if row[st]:
      assert b["positions"][0, st] == 0


def test_stream_is_a_pure_function_of_seed_and_step():
  pool = _seqs() * 5
  a = D.BatchStream(pool, batch_size=4, seq_len=12, pad_id=0, seed=3)
  b = D.BatchStream(pool, batch_size=4, seq_len=12, pad_id=0, seed=3)
  for step in (0, 7, 3):
    for k, v in a.batch(step).items():
      np.testing.assert_array_equal(v, b.batch(step)[k])
  c = D.BatchStream(pool, batch_size=4, seq_len=12, pad_id=0, seed=4)
  assert not all(np.array_equal(a.batch(s)["tokens"], c.batch(s)["tokens"]) for s in range(3))


def test_epochs_cover_the_pool():
  pool = [D.Tokenized(prompt=(1,), completion=(i, 2)) for i in range(3, 23)]
  s = D.BatchStream(pool, batch_size=5, seq_len=4, pad_id=0, seed=0)
  seen = sorted(int(s.batch(k)["tokens"][r, 1]) for k in range(4) for r in range(5))
  assert seen == list(range(3, 23))


def test_too_long_examples_fail_clearly():
  with pytest.raises(ValueError, match="seq_len"):
    D.BatchStream(_seqs(), batch_size=2, seq_len=4, pad_id=0, seed=0)


class _Tok:
  """A byte tokenizer with an `add_bos` switch (like an imported BPE one)."""

  bos_id, eos_id, pad_id = 1, 2, 0

  def __init__(self, add_bos):
    self.add_bos = add_bos

  def encode(self, text):
    return [3 + b for b in text.encode()]


def test_tokenize_prepends_bos_only_when_the_tokenizer_wants_it():
  from jaxrl_post.tasks.base import Example
  ex = Example(id="e", prompt="ab", completion="c", answer="c", steps=(), meta={})
  with_bos = D.tokenize_examples([ex], _Tok(True))[0]
  without = D.tokenize_examples([ex], _Tok(False))[0]
  assert with_bos.prompt == (1, 3 + ord("a"), 3 + ord("b"))
  assert without.prompt == (3 + ord("a"), 3 + ord("b"))
  assert with_bos.completion == without.completion == (3 + ord("c"), 2)
