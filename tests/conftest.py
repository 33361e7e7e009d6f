"""Test setup: an 8-device CPU platform, set before JAX is imported anywhere."""

import os
import sys

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# The repository root (for `launch` and `configs`) on the path for every test.
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
  sys.path.insert(0, _ROOT)

import jax  # noqa: E402  (after XLA_FLAGS on purpose)

jax.config.update("jax_threefry_partitionable", True)


def pytest_collection_modifyitems(config, items):
  """Tests marked `slow` (a minute or more on 2 cores) run first.

  With `pytest -n 2` (the README's command) the workers take
  work in this order, so the long poles start at once and the short tests
  fill in around them instead of one long test finishing alone at the end.
  """
  items.sort(key=lambda item: item.get_closest_marker("slow") is None)  # stable
