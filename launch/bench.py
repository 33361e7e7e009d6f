"""Benchmarks (DESIGN.md section 3): `python -m launch.bench --out=B.json [--quick]`.

Every figure is measured in this run on this machine: the matmul peak and
copy bandwidth, the rollout kernel (decode / prefill tokens/s, compiles,
bandwidth), `transformers.generate` on identical weights when installed, the
SFT train step (tokens/s, MFU against the measured peak), the GRPO step, and
the SRL similarity reward against the decode that produced its inputs.
Peers and ours are timed interleaved; ratios are peer time / our time.
"""

import json
import os
import platform
import statistics
import tempfile
import time

from absl import app, flags

from launch import common

_OUT = flags.DEFINE_string("out", None, "Output JSON path.")
_QUICK = flags.DEFINE_bool("quick", False, "Tiny shapes (seconds), for tests.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Interleaved timing repeats (median reported).")
flags.mark_flags_as_required(["out"])


def _cpu_name():
  try:
    for line in open("/proc/cpuinfo"):
      if line.startswith("model name"):
        return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor()


def _best(fn, n=3):
  times = []
  for _ in range(n):
    t = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t)
  return min(times)


def measure_peak(quick):
  import jax
  import jax.numpy as jnp
  n = 512 if quick else 2048
  a = jnp.ones((n, n), jnp.float32)
  f = jax.jit(lambda x: x @ x)
  f(a).block_until_ready()
  dt = _best(lambda: f(a).block_until_ready(), 5)
  gflops = 2 * n ** 3 / dt / 1e9
  m = 1 << (22 if quick else 26)
  x = jnp.ones((m,), jnp.float32)
  g = jax.jit(lambda v: v + 1.0, donate_argnums=0)
  x = g(x)
  x.block_until_ready()
  t = time.perf_counter()
  for _ in range(5):
    x = g(x)
  x.block_until_ready()
  gbs = 2 * 4 * m * 5 / (time.perf_counter() - t) / 1e9
  return gflops, gbs


def _hf_generate_fn(params, cfg, batch, prompt_len, new_tokens, greedy):
  try:
    import torch
    import transformers
  except ImportError:
    return None
  from jaxrl_post.model import hf
  d = tempfile.mkdtemp()
  hf.export_hf(params, cfg, d)
  model = transformers.AutoModelForCausalLM.from_pretrained(d, torch_dtype=torch.float32)
  model.eval()
  ids = torch.randint(3, cfg.vocab_size, (batch, prompt_len))

  def run():
    with torch.no_grad():
      model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens,
                     min_new_tokens=new_tokens, do_sample=not greedy,
                     temperature=1.0 if not greedy else None, top_p=None, top_k=0 if not greedy else None,
                     pad_token_id=0, eos_token_id=None)
  return run


