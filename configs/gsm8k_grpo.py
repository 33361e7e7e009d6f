"""GRPO on GSM8K.

  python -m launch.train --config=configs/gsm8k_grpo.py --workdir=runs/gsm8k_grpo \
      --config.init_from=runs/gsm8k_sft
  python -m launch.train --config=configs/gsm8k_grpo.py:quick --workdir=/tmp/q   # standalone, seconds
"""

from configs import common
from configs.rl_common import rl_config


def get_config(arg=None):
  a = common.parse_arg(arg, quick=False)
  c = rl_config("gsm8k", trainer="grpo", quick=a.quick, max_new_tokens=256)
  if not a.quick:
    c.init_from = "runs/gsm8k_sft"
  return c
