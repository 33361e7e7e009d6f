"""Two local processes with jax.distributed equal one process with 8 devices."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from tests import _env
from tests._multihost_common import run

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_match_one_process(tmp_path):
  logits, losses = run()
  port = str(_free_port())
  out = str(tmp_path / "mh.npz")
  env = _env.subprocess_env()  # each child sets its own 4 devices
  procs = [subprocess.Popen([sys.executable, os.path.join(ROOT, "tests", "_multihost_child.py"),
                             str(i), port, out], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE) for i in range(2)]
  for p in procs:
    _, err = p.communicate(timeout=300)
    assert p.returncode == 0, err.decode()[-3000:]
  got = np.load(out)
  np.testing.assert_allclose(got["logits"], np.asarray(logits), atol=1e-5)
  np.testing.assert_allclose(got["losses"], losses, rtol=1e-5)


def _launch_two(workdir, num_steps: int) -> list[str]:
  """Runs gp24_grpo:quick as two `launch.train` processes; returns their stderr."""
  port = str(_free_port())
  procs = []
  for i in range(2):
    env = dict(_env.subprocess_env(2), JAXRL_POST_COORDINATOR=f"127.0.0.1:{port}",
               JAXRL_POST_NUM_PROCESSES="2", JAXRL_POST_PROCESS_ID=str(i),
               JAXRL_POST_COMPILE_CACHE="off")
    procs.append(subprocess.Popen(
        [sys.executable, "-m", "launch.train", "--config=configs/gp24_grpo.py:quick",
         f"--workdir={workdir}", f"--config.num_steps={num_steps}", "--config.log_every=1",
         "--config.snapshot.every=2"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE))
  errs = []
  for p in procs:
    _, err = p.communicate(timeout=600)
    errs.append(err.decode())
    assert p.returncode == 0, errs[-1][-3000:]
  return errs


@pytest.mark.slow
def test_two_process_grpo_launch_trains_evaluates_logs_once_and_resumes(tmp_path):
  """`launch.train` on two processes (JAXRL_POST_COORDINATOR): the GRPO step,
  the in-training greedy evaluation (parameters gathered from their training
  layout, host prompts placed on the global mesh, completions all-gathered),
  one writer of metrics.jsonl / TensorBoard, and a resume from the snapshot
  (its finiteness check reduced on device). Each of these failed across
  processes while every single-process test passed."""
  workdir = tmp_path / "grpo2"
  errs = _launch_two(workdir, 2)
  assert "grpo gp24 step 2/2" in errs[0] and "step 2/2" not in errs[1]  # one progress line
  assert os.listdir(workdir / "tb")
  errs = _launch_two(workdir, 3)  # resumes from the step-2 snapshot
  assert not any("unreadable" in e for e in errs), errs[0][-3000:]
  rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in rows] == [0, 1, 2, 3]  # one writer; resumed, not restarted
  assert any(k.startswith("acc/") for k in rows[-1])  # the evaluation ran
