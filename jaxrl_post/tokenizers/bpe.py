"""Byte-level BPE (GPT-2 / Llama-3 / Qwen2 / SmolLM2 family), pure Python.

A `BPETokenizer` is built from a Hugging Face `tokenizer.json` (model type
BPE over the GPT-2 byte alphabet) or from the tokenizer stored in a GGUF
file's metadata (`tokenizer.ggml.model == "gpt2"`). Encoding follows the
`tokenizers` library (Sennrich et al. 2016, "Neural Machine Translation of
Rare Words with Subword Units"; Radford et al. 2019 for the byte alphabet):

  1. split the text on added tokens (e.g. `<|im_start|>`), kept whole;
  2. normalise the rest (NFC/NFKC/NFD/NFKD or none);
  3. pre-tokenize: a pipeline of `Split(regex, Isolated)`, `Digits` and
     `ByteLevel` steps, exactly the `pre_tokenizer` JSON of `tokenizer.json`;
  4. map every byte of each piece to its printable stand-in character
     (`bytes_to_unicode`), then merge adjacent symbols, always the pair of
     lowest merge rank first, until no ranked pair is left;
  5. look the final symbols up in the vocabulary.

Decoding maps each token's characters back to bytes and decodes UTF-8.
The state is kept as `tokenizer.json`-shaped JSON, so `save` writes a file
`transformers` can load as well (`hf_tokenizer.json`).

The model's chat template (GGUF `tokenizer.chat_template`, or
`chat_template` of tokenizer_config.json / chat_template.jinja) is kept and
rendered by `apply_chat_template` with Jinja2 in a sandbox, as
`transformers` does.
"""

from __future__ import annotations

import functools
import json
import os
import unicodedata
from typing import Any, Mapping, Sequence

from jaxrl_post.tokenizers import base

# The GPT-2 pre-tokenizer pattern (ByteLevel with use_regex=True).
GPT2_PATTERN = (r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+")
LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                  r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
                 r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")


def _split_step(pattern: str) -> dict:
  return {"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated",
          "invert": False}


def _byte_level_step(use_regex: bool) -> dict:
  return {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
          "use_regex": use_regex}


# llama.cpp `tokenizer.ggml.pre` names -> the equivalent HF pre-tokenizer.
GGUF_PRE_TOKENIZERS: dict[str, list[dict]] = {
    "default": [_byte_level_step(True)],
    "gpt2": [_byte_level_step(True)],
    # smollm / starcoder / refact: every digit alone, then the GPT-2 pattern.
    "smollm": [{"type": "Digits", "individual_digits": True}, _byte_level_step(True)],
    "starcoder": [{"type": "Digits", "individual_digits": True}, _byte_level_step(True)],
    "refact": [{"type": "Digits", "individual_digits": True}, _byte_level_step(True)],
    "llama-bpe": [_split_step(LLAMA3_PATTERN), _byte_level_step(False)],
    "llama3": [_split_step(LLAMA3_PATTERN), _byte_level_step(False)],
    "qwen2": [_split_step(QWEN2_PATTERN), _byte_level_step(False)],
}


@functools.lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
  """GPT-2's byte -> printable character table (Radford et al. 2019).

  Printable Latin-1 bytes map to themselves; the other 68 bytes map, in
  order, to U+0100, U+0101, ... so every byte has a visible stand-in.
  """
  keep = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("\xa1"), ord("\xac") + 1))
          + list(range(ord("\xae"), ord("\xff") + 1)))
  out, extra = {}, 0
  for b in range(256):
    if b in keep:
      out[b] = chr(b)
    else:
      out[b] = chr(256 + extra)
      extra += 1
  return out


@functools.lru_cache(maxsize=1)
def unicode_to_bytes() -> dict[str, int]:
  return {c: b for b, c in bytes_to_unicode().items()}


def _regex():
  try:
    import regex  # Unicode classes (\p{L}) that the `re` module lacks.
  except ImportError as e:  # pragma: no cover - regex is a dependency
    raise ImportError("BPETokenizer needs the `regex` package (pip install regex)") from e
  return regex


def _normalizer(spec: Mapping | None):
  """text -> text for a tokenizer.json `normalizer` (Unicode forms only)."""
  if spec is None:
    return lambda s: s
  kind = spec.get("type")
  if kind in ("NFC", "NFKC", "NFD", "NFKD"):
    return lambda s: unicodedata.normalize(kind, s)
  if kind == "Sequence":
    fns = [_normalizer(n) for n in spec["normalizers"]]
    return lambda s: functools.reduce(lambda acc, f: f(acc), fns, s)
  raise ValueError(f"tokenizer.json normalizer {kind!r} is not supported "
                   "(supported: NFC, NFKC, NFD, NFKD, Sequence)")


