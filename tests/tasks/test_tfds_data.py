"""tfds array_record caches of task examples: exact round trip, reuse, rebuilds, no TF."""

import os
import shutil
import subprocess
import sys

import pytest
import tensorflow_datasets as tfds

from jaxrl_post import tasks
from jaxrl_post.tasks import gp24, tfds_data
from jaxrl_post.tasks.base import Example

SEED = 3
N = 12


@pytest.fixture
def calls(monkeypatch):
  """Counts the example generator's calls (a cache hit makes none)."""
  counter = {"n": 0}
  examples = gp24.Gp24Task.examples

  def counted(self, *a, **k):
    counter["n"] += 1
    return examples(self, *a, **k)

  monkeypatch.setattr(gp24.Gp24Task, "examples", counted)
  return counter


@pytest.fixture(scope="module")
def gp24_train(tmp_path_factory):
  """(data_dir, generator examples) with gp24 train N examples prepared."""
  data_dir = str(tmp_path_factory.mktemp("tfds"))
  ref = tasks.get_task("gp24").examples("train", N, seed=SEED)
  assert tfds_data.load_examples("gp24", "train", N, SEED, data_dir=data_dir) == ref
  return data_dir, ref


def _dir(data_dir, task="gp24", split="train", n=N, seed=SEED, options=None):
  return tfds_data.dataset_dir(tfds_data.make_config(task, {split: n}, seed, options), data_dir)


@pytest.mark.parametrize("task,split,n,options", [
    ("gp24", "id_heldout", 6, {"confidence": True}),
    ("countdown", "test", 4, None),
    ("arith", "train", 12, None),
    ("gsm8k", "train", 6, None),
])
def test_round_trip_equals_the_generator(tmp_path, task, split, n, options):
  ref = tasks.get_task(task, **(options or {})).examples(split, n, seed=SEED)
  got = tfds_data.load_examples(task, split, n, SEED, data_dir=str(tmp_path),
                                task_options=options)
  assert got == ref
  assert all(isinstance(e.steps, tuple) for e in got)
  assert os.listdir(_dir(str(tmp_path), task, split, n, options=options))


def test_gp24_train_round_trip_and_meta_types(gp24_train):
  data_dir, ref = gp24_train
  got = tfds_data.load_examples("gp24", "train", N, SEED, data_dir=data_dir)
  assert got == ref
  assert isinstance(got[0].meta["cards"], tuple) and got[0].meta["rule"] == "id"
  assert "tensorflow" not in sys.modules


def test_random_access(gp24_train):
  data_dir, ref = gp24_train
  src = tfds_data.prepare("gp24", "train", N, SEED, data_dir=data_dir)
  assert len(src) == N and src.path == _dir(data_dir)
  assert src[5] == ref[5] and src[-1] == ref[-1] and src[2:7:2] == ref[2:7:2]
  assert list(src) == ref
  with pytest.raises(IndexError):
    src[N]
  # tfds.data_source reads the same records from the files alone.
  name = f"{tfds_data.TaskExamples.name}/{os.path.basename(os.path.dirname(src.path))}"
  records = tfds.data_source(name, data_dir=data_dir, split="train")
  assert tfds_data.decode(records[7]) == ref[7]
  assert "tensorflow" not in sys.modules


def test_second_call_reuses_the_cache(gp24_train, calls):
  data_dir, ref = gp24_train
  record = [f for f in os.listdir(_dir(data_dir)) if ".array_record" in f][0]
  mtime = os.stat(os.path.join(_dir(data_dir), record)).st_mtime_ns
  assert tfds_data.load_examples("gp24", "train", N, SEED, data_dir=data_dir) == ref
  assert calls["n"] == 0
  assert os.stat(os.path.join(_dir(data_dir), record)).st_mtime_ns == mtime


def test_version_bump_rebuilds_in_a_new_directory(gp24_train, calls, monkeypatch):
  data_dir, ref = gp24_train
  old = _dir(data_dir)
  monkeypatch.setattr(tfds_data.TaskExamples, "VERSION", tfds.core.Version("1.0.1"))
  new = _dir(data_dir)
  assert new != old and new.endswith("1.0.1")
  assert tfds_data.load_examples("gp24", "train", N, SEED, data_dir=data_dir) == ref
  assert calls["n"] == 1 and os.path.isdir(new) and os.path.isdir(old)


