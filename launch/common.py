"""Process set-up shared by the launch tools (logging, distributed, jax flags)."""

import os

from absl import logging


class _QuietOrbax:
  """Drops Orbax's warnings about per-item metadata on partial reads."""

  def filter(self, record) -> bool:
    msg = record.getMessage()
    return not ("Metadata file does not exist" in msg or "item metadata" in msg)


def init_runtime():
  """Optional multi-host init (JAX_COORDINATOR etc.), logging verbosity."""
  # Our progress lines go to stderr directly; library INFO logs (Orbax logs
  # every file it writes) would drown them.
  logging.set_verbosity(logging.WARNING)
  logging.get_absl_handler().addFilter(_QuietOrbax())
  import jax
  jax.config.update("jax_threefry_partitionable", True)
  coord = os.environ.get("JAXRL_POST_COORDINATOR")
  if coord:
    jax.distributed.initialize(
        coordinator_address=coord,
        num_processes=int(os.environ["JAXRL_POST_NUM_PROCESSES"]),
        process_id=int(os.environ["JAXRL_POST_PROCESS_ID"]))
