"""Frozen, validated hyperparameters built once from an ml_collections config.

Jitted code never sees a ConfigDict: `run()` in each trainer calls
`from_config(config)` and passes these dataclasses (hashable, static) around.
Every bad value raises `ConfigError` naming the config field.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from jaxrl_post.model import ModelConfig, get_preset

TRAINERS = ("sft", "grpo", "srl")
TASKS = ("gp24", "countdown", "gsm8k", "arith")
CARD_TASKS = ("gp24", "arith")  # tasks whose expert target is one of many solutions
TOKENIZERS = ("char", "sentencepiece")


class ConfigError(ValueError):
  """A config field with a bad value."""


def _require(cond: bool, field: str, msg: str):
  if not cond:
    raise ConfigError(f"config.{field}: {msg}")


@dataclasses.dataclass(frozen=True)
class OptimHParams:
  """AdamW with linear warmup then cosine decay, global-norm clipping."""

  learning_rate: float = 1e-3
  warmup_steps: int = 0
  end_lr_factor: float = 0.1
  weight_decay: float = 0.0
  b1: float = 0.9
  b2: float = 0.95
  grad_clip: float = 1.0
  schedule: str = "cosine"  # cosine | constant


@dataclasses.dataclass(frozen=True)
class SnapshotHParams:
  every: int = 100
  keep: int | None = None  # None: keep all (for the spectral series)
  keep_period: int | None = None


@dataclasses.dataclass(frozen=True)
class EvalHParams:
  every: int = 0  # 0: only at the end
  num_problems: int = 64
  splits: tuple[str, ...] = ("id_seen", "id_heldout", "ood")
  max_new_tokens: int = 64
  temperature: float = 0.0
  gen_loss_examples: int = 128


@dataclasses.dataclass(frozen=True)
class RLHParams:
  """GRPO-family settings (also used by SRL, which is GRPO with a step reward)."""

  group_size: int = 4
  prompts_per_step: int = 8
  max_new_tokens: int = 64
  temperature: float = 1.0
  top_p: float = 1.0
  num_iterations: int = 1
  epsilon_low: float = 0.2
  epsilon_high: float = 0.2
  beta: float = 0.0
  advantage: str = "group_std"  # group_std | mean_only | batch_std
  aggregation: str = "seq_mean_token_mean"
  ratio_level: str = "token"
  mask_truncated: bool = False
  dynamic_sampling: bool = False
  dynamic_eps: float = 1e-6
  max_gen_rounds: int = 3
  reward: str = "binary"  # the task reward variant (binary | levels | rlcr)
  overlong_buffer: int = 0  # DAPO soft overlong penalty cache length (0 = off)
  # The first policy update (and the old log-probs when num_iterations > 1)
  # takes the rollout's own product outputs instead of recomputing them
  # (`sampling.RolloutActivations`): the same numbers up to float rounding,
  # a third less update matmul work, more memory (the activations of every
  # rollout token live from the decode to the backward). Without dynamic
  # sampling only: there every generation round would pay for the writes
  # (about a fifth of a `tiny` rollout) and hold its activations, for one
  # update's forward.
  reuse_rollout_activations: bool = True


@dataclasses.dataclass(frozen=True)
class TrainHParams:
  trainer: str
  task: str
  seed: int
  model: ModelConfig
  tokenizer: str
  init_from: str
  batch_size: int
  grad_accum: int
  seq_len: int
  num_steps: int
  log_every: int
  pack: bool
  num_train_examples: int
  mesh: tuple[int, int, int]
  optim: OptimHParams
  snapshot: SnapshotHParams
  eval: EvalHParams
  rl: RLHParams
  task_options: tuple[tuple[str, Any], ...]
  data_dir: str = ""  # tfds cache of the task examples ("": generate in memory)


def _sub(config, name: str) -> dict[str, Any]:
  value = config.get(name)
  return dict(value) if value is not None else {}


def _dataclass_from(cls, values: dict[str, Any], prefix: str):
  known = {f.name: f for f in dataclasses.fields(cls)}
  unknown = set(values) - set(known)
  _require(not unknown, prefix, f"unknown fields {sorted(unknown)}; known: {sorted(known)}")
  out = {}
  for k, v in values.items():
    if isinstance(v, list):
      v = tuple(v)
    out[k] = v
  return cls(**out)


def model_from_config(config) -> ModelConfig:
  m = _sub(config, "model")
  preset = m.pop("preset", "tiny")
  try:
    return get_preset(preset, **m)
  except (ValueError, TypeError) as e:
    raise ConfigError(f"config.model: {e}") from e


def from_config(config) -> TrainHParams:
  """Validates a ConfigDict and returns frozen hyperparameters."""
  trainer = config.get("trainer", "sft")
  _require(trainer in TRAINERS, "trainer", f"{trainer!r} not in {TRAINERS}")
  task = config.get("task", "gp24")
  _require(task in TASKS, "task", f"{task!r} not in {TASKS}")
  tok = config.get("tokenizer", "char")
  _require(tok in TOKENIZERS, "tokenizer", f"{tok!r} not in {TOKENIZERS}")
  optim = _dataclass_from(OptimHParams, _sub(config, "optim"), "optim")
  _require(optim.learning_rate > 0, "optim.learning_rate", "must be > 0")
  _require(optim.schedule in ("cosine", "constant"), "optim.schedule",
           f"{optim.schedule!r} not in ('cosine', 'constant')")
  snapshot = _dataclass_from(SnapshotHParams, _sub(config, "snapshot"), "snapshot")
  _require(snapshot.every > 0, "snapshot.every", "must be > 0")
  ev = _dataclass_from(EvalHParams, _sub(config, "eval"), "eval")
  _require(ev.every >= 0, "eval.every", "must be >= 0")
  rl = _dataclass_from(RLHParams, _sub(config, "rl"), "rl")
  _require(rl.group_size >= 2 or trainer == "sft", "rl.group_size",
           "GRPO needs at least 2 samples per prompt")
  _require(rl.num_iterations >= 1, "rl.num_iterations", "must be >= 1")
  _require(rl.advantage in ("group_std", "mean_only", "batch_std"), "rl.advantage",
           f"{rl.advantage!r} unknown")
  _require(rl.aggregation in ("seq_mean_token_mean", "token_mean", "constant_norm"),
           "rl.aggregation", f"{rl.aggregation!r} unknown")
  _require(rl.ratio_level in ("token", "sequence", "sequence_token"), "rl.ratio_level",
           f"{rl.ratio_level!r} unknown")
  mesh = tuple(config.get("mesh", (1, -1, 1)))
  _require(len(mesh) == 3, "mesh", "expected (data, fsdp, tensor)")
  model = model_from_config(config)
  batch = int(config.get("batch_size", 32))
  _require(batch > 0, "batch_size", "must be > 0")
  grad_accum = int(config.get("grad_accum", 1))
  _require(grad_accum >= 1, "grad_accum", "must be >= 1")
  seq_len = int(config.get("seq_len", 128))
  _require(0 < seq_len <= model.max_seq_len, "seq_len",
           f"must be in (0, model.max_seq_len={model.max_seq_len}]")
  num_steps = int(config.get("num_steps", 100))
  _require(num_steps > 0, "num_steps", "must be > 0")
  # The card tasks draw expert targets from every solution, or always give
  # the first (canonical) one; `expert_all_solutions` reaches them as a task
  # option so every tool that rebuilds the task from hparams sees it.
  task_options = _sub(config, "task_options")
  if task in CARD_TASKS:
    task_options.setdefault("all_solutions", bool(config.get("expert_all_solutions", True)))
  return TrainHParams(
      trainer=trainer, task=task, seed=int(config.get("seed", 0)), model=model,
      tokenizer=tok, init_from=str(config.get("init_from", "") or ""),
      batch_size=batch, grad_accum=grad_accum, seq_len=seq_len,
      num_steps=num_steps, log_every=max(1, int(config.get("log_every", 10))),
      pack=bool(config.get("pack", False)),
      num_train_examples=int(config.get("num_train_examples", 20000)),
      mesh=mesh, optim=optim, snapshot=snapshot, eval=ev, rl=rl,
      task_options=tuple(sorted(task_options.items())),
      data_dir=str(config.get("data_dir", "") or ""))
