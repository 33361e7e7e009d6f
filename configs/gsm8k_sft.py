"""SFT on GSM8K with a sentencepiece tokenizer trained on the task corpus.

  python -m launch.train --config=configs/gsm8k_sft.py --workdir=runs/gsm8k_sft
  python -m launch.train --config=configs/gsm8k_sft.py:quick --workdir=/tmp/q
"""

from configs import common


def get_config(arg=None):
  a = common.parse_arg(arg, quick=False, model="tiny")
  c = common.sft_config("gsm8k", a.model, a.quick, seq_len=512, max_seq_len=1024,
                        max_new_tokens=256)
  c.tokenizer = "sentencepiece"
  c.model.vocab_size = 1024
  return c
