"""Tests of jaxrl_post.evaluation: scoring against hand-computed values, and
the multi-split pass equal to one pass per split."""

import jax
import numpy as np
import pytest

from jaxrl_post import evaluation as E
from jaxrl_post import model as M
from jaxrl_post import sampling as S
from jaxrl_post.tasks import gp24
from jaxrl_post.testing import nano_config
from jaxrl_post.tokenizers import CharTokenizer


@pytest.mark.parametrize("text,q", [
    ("Answer: 24 Confidence: 0.7", 0.7), ("Confidence: .25", 0.25),
    ("Confidence: 0.1 then Confidence: 80", 0.8),  # the last one; 80 read as 80%
    ("Confidence: 150", None), ("no confidence", None), ("Confidence: x", None)])
def test_parse_confidence(text, q):
  got = E.parse_confidence(text)
  assert got == pytest.approx(q) if q is not None else got is None


def test_score_split_hand_computed():
  ex = gp24.Gp24Task().examples("train", 2, seed=0)
  verify = lambda e, text: text.startswith("ok")
  texts = [["ok Confidence: 1", "no Confidence: 0.5", "ok Confidence: 0.5"],
           ["no", "no Confidence: 0", "no Confidence: 0"]]
  r = E.score_split(ex, texts, verify, ks=(1, 2))
  assert r["accuracy"] == pytest.approx(2 / 6)
  # pass@1 = mean c/n; pass@2 = 1 - C(n-c, 2)/C(n, 2): problem 1 has 1 - 0/3 = 1.
  assert r["pass@k"]["1"] == pytest.approx((2 / 3 + 0) / 2)
  assert r["pass@k"]["2"] == pytest.approx((1.0 + 0.0) / 2)
  q = np.array([1, .5, .5, 0, 0, 0])  # missing confidence counts as 0
  y = np.array([1, 0, 1, 0, 0, 0])
  assert r["brier"] == pytest.approx(np.mean((q - y) ** 2))
  assert r["confidence_format_rate"] == pytest.approx(5 / 6)
  assert [p["c"] for p in r["per_problem"]] == [2, 0] and r["n_samples"] == 6


@pytest.fixture(scope="module")
def model():
  tok = CharTokenizer()
  cfg = nano_config(vocab_size=128)
  # Weights x8: the plain random init answers every prompt with the same
  # newlines, which would make the comparisons below vacuous.
  params = jax.tree.map(lambda x: 8 * x, M.init_params(cfg, jax.random.key(3)))
  sampler = S.Sampler(cfg, S.SamplingConfig(max_new_tokens=6, stop_ids=(tok.eos_id,),
                                            pad_id=tok.pad_id))
  return tok, params, sampler


def test_multi_split_pass_equals_one_pass_per_split(model):
  """Greedy: every split's completions and scores are those of its own pass,
  though the splits share row batches (sizes 5 + 3 + 7 over rows of 4)."""
  tok, params, sampler = model
  task = gp24.Gp24Task()
  examples = {"id_seen": task.examples("id_seen", 5, seed=1),
              "id_heldout": task.examples("id_heldout", 3, seed=2),
              "ood": task.examples("ood", 7, seed=3)}
  verify = lambda e, text: len(text) % 2 == 0  # a verdict that depends on every character
  ec = E.EvalConfig(max_new_tokens=6, rows=4)
  together = E.evaluate_splits(sampler, params, tok, examples, verify, ec)
  assert list(together) == list(examples)
  for name, exs in examples.items():
    alone = E.evaluate_split(sampler, params, tok, exs, verify, ec)
    assert together[name]["per_problem"] == alone["per_problem"]
    assert together[name]["accuracy"] == alone["accuracy"]
    assert together[name]["examples"] == alone["examples"]
  # Not vacuous: the random model's completions differ between prompts.
  assert len({e["completion"] for r in together.values() for e in r["examples"]}) > 1


def test_empty_split_is_an_error(model):
  tok, params, sampler = model
  ex = gp24.Gp24Task().examples("id_seen", 2, seed=0)
  with pytest.raises(ValueError, match="no examples in split.*'ood'"):
    E.evaluate_splits(sampler, params, tok, {"id_seen": ex, "ood": []}, lambda e, t: True,
                      E.EvalConfig(max_new_tokens=6, rows=4))
  with pytest.raises(ValueError, match="no examples in split.*'ood_train'"):
    E.evaluate_split(sampler, params, tok, [], lambda e, t: True,
                     E.EvalConfig(max_new_tokens=6, rows=4), name="ood_train")