def _isolating_split(compiled):
  """piece -> pieces: every match and every stretch between matches."""
  def split(piece: str) -> list[str]:
    out, last = [], 0
    for m in compiled.finditer(piece):
      if m.start() > last:
        out.append(piece[last:m.start()])
      if m.end() > m.start():
        out.append(m.group())
      last = m.end()
    if last < len(piece):
      out.append(piece[last:])
    return out
  return split


def _pre_tokenizer_steps(spec: Mapping | None) -> tuple[list, bool]:
  """(list of piece -> pieces functions, uses the byte-level alphabet)."""
  if spec is None:
    return [], False
  kind = spec.get("type")
  rx = _regex()
  if kind == "Sequence":
    steps, byte_level = [], False
    for sub in spec["pretokenizers"]:
      s, b = _pre_tokenizer_steps(sub)
      steps += s
      byte_level |= b
    return steps, byte_level
  if kind == "ByteLevel":
    steps = []
    if spec.get("add_prefix_space", False):
      steps.append(lambda p: [p if not p or p.startswith(" ") else " " + p])
    if spec.get("use_regex", True):
      steps.append(_isolating_split(rx.compile(GPT2_PATTERN)))
    return steps, True
  if kind == "Split":
    if spec.get("behavior", "Isolated") != "Isolated" or spec.get("invert", False):
      raise ValueError(f"tokenizer.json Split pre-tokenizer with behavior="
                       f"{spec.get('behavior')!r} invert={spec.get('invert')} is not supported "
                       "(only Isolated, invert=false)")
    pat = spec["pattern"]
    pattern = pat["Regex"] if "Regex" in pat else rx.escape(pat["String"])
    return [_isolating_split(rx.compile(pattern))], False
  if kind == "Digits":
    pattern = r"\p{N}" if spec.get("individual_digits", False) else r"\p{N}+"
    return [_isolating_split(rx.compile(pattern))], False
  raise ValueError(f"tokenizer.json pre_tokenizer {kind!r} is not supported "
                   "(supported: ByteLevel, Split, Digits, Sequence)")


def _token_content(t: Mapping | str | None) -> str | None:
  if isinstance(t, Mapping):
    return t.get("content")
  return t


def _check_model(hf_json: Mapping[str, Any]) -> Mapping[str, Any]:
  """The `model` of a tokenizer.json, if it is BPE this class implements."""
  model = hf_json.get("model") or {}
  if model.get("type", "BPE") != "BPE":
    raise ValueError(f"tokenizer.json model type {model.get('type')!r} is not BPE")
  if model.get("byte_fallback") or model.get("continuing_subword_prefix") or \
      model.get("end_of_word_suffix"):
    raise ValueError("tokenizer.json BPE with byte_fallback / continuing_subword_prefix / "
                     "end_of_word_suffix is not byte-level BPE (not supported)")
  return model


@functools.lru_cache(maxsize=8)
def _compile_chat_template(template: str):
  """A Jinja2 template in an immutable sandbox with transformers' options
  (trim_blocks, lstrip_blocks, loop controls, raise_exception, tojson)."""
  try:
    import jinja2
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment
  except ImportError as e:  # pragma: no cover - jinja2 is a dependency
    raise ImportError("chat templates need the `jinja2` package (pip install jinja2)") from e

  def raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)

  def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                      sort_keys=sort_keys)

  env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                      extensions=[jinja2.ext.loopcontrols])
  env.filters["tojson"] = tojson
  env.globals["raise_exception"] = raise_exception
  return env.from_string(template)


