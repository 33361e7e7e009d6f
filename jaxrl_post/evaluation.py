"""Evaluation: accuracy, unbiased pass@k, calibration, generalization loss.

Everything samples through THE rollout kernel (`jaxrl_post.sampling.Sampler`):
prompts x n samples are flattened into fixed-size row batches (one compiled
shape per evaluation), completions are decoded on the host and checked by the
task's verifier. Output per split (DESIGN.md section 3):
`{"accuracy", "pass@k": {k: ...}, "ece", "brier", "n_problems", "n_samples",
"per_problem": [{"id", "n", "c"}]}`.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Callable, Mapping, Sequence

import jax
import numpy as np

from jaxrl_post import eval_metrics
from jaxrl_post import sampling as S
from jaxrl_post import sharding as shd
from jaxrl_post.tokenizers.base import prompt_ids

_CONFIDENCE = re.compile(r"Confidence:\s*([0-9]*\.?[0-9]+)")


@dataclasses.dataclass(frozen=True)
class EvalConfig:
  """How to sample for evaluation.

  num_samples: n samples per problem (pass@k needs k <= n).
  temperature/top_p: sampling; temperature 0 is greedy (then n should be 1).
  rows: rows per kernel call (static batch of the compiled kernel).
  ks: the k of pass@k.
  """

  num_samples: int = 1
  temperature: float = 0.0
  top_p: float = 1.0
  max_new_tokens: int = 64
  rows: int = 64
  ks: tuple[int, ...] = (1,)

  def __post_init__(self):
    if self.num_samples < 1:
      raise ValueError(f"num_samples={self.num_samples} must be >= 1")
    bad = [k for k in self.ks if k < 1 or k > self.num_samples]
    if bad:
      raise ValueError(f"pass@k needs 1 <= k <= num_samples={self.num_samples}; bad k: {bad}")


def parse_confidence(text: str) -> float | None:
  """The last `Confidence: q` of a completion, if q is in [0, 1]; else None.

  As RLCR's evaluation: a value in (1, 100] is read as a percentage.
  """
  found = _CONFIDENCE.findall(text)
  if not found:
    return None
  q = float(found[-1])
  if 1.0 < q <= 100.0:
    q /= 100.0
  return q if 0.0 <= q <= 1.0 else None


def sample_texts(sampler: S.Sampler, params, tokenizer, prompts: Sequence[str],
                 ec: EvalConfig, seed: int = 0,
                 progress: Callable[[int], None] | None = None) -> list[list[str]]:
  """n completions per prompt, decoded. Returns texts[prompt][sample]."""
  ids = [prompt_ids(tokenizer, p) for p in prompts]
  length = S.bucket_length(max(len(i) for i in ids))
  tokens, mask = S.pad_prompts(ids, tokenizer.pad_id, length=length)
  tokens, mask = S.repeat_prompts(tokens, mask, ec.num_samples)
  total = tokens.shape[0]
  rows = ec.rows
  texts: list[str] = []
  key = jax.random.key(seed)
  for start in range(0, total, rows):
    chunk = slice(start, min(start + rows, total))
    t, m = tokens[chunk], mask[chunk]
    real = t.shape[0]
    if real < rows:  # pad the last call to the compiled batch with copies
      t = np.concatenate([t, np.repeat(t[-1:], rows - real, 0)])
      m = np.concatenate([m, np.repeat(m[-1:], rows - real, 0)])
    r = sampler.generate(params, t, m, jax.random.fold_in(key, start),
                         ec.temperature, ec.top_p)
    out_tokens, lengths = shd.to_host((r.tokens, r.lengths))
    for i in range(real):
      texts.append(tokenizer.decode(out_tokens[i, :lengths[i]].tolist()))
    if progress is not None:
      progress(real)
  n = ec.num_samples
  return [texts[i * n:(i + 1) * n] for i in range(len(prompts))]


def score_split(examples: Sequence, texts: Sequence[Sequence[str]],
                verify: Callable, ks: Sequence[int]) -> dict:
  """Verifies every sample and computes the split's metrics."""
  per_problem = []
  conf, correct_flat = [], []
  for ex, samples in zip(examples, texts):
    c = 0
    for text in samples:
      ok = bool(verify(ex, text))
      c += ok
      q = parse_confidence(text)
      conf.append(0.0 if q is None else q)  # missing confidence counts as 0
      correct_flat.append(ok)
    per_problem.append({"id": ex.id, "n": len(samples), "c": c})
  ns = np.array([p["n"] for p in per_problem])
  cs = np.array([p["c"] for p in per_problem])
  conf_a = np.asarray(conf, np.float64)
  corr_a = np.asarray(correct_flat, np.float64)
  has_conf = any(parse_confidence(t) is not None for s in texts for t in s)
  return {
      "accuracy": float(cs.sum() / max(ns.sum(), 1)),
      "pass@k": {str(k): float(eval_metrics.mean_pass_at_k(ns, cs, k)) for k in ks},
      "ece": float(eval_metrics.expected_calibration_error(conf_a, corr_a)) if has_conf else None,
      "brier": float(eval_metrics.brier_score(conf_a, corr_a)) if has_conf else None,
      "confidence_format_rate": float(np.mean([parse_confidence(t) is not None
                                               for s in texts for t in s])),
      "n_problems": len(per_problem),
      "n_samples": int(ns.sum()),
      "per_problem": per_problem,
  }


