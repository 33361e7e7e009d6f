"""The end-to-end SFT -> RL study on CPU (the README's main command).

  python -m launch.study --workdir=runs/study                        # <= 20 min, 2 CPU cores
  python -m launch.study --workdir=/tmp/s --config=configs/study.py:quick   # ~3 min (tests)

Every stage is an ordinary training config (configs/common.py) with its
steps scaled here; `configs/study_*.py` scale the same stages to accelerators.
"""

import ml_collections

from configs import common


def _stage(trainer: str, task: str, steps: int, **fields) -> ml_collections.ConfigDict:
  c = common.base_config()
  c.trainer = trainer
  c.task = task
  c.num_steps = steps
  for k, v in fields.items():
    if isinstance(v, dict):
      for kk, vv in v.items():
        c[k][kk] = vv
    else:
      c[k] = v
  return c


def get_config(arg=None):
  a = common.parse_arg(arg, quick=False, model="mini")
  q = a.quick
  model = dict(preset="nano" if q else a.model, max_seq_len=320)
  rl = dict(group_size=4 if q else 8, prompts_per_step=4 if q else 8, max_new_tokens=48,
            temperature=1.0, aggregation="token_mean", epsilon_high=0.28,
            advantage="group_std")
  rl_optim = dict(learning_rate=5e-5, warmup_steps=0, schedule="constant")
  # Train-time eval is a light check; the study's own evaluation is the record.
  # No accuracy eval inside the runs (splits=()): the study evaluates every
  # snapshot itself, on more problems. gen_loss is still logged (one forward).
  ev = dict(every=0, splits=(), num_problems=8 if q else 16, max_new_tokens=48,
            gen_loss_examples=16 if q else 128)
  # One canonical expert solution per value multiset (base and SFT alike):
  # a 0.8M model memorises it within the CPU budget (configs/gp24_sft.py).
  canonical = dict(expert_all_solutions=False)
  c = ml_collections.ConfigDict()
  c.seed = 0
  # Packing (three gp24 examples, more arith ones, per 256-token row) cuts the padding.
  # 60% of the corpus are 24-point hands, three quarters of them under the OOD
  # rule (the arith default is 45%, half and half): OOD skill the base can
  # learn within the budget and SFT can then erode.
  c.base = _stage("sft", "arith", 30 if q else 500, model=model, batch_size=16,
                  seq_len=192 if q else 256, pack=not q, log_every=10 if q else 50,
                  optim=dict(learning_rate=3e-3, warmup_steps=10 if q else 30),
                  snapshot=dict(every=30 if q else 250), eval=dict(ev),
                  task_options=dict(hand_fraction=0.6, ood_hand_share=0.75),
                  num_train_examples=512 if q else 40000, **canonical)
  c.sft = _stage("sft", "gp24", 40 if q else 250, model=model, batch_size=16,
                 seq_len=192 if q else 256, pack=not q, log_every=10 if q else 25,
                 optim=dict(learning_rate=3e-3, warmup_steps=5 if q else 20),
                 snapshot=dict(every=10 if q else 50), eval=dict(ev),
                 # A quarter of the SFT targets end in `Confidence: q` (q uniform
                 # in 0.0..1.0, no information about correctness): the
                 # calibration stage starts from the same SFT snapshot, which
                 # then knows both prompts (see conf_sft_steps).
                 task_options=dict(confidence_fraction=0.25, confidence_prior="uniform"),
                 num_train_examples=512 if q else 20000, **canonical)
  c.grpo = _stage("grpo", "gp24", 4 if q else 30, model=model, log_every=2 if q else 10,
                  optim=dict(rl_optim), snapshot=dict(every=2 if q else 10), rl=dict(rl),
                  eval=dict(ev))
  # Completions that end with `Confidence: q` need a longer budget. RLCR's
  # advantage is mean-only (scale_rewards=False in the RLCR code, papers.md 5).
  c.rlcr = _stage("grpo", "gp24", 4 if q else 20, model=model, log_every=2 if q else 10,
                  optim=dict(rl_optim), snapshot=dict(every=2 if q else 10),
                  rl=dict(rl, reward="rlcr", max_new_tokens=72, advantage="mean_only"),
                  eval=dict(ev, max_new_tokens=72))
  c.srl = _stage("srl", "gp24", 4 if q else 8, model=model, log_every=2 if q else 4,
                 optim=dict(rl_optim), snapshot=dict(every=2 if q else 10),
                 rl=dict(rl, dynamic_sampling=False, dynamic_eps=0.01), eval=dict(ev))
  # RLVR after SRL (and alone) in the SRL stage: the GRPO stage's settings.
  # From the first SFT snapshot, "RLVR alone" is the rl stage's run at this
  # step (a GRPO snapshot step; constant lr, so the same computation).
  c.srl_rlvr_steps = 2 if q else 10
  # Which SFT snapshots RL starts from: "first", "ood_peak", "last" (and any
  # explicit steps).
  c.rl_starts = ("first", "ood_peak", "mid", "last")  # >= 3 points for the Spearman table
  # The calibration stage's start knows the `Confidence: q` format from the
  # SFT mix above (q uniform: both rewards start from the same uncalibrated
  # prior that sampling can explore). conf_sft_steps > 0 instead SFTs the
  # format on top of the last snapshot first: measured, 40 such steps cut
  # sampled accuracy from 0.285 to 0.026 on the then unseen prompt.
  c.conf_sft_steps = 0
  c.conf_prior = "uniform"
  c.calib_samples = 4 if q else 8   # samples per problem for ECE / Brier
  # n for pass@k of SFT snapshots (pass@large-k); sampling is ~90% of sft_eval.
  c.eval_samples = 4 if q else 8
  c.eval_k = (1, 4) if q else (1, 4, 8)
  c.eval_problems = 8 if q else 48
  c.restore_specs = ("top:0.25", "top:0.5", "layers:0-0") if not q else ("top:0.25", "layers:0-0")
  c.spectral_k = 0.25
  return c
