"""Pretrains a tiny base on the arith corpus (both face-card rules).

  python -m launch.train --config=configs/gp24_pretrain.py --workdir=runs/gp24_pretrain
"""

from configs import common


def get_config(arg=None):
  a = common.parse_arg(arg, quick=False, model="tiny")
  c = common.base_config()
  c.trainer = "sft"
  c.task = "arith"
  c.model.preset = a.model
  c.num_steps = 2000
  c.batch_size = 32
  c.seq_len = 192
  c.optim.learning_rate = 2e-3
  c.optim.warmup_steps = 100
  c.snapshot.every = 500
  c.eval.every = 500
  c.eval.splits = ()
  c.num_train_examples = 40000
  if a.quick:
    c.model.preset = "nano"
    c.num_steps = 30
    c.log_every = 10
    c.snapshot.every = 30
    c.eval.every = 0
    c.eval.gen_loss_examples = 32
    c.num_train_examples = 512
    c.batch_size = 16
  return c
