"""Writes task examples to the tfds array_record cache (`jaxrl_post/tasks/tfds_data.py`).

  python -m launch.prepare_data --task=gp24 --split=train --n=1000 --data_dir=/data/tfds
  python -m launch.prepare_data --task=gp24 --split=id_seen,id_heldout,ood --n=64 --seed=12345

The examples are `get_task(task, **options).examples(split, n, seed)`. A run
with `--config.data_dir` set reads the same ones (training examples use the
run's `seed`, evaluation `seed + 12345`) and builds any that are missing.
`--data_dir` defaults to $JAXRL_POST_DATA_DIR, else ~/.cache/jaxrl_post/tfds.
Prints one line per split: the count and the directory.
"""

import json

from absl import app, flags, logging

_TASK = flags.DEFINE_enum("task", "gp24", ["gp24", "countdown", "gsm8k", "arith"], "Task.")
_SPLIT = flags.DEFINE_list("split", ["train"], "Splits to write.")
_N = flags.DEFINE_integer("n", 1000, "Examples per split.")
_SEED = flags.DEFINE_integer("seed", 0, "Generator seed.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Cache root (see above for the default).")
_OPTIONS = flags.DEFINE_list("task_options", [], "name=value task options (JSON values), "
                             "e.g. confidence=true.")


def _options() -> dict:
  out = {}
  for item in _OPTIONS.value:
    if "=" not in item:
      raise app.UsageError(f"--task_options wants name=value, got {item!r}")
    k, v = item.split("=", 1)
    try:
      out[k] = json.loads(v)
    except json.JSONDecodeError:
      out[k] = v
  return out


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if _N.value < 1:
    raise app.UsageError("--n must be >= 1")
  logging.set_verbosity(logging.WARNING)
  from jaxrl_post.tasks import tfds_data
  for split in _SPLIT.value:
    src = tfds_data.prepare(_TASK.value, split, _N.value, _SEED.value, data_dir=_DATA_DIR.value,
                            task_options=_options())
    print(f"{split}: {len(src)} examples in {src.path}")


if __name__ == "__main__":
  app.run(main)
