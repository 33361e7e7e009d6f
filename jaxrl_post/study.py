"""The SFT -> RL study: stages, their outputs, and the resumable driver.

Stages (each writes `W/stages/<name>.json` when complete; a rerun skips
complete stages and training runs resume from their newest snapshot):

  base      pretrain a tiny model on the arithmetic corpus (both face-card rules)
  sft       SFT on gp24 ID hands with dense snapshots
  sft_eval  every SFT snapshot: greedy accuracy on id_seen / id_heldout / ood,
            pass@k (n samples at T=1) and the generalization loss
  rl        GRPO from several SFT snapshots (first, OOD peak, last)
  rlcr      calibration reward vs binary reward from the same snapshot
  srl       SRL, SRL -> RLVR and RLVR alone, from the base and from the first
            SFT snapshot
  spectral  how each stage moved the weights (against its start and against
            the OOD-peak snapshot), update sparsity, restoration sweep
  report    W/report.md, W/report.json and PNG figures
"""

from __future__ import annotations

import copy
import json
import os
import time
from typing import Any, Callable

import numpy as np
from absl import logging

from jaxrl_post import checkpoint as ckpt_lib
from jaxrl_post import eval_metrics
from jaxrl_post import evaluation
from jaxrl_post import sampling as S
from jaxrl_post import tasks as tasks_lib
from jaxrl_post.hparams import from_config
from jaxrl_post.model import loading
from jaxrl_post.trainers import run_trainer

# `ood_train` holds OOD-rule hands of the multisets the arith base was
# pretrained on (never in SFT or RL data): the OOD skill the base has and SFT
# can erode. `ood` holds OOD multisets no stage ever trains on.
SPLITS = ("id_seen", "id_heldout", "ood_train", "ood")
OOD_SKILL = "ood_train"   # the OOD measure the erosion / restoration findings use
SAMPLED = ("id_seen", "ood_train")  # pass@k splits of the SFT snapshots
CALIB_SPLITS = ("id_seen", "id_heldout")   # ECE / Brier of the calibration stage
RESTORE_SPLITS = ("id_seen", "ood_train", "ood")


class StageInputMissing(RuntimeError):
  """A stage's inputs (an earlier stage's outputs) are missing."""


def _check_calibration_source(config) -> None:
  """The rlcr stage needs an SFT that taught the `Confidence: q` format: either
  mixed into the SFT data (sft.task_options.confidence_fraction > 0) or a
  separate short SFT (conf_sft_steps > 0). Checked before any stage runs, not
  after an hour of base and SFT training."""
  mixed = float(config.sft.get("task_options", {}).get("confidence_fraction", 0) or 0)
  if mixed <= 0 and int(config.get("conf_sft_steps", 0)) <= 0:
    raise ValueError("the calibration stage needs an SFT that taught the confidence format: "
                     "set sft.task_options.confidence_fraction > 0 or conf_sft_steps > 0")


