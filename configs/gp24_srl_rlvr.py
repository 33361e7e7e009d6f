"""outcome-reward GRPO (RLVR) from the SRL snapshot.

  python -m launch.train --config=configs/gp24_srl_rlvr.py --workdir=runs/gp24_srl_rlvr \
      --config.init_from=runs/gp24_srl
  python -m launch.train --config=configs/gp24_srl_rlvr.py:quick --workdir=/tmp/q   # standalone, seconds
"""

from configs import common
from configs.rl_common import rl_config


def get_config(arg=None):
  a = common.parse_arg(arg, quick=False)
  c = rl_config("gp24", trainer="grpo", quick=a.quick)
  if not a.quick:
    c.init_from = "runs/gp24_srl"
  return c
