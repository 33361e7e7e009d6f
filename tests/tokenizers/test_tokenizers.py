"""Tokenizer round trips on every task's text; piece_text consistency."""

import pytest

from jaxrl_post import tasks
from jaxrl_post.tokenizers import CharTokenizer, SentencePieceTokenizer, load_tokenizer


def _texts():
  out = []
  for name in ("gp24", "countdown", "gsm8k", "arith"):
    t = tasks.get_task(name)
    for e in t.examples(t.splits[0], 30, seed=0):
      out += [e.prompt, e.completion]
  return out


def test_char_round_trip_and_pieces(tmp_path):
  tok = CharTokenizer()
  for text in _texts():
    ids = tok.encode(text)
    assert len(ids) == len(text)
    assert tok.decode(ids) == text
    assert "".join(tok.piece_text(i) for i in ids) == text
  assert tok.decode([tok.bos_id, *tok.encode("ab"), tok.eos_id, tok.pad_id]) == "ab"
  tok.save(str(tmp_path))
  assert load_tokenizer(str(tmp_path)).encode("x=1") == tok.encode("x=1")
  with pytest.raises(ValueError, match="not in the alphabet"):
    tok.encode("é")


def test_sentencepiece_round_trip_deterministic(tmp_path):
  corpus = _texts()
  a = SentencePieceTokenizer.train(corpus, str(tmp_path / "a"), vocab_size=300, cache=False)
  b = SentencePieceTokenizer.train(corpus, str(tmp_path / "b"), vocab_size=300, cache=False)
  for text in corpus:
    ids = a.encode(text)
    assert a.decode(ids) == text
    assert ids == b.encode(text)
    assert "".join(a.piece_text(i) for i in ids) == text
  a.save(str(tmp_path / "saved"))
  c = load_tokenizer(str(tmp_path / "saved"))
  assert c.encode(corpus[0]) == a.encode(corpus[0])
  assert a.decode([a.bos_id, a.eos_id, a.pad_id]) == ""
