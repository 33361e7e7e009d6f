"""Two local processes with jax.distributed equal one process with 8 devices."""

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
