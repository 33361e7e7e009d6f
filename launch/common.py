"""Process set-up shared by the launch tools (logging, distributed, jax flags)."""

import os

from absl import logging


class _QuietOrbax:
  """Drops Orbax's warnings about per-item metadata on partial reads."""

  def filter(self, record) -> bool:
    msg = record.getMessage()
    return not ("Metadata file does not exist" in msg or "item metadata" in msg)


COMPILE_CACHE_ENV = "JAXRL_POST_COMPILE_CACHE"
HOST_MALLOC_ENV = "JAXRL_POST_HOST_MALLOC"
HOST_MALLOC_MODES = ("retain", "system")


def host_malloc_mode() -> str:
  """$JAXRL_POST_HOST_MALLOC: "retain" (default) or "system"; anything else raises."""
  mode = os.environ.get(HOST_MALLOC_ENV, "retain").strip().lower() or "retain"
  if mode not in HOST_MALLOC_MODES:
    raise ValueError(f"${HOST_MALLOC_ENV}={os.environ[HOST_MALLOC_ENV]!r}: expected one of "
                     f"{HOST_MALLOC_MODES}")
  return mode


def init_host_memory() -> str:
  """Applies `host_malloc_mode()` before JAX's first computation; returns what holds.

  "retain": `jaxrl_post.host_memory.reuse_temp_buffers` (XLA:CPU's per-step
  temp buffer is reused instead of page-faulted in again; "system" where the
  C library is not glibc); "system": malloc and JAX as the process started.
  """
  from absl import app
  try:
    mode = host_malloc_mode()
  except ValueError as e:
    raise app.UsageError(str(e)) from None
  if mode == "retain":
    from jaxrl_post import host_memory
    return "retain" if host_memory.reuse_temp_buffers() else "system"
  return mode


def compile_cache_dir() -> str:
  """$JAXRL_POST_COMPILE_CACHE, default ~/.cache/jaxrl_post/xla; "" or "off" disables."""
  value = os.environ.get(COMPILE_CACHE_ENV)
  if value is None:
    return os.path.join(os.path.expanduser("~"), ".cache", "jaxrl_post", "xla")
  return "" if value.strip().lower() in ("", "off", "0", "none") else value


def init_runtime():
  """Host malloc (`init_host_memory`), optional multi-host init
  (JAXRL_POST_COORDINATOR etc.), logging verbosity, the persistent XLA
  compilation cache (`compile_cache_dir`)."""
  init_host_memory()
  # Our progress lines go to stderr directly; library INFO logs (Orbax logs
  # every file it writes) would drown them.
  logging.set_verbosity(logging.WARNING)
  logging.get_absl_handler().addFilter(_QuietOrbax())
  import jax
  jax.config.update("jax_threefry_partitionable", True)
  cache = compile_cache_dir()
  if cache:
    # XLA executables keyed by their HLO, flags and jax version: a rerun, a
    # resumed run and the study's many same-shaped RL runs skip recompiling
    # (a mini GRPO run spends ~20 s compiling on 2 CPU cores).
    jax.config.update("jax_compilation_cache_dir", cache)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
  coord = os.environ.get("JAXRL_POST_COORDINATOR")
  if coord:
    jax.distributed.initialize(
        coordinator_address=coord,
        num_processes=int(os.environ["JAXRL_POST_NUM_PROCESSES"]),
        process_id=int(os.environ["JAXRL_POST_PROCESS_ID"]))
