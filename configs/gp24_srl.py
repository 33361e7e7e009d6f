"""SRL (step-wise expert similarity) on gp24.

  python -m launch.train --config=configs/gp24_srl.py --workdir=runs/gp24_srl \
      --config.init_from=runs/gp24_pretrain
  python -m launch.train --config=configs/gp24_srl.py:quick --workdir=/tmp/q   # standalone, seconds
"""

from configs import common
from configs.rl_common import rl_config


def get_config(arg=None):
  a = common.parse_arg(arg, quick=False)
  c = rl_config("gp24", trainer="srl", quick=a.quick, dynamic_sampling=True, dynamic_eps=0.01, max_gen_rounds=3)
  if not a.quick:
    c.init_from = "runs/gp24_pretrain"
  return c
