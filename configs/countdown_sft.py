"""SFT on countdown.

  python -m launch.train --config=configs/countdown_sft.py --workdir=runs/countdown_sft
  python -m launch.train --config=configs/countdown_sft.py:quick --workdir=/tmp/q
"""

from configs import common


def get_config(arg=None):
  a = common.parse_arg(arg, quick=False, model="tiny")
  c = common.base_config()
  c.trainer = "sft"
  c.task = "countdown"
  c.model.preset = a.model
  c.num_steps = 1500
  c.seq_len = 128
  c.model.max_seq_len = 256
  c.eval.splits = ("test",)
  c.eval.max_new_tokens = 64
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