def evaluate_splits(sampler, params, tokenizer, examples: Mapping[str, Sequence], verify,
                    ec: EvalConfig, seed: int = 0, progress=None) -> dict[str, dict]:
  """Samples every split's prompts in one pass through the kernel, then scores each split.

  examples: {split: [Example]}. The prompts of all splits are concatenated, so
  the kernel's fixed-size row batches are filled across splits (4 splits of 48
  problems are 3 batches of 64 rows, not 4 padded ones). Greedy results equal
  `evaluate_split` per split; sampled ones are equally distributed but not
  identical, because a row's noise depends on its place in the batch.
  Returns {split: `score_split(...)` plus "examples" (the first 5 completions)}.
  """
  names = list(examples)
  empty = [name for name in names if not examples[name]]
  if not names or empty:
    raise ValueError(f"evaluate_splits: no examples in split(s) {empty or '(none given)'}")
  prompts = [e.prompt for name in names for e in examples[name]]
  texts = sample_texts(sampler, params, tokenizer, prompts, ec, seed=seed, progress=progress)
  out, start = {}, 0
  for name in names:
    exs = list(examples[name])
    split_texts = texts[start:start + len(exs)]
    start += len(exs)
    res = score_split(exs, split_texts, verify, ec.ks)
    res["examples"] = [{"id": e.id, "prompt": e.prompt, "completion": s[0]}
                       for e, s in list(zip(exs, split_texts))[:5]]
    out[name] = res
  return out


def evaluate_split(sampler, params, tokenizer, examples, verify, ec: EvalConfig,
                   seed: int = 0, progress=None, name: str = "split") -> dict:
  """Samples and scores one split (`evaluate_splits` with one split).

  name: the split's name, used only in error messages.
  """
  return evaluate_splits(sampler, params, tokenizer, {name: examples}, verify, ec,
                         seed=seed, progress=progress)[name]


def generalization_loss(params, cfg, tokenizer, examples: Sequence, seq_len: int,
                        rows: int = 64) -> float:
  """Token-mean NLL of the expert completions of held-out examples.

  The "generalization loss" of Kang et al. 2025 (research/papers.md 3.2):
  the SFT objective on examples of the SFT distribution never trained on.
  """
  from jaxrl_post import data as data_lib
  from jaxrl_post.trainers import sft
  seqs = data_lib.tokenize_examples(examples, tokenizer, seq_len + 1, "held-out examples")
  eval_fn = jax.jit(sft.make_eval_loss(cfg))
  batches = []
  for i in range(0, len(seqs), rows):
    chunk = [[s] for s in seqs[i:i + rows]]
    chunk += [[] for _ in range(rows - len(chunk))]
    batches.append(data_lib.make_batch(chunk, seq_len, tokenizer.pad_id))
  return sft.mean_nll(eval_fn, params, batches)
