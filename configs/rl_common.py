"""The RL configs' shared shape: GRPO-family defaults on top of the base config."""

from configs import common


def rl_config(task: str, trainer: str = "grpo", quick: bool = False, **rl):
  c = common.base_config()
  c.trainer = trainer
  c.task = task
  c.num_steps = 100
  c.log_every = 5
  c.optim.learning_rate = 2e-5
  c.optim.warmup_steps = 0
  c.optim.schedule = "constant"
  c.snapshot.every = 25
  c.eval.every = 25
  c.eval.num_problems = 64
  c.eval.max_new_tokens = 64
  for k, v in rl.items():
    c.rl[k] = v
  if task == "gsm8k":  # long prompts: subword tokens (an init_from run brings its own)
    c.tokenizer = "sentencepiece"
    c.model.vocab_size = 1024
    c.model.max_seq_len = 1024
  if quick:  # standalone from a random nano model, well under a minute
    c.model.preset = "nano"
    c.model.max_seq_len = max(c.model.max_seq_len, 256) if task == "gsm8k" else 256
    c.num_steps = 4
    c.log_every = 2
    c.snapshot.every = 2
    c.eval.every = 4
    c.eval.num_problems = 8
    c.eval.max_new_tokens = 32
    c.rl.prompts_per_step = 4
    c.rl.group_size = 4
    c.rl.max_new_tokens = 32
    c.optim.learning_rate = 1e-4
  return c
