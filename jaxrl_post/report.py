"""The study report: `W/report.md` (tables + PNG figures) and `W/report.json`.

Every number in the report is read from the stage results of this run
(`W/stages/*.json`); each table and figure says what it shows and how many
samples it rests on, and the last section states plainly which findings of
the papers this run reproduced.
"""

from __future__ import annotations

import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

SPLITS = ("id_seen", "id_heldout", "ood_train", "ood")
OOD = "ood_train"  # the OOD skill of the base (see jaxrl_post/study.py)
LABEL = {"id_seen": "ID seen", "id_heldout": "ID held-out", "ood_train": "OOD base-seen",
         "ood": "OOD unseen"}
_PRIOR_TEXT = {"one": "q = 1.0 always", "uniform": "q drawn uniformly from 0.0, 0.1, ..., 1.0"}


def _fmt(x, nd=3):
  if x is None:
    return "–"
  if isinstance(x, float):
    if x != 0 and abs(x) < 10 ** -nd:
      return f"{x:.2e}"  # small but not zero: keep it visible
    return f"{x:.{nd}f}"
  return str(x)


def _table(header, rows) -> str:
  out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  out += ["| " + " | ".join(_fmt(v) for v in r) + " |" for r in rows]
  return "\n".join(out)


def _sft_figure(rows, path):
  sft = [r for r in rows if r["label"] != "base"]
  steps = [r["step"] for r in sft]
  fig, ax = plt.subplots(figsize=(7, 4))
  base = next((r for r in rows if r["label"] == "base"), None)
  for s, style in zip(SPLITS, ("-o", "-s", "-^", "-v")):
    line, = ax.plot(steps, [r[f"acc/{s}"] for r in sft], style, label=f"greedy acc {LABEL[s]}")
    if base is not None:
      ax.axhline(base[f"acc/{s}"], color=line.get_color(), ls=":", lw=1)
  ax.set_xlabel("SFT step")
  ax.set_ylabel("accuracy")
  ax.set_ylim(-0.02, 1.02)
  ax2 = ax.twinx()
  ax2.plot(steps, [r["gen_loss"] for r in sft], "k--", label="gen_loss (held-out NLL)")
  ax2.set_ylabel("generalization loss")
  lines = ax.get_legend_handles_labels()
  lines2 = ax2.get_legend_handles_labels()
  ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], fontsize=8, loc="best")
  ax.set_title("SFT on gp24 ID: accuracy per split (dotted: the base) and gen. loss")
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def _rl_figure(sft_rows, rl_runs, path):
  by_step = {r["step"]: r for r in sft_rows if r["label"] != "base"}
  fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
  for ax, split in zip(axes, ("id_seen", OOD)):
    x = np.arange(len(rl_runs))
    before = [by_step[r["start_step"]][f"acc/{split}"] for r in rl_runs]
    after = [r[f"acc/{split}"] for r in rl_runs]
    ax.bar(x - 0.2, before, 0.4, label="SFT snapshot")
    ax.bar(x + 0.2, after, 0.4, label="after GRPO")
    ax.set_xticks(x, [f"step {r['start_step']}" for r in rl_runs])
    ax.set_title(f"{LABEL[split]}: before vs after GRPO")
    ax.set_ylim(0, 1)
  axes[0].legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def _restore_figure(rest, path):
  rows = rest["rows"]
  fig, ax = plt.subplots(figsize=(7, 3.6))
  x = np.arange(len(rows) + 2)
  labels = ["SFT end"] + [r["spec"] for r in rows] + ["OOD peak"]
  for split, style in ((OOD, "-o"), ("id_seen", "-s"), ("ood", "-^")):
    ys = [rest["target"][f"acc/{split}"]] + [r[f"acc/{split}"] for r in rows] + [
        rest["ref"][f"acc/{split}"]]
    ax.plot(x, ys, style, label=LABEL[split])
  ax.set_xticks(x, labels, rotation=20, fontsize=8)
  ax.set_ylabel("greedy accuracy")
  ax.set_title("Restoring OOD-peak singular directions into the end-of-SFT model")
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def _pooled(res: dict) -> dict:
  """The pooled summary of one spectral comparison."""
  return res.get("pooled", {})


