"""The same study scaled up for a GPU node or a TPU slice (no code changes).

  python -m launch.study --workdir=/shared/study --config=configs/study_accel.py:model=small
  python -m launch.study --workdir=W --config=configs/study_accel.py:model=qwen2.5-0.5b,mesh=fsdp

Longer runs, bigger batches and groups, bfloat16 activations, a (data, fsdp,
tensor) mesh over every device. `init=<workdir>` starts the base stage from
an existing run instead of random weights (imported HF models need a
tokenizer saved with the run; see issue notes).
"""

from configs import common
from configs import study


def get_config(arg=None):
  a = common.parse_arg(arg, model="small", mesh="fsdp", init="", steps=1.0)
  c = study.get_config(f"model={a.model}")
  mesh = {"fsdp": (1, -1, 1), "data": (-1, 1, 1), "tensor": (1, -1, 2)}[a.mesh]
  for name in ("base", "sft", "grpo", "rlcr", "srl"):
    s = c[name]
    s.mesh = mesh
    s.model.dtype = "bfloat16"
    s.model.max_seq_len = 512
    s.seq_len = 512 if name in ("base", "sft") else s.seq_len
    s.num_steps = int(s.num_steps * 10 * a.steps)
    s.batch_size = 128
    s.rl.prompts_per_step = 64
    s.rl.group_size = 16
    s.rl.max_new_tokens = 96
    s.eval.max_new_tokens = 96
    s.snapshot.every = max(1, s.num_steps // 10)
  if a.init:
    c.base.init_from = a.init
  c.eval_problems = 256
  c.eval_samples = 256
  c.eval_k = (1, 8, 64)
  return c
