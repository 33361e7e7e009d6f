"""XLA flags of the test processes, set before JAX is imported.

The tests compile far more than they run: a `nano` GRPO step compiles in
~16 s and runs in ~8 ms on 2 cores. `--xla_backend_optimization_level=0`
(LLVM's code generation without its optimisation passes; XLA's own HLO
passes, fusion, SPMD partitioning and layouts are unchanged, and no fast-math
is switched on) compiles the same step in ~10 s and halves
tests/trainers/test_grpo.py (144 s -> 74 s). A caller's own
`--xla_backend_optimization_level` in $XLA_FLAGS wins, so
`XLA_FLAGS=--xla_backend_optimization_level=3 pytest` (XLA's default
level) runs the suite on fully optimised code.
"""

from __future__ import annotations

import os

COMPILE_FAST = "--xla_backend_optimization_level=0"
_DEVICES = "--xla_force_host_platform_device_count"


def xla_flags(device_count: int | None = None) -> str:
  """$XLA_FLAGS without a host device count, plus `device_count` host devices
  (None: XLA's default, one) and COMPILE_FAST unless the flags already choose
  an optimisation level."""
  kept = [f for f in os.environ.get("XLA_FLAGS", "").split() if not f.startswith(_DEVICES)]
  if not any(f.startswith("--xla_backend_optimization_level") for f in kept):
    kept.append(COMPILE_FAST)
  if device_count is not None:
    kept.append(f"{_DEVICES}={device_count}")
  return " ".join(kept)


def subprocess_env(device_count: int | None = None) -> dict[str, str]:
  """The environment of a child process (a launch tool, a multi-host worker):
  CPU, `device_count` host devices (default one, as a user's run), fast compiles."""
  return dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=xla_flags(device_count))
