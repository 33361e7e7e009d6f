r"""Peers of the GRPO bench row: TRL's `GRPOTrainer` on our exact weights and work.

`launch.bench.grpo_row` times our jitted GRPO step, then calls
`trl_grpo_step_sec` here, which runs TRL's trainer on CPU on the same
weights (exported as a Hugging Face Qwen2 directory), the same prompt token
ids, the same group shape and the same reward, with one of our steps run
between TRL steps (outside TRL's timed window) so both see the same machine
load. `torch`, `transformers`, `datasets` and `trl` are imported only inside
the functions: the bench works without them.

What is matched, and how (our side: `grpo_row` with `RLHParams` defaults):

* Work per step: P prompts x G samples x N new tokens, one rollout, one
  reward pass, one optimizer step (`per_device_train_batch_size = P G`,
  `num_generations = G`, `gradient_accumulation_steps = 1`,
  `num_iterations = 1`). Every completion is exactly N tokens: ours has no
  stop id in the bench row; TRL gets `min_new_tokens = N`, which masks EOS
  until the end (`completion_len_mean` is reported for both to prove it).
* Prompts: the same token ids (left padding dropped; TRL re-pads to the
  longest, which is our bucket when all prompts are full length, as in the
  bench). The tokenizer is made locally (`tokenizers` WordLevel, one
  private-use character per id, vocabulary = the model's), so text -> ids is
  exact and no hub access is needed.
* Sampling: temperature 1, top_p 1, top_k 0 (the full distribution, as ours).
* Loss: token-mean per sequence then mean over sequences (`loss_type="grpo"`,
  our `seq_mean_token_mean`), group-std advantages (`scale_rewards="group"`),
  epsilon 0.2, beta as ours (0: no reference model on either side).
* Optimizer: AdamW lr/betas/weight decay as ours, global-norm clip 1.0,
  cosine schedule. float32 everywhere (`bf16=False`), no gradient
  checkpointing (TRL defaults to it; ours does not remat), no logging,
  saving or eval.
* Reward: the caller's Python function of the completion ids (the bench
  passes the host gp24 verifier, the same rule our jitted reward applies on
  device).

With num_iterations=1 both sides take the "old" log-probs from the gradient
pass itself (detached): no separate forward.

Timing: a `TrainerCallback` records `on_step_begin` -> `on_step_end` (the
whole `training_step`: generation, reward, loss, backward, and the optimizer
step); the first `warmup` steps are dropped, the median of the rest is
reported.

Shared machines: when other processes keep the cores busy, torch's two
OpenMP threads slow down far more than XLA's (the TRL step was ~4x slower
with 2 threads than pinned to one core, on a 2-core box at load ~5). For a
like-for-like figure there, pin the whole bench to one core:
`taskset -c 0 python -m launch.bench --only=grpo --out=B.json`.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import statistics
import time
from typing import Any, Callable, Sequence

_FIRST_CHAR = 0xE000  # Unicode private use area: one character per token id
SPECIALS = ("<pad>", "<s>", "</s>")  # ids 0, 1, 2 (pad, bos, eos) as in our export


def trl_available() -> bool:
  return all(importlib.util.find_spec(m) is not None
             for m in ("torch", "transformers", "datasets", "trl", "tokenizers"))


def token_text(i: int) -> str:
  """The tokenizer's string for id i (specials for 0..2, one character otherwise)."""
  return SPECIALS[i] if i < len(SPECIALS) else chr(_FIRST_CHAR + i)


def make_tokenizer(vocab_size: int):
  """A `PreTrainedTokenizerFast` with exactly `vocab_size` ids, made locally.

  Id i >= 3 is the single character U+E000 + i; 0/1/2 are <pad>/<s>/</s>.
  Left padding and no automatic special tokens, so `text_of(ids)` encodes
  back to `ids` exactly.
  """
  import tokenizers
  from tokenizers import Regex, decoders, models, pre_tokenizers
  from transformers import PreTrainedTokenizerFast
  if vocab_size <= len(SPECIALS):
    raise ValueError(f"vocab_size={vocab_size} leaves no room for ordinary tokens")
  vocab = {token_text(i): i for i in range(vocab_size)}
  tk = tokenizers.Tokenizer(models.WordLevel(vocab, unk_token=SPECIALS[0]))
  tk.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
  tk.decoder = decoders.Fuse()
  tk.add_special_tokens([tokenizers.AddedToken(s, special=True) for s in SPECIALS])
  return PreTrainedTokenizerFast(tokenizer_object=tk, pad_token=SPECIALS[0],
                                 bos_token=SPECIALS[1], eos_token=SPECIALS[2],
                                 padding_side="left", truncation_side="left")


def text_of(ids: Sequence[int]) -> str:
  return "".join(token_text(int(i)) for i in ids)


