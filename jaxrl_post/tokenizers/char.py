"""A character tokenizer: one token per character (ids 0 pad, 1 bos, 2 eos).

The alphabet is printable ASCII (32..126) plus newline, so every task's text
round-trips exactly and a token is a character (what SRL's difflib ratio on
strings needs). Characters outside the alphabet raise a ValueError.
"""

from __future__ import annotations

from typing import Sequence

from jaxrl_post.tokenizers import base

PAD, BOS, EOS = 0, 1, 2
ALPHABET = "\n" + "".join(chr(c) for c in range(32, 127))


class CharTokenizer:
  """encode/decode characters; `vocab_size` = 3 + len(ALPHABET) = 99."""

  pad_id = PAD
  bos_id = BOS
  eos_id = EOS

  def __init__(self, alphabet: str = ALPHABET):
    if len(set(alphabet)) != len(alphabet):
      raise ValueError("CharTokenizer: the alphabet has repeated characters")
    self.alphabet = alphabet
    self._ids = {c: i + 3 for i, c in enumerate(alphabet)}
    self.vocab_size = 3 + len(alphabet)

  def encode(self, text: str) -> list[int]:
    try:
      return [self._ids[c] for c in text]
    except KeyError as e:
      raise ValueError(f"CharTokenizer: character {e.args[0]!r} is not in the alphabet") from None

  def decode(self, ids: Sequence[int]) -> str:
    return "".join(self.alphabet[i - 3] for i in ids if 3 <= i < self.vocab_size)

  def piece_text(self, i: int) -> str:
    return self.alphabet[i - 3] if 3 <= i < self.vocab_size else ""

  def save(self, directory: str):
    base.write_manifest(directory, {"kind": "char", "alphabet": self.alphabet})

  @classmethod
  def load(cls, directory: str) -> "CharTokenizer":
    return cls(base.read_manifest(directory)["alphabet"])
