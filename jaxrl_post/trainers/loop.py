"""What every trainer's `run()` shares: workdir set-up, init, checkpoints, eval.

The step functions live in `sft.py` / `grpo.py`; this module does the host
side around them: the mesh, the tokenizer and model config of the run, the
initial state (fresh, resumed, or `init_from` another run), the Orbax
snapshots, metrics files, periodic evaluation through THE rollout kernel, and
the NaN guard.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from typing import Any, Callable

import jax
from absl import logging

from jaxrl_post import checkpoint as ckpt_lib
from jaxrl_post import data as data_lib
from jaxrl_post import evaluation
from jaxrl_post import metrics as metrics_lib
from jaxrl_post import sampling as S
from jaxrl_post import sharding as shd
from jaxrl_post import tasks as tasks_lib
from jaxrl_post import tokenizers as tok_lib
from jaxrl_post.hparams import TrainHParams
from jaxrl_post.model import ModelConfig, abstract_params, loading, param_logical_axes
from jaxrl_post.trainers import state as state_lib


class NonFiniteLossError(FloatingPointError):
  """The loss or gradient norm became NaN/inf; the run stops."""


@dataclasses.dataclass
class RunContext:
  """Everything `run()` needs besides the step function."""

  hp: TrainHParams
  workdir: str
  mesh: Any
  cfg: ModelConfig
  tokenizer: Any
  task: Any
  init_params: Any  # params to start from (None: fresh init)


# --------------------------------------------------------------------------
# Set-up.
# --------------------------------------------------------------------------


def task_examples(hp: TrainHParams, task, split: str, n: int, seed: int) -> list:
  """`task.examples(split, n, seed)`; read from the tfds cache when `hp.data_dir` is set."""
  if not hp.data_dir:
    return task.examples(split, n=n, seed=seed)
  from jaxrl_post.tasks import tfds_data
  return tfds_data.load_examples(hp.task, split, n, seed, data_dir=hp.data_dir,
                                 task_options=dict(hp.task_options))


def _build_tokenizer(hp: TrainHParams, task, directory: str):
  if hp.tokenizer == "char":
    return tok_lib.CharTokenizer()
  corpus = [e.prompt + "\n" + e.completion for e in task_examples(hp, task, "train", 2000, hp.seed)]
  return tok_lib.SentencePieceTokenizer.train(corpus, directory,
                                              vocab_size=hp.model.vocab_size)


def setup(hp: TrainHParams, workdir: str, config_dict: dict | None = None) -> RunContext:
  """Creates or reopens a workdir: mesh, task, tokenizer, model config.

  Across processes (sharing the workdir, as Orbax's snapshots need) every
  process inspects and reads the workdir before any writes to it, and only
  process 0 writes (tokenizer, model_config.json, config.json); the others
  read the tokenizer it built. (Otherwise a process that looked after process
  0 had written model_config.json took the run for a resumed one and read a
  half-written config or a tokenizer not saved yet.)
  """
  os.makedirs(workdir, exist_ok=True)
  mesh = shd.make_mesh(shd.MeshConfig(*hp.mesh))
  task = tasks_lib.get_task(hp.task, **dict(hp.task_options))
  tok_dir = os.path.join(workdir, "tokenizer")
  cfg_path = os.path.join(workdir, "model_config.json")
  init_params = None
  resuming = os.path.exists(cfg_path)
  has_snapshot = bool(ckpt_lib.list_steps(os.path.join(workdir, "checkpoints")))
  shd.barrier("jaxrl_post.setup: workdir inspected")
  writer = jax.process_index() == 0
  if resuming and (has_snapshot or not hp.init_from):
    with open(cfg_path) as f:
      cfg = ModelConfig.from_dict(json.load(f))
    tokenizer = tok_lib.load_tokenizer(tok_dir)
  elif hp.init_from:
    # (Also when a previous attempt died before its first snapshot: the run
    # must start from init_from again, not from a fresh init.)
    cfg, tokenizer, init_params, desc = loading.load_model(hp.init_from)
    logging.info("init_from %s", desc)
    if writer:
      tokenizer.save(tok_dir)
  else:
    if writer:
      tokenizer = _build_tokenizer(hp, task, tok_dir)
      tokenizer.save(tok_dir)
    shd.barrier("jaxrl_post.setup: tokenizer saved")
    if not writer:
      tokenizer = tok_lib.load_tokenizer(tok_dir)
    vocab = int(math.ceil(tokenizer.vocab_size / 64) * 64)
    cfg = hp.model.replace(vocab_size=max(vocab, tokenizer.vocab_size))
  if tokenizer.vocab_size > cfg.vocab_size:
    raise ValueError(f"tokenizer has {tokenizer.vocab_size} ids > model vocab {cfg.vocab_size}")
  shd.barrier("jaxrl_post.setup: workdir read")  # a resumed run's files are rewritten next
  if writer:
    with open(cfg_path, "w") as f:
      json.dump(cfg.to_dict(), f, indent=1)
    if config_dict is not None:
      with open(os.path.join(workdir, "config.json"), "w") as f:
        json.dump(config_dict, f, indent=1, default=str)
  shd.barrier("jaxrl_post.setup: workdir written")
  return RunContext(hp=hp, workdir=workdir, mesh=mesh, cfg=cfg, tokenizer=tokenizer,
                    task=task, init_params=init_params)


def make_checkpointer(ctx: RunContext):
  s = ctx.hp.snapshot
  return ckpt_lib.Checkpointer(
      os.path.join(ctx.workdir, "checkpoints"),
      ckpt_lib.SnapshotPolicy(every=s.every, keep=s.keep, keep_period=s.keep_period))


def init_or_restore(ctx: RunContext, optimizer, checkpointer):
  """(state, shardings, start_step): resumes from the newest good snapshot."""
  abstract, shardings = state_lib.state_shardings(ctx.cfg, optimizer, ctx.mesh)
  latest = checkpointer.latest_step()
  if latest is not None:
    state, step = checkpointer.restore(abstract, shardings)
    logging.info("resumed from step %d", step)
    return state, shardings, step
  state = state_lib.init_state(ctx.cfg, optimizer, ctx.hp.seed, shardings,
                               params=ctx.init_params)
  return state, shardings, 0


def check_finite(step: int, metrics: dict, checkpointer):
  bad = {k: v for k, v in metrics.items()
         if isinstance(v, float) and not math.isfinite(v) and k in ("loss", "grad_norm")}
  if bad:
    last = checkpointer.latest_step()
    raise NonFiniteLossError(
        f"non-finite {bad} at step {step}; stopping. The last good snapshot "
        f"(step {last}) is intact under {checkpointer.directory}")


# --------------------------------------------------------------------------
# Evaluation during training.
# --------------------------------------------------------------------------


def make_sampler(ctx: RunContext, max_new_tokens: int) -> S.Sampler:
  sc = S.SamplingConfig(max_new_tokens=max_new_tokens, stop_ids=(ctx.tokenizer.eos_id,),
                        pad_id=ctx.tokenizer.pad_id)
  p_sh = shd.tree_shardings(abstract_params(ctx.cfg), param_logical_axes(ctx.cfg),
                            ctx.mesh, shd.SAMPLE_RULES)
  return S.Sampler(ctx.cfg, sc, mesh=ctx.mesh, param_shardings=p_sh)


def eval_examples(ctx: RunContext, split: str, n: int) -> list:
  return task_examples(ctx.hp, ctx.task, split, n, ctx.hp.seed + 12345)


def accuracy_metrics(ctx: RunContext, sampler: S.Sampler, params,
                     splits=None, n=None) -> dict[str, float]:
  """Greedy accuracy per split (flat `acc/<split>` metrics), all splits in one
  pass through the rollout kernel."""
  ev = ctx.hp.eval
  ec = evaluation.EvalConfig(num_samples=1, temperature=ev.temperature,
                             max_new_tokens=sampler.sc.max_new_tokens,
                             rows=_eval_rows(ctx))
  examples = {split: eval_examples(ctx, split, n or ev.num_problems)
              for split in splits or ev.splits if split in ctx.task.splits}
  if not examples:
    return {}
  res = evaluation.evaluate_splits(sampler, params, ctx.tokenizer, examples,
                                   ctx.task.verify, ec)
  return {f"acc/{split}": r["accuracy"] for split, r in res.items()}


EVAL_LOGITS_BYTES = 1 << 29  # float32 logits of one eval batch: at most 512 MiB


def _eval_rows(ctx: RunContext) -> int:
  """Rows per eval batch: 64, fewer when [rows, seq_len, vocab] float32 logits
  would pass EVAL_LOGITS_BYTES (an imported 49k-vocab model at 320 tokens
  gets 8, not 4 GiB of logits); a multiple of the batch-sharding devices."""
  n = ctx.mesh.shape["data"] * ctx.mesh.shape["fsdp"]
  fit = EVAL_LOGITS_BYTES // (4 * ctx.hp.seq_len * ctx.cfg.vocab_size)
  return max(n, (min(64, fit) // n) * n)


class RunLoop:
  """Host-side bookkeeping shared by every trainer's loop.

  After each step, `after_step` decides whether to log, evaluate and save
  (per the config), fetches the metrics only then (one host sync), stops on a
  non-finite loss before any snapshot of the bad state is written, and
  writes metrics.jsonl / TensorBoard / the progress line. Across processes
  only process 0 writes them (every process computes the same replicated
  metrics; several writers would race on one workdir and duplicate rows).
  """

  def __init__(self, ctx: RunContext, checkpointer, start: int, desc: str):
    self.hp = ctx.hp
    self.checkpointer = checkpointer
    self.is_writer = jax.process_index() == 0
    self.writer = (metrics_lib.MetricWriter(ctx.workdir, resume_step=start)
                   if self.is_writer else None)
    self.progress = (metrics_lib.Progress(ctx.hp.num_steps, start=start, desc=desc)
                     if self.is_writer else None)
    self.last: dict = {}
    self._t0, self._last_log = time.perf_counter(), start

  def write(self, step: int, metrics: dict):
    if self.is_writer:
      self.writer.write(step, metrics)

  def after_step(self, done: int, state, metrics, evaluate: Callable[[Any], dict]):
    hp = self.hp
    is_last = done == hp.num_steps
    is_log = done % hp.log_every == 0 or is_last
    is_eval = bool(hp.eval.every and done % hp.eval.every == 0) or is_last
    is_save = done % hp.snapshot.every == 0 or is_last
    if is_log or is_save or is_eval:
      host = {k: float(v) for k, v in jax.device_get(metrics).items()}
      check_finite(done, host, self.checkpointer)
      # Every step has the same batch shape, so the logged step's token count
      # stands for each step since the last log.
      host["tokens_per_sec"] = host.pop("tokens") * (done - self._last_log) / max(
          time.perf_counter() - self._t0, 1e-9)
      if is_eval:
        host.update(evaluate(state))
      self.write(done, host)
      if self.is_writer:
        self.progress.update(done, host)
      self.last = host
      self._t0, self._last_log = time.perf_counter(), done
    if is_save:
      self.checkpointer.save(done, state, meta={"step": done})

  def close(self):
    self.checkpointer.close()  # waits for the last async save
    if self.is_writer:
      self.writer.close()
      self.progress.close()


# --------------------------------------------------------------------------
# SFT.
# --------------------------------------------------------------------------


def sft_data(ctx: RunContext):
  """(train BatchStream, held-out gen-loss batches)."""
  hp = ctx.hp
  train = task_examples(hp, ctx.task, "train", hp.num_train_examples, hp.seed)
  pool = data_lib.tokenize_examples(train, ctx.tokenizer, hp.seq_len + 1, "train examples")
  stream = data_lib.BatchStream(pool, hp.batch_size * hp.grad_accum, hp.seq_len,
                                ctx.tokenizer.pad_id, hp.seed, pack=hp.pack)
  held_split = "id_heldout" if "id_heldout" in ctx.task.splits else "test"
  held = data_lib.tokenize_examples(
      eval_examples(ctx, held_split, hp.eval.gen_loss_examples), ctx.tokenizer,
      hp.seq_len + 1, "held-out examples")
  rows = _eval_rows(ctx)
  held_batches = [data_lib.make_batch([[s] for s in held[i:i + rows]] +
                                      [[] for _ in range(rows - len(held[i:i + rows]))],
                                      hp.seq_len, ctx.tokenizer.pad_id)
                  for i in range(0, len(held), rows)]
  return stream, held_batches


def run_sft(hp: TrainHParams, workdir: str, config_dict: dict | None = None) -> dict:
  """The SFT training loop. Returns the final metrics."""
  from jaxrl_post.trainers import sft

  ctx = setup(hp, workdir, config_dict)
  schedule = state_lib.make_schedule(hp.optim, hp.num_steps)
  optimizer = state_lib.make_optimizer(hp.optim, hp.num_steps)
  checkpointer = make_checkpointer(ctx)
  state, st_sh, start = init_or_restore(ctx, optimizer, checkpointer)
  stream, held_batches = sft_data(ctx)
  batch_sh = shd.batch_sharding(ctx.mesh, 2)
  step_fn = jax.jit(sft.make_train_step(ctx.cfg, optimizer, hp.grad_accum, schedule),
                    in_shardings=(st_sh, batch_sh), out_shardings=(st_sh, None),
                    donate_argnums=0)
  eval_loss = jax.jit(sft.make_eval_loss(ctx.cfg), in_shardings=(st_sh.params, batch_sh))
  sampler = make_sampler(ctx, hp.eval.max_new_tokens)

  def evaluate(st):
    out = {"gen_loss": sft.mean_nll(eval_loss, st.params,
                                    [shd.shard_batch(b, ctx.mesh) for b in held_batches])}
    out.update(accuracy_metrics(ctx, sampler, st.params))
    return out

  runner = RunLoop(ctx, checkpointer, start, f"sft {hp.task}")
  try:
    for step in range(start, hp.num_steps):
      state, m = step_fn(state, shd.shard_batch(stream.batch(step), ctx.mesh))
      runner.after_step(step + 1, state, m, evaluate)
  finally:
    runner.close()
  return runner.last


def initial_params(ctx: RunContext):
  """The parameters a run started from (init_from, or the seeded fresh init)."""
  if ctx.init_params is not None:
    return ctx.init_params
  from jaxrl_post.model import init_params
  return init_params(ctx.cfg, jax.random.fold_in(jax.random.key(ctx.hp.seed), 1))
