"""Task examples persisted as tfds `array_record` datasets, read without TensorFlow.

`prepare(task, split, n, seed)` writes `get_task(task, **options).examples(split,
n, seed)` once and returns random access to it; `load_examples(...)` returns the
same list the generator returns (same order, equal Examples).

What is stored, one record per Example in generation order: `id`, `prompt`,
`completion`, `answer` (text), `steps` (a sequence of text) and `meta` (JSON
text). JSON arrays come back as tuples, which is what the tasks store; a meta
that would not come back equal (a list, a non-string key, a number type JSON
does not keep) is refused when writing.

Where: `<data_dir>/jaxrl_post_tasks/<config>/<VERSION>/` (tfds's layout:
`dataset_info.json`, `features.json`, one `.array_record` file per split).
`data_dir` is the argument, else `$JAXRL_POST_DATA_DIR`, else
`~/.cache/jaxrl_post/tfds`. The config name holds the task, the split sizes,
the seed and a hash of (task, options, split sizes, seed, the task's
`generator_version` attribute if it has one), so changing any of them or
`TaskExamples.VERSION` writes a new directory; stale data is never reused.
A directory that does not read back (missing, empty or truncated files, a
wrong count; `load_examples` decodes every record, so array_record's chunk
hash checks catch damaged bytes too) is deleted and rebuilt once; if the
rebuilt one fails too, `CacheError`. tfds writes into a temporary directory
and renames it, so an interrupted build leaves no half dataset behind.

Reads go through `builder.as_data_source()`, the `ArrayRecordDataSource` that
`tfds.data_source("jaxrl_post_tasks/<config>", data_dir=...)` also returns
(from the files alone); `as_dataset()` would need TensorFlow.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import hashlib
import inspect
import json
import os
import shutil
from typing import Any, Mapping

import tensorflow_datasets as tfds
from absl import logging

from jaxrl_post import tasks as tasks_lib
from jaxrl_post.tasks.base import Example

ENV_VAR = "JAXRL_POST_DATA_DIR"
DEFAULT_DATA_DIR = "~/.cache/jaxrl_post/tfds"
TEXT_FIELDS = ("id", "prompt", "completion", "answer")


class CacheError(RuntimeError):
  """A cached dataset that cannot be read back, even after a rebuild."""


def resolve_data_dir(data_dir: str | None = None) -> str:
  """`data_dir`, else $JAXRL_POST_DATA_DIR, else ~/.cache/jaxrl_post/tfds."""
  return os.path.abspath(os.path.expanduser(
      data_dir or os.environ.get(ENV_VAR) or DEFAULT_DATA_DIR))


@dataclasses.dataclass
class TaskConfig(tfds.core.BuilderConfig):
  """Which examples a dataset holds: `examples(split, n, seed)` per (split, n)."""

  task: str = ""
  options: tuple[tuple[str, Any], ...] = ()
  splits: tuple[tuple[str, int], ...] = ()
  seed: int = 0
  generator_version: str = ""


def make_config(task: str, splits: Mapping[str, int], seed: int = 0,
                options: Mapping[str, Any] | None = None) -> TaskConfig:
  splits = tuple(sorted((s, int(n)) for s, n in splits.items()))
  if not splits or any(n < 1 for _, n in splits):
    raise ValueError(f"need at least one split of n >= 1 examples; got {dict(splits)}")
  generator = tasks_lib.get_task(task, **dict(options or {}))
  # Options are keyed with the task's defaults filled in, so `{}` and an
  # explicit default name the same dataset.
  options = tuple(sorted({**_default_options(generator), **(options or {})}.items()))
  bad = [s for s, _ in splits if s not in generator.splits]
  if bad:
    raise ValueError(f"{task} has no split {bad}; known: {generator.splits}")
  gen_version = str(getattr(generator, "generator_version", ""))
  key = json.dumps([task, options, splits, seed, gen_version])
  digest = hashlib.sha256(key.encode()).hexdigest()[:12]
  sizes = "-".join(f"{s}{n}" for s, n in splits)
  return TaskConfig(name=f"{task}-{sizes}-seed{seed}-{digest}", task=task, options=options,
                    splits=splits, seed=int(seed), generator_version=gen_version,
                    description=f"{task}{dict(options)} examples {dict(splits)} seed {seed}")


def _default_options(generator) -> dict[str, Any]:
  params = inspect.signature(type(generator).__init__).parameters.values()
  return {p.name: p.default for p in params
          if p.name != "self" and p.default is not inspect.Parameter.empty}


class TaskExamples(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Writes a task's examples for the splits and seed of its `TaskConfig`."""

  name = "jaxrl_post_tasks"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "id, prompt, completion, answer, steps, meta (JSON)."}
  # No checksums file to find. (Looking for one beside a packaged builder makes
  # tfds 4.9.10 import the `importlib_resources` backport, not installed here.)
  code_path = None

  def _info(self) -> tfds.core.DatasetInfo:
    text = tfds.features.Text()
    return tfds.core.DatasetInfo(
        builder=self, description=__doc__.split("\n", 1)[0],
        features=tfds.features.FeaturesDict(
            {**{f: text for f in TEXT_FIELDS},
             "steps": tfds.features.Sequence(tfds.features.Text()),
             "meta": tfds.features.Text()}),
        disable_shuffling=True)  # keep the generator's order

  def _split_generators(self, dl_manager):
    del dl_manager
    return {split: self._generate_examples(split, n) for split, n in self.builder_config.splits}

  def _generate_examples(self, split: str, n: int):
    c = self.builder_config
    task = tasks_lib.get_task(c.task, **dict(c.options))
    for i, ex in enumerate(task.examples(split, n, seed=c.seed)):
      yield i, encode(ex)