def bench_rollout(preset, batch, prompt_len, new_tokens, greedy, repeats, peak_bw):
  import jax
  import numpy as np
  from jaxrl_post import model as M
  from jaxrl_post import sampling as S
  cfg = M.get_preset(preset)
  params = M.init_params(cfg, jax.random.key(0))
  sc = S.SamplingConfig(max_new_tokens=new_tokens, stop_ids=())
  sampler = S.Sampler(cfg, sc)
  rng = np.random.default_rng(0)
  tokens = rng.integers(3, cfg.vocab_size, (batch, prompt_len)).astype(np.int32)
  mask = np.ones_like(tokens, bool)
  temp = 0.0 if greedy else 1.0

  def ours():
    jax.block_until_ready(sampler.generate(params, tokens, mask, jax.random.key(1), temp))

  ours()
  # Prefill alone: the same kernel with one new token.
  pre = S.Sampler(cfg, S.SamplingConfig(max_new_tokens=1))
  run_pre = lambda: jax.block_until_ready(pre.generate(params, tokens, mask, jax.random.key(1), temp))
  run_pre()
  hf_run = _hf_generate_fn(params, cfg, batch, prompt_len, new_tokens, greedy)
  if hf_run is not None:
    hf_run()
  t_ours, t_hf, t_pre = [], [], []
  for _ in range(repeats):
    t_ours.append(_best(ours, 1))
    t_pre.append(_best(run_pre, 1))
    if hf_run is not None:
      t_hf.append(_best(hf_run, 1))
  total = statistics.median(t_ours)
  prefill = statistics.median(t_pre)
  decode = max(total - prefill, 1e-9)
  weight_bytes = sum(x.nbytes for x in jax.tree.leaves(params))
  cache_bytes = 2 * cfg.num_layers * batch * cfg.num_kv_heads * (prompt_len + new_tokens) * cfg.head_dim * 4
  bw = (weight_bytes + cache_bytes) * new_tokens / decode / 1e9
  row = {"preset": preset, "batch": batch, "prompt_len": prompt_len, "new_tokens": new_tokens,
         "sampling": "greedy" if greedy else "temperature 1",
         "decode_tokens_per_sec": batch * new_tokens / decode,
         "prefill_tokens_per_sec": batch * prompt_len / prefill,
         "end_to_end_tokens_per_sec": batch * new_tokens / total,
         "compiles": sampler.num_traces, "bandwidth_gbs": bw,
         "bandwidth_fraction_of_copy": bw / peak_bw if peak_bw else None,
         "hf_decode_tokens_per_sec": None, "ratio_vs_hf": None}
  if t_hf:
    hf_total = statistics.median(t_hf)
    row["hf_decode_tokens_per_sec"] = batch * new_tokens / hf_total
    row["ratio_vs_hf"] = hf_total / total  # prefill included on both sides
  return row


def bench_train(preset, batch, seq_len, peak, repeats):
  import jax
  import numpy as np
  from jaxrl_post import model as M
  from jaxrl_post import sharding as shd
  from jaxrl_post.hparams import OptimHParams
  from jaxrl_post.trainers import sft
  from jaxrl_post.trainers import state as S
  cfg = M.get_preset(preset, max_seq_len=max(seq_len, 128))
  mesh = shd.make_mesh(shd.MeshConfig(1, -1, 1))
  opt = S.make_optimizer(OptimHParams(), 100)
  _, sh = S.state_shardings(cfg, opt, mesh)
  state = S.init_state(cfg, opt, 0, sh)
  traces = []

  def counted(st, b):
    traces.append(1)
    return sft.make_train_step(cfg, opt)(st, b)

  step = jax.jit(counted, in_shardings=(sh, shd.batch_sharding(mesh)), out_shardings=(sh, None),
                 donate_argnums=0)
  rng = np.random.default_rng(0)
  batch_np = {"tokens": rng.integers(3, cfg.vocab_size, (batch, seq_len)).astype(np.int32),
              "targets": rng.integers(3, cfg.vocab_size, (batch, seq_len)).astype(np.int32),
              "positions": np.tile(np.arange(seq_len, dtype=np.int32), (batch, 1)),
              "segment_ids": np.ones((batch, seq_len), np.int32),
              "weights": np.ones((batch, seq_len), np.float32)}
  b = shd.shard_batch(batch_np, mesh)
  state, m = step(state, b)
  jax.block_until_ready(m)
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    state, m = step(state, b)
    jax.block_until_ready(m)
    times.append(time.perf_counter() - t)
  dt = statistics.median(times)
  tokens = batch * seq_len
  n = cfg.num_params()
  attn = 6 * cfg.num_layers * seq_len * cfg.num_heads * cfg.head_dim  # per token, fwd+bwd
  flops = (6 * n + attn) * tokens
  return {"preset": preset, "batch": batch, "seq_len": seq_len, "tokens_per_sec": tokens / dt,
          "step_sec": dt, "mfu": flops / dt / (peak * 1e9), "compiles": len(traces)}


