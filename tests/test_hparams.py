"""Config validation: bad values fail before compiling, naming the field."""

import dataclasses

import pytest

from configs import common
from jaxrl_post.hparams import ConfigError, from_config


def test_base_config_parses():
  hp = from_config(common.base_config())
  assert hp.trainer == "sft" and hp.model.num_layers == 4


@pytest.mark.parametrize("field,value,match", [
    ("trainer", "ppo", "config.trainer"),
    ("task", "chess", "config.task"),
    ("seq_len", 10_000, "config.seq_len"),
    ("batch_size", 0, "config.batch_size"),
])
def test_bad_top_level_values(field, value, match):
  c = common.base_config()
  c[field] = value
  with pytest.raises(ConfigError, match=match):
    from_config(c)


def test_bad_nested_values():
  c = common.base_config()
  c.optim.learning_rate = -1.0
  with pytest.raises(ConfigError, match="optim.learning_rate"):
    from_config(c)
  c = common.base_config()
  c.rl.aggregation = "sum"
  with pytest.raises(ConfigError, match="rl.aggregation"):
    from_config(c)
  c = common.base_config()
  c.model.preset = "gpt5"
  with pytest.raises(ConfigError, match="config.model"):
    from_config(c)
  c = common.base_config()
  c.model.num_heads = 3
  with pytest.raises(ConfigError, match="num_kv_heads"):
    from_config(c)


def test_parse_arg():
  a = common.parse_arg("quick,model=small", quick=False, model="tiny")
  assert a.quick is True and a.model == "small"
  with pytest.raises(ValueError, match="unknown config arg"):
    common.parse_arg("fast", quick=False)


@pytest.mark.parametrize("name", sorted(
    f[:-3] for f in __import__("os").listdir(__import__("os").path.join(
        __import__("os").path.dirname(__import__("os").path.dirname(__file__)), "configs"))
    if f.endswith(".py") and f not in ("__init__.py", "common.py", "rl_common.py", "study.py",
                                       "study_accel.py")))
def test_every_experiment_config_validates(name):
  import importlib
  module = importlib.import_module(f"configs.{name}")
  for arg in (None, "quick"):
    hp = from_config(module.get_config(arg))
    assert hp.num_steps > 0


def test_study_configs_validate():
  from configs import study, study_accel
  for c in (study.get_config(), study.get_config("quick"), study_accel.get_config()):
    for stage in ("base", "sft", "grpo", "rlcr", "srl"):
      from_config(c[stage])


def test_gp24_sft_conf_is_the_rlcr_start():
  """`gp24_sft.py:conf` trains the confidence format that `gp24_rlcr` rewards,
  with the study's recipe; the plain config is unchanged."""
  from configs import gp24_sft, study
  from jaxrl_post import tasks
  plain, conf = from_config(gp24_sft.get_config()), from_config(gp24_sft.get_config("conf"))
  assert dict(plain.task_options).get("confidence_fraction", 0.0) == 0.0
  opts = dict(conf.task_options)
  study_opts = dict(study.get_config().sft.task_options)
  assert {k: opts[k] for k in study_opts} == study_opts
  assert dataclasses.replace(conf, task_options=plain.task_options) == plain
  task = tasks.get_task(conf.task, **opts)
  train = task.examples("train", 400, seed=0)
  stated = [e for e in train if "Confidence:" in e.completion]
  assert 0.15 < len(stated) / len(train) < 0.35
