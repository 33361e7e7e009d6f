"""jaxrl_post.host_memory and launch.common's host malloc set-up.

The property: with `reuse_temp_buffers()`, repeated executions of a compiled
function whose temp buffer exceeds glibc's mmap threshold reuse that memory
(almost no page faults) and compute the same result; without it, each
execution page-faults its temp buffer in again. (The heap can still grow in
a few of the first calls until its layout repeats: the median call counts.)
Each mode runs in a fresh process: the settings are process-wide and must
precede JAX's first computation.
"""

import json
import os
import platform
import subprocess
import sys
import textwrap

import pytest
from absl import app

from jaxrl_post import host_memory
from launch import common

_CHILD = textwrap.dedent("""
    import json, resource, sys
    if sys.argv[1] == "retain":
      from jaxrl_post import host_memory
      assert host_memory.reuse_temp_buffers()
    import jax, jax.numpy as jnp, numpy as np

    @jax.jit
    def f(x):  # x: f32[4096, 256]; temp: the f32[4096, 4096] product, 64 MiB
      a = jnp.sin(x) @ x.T
      return jnp.cos(a) @ x

    x = jnp.asarray(np.random.default_rng(0).normal(size=(4096, 256)), jnp.float32) / 16
    c = f.lower(x).compile()
    for _ in range(2):
      jax.block_until_ready(c(x))
    faults = []
    for _ in range(16):
      before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
      out = jax.block_until_ready(c(x))
      faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    print(json.dumps({"faults_per_call": sorted(faults)[len(faults) // 2],  # median
                      "temp_bytes": c.memory_analysis().temp_size_in_bytes,
                      "out": np.asarray(out)[:2, :4].tolist()}))
""")


def _run_child(mode: str) -> dict:
  out = subprocess.run([sys.executable, "-c", _CHILD, mode], capture_output=True,
                       text=True, timeout=300, check=True)
  return json.loads(out.stdout.strip().splitlines()[-1])


glibc_only = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
    reason="the page-fault property is glibc malloc's")


@glibc_only
def test_retained_memory_is_reused_across_executions_with_the_same_result():
  system = _run_child("system")
  retain = _run_child("retain")
  pages = system["temp_bytes"] / 4096
  assert system["temp_bytes"] > 32 * 2**20  # above glibc's largest mmap threshold
  # Without: the temp buffer is mapped afresh and faulted in on every call.
  assert system["faults_per_call"] > 0.5 * pages
  # With: it stays mapped; what faults remain is a small fraction of it.
  assert retain["faults_per_call"] < 0.05 * pages
  assert retain["out"] == system["out"]


def test_retain_is_a_no_op_without_glibc(monkeypatch):
  monkeypatch.setattr(platform, "libc_ver", lambda *a, **k: ("musl", "1.2"))
  assert host_memory.reuse_temp_buffers() is False


def test_host_malloc_mode_reads_the_environment(monkeypatch):
  monkeypatch.delenv(common.HOST_MALLOC_ENV, raising=False)
  assert common.host_malloc_mode() == "retain"
  monkeypatch.setenv(common.HOST_MALLOC_ENV, " System ")
  assert common.host_malloc_mode() == "system"
  assert common.init_host_memory() == "system"


def test_a_bad_host_malloc_mode_names_the_variable(monkeypatch):
  monkeypatch.setenv(common.HOST_MALLOC_ENV, "jemalloc")
  with pytest.raises(ValueError, match=r"JAXRL_POST_HOST_MALLOC='jemalloc'.*retain"):
    common.host_malloc_mode()
  with pytest.raises(app.UsageError, match="JAXRL_POST_HOST_MALLOC"):
    common.init_host_memory()
