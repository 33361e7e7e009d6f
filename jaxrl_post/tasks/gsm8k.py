"""GSM8K (Cobbe et al. 2021, MIT license): the real data in third_party/gsm8k.

prompt = the question; completion = the solution lines with the `<<...>>`
calculator annotations removed, ending with `#### N`; answer = N without
commas; steps = the solution lines before `#### N`. Characters outside
printable ASCII are transliterated (or the example is skipped) so that the
character tokenizer covers the text.
"""

from __future__ import annotations

import functools
import json
import os
import re
import unicodedata

from jaxrl_post.tasks.base import Example

SPLITS = ("train", "test")
_CALC = re.compile(r"<<[^>]*>>")
_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DATA_DIR = os.environ.get("JAXRL_POST_GSM8K_DIR", os.path.join(_ROOT, "third_party", "gsm8k"))


def _ascii(text: str) -> str | None:
  text = (text.replace("\u2019", "'").replace("\u2018", "'").replace("\u201c", '"')
          .replace("\u201d", '"').replace("\u2013", "-").replace("\u2014", "-")
          .replace("\u00d7", "*").replace("\u00f7", "/").replace("\u20ac", "EUR ")
          .replace("\u00a3", "GBP ").replace("\u00a0", " "))
  text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
  return text if all(c == "\n" or 32 <= ord(c) < 127 for c in text) else None


def parse_final(text: str) -> str | None:
  """The answer after the last `####`: skip spaces, take the run of characters
  in `-0123456789.,`, drop commas (None if absent or empty). The JAX
  `Gsm8kReward` implements the same rule."""
  at = text.rfind("####")
  if at < 0:
    return None
  rest = text[at + 4:].lstrip(" ")
  run = re.match(r"[-0-9.,]*", rest).group(0).replace(",", "")
  return run or None


@functools.lru_cache(maxsize=None)
def load(split: str) -> tuple[Example, ...]:
  if split not in SPLITS:
    raise ValueError(f"gsm8k has no split {split!r}; known: {SPLITS}")
  path = os.path.join(DATA_DIR, f"{split}.jsonl")
  if not os.path.exists(path):
    raise FileNotFoundError(f"GSM8K data not found at {path} (set JAXRL_POST_GSM8K_DIR)")
  out = []
  with open(path) as f:
    for i, line in enumerate(f):
      row = json.loads(line)
      q, a = _ascii(row["question"]), _ascii(_CALC.sub("", row["answer"]))
      if q is None or a is None:
        continue
      lines = [l.strip() for l in a.strip().split("\n") if l.strip()]
      if not lines or not lines[-1].startswith("####"):
        raise ValueError(f"gsm8k {split} line {i}: the answer does not end with '#### N'")
      answer = parse_final(lines[-1])
      steps = tuple(lines[:-1])
      if answer is None or not steps:
        raise ValueError(f"gsm8k {split} line {i}: no parseable final answer or no steps")
      out.append(Example(id=f"gsm8k-{split}-{i}", prompt=q.strip() + "\n",
                         completion="\n".join(steps) + f"\n#### {answer}", answer=answer,
                         steps=steps, meta={"answer": answer}))
  return tuple(out)


class Gsm8kTask:
  name = "gsm8k"
  splits = SPLITS

  def examples(self, split: str, n: int, seed: int = 0) -> list[Example]:
    import numpy as np
    data = load(split)
    idx = np.random.default_rng((seed, 8)).permutation(len(data))
    return [data[idx[i % len(data)]] for i in range(n)]

  def verify(self, example: Example, text: str) -> bool:
    return parse_final(text) == example.meta["answer"]
