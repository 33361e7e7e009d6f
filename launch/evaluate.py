"""Evaluates a snapshot: accuracy, unbiased pass@k, ECE/Brier per split.

  python -m launch.evaluate --workdir=W [--step=S] --split=id,ood \
      --num_samples=16 --k=1,8 [--num_problems=64 --temperature=1.0]

Writes `W/eval/step_<S>.json` (DESIGN.md section 3). `id` is short for the
two ID splits, `id_seen` and `id_heldout`, where the task has them.
"""

import json
import os

from absl import app, flags, logging

from launch import common

_WORKDIR = flags.DEFINE_string("workdir", None, "A training run's directory.")
_STEP = flags.DEFINE_integer("step", None, "Snapshot step (default: newest good one).")
_SPLIT = flags.DEFINE_list("split", ["id", "ood"], "Splits to evaluate.")
_N = flags.DEFINE_integer("num_samples", 1, "Samples per problem (n).")
_K = flags.DEFINE_list("k", ["1"], "The k of pass@k (each <= num_samples).")
_PROBLEMS = flags.DEFINE_integer("num_problems", 64, "Problems per split.")
_TEMP = flags.DEFINE_float("temperature", None, "Default: 0 (greedy) if n == 1 else 1.0.")
_TOP_P = flags.DEFINE_float("top_p", 1.0, "Nucleus mass.")
_MAX_NEW = flags.DEFINE_integer("max_new_tokens", None, "Default: the run's eval setting.")
_SEED = flags.DEFINE_integer("seed", 1234, "Problem draw and sampling seed.")
_TASK = flags.DEFINE_string("task", None, "Task to evaluate on (default: the run's own), "
                            "e.g. gp24 for a base pretrained on arith.")
_OUT = flags.DEFINE_string("out", None, "Output path (default W/eval/step_<S>.json).")
flags.mark_flags_as_required(["workdir"])


def expand_splits(requested, available):
  out = []
  for s in requested:
    if s == "id" and "id_seen" in available:
      out += ["id_seen", "id_heldout"]
    elif s in available:
      out.append(s)
    else:
      raise app.UsageError(f"unknown split {s!r}; this task has {sorted(available)} (and 'id')")
  return out


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  try:
    ks = sorted({int(k) for k in _K.value})
  except ValueError as e:
    raise app.UsageError(f"--k must be integers: {_K.value}") from e
  if _N.value < 1 or any(k < 1 or k > _N.value for k in ks):
    raise app.UsageError(f"need 1 <= k <= num_samples={_N.value}; got k={ks}")
  w = _WORKDIR.value
  cfg_path = os.path.join(w, "config.json")
  if not os.path.exists(cfg_path):
    raise app.UsageError(f"{w}: no config.json (not a jaxrl_post workdir)")
  common.init_runtime()
  import jax
  from jaxrl_post import checkpoint, evaluation, tasks
  from jaxrl_post import sampling as S
  from jaxrl_post.model import loading

  with open(cfg_path) as f:
    run_cfg = json.load(f)
  if _TASK.value and _TASK.value != run_cfg.get("task"):
    try:
      task = tasks.get_task(_TASK.value)  # the run's task options belong to its own task
    except ValueError as e:
      raise app.UsageError(f"--task={_TASK.value!r}: {e}") from e
  else:
    task = tasks.get_task(run_cfg.get("task", "gp24"), **(run_cfg.get("task_options") or {}))
  splits = expand_splits(_SPLIT.value, task.splits)
  steps = checkpoint.list_steps(os.path.join(w, "checkpoints"))
  if not steps:
    raise app.UsageError(f"{w}: no snapshot under checkpoints/")
  if _STEP.value is not None and _STEP.value not in steps:
    raise app.UsageError(f"{w}: no snapshot at step {_STEP.value}; have {steps}")
  cfg, tok, params, step = loading.load_workdir(w, _STEP.value)
  temp = _TEMP.value if _TEMP.value is not None else (0.0 if _N.value == 1 else 1.0)
  max_new = _MAX_NEW.value or int((run_cfg.get("eval") or {}).get("max_new_tokens", 64))
  ec = evaluation.EvalConfig(num_samples=_N.value, temperature=temp, top_p=_TOP_P.value,
                             max_new_tokens=max_new, rows=64, ks=tuple(ks))
  sampler = S.Sampler(cfg, S.SamplingConfig(max_new_tokens=max_new, stop_ids=(tok.eos_id,),
                                            pad_id=tok.pad_id))
  result = {"workdir": w, "step": step, "temperature": temp, "num_samples": _N.value,
            "k": ks, "split_names": splits}
  for split in splits:
    examples = task.examples(split, n=_PROBLEMS.value, seed=_SEED.value)
    res = evaluation.evaluate_split(sampler, params, tok, examples, task.verify, ec,
                                    seed=_SEED.value, name=split)
    logging.info("%s: accuracy %.3f pass@k %s (%d problems x %d samples)", split,
                 res["accuracy"], res["pass@k"], res["n_problems"], _N.value)
    result[split] = res
  out = _OUT.value or os.path.join(w, "eval", f"step_{step}.json")
  if jax.process_index() == 0:  # across processes: one writer of the same result
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
      json.dump(result, f, indent=1)
  print(out)


if __name__ == "__main__":
  app.run(main)
