"""SFT on gsm8k.

  python -m launch.train --config=configs/gsm8k_sft.py --workdir=runs/gsm8k_sft
  python -m launch.train --config=configs/gsm8k_sft.py:quick --workdir=/tmp/q
"""

from configs import common


def get_config(arg=None):
  a = common.parse_arg(arg, quick=False, model="tiny")
  c = common.base_config()
  c.trainer = "sft"
  c.task = "gsm8k"
  c.model.preset = a.model
  c.num_steps = 1500
  c.seq_len = 384
  c.model.max_seq_len = 640
  c.eval.splits = ("test",)
  c.eval.max_new_tokens = 256
  c.eval.every = 500
  c.snapshot.every = 250
  if a.quick:
    c.model.preset = "nano"
    c.num_steps = 20
    c.log_every = 10
    c.snapshot.every = 10
    c.eval.every = 20
    c.eval.num_problems = 8
    c.eval.max_new_tokens = 32
    c.eval.gen_loss_examples = 16
    c.num_train_examples = 256
    c.batch_size = 8
  return c
