"""SRL on GSM8K steps.

  python -m launch.train --config=configs/gsm8k_srl.py --workdir=runs/gsm8k_srl \
      --config.init_from=runs/gsm8k_sft
  python -m launch.train --config=configs/gsm8k_srl.py:quick --workdir=/tmp/q   # standalone, seconds
"""

from configs import common
from configs.rl_common import rl_config


def get_config(arg=None):
  a = common.parse_arg(arg, quick=False)
  c = rl_config("gsm8k", trainer="srl", quick=a.quick, dynamic_sampling=True, dynamic_eps=0.01, max_gen_rounds=3)
  if not a.quick:
    c.init_from = "runs/gsm8k_sft"
  return c