def encode(ex: Example) -> dict[str, Any]:
  meta = json.dumps(dict(ex.meta))
  if _meta_from_json(meta) != ex.meta:
    raise ValueError(f"example {ex.id}: meta {ex.meta!r} does not survive JSON")
  return {**{f: getattr(ex, f) for f in TEXT_FIELDS}, "steps": list(ex.steps), "meta": meta}


def decode(record: Mapping[str, Any]) -> Example:
  text = {f: record[f].decode() for f in TEXT_FIELDS}
  return Example(**text, steps=tuple(s.decode() for s in record["steps"]),
                 meta=_meta_from_json(record["meta"]))


def _meta_from_json(s) -> dict:
  def tuples(x):
    if isinstance(x, list):
      return tuple(tuples(v) for v in x)
    if isinstance(x, dict):
      return {k: tuples(v) for k, v in x.items()}
    return x
  return tuples(json.loads(s))


class ExampleSource(collections.abc.Sequence):
  """Random access to one prepared split: `source[i]` is the i-th Example.

  `records` is the underlying tfds `ArrayRecordDataSource` (dicts of bytes).
  """

  def __init__(self, records, path: str):
    self.records, self.path = records, path

  def __len__(self) -> int:
    return len(self.records)

  def __getitem__(self, i):
    if isinstance(i, slice):
      return [decode(r) for r in self.records.__getitems__(list(range(len(self))[i]))]
    if not -len(self) <= i < len(self):
      raise IndexError(f"index {i} out of range for {len(self)} examples")
    return decode(self.records[i % len(self)])


def dataset_dir(config: TaskConfig, data_dir: str) -> str:
  """tfds's `<data_dir>/<builder>/<config>/<version>` for this config."""
  return os.path.join(data_dir, TaskExamples.name, config.name, str(TaskExamples.VERSION))


def prepare(task: str, split: str, n: int, seed: int = 0, data_dir: str | None = None,
            task_options: Mapping[str, Any] | None = None) -> ExampleSource:
  """Random access to `task.examples(split, n, seed)`, written once under data_dir."""
  config = make_config(task, {split: n}, seed, task_options)
  return _open(config, resolve_data_dir(data_dir), split, read_all=False)[0]


def load_examples(task: str, split: str, n: int, seed: int = 0, data_dir: str | None = None,
                  task_options: Mapping[str, Any] | None = None) -> list[Example]:
  """Equal to `get_task(task, **task_options).examples(split, n, seed)`, from the cache."""
  config = make_config(task, {split: n}, seed, task_options)
  return _open(config, resolve_data_dir(data_dir), split, read_all=True)[1]


def _open(config: TaskConfig, data_dir: str, split: str, read_all: bool):
  """(source, examples read) of a split; builds the dataset if it is missing or bad."""
  path = dataset_dir(config, data_dir)
  if os.path.exists(path):
    try:
      return _read(config, data_dir, split, read_all)
    except Exception as e:  # tfds / array_record raise many types on bad files
      logging.warning("rebuilding %s: it does not read back (%s: %s)", path,
                      type(e).__name__, e)
      shutil.rmtree(path)
  builder = TaskExamples(data_dir=data_dir, config=config, file_format="array_record")
  try:
    builder.download_and_prepare()
  except Exception:
    if not os.path.exists(path):  # (exists: another process wrote it first)
      raise
  try:
    return _read(config, data_dir, split, read_all)
  except Exception as e:
    raise CacheError(f"{path} was just built but does not read back; delete it and "
                     f"check the disk ({type(e).__name__}: {e})") from e


def _read(config: TaskConfig, data_dir: str, split: str, read_all: bool):
  """Opens a split, checks its count and reads all records (or the first and
  last). array_record checks chunk hashes, so damaged bytes raise here."""
  builder = TaskExamples(data_dir=data_dir, config=config, file_format="array_record")
  source = ExampleSource(builder.as_data_source(split=split), builder.data_dir)
  want = dict(config.splits)[split]
  if len(source) != want or builder.info.splits[split].num_examples != want:
    raise CacheError(f"{source.path}: {len(source)} records, expected {want}")
  return source, (source[:] if read_all else [source[0], source[-1]])
