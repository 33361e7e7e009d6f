"""A sentencepiece tokenizer trained on a task corpus (deterministic, cached)."""

from __future__ import annotations

import hashlib
import io
import os
from typing import Sequence

from jaxrl_post.tokenizers import base


class SentencePieceTokenizer:
  """Wraps a sentencepiece model with pad=0, bos=1, eos=2 (unk=3)."""

  pad_id = 0
  bos_id = 1
  eos_id = 2

  def __init__(self, model_proto: bytes):
    import sentencepiece as spm
    self._proto = model_proto
    self._sp = spm.SentencePieceProcessor(model_proto=model_proto)
    self.vocab_size = self._sp.get_piece_size()
    self._special = {self._sp.pad_id(), self._sp.bos_id(), self._sp.eos_id(), self._sp.unk_id()}

  @classmethod
  def train(cls, corpus: Sequence[str], directory: str, vocab_size: int = 512,
            cache: bool = True) -> "SentencePieceTokenizer":
    """Trains a BPE model on `corpus` (single thread, fixed order: deterministic).

    With `cache`, a model trained on the same corpus and size is reused from
    `directory/cache-<hash>.model`.
    """
    import sentencepiece as spm
    digest = hashlib.sha256(("\x00".join(corpus) + f"|{vocab_size}").encode()).hexdigest()[:16]
    os.makedirs(directory, exist_ok=True)
    cached = os.path.join(directory, f"cache-{digest}.model")
    if cache and os.path.exists(cached):
      with open(cached, "rb") as f:
        return cls(f.read())
    out = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus), model_writer=out, vocab_size=vocab_size,
        model_type="bpe", character_coverage=1.0, pad_id=0, bos_id=1, eos_id=2,
        unk_id=3, num_threads=1, shuffle_input_sentence=False, byte_fallback=False,
        minloglevel=2, add_dummy_prefix=False,
        split_digits=True, remove_extra_whitespaces=False,
        normalization_rule_name="identity", user_defined_symbols=["\n"],
        hard_vocab_limit=False)
    proto = out.getvalue()
    with open(cached, "wb") as f:
      f.write(proto)
    return cls(proto)

  def encode(self, text: str) -> list[int]:
    return list(self._sp.encode(text))

  def decode(self, ids: Sequence[int]) -> str:
    return self._sp.decode([int(i) for i in ids if int(i) not in self._special])

  def piece_text(self, i: int) -> str:
    if i in self._special or not 0 <= i < self.vocab_size:
      return ""
    piece = self._sp.id_to_piece(i)
    if self._sp.is_byte(i):
      return bytes([int(piece[3:5], 16)]).decode("latin-1")
    return piece.replace("\u2581", " ")

  def save(self, directory: str):
    base.write_manifest(directory, {"kind": "sentencepiece", "model": "spm.model"})
    with open(os.path.join(directory, "spm.model"), "wb") as f:
      f.write(self._proto)

  @classmethod
  def load(cls, directory: str) -> "SentencePieceTokenizer":
    m = base.read_manifest(directory)
    with open(os.path.join(directory, m["model"]), "rb") as f:
      return cls(f.read())
