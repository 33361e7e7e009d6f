"""One of two local processes (4 CPU devices each) forming an 8-device cluster.

Runs a sharded forward pass and one SFT step on the (2, 2, 2) mesh and saves
the gathered results from process 0. Used by test_multihost.py.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tests import _env  # noqa: E402  (no JAX import)

os.environ["XLA_FLAGS"] = _env.xla_flags(device_count=4)
os.environ["JAX_PLATFORMS"] = "cpu"

import jax  # noqa: E402
import numpy as np  # noqa: E402
from jax.experimental import multihost_utils  # noqa: E402


def main():
  pid, port, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
  jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=2, process_id=pid)
  from tests._multihost_common import run
  logits, losses = run()
  logits = multihost_utils.process_allgather(logits, tiled=True)
  if pid == 0:
    np.savez(out, logits=np.asarray(logits), losses=np.asarray(losses))
  jax.distributed.shutdown()


if __name__ == "__main__":
  main()
