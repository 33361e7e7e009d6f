r"""Paired A/B timing of two source trees: is a change faster on this machine?

  python -m launch.bench_ab --base=HEAD --out=AB.json
      [--part=step|rollout|update|update_reuse]
      [--shape=tiny:8x4x32] [--pairs=20] [--target=DIR]

This machine's speed drifts by tens of percent from minute to minute, so two
timings taken minutes apart say little about a change of a few percent. Here
`--base` (any git revision) is checked out into a temporary worktree, one
worker process imports `jaxrl_post` from it and another from `--target`
(default: this working tree), both build the same work on the same weights
and batch (`launch.bench_inputs`, loaded from this tree into both), and single
calls then alternate between them: A B, B A, A B, ... The ratio target/base of
each pair, and its median, is the number to read; two identical trees read
1.00 within a few percent.

Parts: `step` is the whole jitted GRPO step (`grpo.make_rl_step`: rollout,
reward, update); `rollout` is `grpo.collect` alone; `update` is one
`grpo.policy_update` (forward, backward, AdamW) on a fixed rollout with
non-zero advantages; `update_reuse` the same update taking the rollout's
recorded activations (`given`, what the step does by default) instead of
recomputing the forward's products. Both workers first apply this tree's host malloc
set-up (`$JAXRL_POST_HOST_MALLOC`, as `launch.bench`). Each worker also
reports a checksum of its outputs, so a change that alters the numbers shows
up next to its timing.

Writes `--out`: {"base", "target", "part", "shape", "pairs", "base_sec",
"target_sec" (per call, in pair order), "base_median_sec",
"target_median_sec", "ratio_median" (target/base per pair, median),
"ratio_quartiles", "base_checksum", "target_checksum"}.
"""

from __future__ import annotations

import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PARTS = ("step", "rollout", "update", "update_reuse")


# --------------------------------------------------------------------------
# Worker: runs in a process whose `jaxrl_post` is the tree under test.
# --------------------------------------------------------------------------


def _load_here(relpath: str, name: str):
  """A module of this tree by path, whatever `launch` / `jaxrl_post` resolve to."""
  spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, relpath))
  module = importlib.util.module_from_spec(spec)
  sys.modules[spec.name] = module  # dataclasses look their module up there
  spec.loader.exec_module(module)
  return module


def _load_bench_inputs():
  """This tree's launch/bench_inputs.py."""
  return _load_here(os.path.join("launch", "bench_inputs.py"), "_bench_inputs")


def _init_host_memory() -> None:
  """Both workers get this tree's host malloc set-up ($JAXRL_POST_HOST_MALLOC,
  as `launch.bench`), whatever the tree under test has."""
  common = _load_here(os.path.join("launch", "common.py"), "_launch_common")
  if common.host_malloc_mode() == "retain":
    _load_here(os.path.join("jaxrl_post", "host_memory.py"),
               "_host_memory").reuse_temp_buffers()


def make_call(part: str, preset: str, prompts: int, samples: int, new_tokens: int):
  """A zero-argument function running one `part` call (blocking) and returning its output."""
  import jax
  import jax.numpy as jnp
  from jaxrl_post import sampling as S
  from jaxrl_post.trainers import grpo
  w = _load_bench_inputs().grpo_work(preset, prompts, samples, new_tokens)
  batch = jax.device_put(w.batch)
  key = jax.random.key(0)
  if part == "step":
    step = jax.jit(grpo.make_rl_step(w.cfg, w.rc, w.optimizer),
                   in_shardings=(w.shardings, None), out_shardings=(w.shardings, None),
                   donate_argnums=0)
    held = {"state": w.state}

    def call():
      held["state"], metrics = step(held["state"], batch)
      return jax.block_until_ready(metrics)
    return call
  collect = jax.jit(lambda p, b, k: grpo.collect(p, w.cfg, w.rc, b, k))
  if part == "rollout":
    return lambda: jax.block_until_ready(collect(w.state.params, batch, key))
  rollout = collect(w.state.params, batch, key)[0]
  given = rollout.activations if part == "update_reuse" else None
  if part == "update_reuse" and given is None:
    raise RuntimeError("bench_ab: --part=update_reuse needs a rollout that records its "
                       "activations (rl.reuse_rollout_activations)")
  seq, pos, seg, _ = S.sequences(rollout)
  rows = prompts * samples
  advantages = jnp.where(jnp.arange(rows) % 2 == 0, 1.0, -0.5)  # the gradient is not 0
  mask = rollout.mask.astype(jnp.float32)
  if not hasattr(grpo, "policy_update"):
    raise RuntimeError("bench_ab: --part=update needs grpo.policy_update (a base from "
                       "2026-12-03 on); use --part=step for older revisions")

  def update(params, opt_state):
    # `given` only when used: revisions before 2026-12-04 take no such argument.
    params, opt_state, (loss, _, _) = grpo.policy_update(
        params, opt_state, w.cfg, w.rc, w.optimizer, seq, pos, seg, advantages, mask,
        **({} if given is None else {"given": given}))
    return params, opt_state, loss

  update = jax.jit(update, donate_argnums=(0, 1))
  held = {"params": w.state.params, "opt": w.state.opt_state}

  def call():
    held["params"], held["opt"], loss = update(held["params"], held["opt"])
    return jax.block_until_ready((loss, held["params"]))
  return call