def _spectral_figure(pairs: dict, path):
  names = list(pairs)
  angle = [_pooled(pairs[n]).get("mean_angle_deg_left") for n in names]
  svc = [_pooled(pairs[n]).get("mean_abs_sv_rel_change") for n in names]
  fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
  axes[0].barh(names, [a or 0 for a in angle])
  axes[0].set_xlabel("mean principal angle, top-k left subspace (deg)")
  axes[1].barh(names, [s or 0 for s in svc])
  axes[1].set_xlabel("mean |relative singular-value change|")
  axes[1].set_yticks([])
  fig.suptitle("Direction change vs spectrum change, per stage (pooled over matrices)")
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


WEAK = "weak"  # a finding whose direction holds but within sampling noise


def beyond_noise(a: float, b: float, n: int, z: float = 2.0) -> bool:
  """True iff accuracies a and b, each measured on n problems, differ by more
  than z standard errors of a difference of two proportions (pooled p):
  |a - b| > z sqrt(2 p (1 - p) / n). A 1-in-48 change is never beyond noise."""
  p = (a + b) / 2
  se = np.sqrt(max(2 * p * (1 - p) / max(n, 1), 1e-12))
  return abs(a - b) > z * se


def _verdict(holds: bool, a: float, b: float, n: int):
  """True / False, or WEAK when the claimed direction holds within noise."""
  if not holds:
    return False
  return True if beyond_noise(a, b, n) else WEAK


def _largest_k_pass(before: dict, after: dict) -> str:
  """`; pass@K OOD a -> b` for the largest K both rows measured ('' if none)."""
  keys = [k for k in after if k.startswith("pass@") and k.endswith(f"/{OOD}") and k in before]
  if not keys:
    return ""
  k = max(keys, key=lambda k: int(k[len("pass@"):].split("/")[0]))
  return f"; {k.split('/')[0]} {LABEL[OOD]} {before[k]:.3f} -> {after[k]:.3f}"


