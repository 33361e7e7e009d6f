"""countdown, gsm8k, arith, SRL step instances, get_task."""

import pytest

from jaxrl_post import tasks
from jaxrl_post.tasks import countdown, gsm8k, steps


def test_countdown_examples_verify_and_are_deterministic():
  t = tasks.get_task("countdown")
  ex = t.examples("train", 20, seed=0)
  assert [e.prompt for e in ex] == [e.prompt for e in t.examples("train", 20, seed=0)]
  for e in ex:
    assert t.verify(e, e.completion)
    assert not t.verify(e, e.completion + "+1")
  e = ex[0]
  n = e.meta["numbers"]
  # a number used twice is rejected unless it appears twice
  twice = f"Answer: {n[0]}+{n[0]}"
  assert countdown.verify_numbers(n, n[0] * 2, twice) == (list(n).count(n[0]) >= 2)


def test_gsm8k_real_data_and_verifier():
  train = gsm8k.load("train")
  test = gsm8k.load("test")
  assert len(train) > 7000 and len(test) > 1200
  e = train[0]
  assert e.completion.endswith(f"#### {e.answer}") and "<<" not in e.completion
  t = tasks.get_task("gsm8k")
  assert t.verify(e, e.completion)
  assert t.verify(e, f"blah\n#### {e.answer} dollars")
  assert not t.verify(e, "#### 123456789")
  assert gsm8k.parse_final("x #### 1,234") == "1234"
  assert gsm8k.parse_final("no marker") is None


def test_arith_corpus_mixes_rules_and_formats():
  ex = tasks.get_task("arith").examples("train", 200, seed=0)
  text = "".join(e.prompt for e in ex)
  assert "J Q K are 10." in text and "J Q K are 11 12 13." in text
  assert any("<think>" in e.completion for e in ex)
  assert any(e.prompt.startswith("Compute") for e in ex)


def test_step_instances_contexts_and_targets():
  e = tasks.get_task("gp24").examples("train", 1, seed=0)[0]
  all_steps = e.completion.split("\n")
  insts = steps.step_instances(e)
  assert len(insts) == len(all_steps)
  for k, inst in enumerate(insts):
    assert inst.meta["expert_step"] == all_steps[k]
    context = inst.prompt[len(e.prompt):]
    assert context.startswith("".join(s + "\n" for s in all_steps[:k]))
    assert all_steps[k] not in context.replace(steps.INSTRUCTION, "") or all_steps[k] in all_steps[:k]
    assert steps.action_of(inst.completion) == all_steps[k]
  titled = steps.step_instances(e, include_title=True)
  assert "Step 2 of" in titled[1].prompt


def test_bad_expert_data_fails_at_build_time():
  bad = tasks.Example(id="x", prompt="p", completion="a\n\nb", answer="", steps=("a", "", "b"), meta={})
  with pytest.raises(ValueError, match="empty"):
    steps.step_instances(bad)
  none = tasks.Example(id="y", prompt="p", completion="", answer="", steps=(), meta={})
  with pytest.raises(ValueError, match="no expert steps"):
    steps.step_instances(none)


def test_action_parsing():
  assert steps.action_of("<think>hm</think>1+2=3") == "1+2=3"
  assert steps.action_of("1+2=3") is None
  assert steps.action_of("</think>x<think>") is None


def test_unknown_task():
  with pytest.raises(ValueError, match="unknown task"):
    tasks.get_task("chess")
