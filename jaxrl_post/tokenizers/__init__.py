"""Tokenizers: characters, sentencepiece, and the protocol they share."""

from jaxrl_post.tokenizers.base import Tokenizer, prompt_ids, read_manifest
from jaxrl_post.tokenizers.char import CharTokenizer
from jaxrl_post.tokenizers.spm import SentencePieceTokenizer


def load_tokenizer(directory: str):
  """Reloads a tokenizer saved with `.save(directory)`."""
  kind = read_manifest(directory)["kind"]
  if kind == "char":
    return CharTokenizer.load(directory)
  if kind == "sentencepiece":
    return SentencePieceTokenizer.load(directory)
  if kind == "bpe":
    from jaxrl_post.tokenizers.bpe import BPETokenizer
    return BPETokenizer.load(directory)
  raise ValueError(f"{directory}: unknown tokenizer kind {kind!r}")