def findings(st: dict) -> list[tuple[str, bool | str | None, str]]:
  """(claim, reproduced?, evidence) computed from the stage results.

  "OOD skill" is greedy accuracy on OOD-rule hands the base saw in
  pretraining (`ood_train`), the skill SFT can erode; `ood` (multisets no
  stage trains on) is reported beside it.
  """
  out = []
  all_rows = st["sft_eval"]["rows"]  # the base first, then the SFT snapshots
  rows = [r for r in all_rows if r["label"] != "base"]
  base = next((r for r in all_rows if r["label"] == "base"), None)
  n = rows[0]["n_problems"]
  best = max(rows, key=lambda r: r[f"acc/{OOD}"])
  end = rows[-1]
  ref = base if base is not None else best
  out.append(("SFT erodes OOD skill (OOD accuracy falls while ID rises)",
              _verdict(end[f"acc/{OOD}"] < ref[f"acc/{OOD}"] and
                       end["acc/id_seen"] > ref["acc/id_seen"],
                       end[f"acc/{OOD}"], ref[f"acc/{OOD}"], n),
              f"{LABEL[OOD]} {ref[f'acc/{OOD}']:.3f} ({ref['label']}) -> {end[f'acc/{OOD}']:.3f} "
              f"({end['label']}); ID seen {ref['acc/id_seen']:.3f} -> {end['acc/id_seen']:.3f}; "
              f"SFT's own OOD peak {best[f'acc/{OOD}']:.3f} at {best['label']} ({n} problems)"
              + _largest_k_pass(ref, end)))
  rl = st["rl"]["runs"]
  from_end = [r for r in rl if r["start_step"] == end["step"]]
  if from_end:
    r = from_end[0]
    out.append(("RL restores part of the OOD skill SFT lost",
                _verdict(r[f"acc/{OOD}"] > end[f"acc/{OOD}"], r[f"acc/{OOD}"], end[f"acc/{OOD}"], n),
                f"{LABEL[OOD]} {end[f'acc/{OOD}']:.3f} (SFT end) -> {r[f'acc/{OOD}']:.3f} after GRPO "
                f"(ID seen {end['acc/id_seen']:.3f} -> {r['acc/id_seen']:.3f})"))
  by_step = {r["step"]: r for r in rows}
  pairs_acc = [(r["acc/id_seen"], by_step[r["start_step"]]["acc/id_seen"]) for r in rl
               if r["start_step"] in by_step]
  gains = [after - before for after, before in pairs_acc]
  if gains:
    after, before = np.mean(pairs_acc, axis=0)  # pooled over starts: n problems each
    out.append(("GRPO raises the accuracy on the problems it trains on (ID seen)",
                _verdict(float(np.mean(gains)) > 0, after, before, n * len(gains)),
                "ID seen change per start: " + ", ".join(f"{g:+.3f}" for g in gains)))
  pairs = st["spectral"]["pairs"]
  rl_pairs = [p for n_, p in pairs.items() if n_.startswith("grpo_from_")]
  if rl_pairs:
    rot = np.mean([_pooled(p).get("rotation_energy", np.nan) for p in rl_pairs])
    sca = np.mean([_pooled(p).get("scaling_energy", np.nan) for p in rl_pairs])
    ang = np.mean([_pooled(p).get("mean_angle_deg_left", np.nan) for p in rl_pairs])
    svc = np.mean([_pooled(p).get("mean_abs_sv_rel_change", np.nan) for p in rl_pairs])
    out.append(("RL's update is a rotation of singular vectors, not a change of singular values",
                bool(rot > sca), f"rotation energy {rot:.3f} vs scaling {sca:.3f}; mean angle "
                f"{ang:.2f} deg; mean abs relative sv change {svc:.4f}"))
    sft_pair = pairs.get("sft_peak_to_end")
    if sft_pair is not None:
      rl_sp = np.mean([_pooled(p).get("sparsity_bfloat16", np.nan) for p in rl_pairs])
      sft_sp = _pooled(sft_pair).get("sparsity_bfloat16", np.nan)
      out.append(("RL updates a small subnetwork; SFT updates are dense (bf16 sparsity)",
                  bool(rl_sp > sft_sp), f"unchanged in bf16: RL {rl_sp:.3f} vs SFT {sft_sp:.3f}"))
  restoration = st["spectral"]["restoration"]
  rest = restoration["rows"]
  if rest:
    lost = restoration["ref"][f"acc/{OOD}"] - restoration["target"][f"acc/{OOD}"]
    best_r = max(rest, key=lambda r: r[f"acc/{OOD}"])
    ref_label = restoration.get("ref_label", f"sft@{restoration['ref_step']}")
    out.append(("Restoring top singular directions of the OOD-peak recovers OOD accuracy",
                None if lost <= 0 else _verdict((best_r["ood_recovered"] or 0) > 0,
                                                best_r[f"acc/{OOD}"],
                                                restoration["target"][f"acc/{OOD}"], n),
                f"OOD peak ({ref_label}) {restoration['ref'][f'acc/{OOD}']:.3f} vs SFT end "
                f"{restoration['target'][f'acc/{OOD}']:.3f}" +
                (" (nothing lost to recover)" if lost <= 0 else
                 f"; best {best_r['spec']}: recovered fraction {_fmt(best_r['ood_recovered'])}")))
  sp = st["report_inputs"]["spearman"]
  acc_key = next((k for k in sp if k.startswith("acc/")), None)
  acc_rho = sp.get(acc_key) if acc_key else None
  others = {k: v for k, v in sp.items() if (k.startswith("pass@") or k == "gen_loss") and v is not None}
  best_k = max(others, key=lambda k: others[k]) if others else None
  if acc_rho is not None and best_k is not None:
    tie = np.isclose(others[best_k], acc_rho)  # the starts rank the same: nothing to tell apart
    out.append(("Post-SFT accuracy predicts post-RL accuracy worse than pass@large-k / gen_loss",
                None if tie else others[best_k] > acc_rho,
                f"Spearman: SFT acc {acc_rho:.2f}, best other {best_k} {others[best_k]:.2f} "
                f"(n={sp['n_points']} start points; weak evidence"
                + ("; a tie: every signal ranks the starts alike)" if tie else ")")))
  cal = st["rlcr"]
  for split in ("id_seen", "id_heldout"):
    b, r = cal["binary"].get(f"ece/{split}"), cal["rlcr"].get(f"ece/{split}")
    if b is not None and r is not None:
      out.append((f"A binary reward leaves the model worse calibrated than RLCR ({LABEL[split]})",
                  b > r, f"ECE binary {b:.3f} vs RLCR {r:.3f}; Brier "
                  f"{cal['binary'][f'brier/{split}']:.3f} vs {cal['rlcr'][f'brier/{split}']:.3f}; "
                  f"accuracy {cal['binary'][f'accuracy/{split}']:.3f} vs "
                  f"{cal['rlcr'][f'accuracy/{split}']:.3f}"))
  for origin, res in st["srl"].items():
    out.append((f"SRL -> RLVR beats RLVR alone when started from {origin}",
                _verdict(res["srl_rlvr"]["acc/id_seen"] > res["rlvr"]["acc/id_seen"],
                         res["srl_rlvr"]["acc/id_seen"], res["rlvr"]["acc/id_seen"], n),
                f"ID seen {res['rlvr']['acc/id_seen']:.3f} (RLVR) vs "
                f"{res['srl_rlvr']['acc/id_seen']:.3f} (SRL -> RLVR); held-out "
                f"{res['rlvr']['acc/id_heldout']:.3f} vs {res['srl_rlvr']['acc/id_heldout']:.3f}"))
  return out