class Study:
  """Runs the stages of `configs/study.py` in `workdir`."""

  def __init__(self, config, workdir: str, log: Callable[[str], None] = print):
    _check_calibration_source(config)
    self.c = config
    # Absolute, so the run directories the stage results record stay valid
    # when the study is resumed from another working directory.
    self.w = os.path.abspath(workdir)
    self.log = log
    os.makedirs(self.path("stages"), exist_ok=True)
    self._samplers: dict = {}
    # The SFT stage's expert targets (canonical or all solutions) also make
    # the held-out examples of gen_loss.
    self.all_solutions = bool(config.sft.get("expert_all_solutions", True))
    self.task = tasks_lib.get_task("gp24", all_solutions=self.all_solutions)

  # ------------------------------------------------------------------ utils
  def path(self, *parts) -> str:
    return os.path.join(self.w, *parts)

  def stage_result(self, name: str) -> dict:
    p = self.path("stages", f"{name}.json")
    if not os.path.exists(p):
      raise StageInputMissing(f"stage {name!r} has not completed ({p} missing); rerun the study")
    with open(p) as f:
      return json.load(f)

  def _save_stage(self, name: str, result: dict):
    p = self.path("stages", f"{name}.json")
    tmp = p + ".tmp"
    with open(tmp, "w") as f:
      json.dump(result, f, indent=1, default=_json_default)
    os.replace(tmp, p)

  def train(self, name: str, stage_cfg, init_from: str = "", **overrides) -> str:
    """Trains (or resumes, or skips when finished) one run under W/runs/<name>."""
    cfg = copy.deepcopy(stage_cfg)
    cfg.seed = self.c.seed
    if init_from:
      cfg.init_from = init_from
    for k, v in overrides.items():
      cfg[k] = v
    workdir = self.path("runs", name)
    run_trainer(from_config(cfg), workdir, cfg.to_dict())
    return workdir

  def sampler(self, cfg, tok, max_new: int) -> S.Sampler:
    key = (cfg, max_new, tok.eos_id, tok.pad_id)
    if key not in self._samplers:
      self._samplers[key] = S.Sampler(cfg, S.SamplingConfig(
          max_new_tokens=max_new, stop_ids=(tok.eos_id,), pad_id=tok.pad_id))
    return self._samplers[key]

  def evaluate(self, workdir: str, step: int | None, *, num_samples: int = 1,
               ks=(1,), splits=SPLITS, task=None, max_new: int | None = None) -> dict:
    """Accuracy (and pass@k when num_samples > 1) of one snapshot.

    Every split's prompts go through the rollout kernel together (one padded
    batch tail for all of them, not one per split), then each split is scored
    on its own.
    """
    cfg, tok, params, got = loading.load_workdir(workdir, step)
    return {"step": got, **self._evaluate_params(cfg, tok, params, num_samples=num_samples,
                                                 ks=ks, splits=splits, task=task,
                                                 max_new=max_new)}

  def _evaluate_params(self, cfg, tok, params, *, num_samples: int = 1, ks=(1,),
                       splits=SPLITS, task=None, max_new: int | None = None) -> dict:
    task = task or self.task
    max_new = max_new or int(self.c.sft.eval.max_new_tokens)
    ec = evaluation.EvalConfig(num_samples=num_samples,
                               temperature=0.0 if num_samples == 1 else 1.0,
                               max_new_tokens=max_new, rows=64, ks=tuple(ks))
    per_split = {split: task.examples(split, n=int(self.c.eval_problems), seed=self.c.seed + 777)
                 for split in splits}
    out = evaluation.evaluate_splits(self.sampler(cfg, tok, max_new), params, tok, per_split,
                                     task.verify, ec, seed=self.c.seed)
    for res in out.values():
      res.pop("examples", None)
      if num_samples == 1:  # per-problem counts matter for pass@k only
        res.pop("per_problem", None)
    return out

  # ----------------------------------------------------------------- stages
  def stage_base(self) -> dict:
    w = self.train("base", self.c.base)
    return {"workdir": w, "final": ckpt_lib.list_steps(os.path.join(w, "checkpoints"))[-1]}

  def stage_sft(self) -> dict:
    base = self.stage_result("base")
    w = self.train("sft", self.c.sft, init_from=base["workdir"])
    return {"workdir": w, "steps": ckpt_lib.list_steps(os.path.join(w, "checkpoints"))}

  def stage_sft_eval(self) -> dict:
    sft = self.stage_result("sft")
    base = self.stage_result("base")
    rows = []
    cfg, tok, _, _ = loading.load_workdir(sft["workdir"])
    held = self.task.examples("id_heldout", n=int(self.c.sft.eval.gen_loss_examples),
                              seed=self.c.seed + 99)
    for label, workdir, step in [("base", base["workdir"], None)] + [
        (f"sft@{s}", sft["workdir"], s) for s in sft["steps"]]:
      greedy = self.evaluate(workdir, step)
      sampled = self.evaluate(workdir, step, num_samples=int(self.c.eval_samples),
                              ks=tuple(self.c.eval_k), splits=SAMPLED)
      _, _, params, got = loading.load_workdir(workdir, step)
      gen_loss = evaluation.generalization_loss(params, cfg, tok, held,
                                                seq_len=int(self.c.sft.seq_len))
      rows.append({"label": label, "workdir": workdir, "step": got,
                   **{f"acc/{s}": greedy[s]["accuracy"] for s in SPLITS},
                   **{f"pass@{k}/{s}": sampled[s]["pass@k"][str(k)]
                      for s in SAMPLED for k in self.c.eval_k},
                   "gen_loss": gen_loss,
                   "n_problems": greedy["ood"]["n_problems"],
                   "n_samples": int(self.c.eval_samples)})
      self.log(f"  {label}: ID seen {rows[-1]['acc/id_seen']:.2f} heldout "
               f"{rows[-1]['acc/id_heldout']:.2f} OOD base-seen {rows[-1]['acc/ood_train']:.2f} "
               f"OOD unseen {rows[-1]['acc/ood']:.2f} gen_loss {gen_loss:.3f}")
    sft_rows = [r for r in rows if r["label"] != "base"]
    peak = max(sft_rows, key=lambda r: (r[f"acc/{OOD_SKILL}"], r["acc/ood"], -r["step"]))
    return {"rows": rows, "ood_peak_step": peak["step"]}

  def _rl_starts(self) -> list[int]:
    ev = self.stage_result("sft_eval")
    steps = [r["step"] for r in ev["rows"] if r["label"] != "base"]
    named = {"first": steps[0], "mid": steps[len(steps) // 2], "last": steps[-1],
             "ood_peak": ev["ood_peak_step"]}
    out = []
    for s in self.c.rl_starts:
      step = named[s] if s in named else int(s)
      if step not in out:
        out.append(step)
    return out

  def stage_rl(self) -> dict:
    sft = self.stage_result("sft")
    runs = []
    for step in self._rl_starts():
      w = self.train(f"grpo_from_{step}", self.c.grpo, init_from=f"{sft['workdir']}:{step}")
      ev = self.evaluate(w, None)
      runs.append({"start_step": step, "workdir": w,
                   **{f"acc/{s}": ev[s]["accuracy"] for s in SPLITS},
                   "metrics": _last_metrics(w)})
      self.log(f"  GRPO from SFT step {step}: ID seen {runs[-1]['acc/id_seen']:.2f} "
               f"heldout {runs[-1]['acc/id_heldout']:.2f} OOD base-seen "
               f"{runs[-1]['acc/ood_train']:.2f} unseen {runs[-1]['acc/ood']:.2f}")
    return {"runs": runs}

  def stage_rlcr(self) -> dict:
    sft = self.stage_result("sft")
    # From the last SFT snapshot, the most accurate one: calibration needs
    # some correct answers to calibrate against.
    start = sft["steps"][-1]
    task = tasks_lib.get_task("gp24", confidence=True, all_solutions=self.all_solutions)
    out = {"start_step": start}
    conf_opts = {"confidence": True, "confidence_prior": str(self.c.conf_prior)}
    origin = f"{sft['workdir']}:{start}"
    if int(self.c.conf_sft_steps) > 0:
      # An SFT that never showed the confidence prompt: a short SFT on targets
      # ending in `Confidence: q` (q per `conf_prior`) teaches the format first.
      conf_cfg = copy.deepcopy(self.c.sft)
      conf_cfg.task_options = dict(conf_opts)
      conf_cfg.num_steps = int(self.c.conf_sft_steps)
      origin = self.train("sft_conf", conf_cfg, init_from=origin)
    # Outputs with a confidence line are longer: the stage has its own budget.
    budget = int(self.c.rlcr.eval.max_new_tokens)
    n = int(self.c.get("calib_samples", self.c.eval_samples))

    def calibration(workdir, step=None):
      ev = self.evaluate(workdir, step, num_samples=n, ks=(1,), splits=CALIB_SPLITS, task=task,
                         max_new=budget)
      return {"workdir": workdir, "step": ev["step"],
              **{f"{k}/{s}": ev[s][k] for s in CALIB_SPLITS
                 for k in ("accuracy", "ece", "brier", "confidence_format_rate")}}

    # The row `sft_conf`: the policy both RL runs start from.
    out["sft_conf"] = (calibration(origin) if int(self.c.conf_sft_steps) > 0
                       else calibration(sft["workdir"], start))
    out["n_samples"] = n
    for name in ("binary", "rlcr"):  # the same run but for the reward
      cfg = copy.deepcopy(self.c.rlcr)
      cfg.rl.reward = name
      cfg.task_options = dict(conf_opts)
      w = self.train(f"calib_{name}", cfg, init_from=origin)
      out[name] = calibration(w)
    return out

  def stage_srl(self) -> dict:
    base = self.stage_result("base")
    sft = self.stage_result("sft")
    first = sft["steps"][0]
    out = {}
    for origin, spec in (("base", base["workdir"]), ("sft_first", f"{sft['workdir']}:{first}")):
      srl_w = self.train(f"srl_from_{origin}", self.c.srl, init_from=spec)
      steps = int(self.c.srl_rlvr_steps)
      rlvr_w = self.train(f"srl_rlvr_from_{origin}", self.c.grpo, init_from=srl_w,
                          num_steps=steps)
      # RLVR alone from an SFT snapshot the rl stage already trained from is
      # that run's own snapshot at `steps` (see _rl_snapshot); else a run.
      alone = self._rl_snapshot(spec, steps)
      alone_w, alone_step = alone or (self.train(f"rlvr_from_{origin}", self.c.grpo,
                                                 init_from=spec, num_steps=steps), None)
      res = {}
      for name, w, step in (("srl", srl_w, None), ("srl_rlvr", rlvr_w, None),
                            ("rlvr", alone_w, alone_step)):
        ev = self.evaluate(w, step, splits=("id_seen", "id_heldout"))
        res[name] = {"workdir": w, "step": ev["step"], "acc/id_seen": ev["id_seen"]["accuracy"],
                     "acc/id_heldout": ev["id_heldout"]["accuracy"],
                     "metrics": _first_last_metrics(w, upto=ev["step"])}
      out[origin] = res
      self.log(f"  from {origin}: RLVR alone {res['rlvr']['acc/id_heldout']:.2f}, "
               f"SRL->RLVR {res['srl_rlvr']['acc/id_heldout']:.2f} (ID heldout)")
    return out

  def _rl_snapshot(self, spec: str, steps: int) -> tuple[str, int] | None:
    """(workdir, steps) of the rl stage's GRPO run from `spec` when its
    snapshot at `steps` is exactly a `steps`-step run of the same config.

    It is when the learning rate does not depend on the run's length (a
    constant schedule): prompts and sampling keys are pure in (seed, step),
    so the first `steps` steps of a longer run are the same computation.
    Observed: a 15-step `rlvr_from_sft_first` logged the same losses at steps
    10 and 15 (0.002398, 0.0009153) as the 30-step `grpo_from_50` it repeats.
    """
    if str(self.c.grpo.optim.schedule) != "constant":
      return None
    sft = self.stage_result("sft")
    for run in self.stage_result("rl")["runs"]:
      if f"{sft['workdir']}:{run['start_step']}" == spec:
        if steps in ckpt_lib.list_steps(os.path.join(run["workdir"], "checkpoints")):
          return run["workdir"], steps
    return None

  def stage_spectral(self) -> dict:
    from jaxrl_post.analysis import restore as restore_lib
    from jaxrl_post.analysis import spectral
    sft = self.stage_result("sft")
    ev = self.stage_result("sft_eval")
    rl = self.stage_result("rl")
    peak = ev["ood_peak_step"]
    last = sft["steps"][-1]

    def src(workdir, step=None):
      return ckpt_lib.CheckpointSource(os.path.join(workdir, "checkpoints"), step)

    k = float(self.c.spectral_k)
    pairs = {"sft_peak_to_end": (src(sft["workdir"], peak), src(sft["workdir"], last))}
    for r in rl["runs"]:
      pairs[f"grpo_from_{r['start_step']}"] = (src(sft["workdir"], r["start_step"]),
                                               src(r["workdir"]))
      pairs[f"peak_to_grpo_from_{r['start_step']}"] = (src(sft["workdir"], peak),
                                                       src(r["workdir"]))
    out = {"pairs": {}}
    for name, (a, b) in pairs.items():
      res = spectral.compare(a, b, k=k)
      out["pairs"][name] = res
    os.makedirs(self.path("analysis"), exist_ok=True)
    with open(self.path("analysis", "spectral.json"), "w") as f:
      json.dump(out, f, indent=1, default=_json_default)
    # Restoration: put the directions of the snapshot with the most OOD skill
    # (the base when SFT never matched it, else SFT's OOD peak; ties go to
    # SFT) back into the end-of-SFT model.
    peak_row = max(ev["rows"], key=lambda r: (r[f"acc/{OOD_SKILL}"], r["acc/ood"],
                                              r["label"] != "base"))
    cfg, tok, p_peak, _ = loading.load_workdir(peak_row["workdir"], peak_row["step"])
    _, _, p_end, _ = loading.load_workdir(sft["workdir"], last)
    end_row = next(r for r in ev["rows"] if r["label"] == f"sft@{last}")
    rest = []
    for spec in self.c.restore_specs:
      params = restore_lib.restore_params(p_peak, p_end, spec)
      accs = self._accuracy_of(cfg, tok, params, RESTORE_SPLITS)
      rest.append({"spec": spec, **{f"acc/{s}": a for s, a in accs.items()},
                   "ood_recovered": restore_lib.recovery_fraction(
                       peak_row[f"acc/{OOD_SKILL}"], end_row[f"acc/{OOD_SKILL}"], accs[OOD_SKILL])})
    pick = lambda row: {f"acc/{s}": row[f"acc/{s}"] for s in RESTORE_SPLITS}
    out["restoration"] = {"ref_step": peak_row["step"], "ref_label": peak_row["label"],
                          "target_step": last, "ood_split": OOD_SKILL,
                          "ref": pick(peak_row), "target": pick(end_row), "rows": rest}
    return out

  def _accuracy_of(self, cfg, tok, params, splits) -> dict:
    """Greedy accuracy per split of an in-memory parameter tree."""
    res = self._evaluate_params(cfg, tok, params, splits=tuple(splits))
    return {split: res[split]["accuracy"] for split in splits}

  def stage_report(self) -> dict:
    from jaxrl_post import report
    return report.write_report(self)

  # ----------------------------------------------------------------- driver
  STAGES = ("base", "sft", "sft_eval", "rl", "rlcr", "srl", "spectral", "report")

  def run(self) -> dict:
    t_start = time.perf_counter()
    durations = []
    for i, name in enumerate(self.STAGES, start=1):
      p = self.path("stages", f"{name}.json")
      if os.path.exists(p):
        self.log(f"[{i}/{len(self.STAGES)}] {name}: done earlier, skipped")
        continue
      t = time.perf_counter()
      self.log(f"[{i}/{len(self.STAGES)}] {name}: running")
      result = getattr(self, f"stage_{name}")()
      self._save_stage(name, result)
      durations.append(time.perf_counter() - t)
      elapsed = time.perf_counter() - t_start
      left = len(self.STAGES) - i
      eta = left * (sum(durations) / len(durations))
      self.log(f"[{i}/{len(self.STAGES)}] {name}: done in {durations[-1]:.1f} s "
               f"(elapsed {elapsed / 60:.1f} min, rough eta {eta / 60:.1f} min)")
    return self.stage_result("report")


def _last_metrics(workdir: str) -> dict:
  rows = _read_jsonl(os.path.join(workdir, "metrics.jsonl"))
  return rows[-1] if rows else {}


def _first_last_metrics(workdir: str, upto: int | None = None) -> dict:
  """Reward metrics of the first and last logged RL steps (up to step `upto`)."""
  rows = [r for r in _read_jsonl(os.path.join(workdir, "metrics.jsonl"))
          if "reward_mean" in r and (upto is None or r.get("step", 0) <= upto)]
  if not rows:
    return {}
  keys = ("reward_mean", "reward_std", "frac_reward_zero_std")
  return {"first": {k: rows[0].get(k) for k in keys}, "last": {k: rows[-1].get(k) for k in keys}}


def _read_jsonl(path: str) -> list[dict]:
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def _json_default(o: Any):
  if isinstance(o, (np.floating, np.integer)):
    return o.item()
  if isinstance(o, np.ndarray):
    return o.tolist()
  return str(o)


def spearman_table(rows_sft: list[dict], rl_runs: list[dict], split: str = "id_seen") -> dict:
  """Spearman of each SFT signal against post-RL accuracy over RL start points."""
  by_step = {r["step"]: r for r in rows_sft}
  post = [r[f"acc/{split}"] for r in rl_runs]
  out = {"n_points": len(rl_runs), "target": f"post-RL acc/{split}"}
  signals = [f"acc/{split}", "gen_loss"] + [k for k in by_step[rl_runs[0]["start_step"]]
                                            if k.startswith("pass@") and k.endswith(split)]
  for sig in signals:
    x = [by_step[r["start_step"]][sig] for r in rl_runs]
    if sig == "gen_loss":
      x = [-v for v in x]  # lower loss should predict higher accuracy
    out[sig] = float(eval_metrics.spearman(np.asarray(x), np.asarray(post))) if len(x) >= 3 else None
  return out
