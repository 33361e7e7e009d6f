"""The quick study end to end: report structure, numbers traceable to the run."""

import json
import math
import os
import re
import subprocess
import sys

import pytest

from tests import _env

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_quick_study_report(tmp_path):
  w = str(tmp_path / "study")
  env = _env.subprocess_env()
  # A relative --workdir, as in the README's command (Orbax reads failed on one).
  p = subprocess.run([sys.executable, "-m", "launch.study", f"--workdir={os.path.relpath(w, ROOT)}",
                      "--config=configs/study.py:quick"], cwd=ROOT, env=env, capture_output=True,
                     text=True, timeout=900)
  assert p.returncode == 0, p.stderr[-3000:]
  assert "[8/8] report: done" in p.stderr + p.stdout
  md = open(os.path.join(w, "report.md")).read()
  for section in ("## 1. SFT", "## 2. GRPO", "## 3. Which SFT signal", "## 4. Calibration",
                  "## 5. SRL", "## 6. How the weights moved", "## 7. What reproduced"):
    assert section in md
  for fig in re.findall(r"\((figures/[^)]+\.png)\)", md):
    assert os.path.getsize(os.path.join(w, fig)) > 1000
  report = json.load(open(os.path.join(w, "report.json")))
  rows = json.load(open(os.path.join(w, "stages", "sft_eval.json")))["rows"]
  # Every SFT row of the table is the stage's measured numbers.
  for r in rows:
    line = next(l for l in md.splitlines() if l.startswith(f"| {r['label']} |"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert float(cells[1]) == round(r["acc/id_seen"], 3)
    assert float(cells[-1]) == round(r["gen_loss"], 3)
  # The numbers move with training (not constants): held-out NLL falls during SFT.
  losses = [r["gen_loss"] for r in rows if r["label"] != "base"]
  assert losses[-1] < losses[0]
  assert report["findings"] and all("evidence" in f for f in report["findings"])
  # RLVR alone from the first SFT snapshot is the rl stage's run at that step.
  srl = json.load(open(os.path.join(w, "stages", "srl.json")))
  alone = srl["sft_first"]["rlvr"]
  assert os.path.basename(alone["workdir"]).startswith("grpo_from_") and alone["step"] == 2
  assert not os.path.exists(os.path.join(w, "runs", "rlvr_from_sft_first"))
  assert os.path.exists(os.path.join(w, "runs", "rlvr_from_base"))
  # The calibration stage starts from the SFT snapshot itself (the SFT data
  # mixed in the confidence format), and says so.
  cal = json.load(open(os.path.join(w, "stages", "rlcr.json")))
  assert cal["sft_conf"]["step"] == cal["start_step"]
  assert not os.path.exists(os.path.join(w, "runs", "sft_conf"))
  assert "whose SFT data ended a fraction 0.25 of the targets" in md
  # A rerun skips every finished stage.
  p2 = subprocess.run([sys.executable, "-m", "launch.study", f"--workdir={w}",
                       "--config=configs/study.py:quick"], cwd=ROOT, env=env, capture_output=True,
                      text=True, timeout=300)
  assert p2.returncode == 0
  assert (p2.stderr + p2.stdout).count("done earlier, skipped") == 8


def test_beyond_noise_is_a_two_proportion_z_test():
  from jaxrl_post import report
  assert not report.beyond_noise(1 / 48, 0.0, 48)  # one problem in 48 is noise
  assert report.beyond_noise(0.5, 0.2, 48)
  for a, b, n in [(0.3, 0.52, 192), (0.42, 0.46, 48), (0.1, 0.0, 100)]:
    p = (a + b) / 2
    assert report.beyond_noise(a, b, n) == (abs(a - b) / math.sqrt(2 * p * (1 - p) / n) > 2)
  assert report._verdict(True, 0.0, 1 / 48, 48) == report.WEAK
  assert report._verdict(False, 0.5, 0.2, 48) is False
  assert report._verdict(True, 0.5, 0.2, 48) is True


def test_a_study_without_a_confidence_source_fails_before_any_stage(tmp_path):
  from configs import study as study_config
  from jaxrl_post.study import Study
  c = study_config.get_config("quick")
  Study(c, str(tmp_path / "ok"))  # the default mixes the format into SFT
  c.sft.task_options = {}
  with pytest.raises(ValueError, match="confidence_fraction > 0 or conf_sft_steps > 0"):
    Study(c, str(tmp_path / "bad"))
  assert not (tmp_path / "bad").exists()  # nothing was started
  c.conf_sft_steps = 2  # a separate confidence SFT is the other source
  Study(c, str(tmp_path / "separate"))
  # The command line says so, before any stage runs.
  p = subprocess.run([sys.executable, "-m", "launch.study", f"--workdir={tmp_path}/cli",
                      "--config=configs/study.py:quick",
                      "--config.sft.task_options.confidence_fraction=0.0"], cwd=ROOT,
                     env=_env.subprocess_env(),
                     capture_output=True, text=True, timeout=300)
  assert p.returncode != 0 and "conf_sft_steps > 0" in p.stderr
  assert not (tmp_path / "cli").exists()
