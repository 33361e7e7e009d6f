"""The GRPO bench row's work, built in one place: `launch.bench` and `launch.bench_ab`.

Imports nothing from `launch`, so `launch.bench_ab` can load this file by path
into a worker whose `jaxrl_post` is another source tree (another revision):
both sides then build the same work from the same code.
"""

from __future__ import annotations

import dataclasses
from typing import Any

@dataclasses.dataclass
class GrpoWork:
  """Everything one GRPO bench step needs.

  cfg: the model config; rc: grpo.RLStepConfig; optimizer and shardings (of
  the TrainState); state: a fresh TrainState on one device; batch: prompts
  int32[P, 32] / mask and the gp24 reward pytree; examples: the gp24
  examples behind the prompts; tokenizer: the char tokenizer; hp: RLHParams;
  optim: OptimHParams.
  """

  cfg: Any
  rc: Any
  optimizer: Any
  shardings: Any
  state: Any
  batch: dict
  examples: list
  tokenizer: Any
  optim: Any


def grpo_work(preset: str, prompts: int, samples: int, new_tokens: int) -> GrpoWork:
  """The bench's GRPO step inputs (`launch.bench.grpo_row` documents them).

  `RLHParams` defaults (beta 0, one update per rollout, temperature 1,
  group-std advantages), AdamW lr 1e-5; no stop id. Prompts: the last 32
  token ids of gp24 training prompts, clipped into the vocabulary (only
  `nano`, vocab 64 < the char tokenizer's 99, is affected: the embedding
  gather clamps anyway, and the TRL peer needs valid ids). Reward: the binary
  gp24 verifier compiled into the step.
  """
  from jaxrl_post import model as M
  from jaxrl_post import rewards as R
  from jaxrl_post import sampling as S
  from jaxrl_post import sharding as shd
  from jaxrl_post.hparams import OptimHParams, RLHParams
  from jaxrl_post.tasks import gp24
  from jaxrl_post.tokenizers import CharTokenizer
  from jaxrl_post.trainers import grpo
  from jaxrl_post.trainers import state as St
  tok = CharTokenizer()
  cfg = M.get_preset(preset)
  hp = RLHParams(group_size=samples, prompts_per_step=prompts, max_new_tokens=new_tokens)
  rc = grpo.RLStepConfig(hp=hp, sampling=S.SamplingConfig(max_new_tokens=new_tokens))
  mesh = shd.make_mesh(shd.MeshConfig(1, -1, 1))
  optim = OptimHParams(learning_rate=1e-5)
  opt = St.make_optimizer(optim, 100)
  _, sh = St.state_shardings(cfg, opt, mesh)
  state = St.init_state(cfg, opt, 0, sh)
  ex = gp24.Gp24Task().examples("train", prompts, seed=0)
  ids = [[min(t, cfg.vocab_size - 1) for t in [tok.bos_id, *tok.encode(e.prompt)][:32]]
         for e in ex]
  tokens, mask = S.pad_prompts(ids, 0, length=32)
  table = R.CharTable.from_tokenizer(tok, cfg.vocab_size)
  batch = {"prompt_tokens": tokens, "prompt_mask": mask,
           "reward": R.weighted_sum(task=(R.gp24_reward(
               ex, table, width=R.completion_width(table, new_tokens)), 1.0))}
  return GrpoWork(cfg=cfg, rc=rc, optimizer=opt, shardings=sh, state=state, batch=batch,
                  examples=ex, tokenizer=tok, optim=optim)