class BPETokenizer:
  """Byte-level BPE implementing the jaxrl_post tokenizer protocol.

  Attributes:
    vocab_size: 1 + the largest token id.
    pad_id, bos_id, eos_id: special ids (pad defaults to eos).
    add_bos: whether the original tokenizer prepends BOS to a plain text
      (False for SmolLM2 and Qwen2; callers that always prepend `bos_id`
      should check it).
    chat_template: the model's Jinja2 chat template, or None.
  """

  def __init__(self, hf_json: Mapping[str, Any], *, bos_id: int | None, eos_id: int,
               pad_id: int | None = None, add_bos: bool = False,
               chat_template: str | None = None):
    """Builds from a `tokenizer.json` dict.

    Raises:
      ValueError: a model, normalizer or pre-tokenizer this class does not
        implement (naming it), or special ids outside the vocabulary.
    """
    model = _check_model(hf_json)
    self._json = json.loads(json.dumps(hf_json))  # a private deep copy
    self._vocab: dict[str, int] = dict(model["vocab"])
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    for m in merges:
      if len(m) != 2:
        raise ValueError(f"tokenizer.json merge {m!r} is not a pair")
    self._ranks = {m: r for r, m in enumerate(merges)}
    self._ignore_merges = bool(model.get("ignore_merges", False))
    self._normalize = _normalizer(hf_json.get("normalizer"))
    self._steps, byte_level = _pre_tokenizer_steps(hf_json.get("pre_tokenizer"))
    dec = hf_json.get("decoder") or {}
    if not byte_level and dec.get("type") != "ByteLevel":
      raise ValueError("tokenizer.json is not byte-level BPE (no ByteLevel pre-tokenizer "
                       "or decoder); only byte-level BPE is supported")
    self._added = {t["content"]: int(t["id"]) for t in hf_json.get("added_tokens", [])}
    self._special = {int(t["id"]) for t in hf_json.get("added_tokens", []) if t.get("special")}
    self._id_to_token = {i: t for t, i in self._vocab.items()}
    for t, i in self._added.items():
      self._id_to_token.setdefault(i, t)
    self.vocab_size = max(self._id_to_token) + 1
    unk = model.get("unk_token")
    self._unk_id = self._vocab.get(unk) if unk is not None else None
    self.eos_id = int(eos_id)
    self.bos_id = int(bos_id) if bos_id is not None else self.eos_id
    self.pad_id = int(pad_id) if pad_id is not None else self.eos_id
    self.add_bos = bool(add_bos) and bos_id is not None
    self.chat_template = chat_template or None
    for name in ("bos_id", "eos_id", "pad_id"):
      if not 0 <= getattr(self, name) < self.vocab_size:
        raise ValueError(f"BPETokenizer.{name}={getattr(self, name)} is outside the "
                         f"vocabulary of {self.vocab_size}")
    self._special |= {self.bos_id, self.eos_id, self.pad_id}
    rx = _regex()
    names = sorted(self._added, key=len, reverse=True)
    self._added_rx = rx.compile("|".join(rx.escape(n) for n in names)) if names else None
    self._cache: dict[str, tuple[int, ...]] = {}

  # ------------------------------------------------------------------ build

  @classmethod
  def from_tokenizer_json(cls, path: str, *, bos_id: int | None = None, eos_id: int | None = None,
                          pad_id: int | None = None, add_bos: bool | None = None) -> "BPETokenizer":
    """From an HF `tokenizer.json`; special ids default to the neighbouring
    `tokenizer_config.json` (bos/eos/pad token strings) and `config.json`."""
    with open(path) as f:
      hf_json = json.load(f)
    try:
      _check_model(hf_json)  # before the special tokens: the more telling error
    except ValueError as e:
      raise ValueError(f"{path}: {e}") from None
    directory = os.path.dirname(os.path.abspath(path))
    tcfg, mcfg = {}, {}
    if os.path.exists(os.path.join(directory, "tokenizer_config.json")):
      with open(os.path.join(directory, "tokenizer_config.json")) as f:
        tcfg = json.load(f)
    if os.path.exists(os.path.join(directory, "config.json")):
      with open(os.path.join(directory, "config.json")) as f:
        mcfg = json.load(f)
    by_text = {t["content"]: int(t["id"]) for t in hf_json.get("added_tokens", [])}
    by_text.update((hf_json.get("model") or {}).get("vocab", {}))

    def lookup(key):
      text = _token_content(tcfg.get(key))
      if text is not None and text in by_text:
        return by_text[text]
      value = mcfg.get(f"{key}_id")
      return value[0] if isinstance(value, list) else value

    bos = bos_id if bos_id is not None else lookup("bos_token")
    eos = eos_id if eos_id is not None else lookup("eos_token")
    pad = pad_id if pad_id is not None else lookup("pad_token")
    if eos is None:
      raise ValueError(f"{path}: no eos token (give eos_id, or a tokenizer_config.json "
                       "eos_token / config.json eos_token_id)")
    if add_bos is None:
      add_bos = bool(tcfg.get("add_bos_token", False))
    template = tcfg.get("chat_template")
    if isinstance(template, list):  # [{"name": "default", "template": ...}, ...]
      named = {t.get("name"): t.get("template") for t in template}
      template = named.get("default")
    jinja = os.path.join(directory, "chat_template.jinja")  # transformers >= 4.50
    if template is None and os.path.exists(jinja):
      with open(jinja) as f:
        template = f.read()
    return cls(hf_json, bos_id=bos, eos_id=eos, pad_id=pad, add_bos=add_bos,
               chat_template=template)

  @classmethod
  def from_gguf_metadata(cls, fields: Mapping[str, Any]) -> "BPETokenizer":
    """From GGUF `tokenizer.ggml.*` metadata values (plain Python values).

    Expects `tokenizer.ggml.model == "gpt2"` (byte-level BPE) with tokens,
    merges, token_type (3 = control: special), bos/eos/padding ids and the
    `tokenizer.ggml.pre` pre-tokenizer name.
    """
    model = fields.get("tokenizer.ggml.model")
    if model != "gpt2":
      raise ValueError(f"GGUF tokenizer.ggml.model={model!r}: only byte-level BPE ('gpt2') "
                       "is supported")
    pre = fields.get("tokenizer.ggml.pre", "default")
    if pre not in GGUF_PRE_TOKENIZERS:
      raise ValueError(f"GGUF tokenizer.ggml.pre={pre!r} is not supported "
                       f"(supported: {sorted(GGUF_PRE_TOKENIZERS)})")
    tokens = list(fields["tokenizer.ggml.tokens"])
    types = list(fields.get("tokenizer.ggml.token_type") or [1] * len(tokens))
    alphabet = set(bytes_to_unicode().values())
    vocab, added = {}, []
    for i, (tok, kind) in enumerate(zip(tokens, types)):
      if kind in (3, 4):  # control, user-defined: matched whole in the text
        added.append({"id": i, "content": tok, "special": kind == 3, "single_word": False,
                      "lstrip": False, "rstrip": False, "normalized": False})
      if set(tok) <= alphabet or kind not in (3, 4):
        vocab[tok] = i
    hf_json = {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": GGUF_PRE_TOKENIZERS[pre]},
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
                    "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None,
                  "continuing_subword_prefix": None, "end_of_word_suffix": None,
                  "fuse_unk": False, "byte_fallback": False,
                  "ignore_merges": pre in ("llama-bpe", "llama3"),
                  "vocab": vocab, "merges": list(fields.get("tokenizer.ggml.merges") or [])},
    }
    eos = fields.get("tokenizer.ggml.eos_token_id")
    if eos is None:
      raise ValueError("GGUF metadata has no tokenizer.ggml.eos_token_id")
    return cls(hf_json, bos_id=fields.get("tokenizer.ggml.bos_token_id"), eos_id=eos,
               pad_id=fields.get("tokenizer.ggml.padding_token_id"),
               add_bos=bool(fields.get("tokenizer.ggml.add_bos_token", False)),
               chat_template=fields.get("tokenizer.chat_template"))

  # ----------------------------------------------------------------- encode

  def _bpe(self, word: str) -> tuple[int, ...]:
    """Token ids of one pre-token (already in the byte alphabet)."""
    cached = self._cache.get(word)
    if cached is not None:
      return cached
    if self._ignore_merges and word in self._vocab:
      out = (self._vocab[word],)
    else:
      parts = list(word)
      ranks = self._ranks
      while len(parts) > 1:
        best, best_rank = None, None
        for pair in zip(parts, parts[1:]):
          r = ranks.get(pair)
          if r is not None and (best_rank is None or r < best_rank):
            best, best_rank = pair, r
        if best is None:
          break
        merged, i = [], 0
        while i < len(parts):
          if i + 1 < len(parts) and parts[i] == best[0] and parts[i + 1] == best[1]:
            merged.append(parts[i] + parts[i + 1])
            i += 2
          else:
            merged.append(parts[i])
            i += 1
        parts = merged
      ids = []
      for p in parts:
        if p in self._vocab:
          ids.append(self._vocab[p])
        elif self._unk_id is not None:
          ids.append(self._unk_id)
        else:
          raise ValueError(f"BPE symbol {p!r} is not in the vocabulary and there is no unk token")
      out = tuple(ids)
    if len(self._cache) < 100_000:
      self._cache[word] = out
    return out

  def _encode_plain(self, text: str) -> list[int]:
    pieces = [self._normalize(text)]
    for step in self._steps:
      pieces = [q for p in pieces for q in step(p)]
    b2u = bytes_to_unicode()
    out: list[int] = []
    for p in pieces:
      if p:
        out.extend(self._bpe("".join(b2u[b] for b in p.encode("utf-8"))))
    return out

  def encode(self, text: str) -> list[int]:
    """Token ids of `text` (no BOS/EOS added); added tokens are kept whole."""
    if self._added_rx is None:
      return self._encode_plain(text)
    out, last = [], 0
    for m in self._added_rx.finditer(text):
      if m.start() > last:
        out += self._encode_plain(text[last:m.start()])
      out.append(self._added[m.group()])
      last = m.end()
    if last < len(text):
      out += self._encode_plain(text[last:])
    return out

  # ----------------------------------------------------------------- decode

  def _token_bytes(self, i: int) -> bytes:
    tok = self._id_to_token.get(i)
    if tok is None:
      return b""
    if tok in self._added and self._added[tok] == i:
      return tok.encode("utf-8")
    u2b = unicode_to_bytes()
    return b"".join(bytes([u2b[c]]) if c in u2b else c.encode("utf-8") for c in tok)

  def decode(self, ids: Sequence[int]) -> str:
    """Text of `ids`, special ids skipped; invalid UTF-8 becomes U+FFFD."""
    data = b"".join(self._token_bytes(int(i)) for i in ids if int(i) not in self._special)
    return data.decode("utf-8", errors="replace")

  def piece_text(self, i: int) -> str:
    """Text token i contributes ('' for special ids). A token holding only
    part of a multi-byte UTF-8 character gives U+FFFD per broken sequence."""
    if int(i) in self._special:
      return ""
    return self._token_bytes(int(i)).decode("utf-8", errors="replace")

  def token_to_id(self, token: str) -> int | None:
    """Id of a vocabulary entry or added token (its stored spelling)."""
    return self._added.get(token, self._vocab.get(token))

  # ------------------------------------------------------------------- chat

  def apply_chat_template(self, messages: Sequence[Mapping[str, str]],
                          add_generation_prompt: bool = True) -> str:
    """The prompt text of `messages` ([{"role", "content"}, ...]) rendered
    with the model's chat template (what `transformers`' tokenizer gives
    with tokenize=False), ending where the reply starts when
    `add_generation_prompt`.

    Raises:
      ValueError: the tokenizer has no chat template.
    """
    if not self.chat_template:
      raise ValueError("this tokenizer has no chat template")
    return _compile_chat_template(self.chat_template).render(
        messages=[dict(m) for m in messages], add_generation_prompt=add_generation_prompt,
        bos_token=self._id_to_token[self.bos_id], eos_token=self._id_to_token[self.eos_id])

  # ---------------------------------------------------------------- persist

  def hf_json(self) -> dict:
    """The `tokenizer.json` dict this tokenizer was built from."""
    return json.loads(json.dumps(self._json))

  def hf_tokenizer_config(self) -> dict:
    """A `tokenizer_config.json` for `transformers` naming the special tokens."""
    name = lambda i: self._id_to_token[i]  # noqa: E731
    out = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": name(self.bos_id),
           "eos_token": name(self.eos_id), "pad_token": name(self.pad_id),
           "add_bos_token": self.add_bos, "clean_up_tokenization_spaces": False,
           "model_max_length": 1 << 30}
    if self.chat_template:
      out["chat_template"] = self.chat_template
    return out

  def save_hf(self, directory: str) -> None:
    """Writes `tokenizer.json` + `tokenizer_config.json` for `transformers`."""
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "tokenizer.json"), "w") as f:
      json.dump(self._json, f, ensure_ascii=False)
    with open(os.path.join(directory, "tokenizer_config.json"), "w") as f:
      json.dump(self.hf_tokenizer_config(), f, indent=1, ensure_ascii=False)

  def save(self, directory: str) -> None:
    """jaxrl_post layout: manifest `tokenizer.json` + `hf_tokenizer.json`."""
    base.write_manifest(directory, {"kind": "bpe", "model": "hf_tokenizer.json",
                                    "bos_id": self.bos_id, "eos_id": self.eos_id,
                                    "pad_id": self.pad_id, "add_bos": self.add_bos,
                                    "chat_template": self.chat_template})
    with open(os.path.join(directory, "hf_tokenizer.json"), "w") as f:
      json.dump(self._json, f, ensure_ascii=False)

  @classmethod
  def load(cls, directory: str) -> "BPETokenizer":
    m = base.read_manifest(directory)
    if m.get("kind") != "bpe":
      raise ValueError(f"{directory}: tokenizer kind {m.get('kind')!r} is not bpe")
    with open(os.path.join(directory, m["model"])) as f:
      hf_json = json.load(f)
    return cls(hf_json, bos_id=m["bos_id"], eos_id=m["eos_id"], pad_id=m["pad_id"],
               add_bos=m["add_bos"], chat_template=m.get("chat_template"))
