"""SFT on the 24-point game (ID rule), from the arith base or from scratch.

  python -m launch.train --config=configs/gp24_pretrain.py --workdir=runs/gp24_pretrain
  python -m launch.train --config=configs/gp24_sft.py --workdir=runs/gp24_sft \
      --config.init_from=runs/gp24_pretrain
  python -m launch.train --config=configs/gp24_sft.py:quick --workdir=/tmp/q   # ~1 min
  # the start of configs/gp24_rlcr.py: a quarter of the targets also state a confidence
  python -m launch.train --config=configs/gp24_sft.py:conf --workdir=runs/gp24_sft_conf \
      --config.init_from=runs/gp24_pretrain

The default is sized for ten minutes of a 2-core CPU: the 0.8M-parameter
`mini` model, character tokens, three examples packed per 256-token row, and
one canonical expert solution per value multiset (`expert_all_solutions=False`:
SFT memorises one answer per hand, as the "SFT memorizes" setting has it;
with every solution as a target the same budget reaches a far lower accuracy).

`:conf` mixes the confidence format into the same SFT (the study's recipe):
a quarter of the examples get the prompt that asks for a confidence and a
target that ends with `Confidence: q`, q uniform in [0, 1]
(`Gp24Task(confidence_fraction=0.25, confidence_prior="uniform")`), so one
snapshot solves both prompts and RLCR has something to calibrate.
"""

from configs import common


def get_config(arg=None):
  a = common.parse_arg(arg, quick=False, model="mini", conf=False)
  c = common.sft_config("gp24", a.model, a.quick, num_steps=800, seq_len=256,
                        eval_splits=("id_seen", "id_heldout", "ood"),
                        eval_every=100, snapshot_every=100)
  c.expert_all_solutions = False
  if a.conf:
    c.task_options = {"confidence_fraction": 0.25, "confidence_prior": "uniform"}
  if a.quick:
    c.model.max_seq_len = 192
    c.seq_len = 192
  else:
    c.pack = True
    c.batch_size = 16
    c.optim.learning_rate = 3e-3
    c.optim.warmup_steps = 30
    c.eval.num_problems = 64
    c.eval.max_new_tokens = 48
  return c