def trl_grpo_step_sec(hf_dir: str, prompt_ids: Sequence[Sequence[int]],
                      reward_fn: Callable[[list[list[int]], list[int]], list[float]], *,
                      vocab_size: int, samples: int, new_tokens: int, beta: float,
                      learning_rate: float, adam_b1: float, adam_b2: float,
                      weight_decay: float, steps: int, warmup: int, work_dir: str,
                      between_steps: Callable[[], None] | None = None,
                      seed: int = 0) -> dict[str, Any]:
  """Times TRL `GRPOTrainer` steps on the HF Qwen2 directory `hf_dir`.

  prompt_ids: one token-id list per prompt (no padding); each step draws all
  of them once, `samples` completions each. reward_fn(completion_ids,
  prompt_index) -> one float per completion (prompt_index: the row's prompt
  in `prompt_ids`). between_steps: run after each TRL step, outside its timed
  window (the bench runs one of our steps there). Runs warmup + steps steps.

  Returns {"trl_step_sec" (median of the timed steps), "trl_step_secs",
  "trl_warmup_steps", "trl_completion_len_mean" (over every step),
  "trl_prompt_len", "trl_version", "torch_threads", "trl_dtype",
  "trl_activation_checkpointing"}: the last four prove the settings held.
  """
  import datasets
  import torch
  import transformers
  import trl

  tok = make_tokenizer(vocab_size)
  texts = [text_of(p) for p in prompt_ids]
  for text, ids in zip(texts, prompt_ids):
    if tok(text)["input_ids"] != [int(i) for i in ids]:
      raise AssertionError("bench_peers: the local tokenizer does not round-trip the prompt ids")
  data = datasets.Dataset.from_dict({"prompt": texts, "prompt_index": list(range(len(texts)))})
  model = transformers.Qwen2ForCausalLM.from_pretrained(hf_dir, dtype=torch.float32)
  lengths: list[int] = []

  def reward(completion_ids, prompt_index, **_):
    lengths.extend(len(c) for c in completion_ids)
    return [float(r) for r in reward_fn([list(c) for c in completion_ids], list(prompt_index))]

  n_prompts = len(prompt_ids)
  # No activation (gradient) checkpointing: TRL turns it on by default; ours
  # does not remat. transformers 5 renamed the field (the old one warns).
  names = {f.name for f in dataclasses.fields(trl.GRPOConfig)}
  no_ckpt = {("activation_checkpointing" if "activation_checkpointing" in names
              else "gradient_checkpointing"): False}
  args = trl.GRPOConfig(
      **no_ckpt,
      output_dir=work_dir, use_cpu=True, bf16=False, fp16=False, seed=seed,
      report_to="none", save_strategy="no", logging_strategy="no", eval_strategy="no",
      disable_tqdm=True, dataloader_num_workers=0,
      max_steps=warmup + steps, per_device_train_batch_size=n_prompts * samples,
      gradient_accumulation_steps=1, num_generations=samples, num_iterations=1,
      max_completion_length=new_tokens, generation_kwargs={"min_new_tokens": new_tokens},
      temperature=1.0, top_p=1.0, top_k=0, shuffle_dataset=False,
      loss_type="grpo", scale_rewards="group", epsilon=0.2, beta=beta,
      learning_rate=learning_rate, adam_beta1=adam_b1, adam_beta2=adam_b2,
      weight_decay=weight_decay, max_grad_norm=1.0, lr_scheduler_type="cosine",
      warmup_steps=0, log_completions=False)
  times: list[float] = []

  class StepTimer(transformers.TrainerCallback):
    """Wall time of each optimizer step: generation + reward + loss + update."""

    def on_step_begin(self, args, state, control, **kw):
      self.t0 = time.perf_counter()

    def on_step_end(self, args, state, control, **kw):
      times.append(time.perf_counter() - self.t0)
      if between_steps is not None:
        between_steps()

  trainer = trl.GRPOTrainer(model=model, reward_funcs=reward, args=args,
                            train_dataset=data, processing_class=tok,
                            callbacks=[StepTimer()])
  trainer.remove_callback(transformers.PrinterCallback)  # stdout carries the bench's JSON rows
  trainer.train()
  if len(times) != warmup + steps:
    raise RuntimeError(f"bench_peers: TRL ran {len(times)} steps, expected {warmup + steps}")
  timed = times[warmup:]
  return {"trl_step_sec": float(statistics.median(timed)), "trl_step_secs": timed,
          "trl_warmup_steps": warmup,
          "trl_completion_len_mean": sum(lengths) / max(len(lengths), 1),
          "trl_prompt_len": max(len(p) for p in prompt_ids),
          "trl_version": trl.__version__, "torch_threads": torch.get_num_threads(),
          "trl_dtype": str(next(trainer.model.parameters()).dtype).removeprefix("torch."),
          "trl_activation_checkpointing": any(
              getattr(m, "gradient_checkpointing", False) for m in trainer.model.modules())}