def _verdict_text(ok) -> str:
  if ok == WEAK:
    return "weak (within noise)"
  return "yes" if ok else ("no" if ok is not None else "n/a")


def write_report(study) -> dict:
  """Reads the stage results of `study` and writes report.md / report.json."""
  from jaxrl_post.study import spearman_table
  w = study.w
  st = {name: study.stage_result(name) for name in study.STAGES if name != "report"}
  figs = os.path.join(w, "figures")
  os.makedirs(figs, exist_ok=True)
  rows = st["sft_eval"]["rows"]
  rl_runs = st["rl"]["runs"]
  sp = spearman_table([r for r in rows if r["label"] != "base"], rl_runs)
  st["report_inputs"] = {"spearman": sp}
  _sft_figure(rows, os.path.join(figs, "sft_curve.png"))
  _rl_figure(rows, rl_runs, os.path.join(figs, "rl_before_after.png"))
  _spectral_figure(st["spectral"]["pairs"], os.path.join(figs, "spectral_summary.png"))
  _restore_figure(st["spectral"]["restoration"], os.path.join(figs, "restoration.png"))
  facts = findings(st)
  n_prob = rows[0]["n_problems"]
  ks = [k.split("/")[0] for k in rows[0] if k.startswith("pass@") and k.endswith(f"/{OOD}")]
  sft_at = lambda step: next(x for x in rows if x["step"] == step and x["label"] != "base")
  cal = st["rlcr"]
  cal_cols = [(k, s_) for s_ in ("id_seen", "id_heldout") for k in ("accuracy", "ece", "brier")]
  md = ["# jaxrl_post study report", "",
        "A miniature, CPU-sized replay of the SFT -> RL questions. Every number below was "
        "measured in this run (stage results in `stages/*.json`).", "",
        "Splits: **ID seen** = ID-rule hands (J, Q, K = 10) of the value multisets SFT and RL "
        "train on; **ID held-out** = ID multisets no stage trains on; **OOD base-seen** = "
        "OOD-rule hands (J, Q, K = 11, 12, 13) of the multisets the base was pretrained on "
        "(never in SFT or RL data): the OOD skill SFT can erode; **OOD unseen** = OOD "
        "multisets no stage ever trains on.", "",
        "## 1. SFT: ID and OOD accuracy over SFT snapshots", "",
        f"Greedy accuracy on {n_prob} problems per split; pass@k from "
        f"{rows[0]['n_samples']} samples per problem at temperature 1; gen_loss = token-mean NLL "
        "of held-out (ID held-out) expert solutions.", "",
        _table(["snapshot", *[LABEL[s_] for s_ in SPLITS],
                *[f"{k} ID seen" for k in ks], *[f"{k} {LABEL[OOD]}" for k in ks], "gen_loss"],
               [[r["label"], *[r[f"acc/{s_}"] for s_ in SPLITS],
                 *[r[f"{k}/id_seen"] for k in ks], *[r[f"{k}/{OOD}"] for k in ks],
                 r["gen_loss"]] for r in rows]),
        "", "![SFT curve](figures/sft_curve.png)", "",
        f"OOD peak ({LABEL[OOD]}) during SFT at step {st['sft_eval']['ood_peak_step']}.", "",
        "## 2. GRPO from several SFT snapshots", "",
        f"Greedy accuracy on {n_prob} problems per split, before (the SFT snapshot) and after "
        f"{study.c.grpo.num_steps} GRPO steps of {study.c.grpo.rl.prompts_per_step} prompts x "
        f"{study.c.grpo.rl.group_size} samples on ID seen hands.", "",
        _table(["start step", *[f"{LABEL[s_]} {when}" for s_ in SPLITS for when in ("SFT", "GRPO")]],
               [[r["start_step"], *[v for s_ in SPLITS for v in
                                    (sft_at(r["start_step"])[f"acc/{s_}"], r[f"acc/{s_}"])]]
                for r in rl_runs]),
        "", "![RL before/after](figures/rl_before_after.png)", "",
        "## 3. Which SFT signal predicts post-RL accuracy", "",
        f"Spearman rank correlation over {sp['n_points']} RL start points (target: {sp['target']}). "
        "With so few points this is weak evidence.", "",
        _table(["signal", "Spearman"],
               [["-gen_loss (lower loss ranks higher)" if k == "gen_loss" else k, v]
                for k, v in sp.items() if k not in ("n_points", "target")]),
        "", "## 4. Calibration: binary reward vs RLCR", "",
        f"From the last SFT snapshot (step {cal['start_step']}), "
        + (f"after a short SFT on targets that end with `Confidence: q` "
           f"({_PRIOR_TEXT[study.c.conf_prior]}; row `sft_conf`)"
           if int(study.c.conf_sft_steps) > 0 else
           f"whose SFT data ended a fraction "
           f"{study.c.sft.task_options.get('confidence_fraction', 0)} of the targets with "
           f"`Confidence: q` ({_PRIOR_TEXT[study.c.conf_prior]}; row `sft_conf`)")
        + f": {study.c.rlcr.num_steps} GRPO steps with the binary reward or the RLCR reward "
        "`correct - (q - correct)^2`, everything else equal, on the prompt that asks for a "
        f"confidence. {cal.get('n_samples', study.c.eval_samples)} samples per problem at T=1, "
        f"{n_prob} problems; ECE with 10 equal-width bins.", "",
        _table(["model", *[f"{k} {LABEL[s_]}" for k, s_ in cal_cols], "confidence stated ID seen"],
               [[name, *[cal[name].get(f"{k}/{s_}") for k, s_ in cal_cols],
                 cal[name].get("confidence_format_rate/id_seen")]
                for name in ("sft_conf", "binary", "rlcr")]),
        "", "## 5. SRL and SRL -> RLVR", "",
        f"{study.c.srl.num_steps} SRL steps, then {study.c.srl_rlvr_steps} RLVR (GRPO) steps; "
        f"RLVR alone runs {study.c.srl_rlvr_steps} GRPO steps from the same start"
        + "".join(f" (from {origin}: the rl stage's run from that snapshot, at its step "
                  f"{res['rlvr']['step']}, the same computation)"
                  for origin, res in st["srl"].items()
                  if os.path.basename(res["rlvr"]["workdir"]).startswith("grpo_from_"))
        + f". Greedy, {n_prob} problems per split. A zero-std fraction of 1 means every group "
        "got the same reward: the reward was silent and the run could not move.", "",
        _table(["start", "run", "ID seen", "ID held-out", "reward std (first -> last)",
                "frac zero-std groups (first -> last)"],
               [[origin, name, res[name]["acc/id_seen"], res[name]["acc/id_heldout"],
                 _span(res[name]["metrics"], "reward_std"),
                 _span(res[name]["metrics"], "frac_reward_zero_std")]
                for origin, res in st["srl"].items() for name in ("rlvr", "srl", "srl_rlvr")]),
        "", "## 6. How the weights moved", "",
        "Pooled over every 2-D matrix (scanned layers split per layer); angles between the top-k "
        f"(k = {study.c.spectral_k} of the rank) singular subspaces; sparsity = fraction of "
        "parameters whose bf16 value did not change.", "",
        _table(["pair", "mean angle L (deg)", "mean abs rel. sv change", "rotation energy",
                "scaling energy", "sparsity bf16"],
               [[n, _pooled(p).get("mean_angle_deg_left"), _pooled(p).get("mean_abs_sv_rel_change"),
                 _pooled(p).get("rotation_energy"), _pooled(p).get("scaling_energy"),
                 _pooled(p).get("sparsity_bfloat16")] for n, p in st["spectral"]["pairs"].items()]),
        "", "![spectral](figures/spectral_summary.png)", "",
        f"Restoration (the singular directions of the snapshot with the most {LABEL[OOD]} "
        f"skill, {st['spectral']['restoration'].get('ref_label', st['spectral']['restoration']['ref_step'])}, "
        f"put into the end-of-SFT weights, step "
        f"{st['spectral']['restoration']['target_step']}; greedy, {n_prob} problems):", "",
        _table(["spec", "ID seen", LABEL[OOD], "OOD unseen", f"fraction of lost {LABEL[OOD]} recovered"],
               [[r["spec"], r["acc/id_seen"], r[f"acc/{OOD}"], r["acc/ood"], r["ood_recovered"]]
                for r in st["spectral"]["restoration"]["rows"]]),
        "", "![restoration](figures/restoration.png)", "",
        "## 7. What reproduced", "",
        _table(["finding (papers)", "reproduced here?", "evidence"],
               [[c, _verdict_text(ok), ev] for c, ok, ev in facts]),
        "", "'weak': the claimed direction holds but the accuracy difference is within two "
        "standard errors of a difference of proportions on that many problems (noise).",
        "", "Tiny models, few problems and short runs: treat every 'yes' and 'no' as a "
        "property of this run, not a verdict on the papers.", ""]
  with open(os.path.join(w, "report.md"), "w") as f:
    f.write("\n".join(md))
  summary = {"findings": [{"claim": c, "reproduced": ok, "evidence": ev} for c, ok, ev in facts],
             "spearman": sp, "stages": st}
  with open(os.path.join(w, "report.json"), "w") as f:
    json.dump(summary, f, indent=1, default=str)
  return {"report": os.path.join(w, "report.md"), "findings": summary["findings"]}


def _span(metrics: dict, key: str) -> str:
  if not metrics or "first" not in metrics:
    return "–"
  return f"{_fmt(metrics['first'].get(key))} -> {_fmt(metrics['last'].get(key))}"
