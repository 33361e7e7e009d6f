"""`launch.bench_ab`: paired timing of a git revision against the working tree."""

import json
import subprocess
import sys

import pytest

from launch import bench_ab

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


def test_shape_specs():
  assert bench_ab.parse_shape("tiny:8x4x32") == ("tiny", 8, 4, 32)
  for bad in ("tiny", "tiny:8x4", "tiny:8x4x0", "tiny:axbxc"):
    with pytest.raises(ValueError, match="--shape"):
      bench_ab.parse_shape(bad)


def _clean_against_head() -> bool:
  """The code both workers run is unchanged from HEAD (then their outputs agree)."""
  return subprocess.run(["git", "-C", str(ROOT), "diff", "--quiet", "HEAD", "--",
                         "jaxrl_post", "launch/bench_inputs.py"]).returncode == 0


def _worktrees() -> set[str]:
  return set(subprocess.run(["git", "-C", str(ROOT), "worktree", "list", "--porcelain"],
                            capture_output=True, text=True).stdout.split("\n\n"))


def test_head_against_the_working_tree(tmp_path):
  out = tmp_path / "ab.json"
  before = _worktrees()
  proc = subprocess.run(
      [sys.executable, "-m", "launch.bench_ab", "--base=HEAD", "--part=rollout",
       "--shape=nano:2x2x4", "--pairs=3", f"--out={out}"],
      cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-2000:]
  r = json.loads(out.read_text())
  assert r["part"] == "rollout" and r["pairs"] == 3
  assert len(r["base_sec"]) == len(r["target_sec"]) == 3
  assert all(t > 0 for t in r["base_sec"] + r["target_sec"])
  lo, hi = r["ratio_quartiles"]
  assert 0 < lo <= r["ratio_median"] <= hi
  if _clean_against_head():
    assert r["base_checksum"] == r["target_checksum"]
  assert _worktrees() == before  # the temporary worktree of --base is gone


def test_bad_flags_are_usage_errors(tmp_path):
  for args, needle in ((["--base=no-such-revision"], "not a git revision"),
                       (["--base=HEAD", "--shape=tiny:8x4"], "--shape")):
    proc = subprocess.run([sys.executable, "-m", "launch.bench_ab", *args,
                           f"--out={tmp_path / 'x.json'}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert needle in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("part", ["update", "update_reuse", "step"])
def test_update_and_step_parts_on_identical_trees(part):
  """The update part donates its buffers: its checksum is taken before the next call."""
  r = bench_ab.compare(str(ROOT), str(ROOT), part, "nano:2x2x4", 2)
  assert len(r["target_sec"]) == 2 and r["ratio_median"] > 0
  assert r["base_checksum"] == r["target_checksum"]
