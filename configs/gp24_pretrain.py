"""Pretrains a tiny base on the arith corpus (both face-card rules).

  python -m launch.train --config=configs/gp24_pretrain.py --workdir=runs/gp24_pretrain
"""

from configs import common


def get_config(arg=None):
  a = common.parse_arg(arg, quick=False, model="tiny")
  c = common.sft_config("arith", a.model, a.quick, num_steps=2000, eval_splits=(),
                        eval_every=500, snapshot_every=500)
  c.optim.learning_rate = 2e-3
  c.optim.warmup_steps = 100
  c.num_train_examples = 40000
  if a.quick:
    c.num_steps = 30
    c.snapshot.every = 30
    c.eval.every = 0
  return c
