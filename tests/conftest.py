"""Test setup: an 8-device CPU platform with fast compiles, set before JAX is imported anywhere."""

import os
import sys

# The repository root (for `launch`, `configs` and `tests`) on the path for every test.
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
  sys.path.insert(0, _ROOT)

from tests import _env  # noqa: E402  (no JAX import)

# Eight host devices, and fast compiles (tests/_env.py says why).
os.environ["XLA_FLAGS"] = _env.xla_flags(device_count=8)
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import jax  # noqa: E402  (after XLA_FLAGS on purpose)

jax.config.update("jax_threefry_partitionable", True)


def pytest_collection_modifyitems(config, items):
  """Tests marked `slow` (a minute or more on 2 cores) run first.

  With `pytest -n 2` (the README's command) the workers take
  work in this order, so the long poles start at once and the short tests
  fill in around them instead of one long test finishing alone at the end.
  """
  items.sort(key=lambda item: item.get_closest_marker("slow") is None)  # stable
