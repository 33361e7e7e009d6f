"""Shared config pieces: `parse_arg` and the base config every experiment edits.

Experiments call `base_config()` and override fields; they never copy field
lists. `parse_arg("quick,model=small")` -> {"quick": True, "model": "small"}.
"""

import ml_collections


def parse_arg(arg: str | None, **defaults):
  """Parses `name=value,flag` strings into a ConfigDict of typed options."""
  out = dict(defaults)
  for part in filter(None, (arg or "").split(",")):
    if "=" in part:
      k, v = part.split("=", 1)
      if k not in defaults:
        raise ValueError(f"unknown config arg {k!r}; known: {sorted(defaults)}")
      kind = type(defaults[k])
      out[k] = (v.lower() in ("1", "true", "yes")) if kind is bool else kind(v)
    else:
      if part not in defaults:
        raise ValueError(f"unknown config arg {part!r}; known: {sorted(defaults)}")
      out[part] = True
  return ml_collections.ConfigDict(out)


def base_config() -> ml_collections.ConfigDict:
  """Every field a trainer reads, with CPU-sized defaults."""
  c = ml_collections.ConfigDict()
  c.trainer = "sft"
  c.task = "gp24"
  c.task_options = ml_collections.ConfigDict()
  c.data_dir = ""  # tfds cache of the task examples (jaxrl_post/tasks/tfds_data.py); "": in memory
  c.seed = 0
  c.tokenizer = "char"
  c.init_from = ""
  c.model = ml_collections.ConfigDict(dict(preset="tiny", max_seq_len=320))
  c.mesh = (1, -1, 1)  # (data, fsdp, tensor); -1 fills with the devices left
  c.batch_size = 32
  c.grad_accum = 1
  c.seq_len = 192
  c.pack = False
  c.num_steps = 1000
  c.num_train_examples = 20000
  c.expert_all_solutions = True
  c.log_every = 25
  c.optim = ml_collections.ConfigDict(dict(
      learning_rate=1e-3, warmup_steps=50, end_lr_factor=0.1, weight_decay=0.0,
      b1=0.9, b2=0.95, grad_clip=1.0, schedule="cosine"))
  c.snapshot = ml_collections.ConfigDict(dict(every=100, keep=None, keep_period=None))
  c.eval = ml_collections.ConfigDict(dict(
      every=0, num_problems=64, splits=("id_seen", "id_heldout", "ood"),
      max_new_tokens=64, temperature=0.0, gen_loss_examples=128))
  c.rl = ml_collections.ConfigDict(dict(
      group_size=4, prompts_per_step=8, max_new_tokens=64, temperature=1.0,
      top_p=1.0, num_iterations=1, epsilon_low=0.2, epsilon_high=0.2, beta=0.0,
      advantage="group_std", aggregation="seq_mean_token_mean", ratio_level="token",
      mask_truncated=False, dynamic_sampling=False, dynamic_eps=1e-6,
      max_gen_rounds=3, reward="binary", overlong_buffer=0,
      reuse_rollout_activations=True))
  return c


def sft_config(task: str, model: str = "tiny", quick: bool = False, *, num_steps: int = 1500,
               seq_len: int = 192, max_seq_len: int = 320, eval_splits=("test",),
               max_new_tokens: int = 64, eval_every: int = 500, snapshot_every: int = 250):
  """An SFT experiment; `quick` is a standalone nano run of about a minute."""
  c = base_config()
  c.trainer = "sft"
  c.task = task
  c.model.preset = model
  c.model.max_seq_len = max_seq_len
  c.num_steps = num_steps
  c.seq_len = seq_len
  c.eval.splits = tuple(eval_splits)
  c.eval.max_new_tokens = max_new_tokens
  c.eval.every = eval_every
  c.snapshot.every = snapshot_every
  if quick:
    c.model.preset = "nano"
    c.num_steps = 40
    c.log_every = 10
    c.snapshot.every = 20
    c.eval.every = 20
    c.eval.num_problems = 8
    c.eval.max_new_tokens = min(48, max_new_tokens)
    c.eval.gen_loss_examples = 32
    c.num_train_examples = 512
    c.batch_size = 16
  return c
