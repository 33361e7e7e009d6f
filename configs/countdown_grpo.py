"""GRPO on countdown.

  python -m launch.train --config=configs/countdown_grpo.py --workdir=runs/countdown_grpo \
      --config.init_from=runs/countdown_sft
  python -m launch.train --config=configs/countdown_grpo.py:quick --workdir=/tmp/q   # standalone, seconds
"""

from configs import common
from configs.rl_common import rl_config


def get_config(arg=None):
  a = common.parse_arg(arg, quick=False)
  c = rl_config("countdown", trainer="grpo", quick=a.quick)
  if not a.quick:
    c.init_from = "runs/countdown_sft"
  return c
