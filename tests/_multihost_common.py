"""The computation compared between one 8-device process and two 4-device ones."""

import jax
import jax.numpy as jnp
import numpy as np

from jaxrl_post import model as M
from jaxrl_post import sharding as shd
from jaxrl_post.hparams import OptimHParams
from jaxrl_post.trainers import sft
from jaxrl_post.trainers import state as S


def run():
  cfg = M.get_preset("nano")
  mesh = shd.make_mesh(shd.MeshConfig(2, 2, 2))
  rng = np.random.default_rng(0)
  tokens = rng.integers(3, cfg.vocab_size, (8, 12)).astype(np.int32)
  batch = {"tokens": tokens, "targets": np.roll(tokens, -1, 1),
           "positions": np.tile(np.arange(12, dtype=np.int32), (8, 1)),
           "segment_ids": np.ones((8, 12), np.int32), "weights": np.ones((8, 12), np.float32)}
  opt = S.make_optimizer(OptimHParams(learning_rate=1e-2), 10)
  _, sh = S.state_shardings(cfg, opt, mesh)
  state = S.init_state(cfg, opt, 0, sh)
  b = shd.shard_batch(batch, mesh)
  logits = jax.jit(lambda p, bb: M.forward(p, cfg, bb["tokens"], bb["positions"])[0])(state.params, b)
  step = jax.jit(sft.make_train_step(cfg, opt), in_shardings=(sh, shd.batch_sharding(mesh)),
                 out_shardings=(sh, None), donate_argnums=0)
  losses = []
  for _ in range(3):
    state, m = step(state, b)
    losses.append(float(m["loss"]))
  return logits, losses
