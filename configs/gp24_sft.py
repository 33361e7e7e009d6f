"""SFT on the 24-point game (ID rule), from the arith base or from scratch.

  python -m launch.train --config=configs/gp24_sft.py --workdir=runs/gp24_sft \
      --config.init_from=runs/gp24_pretrain
  python -m launch.train --config=configs/gp24_sft.py:quick --workdir=/tmp/q   # ~1 min
"""

from configs import common


def get_config(arg=None):
  a = common.parse_arg(arg, quick=False, model="tiny")
  c = common.sft_config("gp24", a.model, a.quick, eval_splits=("id_seen", "id_heldout", "ood"),
                        eval_every=250, snapshot_every=100)
  if a.quick:
    c.model.max_seq_len = 192
  return c
