"""Spectral analysis of snapshots: `A/spectral.json` and PNG figures.

  python -m launch.analyze --ref=runs/sft:200 --runs=runs/sft:600,runs/grpo --out=A
  python -m launch.analyze --ref=runs/sft:200 --runs=runs/sft:600 --out=A \
      --restore=top:0.25,layers:0-0 --split=id_heldout,ood

`--ref`/`--runs` take `workdir[:step]` (newest snapshot by default);
`--series` compares the reference with every snapshot of each run.
"""

import json
import os
import time

from absl import app, flags

from launch import common

_REF = flags.DEFINE_string("ref", None, "Reference snapshot: workdir[:step].")
_RUNS = flags.DEFINE_list("runs", [], "Target snapshots: workdir[:step],...")
_OUT = flags.DEFINE_string("out", None, "Output directory.")
_K = flags.DEFINE_float("k", 0.25, "Top-k subspace: a fraction in (0,1] or a count >= 1.")
_TOL = flags.DEFINE_float("tol", 1e-5, "Sparsity tolerance on |delta|.")
_SERIES = flags.DEFINE_bool("series", False, "Compare with every snapshot of each run.")
_RESTORE = flags.DEFINE_list("restore", [], "Restore specs: top:<frac>|topdir:<frac>|bottom:<frac>|layers:<a>-<b>.")
_SPLIT = flags.DEFINE_list("split", ["id_heldout", "ood"], "Splits for restoration evaluation.")
_PROBLEMS = flags.DEFINE_integer("num_problems", 64, "Problems per split for restoration.")
flags.mark_flags_as_required(["ref", "out"])


def _source(spec):
  """workdir[:step] -> CheckpointSource; an HF directory -> its imported params."""
  from jaxrl_post import checkpoint
  from jaxrl_post.model import loading
  path, step = loading.split_step(spec)
  if os.path.exists(os.path.join(path, "config.json")) and not loading.is_workdir(path):
    from jaxrl_post.model import hf
    return checkpoint.DictSource(hf.import_hf(path)[0], name=path)
  ck = os.path.join(path, "checkpoints")
  if not checkpoint.list_steps(ck):
    raise app.UsageError(f"{spec}: no snapshots under {ck}")
  return checkpoint.CheckpointSource(ck, step)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not _RUNS.value and not _RESTORE.value:
    raise app.UsageError("give --runs (targets) and/or --restore")
  common.init_runtime()
  from jaxrl_post.analysis import figures, restore, spectral
  from jaxrl_post.analysis.restore import parse_spec
  for spec in _RESTORE.value:
    parse_spec(spec)  # fail early on a bad spec
  k = _K.value if _K.value <= 1 else int(_K.value)
  t0 = time.perf_counter()
  ref = _source(_REF.value)
  os.makedirs(_OUT.value, exist_ok=True)
  out = {"ref": _REF.value, "k": k, "tol": _TOL.value, "pairs": {}, "series": {}}
  for i, spec in enumerate(_RUNS.value):
    target = _source(spec)
    res = spectral.compare(ref, target, k=k, tol=_TOL.value)
    out["pairs"][spec] = res
    figures.all_figures(res, _OUT.value, f"pair{i}")
    print(f"{spec}: {json.dumps(res['pooled'])}")
    if _SERIES.value:
      from jaxrl_post import checkpoint
      path = spec.split(":")[0]
      ck = os.path.join(path, "checkpoints")
      out["series"][path] = spectral.series(
          ref, [(f"{path}:{s}", checkpoint.CheckpointSource(ck, s)) for s in checkpoint.list_steps(ck)], k, _TOL.value)
  if out["series"]:
    figures.series_plot(out["series"], os.path.join(_OUT.value, "series.png"))
  if _RESTORE.value:
    out["restoration"] = _restoration(restore, figures)
  out["wall_time_sec"] = time.perf_counter() - t0
  with open(os.path.join(_OUT.value, "spectral.json"), "w") as f:
    json.dump(out, f)
  print(os.path.join(_OUT.value, "spectral.json"))


def _restoration(restore, figures):
  from jaxrl_post import evaluation, sampling, tasks
  from jaxrl_post.model import loading
  if len(_RUNS.value) != 1:
    raise app.UsageError("--restore needs exactly one --runs target")
  try:
    cfg, tok, p_ref, _ = loading.load_model(_REF.value)
    _, _, p_tgt, _ = loading.load_model(_RUNS.value[0])
  except loading.ModelSpecError as e:
    raise app.UsageError(f"--ref / --runs: {e}") from e
  path = loading.split_step(_REF.value)[0]
  with open(os.path.join(path, "config.json")) as f:
    run_cfg = json.load(f)
  task = tasks.get_task(run_cfg.get("task", "gp24"))
  sampler = sampling.Sampler(cfg, sampling.SamplingConfig(64, stop_ids=(tok.eos_id,), pad_id=tok.pad_id))
  ec = evaluation.EvalConfig(max_new_tokens=64)

  examples = {s: task.examples(s, _PROBLEMS.value, 1234) for s in _SPLIT.value}

  def accuracy(params):
    res = evaluation.evaluate_splits(sampler, params, tok, examples, task.verify, ec)
    return {f"acc/{s}": r["accuracy"] for s, r in res.items()}

  ref_acc, tgt_acc = accuracy(p_ref), accuracy(p_tgt)
  rows = [{"spec": "target", **tgt_acc}]
  for spec in _RESTORE.value:
    acc = accuracy(restore.restore_params(p_ref, p_tgt, spec))
    rows.append({"spec": spec, **acc, "recovered": {
        k: restore.recovery_fraction(ref_acc[k], tgt_acc[k], acc[k]) for k in acc}})
  rows.append({"spec": "reference", **ref_acc})
  figures.restoration_curve(rows, os.path.join(_OUT.value, "restoration.png"))
  return rows


if __name__ == "__main__":
  app.run(main)
