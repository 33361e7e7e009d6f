"""The main job: base -> SFT -> GRPO / RLCR / SRL -> eval -> spectral -> report.

  python -m launch.study --workdir=runs/study
  python -m launch.study --workdir=/tmp/s --config=configs/study.py:quick

Rerunning resumes: finished stages are skipped, interrupted training runs
continue from their newest snapshot. Writes W/report.md and W/report.json.
"""

import os

from absl import app, flags
from ml_collections import config_flags

from launch import common

_CONFIG = config_flags.DEFINE_config_file(
    "config", os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                           "configs", "study.py"),
    "Study config.", lock_config=False)
_WORKDIR = flags.DEFINE_string("workdir", None, "Study directory.")
flags.mark_flags_as_required(["workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  common.init_runtime()
  from jaxrl_post.hparams import from_config
  from jaxrl_post.study import Study
  c = _CONFIG.value
  for stage in ("base", "sft", "grpo", "rlcr", "srl"):
    from_config(c[stage])  # every stage's config is valid before anything runs
  try:
    study = Study(c, _WORKDIR.value)
  except ValueError as e:  # a config that cannot run every stage: before any stage starts
    raise app.UsageError(str(e)) from e
  result = study.run()
  print(result["report"])


if __name__ == "__main__":
  app.run(main)