def bench_grpo(preset, prompts, samples, new_tokens, repeats):
  import jax
  import numpy as np
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
  rc = grpo.RLStepConfig(hp=hp, sampling=S.SamplingConfig(max_new_tokens=new_tokens, stop_ids=()))
  mesh = shd.make_mesh(shd.MeshConfig(1, -1, 1))
  opt = St.make_optimizer(OptimHParams(learning_rate=1e-5), 100)
  _, sh = St.state_shardings(cfg, opt, mesh)
  state = St.init_state(cfg, opt, 0, sh)
  traces = []

  def counted(st, b):
    traces.append(1)
    return grpo.make_rl_step(cfg, rc, opt)(st, b)

  step = jax.jit(counted, in_shardings=(sh, None), out_shardings=(sh, None), donate_argnums=0)
  ex = gp24.Gp24Task().examples("train", prompts, seed=0)
  ids = [[tok.bos_id, *tok.encode(e.prompt)] for e in ex]
  tokens, mask = S.pad_prompts(ids, 0, length=32 if max(map(len, ids)) <= 32 else None)
  batch = {"prompt_tokens": tokens, "prompt_mask": mask,
           "reward": R.weighted_sum(task=(R.gp24_reward(ex, R.CharTable.from_tokenizer(tok, cfg.vocab_size)), 1.0))}
  state, m = step(state, batch)
  jax.block_until_ready(m)
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    state, m = step(state, batch)
    jax.block_until_ready(m)
    times.append(time.perf_counter() - t)
  return {"preset": preset, "prompts": prompts, "samples": samples, "new_tokens": new_tokens,
          "prompt_len": int(tokens.shape[1]), "step_sec": statistics.median(times),
          "compiles": len(traces), "trl_step_sec": None, "ratio_vs_trl": None}


def bench_similarity(pairs, length, repeats):
  import jax
  import jax.numpy as jnp
  import numpy as np
  from jaxrl_post.rewards import sequence_ratio
  rng = np.random.default_rng(0)
  a = jnp.asarray(rng.integers(0, 30, (pairs, length)))
  b = jnp.asarray(rng.integers(0, 30, (pairs, length)))
  n = jnp.full((pairs,), length)
  f = jax.jit(sequence_ratio)
  f(a, n, b, n).block_until_ready()
  dt = statistics.median(_best(lambda: f(a, n, b, n).block_until_ready(), 1) for _ in range(repeats))
  return {"pairs": pairs, "length": length, "sec": dt}


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  common.init_runtime()
  import jax
  q = _QUICK.value
  r = _REPEATS.value
  peak, bw = measure_peak(q)
  out = {"machine": {"cpu": _cpu_name(), "devices": jax.device_count(), "jax": jax.__version__},
         "matmul_peak_gflops": peak, "copy_bandwidth_gbs": bw, "rollout": [], "train": [], "grpo": []}
  if q:
    shapes = [("nano", 4, 16, 8, True), ("nano", 4, 16, 8, False)]
  else:
    shapes = [("tiny", b, 32, 64, g) for b in (8, 32) for g in (False, True)] + [("small", 32, 32, 64, False)]
  for preset, b, p, n, g in shapes:
    row = bench_rollout(preset, b, p, n, g, r, bw)
    out["rollout"].append(row)
    print(json.dumps(row))
  out["train"].append(bench_train("nano" if q else "small", 8 if q else 32, 32 if q else 128, peak, r))
  print(json.dumps(out["train"][-1]))
  out["grpo"].append(bench_grpo("nano" if q else "tiny", 2 if q else 8, 2 if q else 4, 8 if q else 32, r))
  print(json.dumps(out["grpo"][-1]))
  sim = bench_similarity(16 if q else 256, 16 if q else 64, r)
  dec = next((x for x in out["rollout"] if x["batch"] == (4 if q else 32) and x["sampling"] != "greedy"), None)
  sim["decode_sec_same_tokens"] = (sim["pairs"] * sim["length"] / dec["decode_tokens_per_sec"]) if dec else None
  out["srl_similarity"] = sim
  print(json.dumps(sim))
  os.makedirs(os.path.dirname(os.path.abspath(_OUT.value)), exist_ok=True)
  with open(_OUT.value, "w") as f:
    json.dump(out, f, indent=1)
  print(_OUT.value)


if __name__ == "__main__":
  app.run(main)
