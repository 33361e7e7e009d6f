"""DAPO-style GRPO (clip-higher, token-mean, dynamic sampling) on gp24 ID hands.

  python -m launch.train --config=configs/gp24_grpo.py --workdir=runs/gp24_grpo \
      --config.init_from=runs/gp24_sft:300
  python -m launch.train --config=configs/gp24_grpo.py:quick --workdir=/tmp/q   # standalone, seconds

Starts from an intermediate SFT snapshot (step 300 of configs/gp24_sft.py):
the final one solves almost every seen hand greedily, leaving RL nothing to
raise. The SFT policy is sharp (entropy ~0.08 nat/token), so most groups of
a few samples agree: groups of 8 and dynamic sampling (up to 3 generation
rounds) keep the batch informative. Measured on a 2-core CPU (2026-12-05, the
README's gp24_pretrain -> gp24_sft chain first), 200 steps in 2.3 min: greedy
ID-seen accuracy 0.36 -> 0.58 (the run's own eval, 64 problems), sampled
(T = 1) accuracy 0.21 -> 0.36 and pass@8 0.63 -> 0.80 (`launch.evaluate`, 64
problems x 8 samples); ID held-out sampled 0.02 -> 0.02 (greedy 0.05 -> 0.02),
OOD 0 -> 0 both ways.
"""

from configs import common
from configs.rl_common import rl_config


def get_config(arg=None):
  a = common.parse_arg(arg, quick=False)
  c = rl_config("gp24", trainer="grpo", quick=a.quick, epsilon_high=0.28, aggregation="token_mean")
  if not a.quick:
    c.init_from = "runs/gp24_sft:300"
    c.num_steps = 200
    c.optim.learning_rate = 5e-5
    c.rl.group_size = 8
    c.rl.dynamic_sampling = True
    c.rl.max_gen_rounds = 3
    c.eval.every = 50
    c.snapshot.every = 50
  return c
