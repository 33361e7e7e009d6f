"""What an RL run trains on: its prompts and the reward pytree built per batch.

GRPO/RLVR: the task's training problems with the task verifier (binary, the
paper's levels, or RLCR calibration), plus the optional DAPO overlong
penalty. SRL: step instances of the training problems with the step
similarity reward. Both go through the same GRPO step.
"""

from __future__ import annotations

import numpy as np

from jaxrl_post import rewards as R
from jaxrl_post.tasks import steps as steps_lib


def task_reward_builder(ctx, table):
  """examples -> reward pytree for outcome-reward RL on ctx.task.

  Every text reward reads the whole completion: its character width is
  `completion_width(table, max_new_tokens)`.
  """
  hp = ctx.hp.rl
  name = ctx.hp.task
  width = R.completion_width(table, hp.max_new_tokens)

  def verifier(examples):
    if name == "gp24":
      return R.gp24_reward(examples, table, levels=hp.reward == "levels", width=width)
    if name == "countdown":
      return R.countdown_reward(examples, table, width=width)
    if name == "gsm8k":
      return R.gsm8k_reward(examples, table, width=width)
    raise ValueError(f"no outcome reward for task {name!r}")

  def build(examples):
    main = verifier(examples)
    if hp.reward == "rlcr":
      main = R.CalibrationReward(verifier=main, table=table, width=width)
    terms = {"task": (main, 1.0)}
    if hp.overlong_buffer:
      terms["overlong"] = (R.OverlongPenalty(max_len=hp.max_new_tokens,
                                             cache=hp.overlong_buffer), 1.0)
    return R.weighted_sum(**terms)

  if hp.reward not in ("binary", "levels", "rlcr"):
    raise ValueError(f"config.rl.reward={hp.reward!r} not in ('binary', 'levels', 'rlcr')")
  return build


def make_source(ctx):
  """(PromptSource, build_reward) for the run's trainer (grpo or srl)."""
  from jaxrl_post.trainers.grpo import PromptSource
  from jaxrl_post.trainers.loop import task_examples
  hp = ctx.hp
  table = R.CharTable.from_tokenizer(ctx.tokenizer, ctx.cfg.vocab_size)
  rounds = hp.rl.max_gen_rounds if hp.rl.dynamic_sampling else 1
  problems = task_examples(hp, ctx.task, "train", min(hp.num_train_examples, 4096), hp.seed)
  if hp.trainer == "srl":
    examples = [inst for e in problems for inst in steps_lib.step_instances(e)]
    max_action = max(8, max(len(e.meta["expert_step"]) for e in examples) * 2)
    width = R.completion_width(table, hp.rl.max_new_tokens)

    def build(batch_examples):
      return R.weighted_sum(step=(R.step_similarity_reward(batch_examples, table, max_action,
                                                           width=width), 1.0))
  else:
    examples = problems
    build = task_reward_builder(ctx, table)
  source = PromptSource(examples, ctx.tokenizer, hp.rl.prompts_per_step, rounds, hp.seed)
  return source, build


def digit_operator_class(tokenizer, vocab_size: int) -> np.ndarray:
  """bool[V]: tokens whose text is only digits/operators (execution tokens)."""
  chars = set("0123456789+-*/=() ")
  out = np.zeros(vocab_size, bool)
  for i in range(min(vocab_size, tokenizer.vocab_size)):
    t = tokenizer.piece_text(i)
    out[i] = bool(t) and all(c in chars for c in t)
  return out
