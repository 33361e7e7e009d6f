"""SFT on the 24-point game (ID rule), from the arith base or from scratch.

  python -m launch.train --config=configs/gp24_sft.py --workdir=runs/gp24_sft \
      --config.init_from=runs/gp24_pretrain
  python -m launch.train --config=configs/gp24_sft.py:quick --workdir=/tmp/q   # ~1 min
"""

from configs import common


def get_config(arg=None):
  a = common.parse_arg(arg, quick=False, model="tiny")
  c = common.base_config()
  c.trainer = "sft"
  c.task = "gp24"
  c.model.preset = a.model
  c.num_steps = 1500
  c.batch_size = 32
  c.seq_len = 192
  c.optim.learning_rate = 1e-3
  c.snapshot.every = 100
  c.eval.every = 250
  if a.quick:  # standalone from random init, about a minute on 2 CPU cores
    c.model.preset = "nano"
    c.model.max_seq_len = 192
    c.num_steps = 40
    c.log_every = 10
    c.snapshot.every = 20
    c.eval.every = 20
    c.eval.num_problems = 8
    c.eval.max_new_tokens = 48
    c.eval.gen_loss_examples = 32
    c.num_train_examples = 512
    c.batch_size = 16
  return c