def test_generator_version_and_options_change_the_directory(gp24_train, calls, monkeypatch):
  data_dir, _ = gp24_train
  old = _dir(data_dir)
  assert _dir(data_dir, options={"confidence": True}) != old
  assert _dir(data_dir, seed=SEED + 1) != old and _dir(data_dir, n=N + 1) != old
  monkeypatch.setattr(gp24.Gp24Task, "generator_version", "2", raising=False)
  assert _dir(data_dir) != old


def test_env_var_selects_the_directory(tmp_path, monkeypatch):
  monkeypatch.setenv(tfds_data.ENV_VAR, str(tmp_path / "env"))
  ref = tasks.get_task("gsm8k").examples("test", 3, seed=SEED)
  src = tfds_data.prepare("gsm8k", "test", 3, SEED)
  assert src.path.startswith(str(tmp_path / "env") + os.sep) and list(src) == ref
  assert tfds_data.resolve_data_dir(str(tmp_path / "arg")) == str(tmp_path / "arg")
  monkeypatch.delenv(tfds_data.ENV_VAR)
  monkeypatch.setenv("HOME", str(tmp_path / "home"))
  assert tfds_data.resolve_data_dir() == str(tmp_path / "home/.cache/jaxrl_post/tfds")


def _truncate(d):
  f = [os.path.join(d, f) for f in os.listdir(d) if ".array_record" in f][0]
  os.truncate(f, os.path.getsize(f) // 2)


def _empty(d):
  shutil.rmtree(d)
  os.makedirs(d)


def _bad_info(d):
  with open(os.path.join(d, "dataset_info.json"), "w") as f:
    f.write("{not json")


@pytest.mark.parametrize("damage", [_truncate, _empty, _bad_info])
def test_damaged_cache_is_rebuilt(gp24_train, calls, tmp_path, damage):
  data_dir, ref = gp24_train
  copy = str(tmp_path / "copy")
  shutil.copytree(data_dir, copy)
  damage(_dir(copy))
  assert tfds_data.load_examples("gp24", "train", N, SEED, data_dir=copy) == ref
  assert calls["n"] == 1
  assert tfds_data.load_examples("gp24", "train", N, SEED, data_dir=copy) == ref
  assert calls["n"] == 1


def test_bad_requests_fail_clearly(tmp_path):
  with pytest.raises(ValueError, match="no split"):
    tfds_data.prepare("gp24", "validation", 4, data_dir=str(tmp_path))
  with pytest.raises(ValueError, match="n >= 1"):
    tfds_data.prepare("gp24", "train", 0, data_dir=str(tmp_path))
  with pytest.raises(ValueError, match="does not survive JSON"):
    tfds_data.encode(Example("x", "p", "c", "a", (), {"cards": [1, 2]}))


def test_training_hook_reads_the_cache(gp24_train, calls):
  from configs import common
  from jaxrl_post.hparams import from_config
  from jaxrl_post.trainers.loop import task_examples
  data_dir, ref = gp24_train
  c = common.base_config()
  assert from_config(c).data_dir == ""
  c.data_dir = data_dir
  hp = from_config(c)
  task = tasks.get_task("gp24")
  assert task_examples(hp, task, "train", N, SEED) == ref and calls["n"] == 0
  assert task_examples(hp.__class__(**{**hp.__dict__, "data_dir": ""}), task, "train", N,
                       SEED) == ref and calls["n"] == 1


def test_prepare_data_tool(tmp_path):
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  p = subprocess.run([sys.executable, "-m", "launch.prepare_data", "--task=gsm8k",
                      "--split=test", "--n=2", f"--data_dir={tmp_path}"],
                     cwd=root, capture_output=True, text=True, timeout=120)
  assert p.returncode == 0, p.stderr[-2000:]
  last = p.stdout.splitlines()[-1]  # (tfds prints its own lines to stdout before it)
  assert last == f"test: 2 examples in {_dir(str(tmp_path), 'gsm8k', 'test', 2, 0)}"
