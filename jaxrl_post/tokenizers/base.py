"""The tokenizer protocol every part of jaxrl_post relies on."""

from __future__ import annotations

import json
import os
from typing import Protocol, Sequence


class Tokenizer(Protocol):
  """vocab_size, pad/bos/eos ids; encode adds no special ids; decode skips them.

  `piece_text(i)` is the exact text token i contributes when decoded ('' for
  special ids), so JAX code can map token ids to characters with a table.
  """

  vocab_size: int
  pad_id: int
  bos_id: int
  eos_id: int

  def encode(self, text: str) -> list[int]: ...

  def decode(self, ids: Sequence[int]) -> str: ...

  def piece_text(self, i: int) -> str: ...

  def save(self, directory: str) -> None: ...


def prompt_ids(tokenizer, text: str) -> list[int]:
  """The ids of a prompt: BOS first when the tokenizer wants one, never twice.

  Tokenizers without an `add_bos` attribute (char, sentencepiece) always get
  BOS; an imported BPE tokenizer follows its model (Llama-3 yes, SmolLM2 /
  Qwen2 no), and a chat template that writes BOS itself is not doubled.
  """
  ids = tokenizer.encode(text)
  if getattr(tokenizer, "add_bos", True) and not (ids and ids[0] == tokenizer.bos_id):
    ids = [tokenizer.bos_id, *ids]
  return ids


MANIFEST = "tokenizer.json"


def write_manifest(directory: str, manifest: dict):
  os.makedirs(directory, exist_ok=True)
  with open(os.path.join(directory, MANIFEST), "w") as f:
    json.dump(manifest, f, indent=1)


def read_manifest(directory: str) -> dict:
  path = os.path.join(directory, MANIFEST)
  if not os.path.exists(path):
    raise FileNotFoundError(f"{directory}: no {MANIFEST} (not a saved jaxrl_post tokenizer)")
  with open(path) as f:
    return json.load(f)
