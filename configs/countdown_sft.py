"""SFT on countdown.

  python -m launch.train --config=configs/countdown_sft.py --workdir=runs/countdown_sft
  python -m launch.train --config=configs/countdown_sft.py:quick --workdir=/tmp/q
"""

from configs import common


def get_config(arg=None):
  a = common.parse_arg(arg, quick=False, model="tiny")
  return common.sft_config("countdown", a.model, a.quick, seq_len=128)
