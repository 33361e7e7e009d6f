"""launch/local_cluster.sh: one command as N jax.distributed processes."""

import os
import subprocess
import sys
import time

from tests import _env

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "launch", "local_cluster.sh")


def _run(args, timeout=120, devices=8):
  env = dict(_env.subprocess_env(), XLA_FLAGS=_env.xla_flags(devices))  # replaced by -d
  return subprocess.run(["bash", SCRIPT, *args], cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=timeout)


def test_processes_join_one_cluster(tmp_path):
  code = ("from launch import common; common.init_runtime(); import jax; "
          "print('cluster', jax.process_index(), jax.process_count(), jax.device_count())")
  r = _run(["-n", "2", "-d", "2", "-l", str(tmp_path), "--", sys.executable, "-c", code])
  assert r.returncode == 0, r.stderr[-3000:]
  assert "cluster 0 2 4" in r.stdout  # process 0 on the terminal, 2 x 2 devices
  assert "cluster 1 2 4" in (tmp_path / "process_1.log").read_text()


def test_a_failing_process_stops_the_others(tmp_path):
  # Process 1 fails once the others are up (their pid files written).
  code = (f"import os, sys, time; d = {str(tmp_path)!r}; i = os.environ['JAXRL_POST_PROCESS_ID']\n"
          "f = os.path.join(d, 'pid_' + i); open(f + '.tmp', 'w').write(str(os.getpid()))\n"
          "os.rename(f + '.tmp', f)\n"
          "while i == '1' and not all(os.path.exists(os.path.join(d, f'pid_{j}')) for j in '02'):\n"
          "  time.sleep(0.05)\n"
          "sys.exit(3) if i == '1' else time.sleep(120)")
  start = time.monotonic()
  r = _run(["-n", "3", "-l", str(tmp_path / "logs"), "--", sys.executable, "-c", code])
  assert r.returncode == 3
  assert time.monotonic() - start < 60
  assert "process 1 exited with status 3" in r.stderr
  time.sleep(0.5)
  for i in (0, 2):  # no orphan left sleeping
    pid = int((tmp_path / f"pid_{i}").read_text())
    assert not os.path.exists(f"/proc/{pid}") or "zombie" in open(f"/proc/{pid}/status").read()


def test_bad_usage_names_the_problem():
  for args, message in ((["-n", "0", "--", "true"], "-n must be a positive integer"),
                        (["-n", "2"], "no command after --"),
                        (["-x", "--", "true"], "unknown option '-x'"),
                        (["-d", "two", "--", "true"], "-d must be a positive integer")):
    r = _run(args, timeout=30)
    assert r.returncode == 2 and message in r.stderr, (args, r.stderr)