def checksum(tree) -> float:
  """Sum of every float/int leaf (keys skipped): equal outputs give equal sums."""
  import jax
  import numpy as np
  total = 0.0
  for leaf in jax.tree.leaves(tree):
    if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
      continue
    total += float(np.asarray(leaf, np.float64).sum())
  return total


def worker(part: str, shape: str) -> None:
  """Builds the call, warms it up, then times one call per "run" line on stdin."""
  preset, prompts, samples, new_tokens = parse_shape(shape)
  _init_host_memory()
  call = make_call(part, preset, prompts, samples, new_tokens)
  first = checksum(call())  # now: the next call donates the update part's buffers
  for _ in range(2):
    call()
  import jaxrl_post
  print(json.dumps({"ready": os.path.dirname(os.path.dirname(jaxrl_post.__file__)),
                    "checksum": first}), flush=True)
  for line in sys.stdin:
    if line.strip() != "run":
      break
    t0 = time.perf_counter()
    call()
    print(time.perf_counter() - t0, flush=True)


# --------------------------------------------------------------------------
# Driver.
# --------------------------------------------------------------------------


def parse_shape(spec: str) -> tuple[str, int, int, int]:
  """'tiny:8x4x32' -> ('tiny', 8, 4, 32); a bad spec raises ValueError naming it."""
  try:
    preset, dims = spec.split(":")
    prompts, samples, new_tokens = (int(x) for x in dims.split("x"))
  except ValueError:
    raise ValueError(f"--shape={spec!r}: expected PRESET:PROMPTSxSAMPLESxNEW_TOKENS, "
                     "e.g. tiny:8x4x32") from None
  if min(prompts, samples, new_tokens) < 1:
    raise ValueError(f"--shape={spec!r}: sizes must be >= 1")
  return preset, prompts, samples, new_tokens


class Worker:
  """A worker process on one source tree."""

  def __init__(self, tree: str, part: str, shape: str):
    env = dict(os.environ, PYTHONPATH=tree)  # its jaxrl_post before the installed one
    self.proc = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "--worker", part, shape],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=env, cwd=tempfile.gettempdir())
    line = self.proc.stdout.readline()
    if not line:
      raise RuntimeError(f"bench_ab: the worker on {tree} died:\n{self.proc.stderr.read()[-3000:]}")
    info = json.loads(line)
    if os.path.realpath(info["ready"]) != os.path.realpath(tree):
      raise RuntimeError(f"bench_ab: the worker for {tree} imported jaxrl_post from "
                         f"{info['ready']}")
    self.checksum = info["checksum"]

  def time_one(self) -> float:
    self.proc.stdin.write("run\n")
    self.proc.stdin.flush()
    return float(self.proc.stdout.readline())

  def close(self) -> None:
    self.proc.stdin.close()
    self.proc.wait(timeout=60)


