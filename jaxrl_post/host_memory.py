"""XLA:CPU's per-execution temp buffer: reused across steps instead of mapped afresh.

XLA:CPU gives every execution of a compiled step one temp buffer holding all
its intermediates (151 MiB for the GRPO bench step, `tiny` 8 x 4 x 32) and
frees it when the step ends. glibc's malloc serves such a request with a
fresh `mmap` and returns it with `munmap`: any request above the mmap
threshold (which never exceeds 32 MiB), and any request from a thread whose
arena heap (64 MiB at most) cannot hold it, as the CPU client's worker
threads' cannot. So every step page-faults and zero-fills its whole temp
buffer again. Measured on the bench step (2-core EPYC): 38k page faults and
80-90 ms of kernel time per step of about 0.32 s wall; with
`reuse_temp_buffers()` none, 6 ms, and the step faster (README, Benchmarks).
The computation, compiled program and outputs are the same: only where the
bytes live changes.

The cost: memory the process frees stays mapped, so the resident size stays
at its peak instead of shrinking between steps (a training process holds its
peak anyway); and the CPU client no longer overlaps a computation with the
Python that follows its call (on CPU both compete for the same cores).
`launch` tools apply it unless JAXRL_POST_HOST_MALLOC=system.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform

# mallopt parameter numbers, <malloc.h> (glibc).
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4

# Freed memory at the top of the heap below this many bytes is kept.
_TRIM_THRESHOLD = 2**31 - 1


def _glibc():
  """The process's glibc (ctypes.CDLL) or None on another C library or OS."""
  if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
    return None
  try:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
  except OSError:
    return None
  return libc if hasattr(libc, "mallopt") else None


def reuse_temp_buffers() -> bool:
  """Makes XLA:CPU's temp buffers come from a heap that keeps freed memory.

  Two settings, both needed:
  - glibc malloc: no request served by mmap (M_MMAP_MAX = 0; glibc still
    falls back to mmap where the heap cannot grow) and freed memory at the
    heap's top kept up to 2 GiB (M_TRIM_THRESHOLD);
  - `jax_cpu_enable_async_dispatch = False`: the CPU client runs a
    computation on the thread that calls it (the Python thread, whose arena
    is glibc's main heap, which grows as far as needed) rather than on a
    worker thread, whose arena would still mmap the buffer. Putting every
    thread on the main heap instead (M_ARENA_MAX = 1) also keeps the buffer
    but made the rollout 12% slower: its matmul kernels allocate packing
    buffers from both cores' threads every decode step, and one arena
    serialises them.

  Process-wide and idempotent; the malloc settings apply to every library in
  the process (PyTorch as well, in `launch.bench`). Returns False, changing
  nothing, where the C library is not glibc.
  """
  libc = _glibc()
  if libc is None:
    return False
  for param, value in ((_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, _TRIM_THRESHOLD)):
    if libc.mallopt(param, value) != 1:
      raise OSError(f"mallopt({param}, {value}) failed")
  import jax
  jax.config.update("jax_cpu_enable_async_dispatch", False)
  return True
