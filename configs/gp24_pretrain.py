"""Pretrains a tiny base on the arith corpus (both face-card rules).

  python -m launch.train --config=configs/gp24_pretrain.py --workdir=runs/gp24_pretrain

The corpus (jaxrl_post/tasks/arith.py) mixes 24-point hands under both rules
(ID hands of the seen multisets, OOD hands of `ood_train`; held-out multisets
never appear), card values under a stated rule, single operations and
three-number reductions, so the base has OOD skill for SFT to erode.
"""

from configs import common


def get_config(arg=None):
  a = common.parse_arg(arg, quick=False, model="mini")
  c = common.sft_config("arith", a.model, a.quick, num_steps=800, seq_len=256, eval_splits=(),
                        eval_every=0, snapshot_every=200)
  c.expert_all_solutions = False
  c.optim.learning_rate = 3e-3
  c.optim.warmup_steps = 30
  c.num_train_examples = 40000
  if a.quick:
    c.num_steps = 30
    c.snapshot.every = 30
  else:
    c.pack = True
    c.batch_size = 16
  return c