def compare(base_tree: str, target_tree: str, part: str, shape: str, pairs: int) -> dict:
  """Alternates single calls of the two trees' workers; returns the result dict."""
  if part not in PARTS:
    raise ValueError(f"--part={part!r} not in {PARTS}")
  parse_shape(shape)
  base, target = Worker(base_tree, part, shape), Worker(target_tree, part, shape)
  try:
    tb, tt = [], []
    for i in range(pairs):  # A B, B A, ...: neither side always goes first
      order = ((base, tb), (target, tt)) if i % 2 == 0 else ((target, tt), (base, tb))
      for w, times in order:
        times.append(w.time_one())
  finally:
    base.close()
    target.close()
  ratios = sorted(t / b for b, t in zip(tb, tt))
  q = lambda f: ratios[min(len(ratios) - 1, int(f * len(ratios)))]
  return {"part": part, "shape": shape, "pairs": pairs, "base_sec": tb, "target_sec": tt,
          "base_median_sec": statistics.median(tb), "target_median_sec": statistics.median(tt),
          "ratio_median": statistics.median(ratios), "ratio_quartiles": [q(0.25), q(0.75)],
          "base_checksum": base.checksum, "target_checksum": target.checksum}


def checkout(rev: str, directory: str) -> str:
  """`git worktree add --detach directory rev` of this repository; returns the commit."""
  def git(*args):
    return subprocess.run(["git", "-C", ROOT, *args], check=True, capture_output=True,
                          text=True).stdout.strip()
  try:
    commit = git("rev-parse", "--verify", f"{rev}^{{commit}}")
  except subprocess.CalledProcessError:
    raise ValueError(f"--base={rev!r} is not a git revision of {ROOT}") from None
  git("worktree", "add", "--detach", directory, commit)
  return commit


def _valid_shape(spec: str) -> bool:
  try:
    parse_shape(spec)
  except ValueError:
    return False
  return True


def main(argv):
  del argv
  from absl import app, flags
  f = flags.FLAGS
  with tempfile.TemporaryDirectory() as tmp:
    base_dir = os.path.join(tmp, "base")
    try:
      commit = checkout(f.base, base_dir)
    except ValueError as e:
      raise app.UsageError(str(e)) from None
    try:
      result = compare(base_dir, os.path.abspath(f.target), f.part, f.shape, f.pairs)
    finally:
      subprocess.run(["git", "-C", ROOT, "worktree", "remove", "--force", base_dir],
                     capture_output=True)
  result.update(base=f"{f.base} ({commit[:12]})", target=os.path.abspath(f.target))
  os.makedirs(os.path.dirname(os.path.abspath(f.out)), exist_ok=True)
  with open(f.out, "w") as fh:
    json.dump(result, fh, indent=1)
  lo, hi = result["ratio_quartiles"]
  print(f"{f.part} {f.shape}: base {result['base_median_sec'] * 1e3:.1f} ms, target "
        f"{result['target_median_sec'] * 1e3:.1f} ms (medians); target/base per pair: "
        f"median {result['ratio_median']:.3f}, quartiles [{lo:.3f}, {hi:.3f}]; outputs "
        f"{'equal' if result['base_checksum'] == result['target_checksum'] else 'DIFFER'}")


if __name__ == "__main__" and len(sys.argv) == 4 and sys.argv[1] == "--worker":
  worker(sys.argv[2], sys.argv[3])
elif __name__ == "__main__":
  from absl import app, flags
  flags.DEFINE_string("base", None, "Git revision to compare against (e.g. HEAD, HEAD~3).",
                      required=True)
  flags.DEFINE_string("target", ROOT, "Source tree under test (default: this working tree).")
  flags.DEFINE_enum("part", "step", PARTS, "What to time: the whole GRPO step, its rollout "
                    "(collect), one update on a fixed rollout, or that update taking the "
                    "rollout's activations (update_reuse).")
  flags.DEFINE_string("shape", "tiny:8x4x32", "PRESET:PROMPTSxSAMPLESxNEW_TOKENS (prompt 32).")
  flags.DEFINE_integer("pairs", 20, "Alternating pairs of timed calls.", lower_bound=1)
  flags.DEFINE_string("out", None, "Path of the JSON file to write.", required=True)
  flags.register_validator("shape", _valid_shape,
                           message="--shape: expected PRESET:PROMPTSxSAMPLESxNEW_TOKENS, "
                                   "e.g. tiny:8x4x32")
  app.run(main)
