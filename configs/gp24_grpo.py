"""DAPO-style GRPO (clip-higher, token-mean) on gp24 ID hands.

  python -m launch.train --config=configs/gp24_grpo.py --workdir=runs/gp24_grpo \
      --config.init_from=runs/gp24_sft
  python -m launch.train --config=configs/gp24_grpo.py:quick --workdir=/tmp/q   # standalone, seconds
"""

from configs import common
from configs.rl_common import rl_config


def get_config(arg=None):
  a = common.parse_arg(arg, quick=False)
  c = rl_config("gp24", trainer="grpo", quick=a.quick, epsilon_high=0.28, aggregation="token_mean")
  if not a.quick:
    c.init_from = "runs/gp24_sft"
  return c
