"""Trains a model: `python -m launch.train --config=configs/<exp>.py --workdir=W`.

Rerunning the same command resumes from the newest complete snapshot.
Override any field with `--config.<field>=value`.
"""

from absl import app, flags, logging
from ml_collections import config_flags

from launch import common

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (checkpoints, metrics).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  common.init_runtime()
  from jaxrl_post.hparams import from_config
  from jaxrl_post.model.loading import ModelSpecError
  from jaxrl_post.trainers import run_trainer
  hp = from_config(_CONFIG.value)  # validates before anything compiles
  try:
    final = run_trainer(hp, _WORKDIR.value, _CONFIG.value.to_dict())
  except ModelSpecError as e:  # raised before the first step: nothing to lose
    raise app.UsageError(f"--config.init_from={hp.init_from}: {e}") from e
  logging.info("done: %s", final)


if __name__ == "__main__":
  app.run(main)
