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


COORDINATOR_ENV = "JAXRL_POST_COORDINATOR"
NUM_PROCESSES_ENV = "JAXRL_POST_NUM_PROCESSES"
PROCESS_ID_ENV = "JAXRL_POST_PROCESS_ID"
DISTRIBUTED_ENV = "JAXRL_POST_DISTRIBUTED"


def distributed_args(environ=None) -> dict | None:
  """The `jax.distributed.initialize` arguments the environment asks for.

  - None: one process (neither variable below is set).
  - $JAXRL_POST_COORDINATOR=host:port with $JAXRL_POST_NUM_PROCESSES and
    $JAXRL_POST_PROCESS_ID: those three (`launch/local_cluster.sh`, or any
    scheduler that sets them).
  - $JAXRL_POST_DISTRIBUTED=auto: {} -- jax detects the cluster itself
    (Slurm, Cloud TPU VMs and GKE, Open MPI); `launch/slurm.sbatch` and
    `launch/tpu_pod.sh` set it.

  Bad or contradictory settings raise ValueError naming the variable.
  """
  env = os.environ if environ is None else environ
  coord = env.get(COORDINATOR_ENV, "").strip()
  mode = env.get(DISTRIBUTED_ENV, "").strip().lower()
  if mode not in ("", "auto"):
    raise ValueError(f"${DISTRIBUTED_ENV}={env[DISTRIBUTED_ENV]!r}: expected 'auto' (or unset)")
  if coord and mode:
    raise ValueError(f"${COORDINATOR_ENV} and ${DISTRIBUTED_ENV}=auto are both set: give the "
                     "cluster explicitly or let jax detect it, not both")
  if mode:
    return {}
  if not coord:
    for name in (NUM_PROCESSES_ENV, PROCESS_ID_ENV):
      if env.get(name):
        raise ValueError(f"${name} is set but ${COORDINATOR_ENV} (host:port) is not")
    return None
  host, _, port = coord.rpartition(":")
  if not host or not port.isdigit():
    raise ValueError(f"${COORDINATOR_ENV}={coord!r}: expected host:port")
  values = {}
  for name in (NUM_PROCESSES_ENV, PROCESS_ID_ENV):
    raw = env.get(name, "").strip()
    if not raw.isdigit():
      raise ValueError(f"${COORDINATOR_ENV} is set, so ${name} must be a non-negative "
                       f"integer; got {raw!r}")
    values[name] = int(raw)
  num, pid = values[NUM_PROCESSES_ENV], values[PROCESS_ID_ENV]
  if num < 1 or pid >= num:
    raise ValueError(f"${PROCESS_ID_ENV}={pid} with ${NUM_PROCESSES_ENV}={num}: expected "
                     "0 <= process id < number of processes")
  return {"coordinator_address": coord, "num_processes": num, "process_id": pid}


def init_distributed(environ=None) -> None:
  """`jax.distributed.initialize` as `distributed_args` says (nothing for one
  process); an undetectable cluster under $JAXRL_POST_DISTRIBUTED=auto is a
  UsageError naming what jax looks for."""
  from absl import app
  try:
    args = distributed_args(environ)
  except ValueError as e:
    raise app.UsageError(str(e)) from None
  if args is None:
    return
  import jax
  try:
    jax.distributed.initialize(**args)
  except ValueError as e:
    if args or "coordinator_address" not in str(e):
      raise
    # jax found no cluster environment, so it has no coordinator address.
    raise app.UsageError(
        f"${DISTRIBUTED_ENV}=auto, but jax detected no cluster here ({e}). It reads "
        "Slurm's SLURM_JOB_ID / SLURM_STEP_NODELIST / SLURM_NTASKS / SLURM_PROCID / "
        "SLURM_LOCALID (run under srun), a Cloud TPU VM's metadata, or Open MPI's OMPI_* "
        f"variables; elsewhere set ${COORDINATOR_ENV}, ${NUM_PROCESSES_ENV} and "
        f"${PROCESS_ID_ENV} instead") from None


def init_runtime():
  """Host malloc (`init_host_memory`), logging verbosity, the persistent XLA
  compilation cache (`compile_cache_dir`), then the optional multi-process
  set-up (`init_distributed`)."""
  init_host_memory()
  # Our progress lines go to stderr directly; library INFO logs (Orbax logs
  # every file it writes) would drown them.
  logging.set_verbosity(logging.WARNING)
  logging.get_absl_handler().addFilter(_QuietOrbax())
  logging.get_absl_logger().addFilter(_QuietOrbax())  # also without app.run (notebooks)
  import jax
  jax.config.update("jax_threefry_partitionable", True)
  cache = compile_cache_dir()
  if cache:
    # XLA executables keyed by their HLO, flags and jax version: a rerun, a
    # resumed run and the study's many same-shaped RL runs skip recompiling
    # (a mini GRPO run spends ~20 s compiling on 2 CPU cores).
    jax.config.update("jax_compilation_cache_dir", cache)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
  init_distributed()
