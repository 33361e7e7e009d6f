r"""Benchmarks of THE rollout kernel and the train step (DESIGN.md section 3).

  python -m launch.bench --out=B.json [--quick] [--only=grpo,...] [--notrl] [--nohf]

Every figure is measured in this run, on the machine it reports:

* `matmul_peak_gflops`: best of several float32 2048^2 jitted matmuls.
* `copy_bandwidth_gbs`: best of several jitted copies of a 64 MiB array
  (bytes read + bytes written over time).
* `rollout`: `Sampler.generate` on the fixed bench shapes (`tiny`: batch 8
  and 32, prompt 32, 64 new tokens, EOS blocked so that every row runs to the
  end, temperature 1 and greedy; plus `small`). Ours and Hugging Face
  `generate` on identical weights (exported to a Qwen2 directory) are timed
  interleaved, several rounds, medians reported: this machine drifts by tens
  of percent over minutes and is shared, so only interleaved ratios mean
  much. `decode_tokens_per_sec` counts new tokens over the whole `generate`
  call (prefill included, as for the peer); `decode_only_tokens_per_sec`
  subtracts a separately timed prefill. `bandwidth_gbs` is the bytes of
  weights + KV cache that one decode step reads, times the steps, over the
  decode-only time. `floor_ms_per_step` is a jitted loop of only the decode
  step's dense matmuls (same shapes): the float32 compute floor of the step.
* `train`: the SFT train step (`jaxrl_post.trainers.sft.make_train_step`,
  AdamW) at `small`, batch 32 x 128; MFU = 6 N tokens / time / measured peak.
* `grpo`: our jitted GRPO step (rollout + gp24 reward + AdamW update) at
  `tiny`, 8 prompts x 4 samples x 32 new tokens, prompt 32; and, when `trl`
  is installed (and `--trl`), TRL's `GRPOTrainer` on CPU on the same initial
  weights, prompt ids, shape, reward and hyperparameters (`launch/
  bench_peers.py` lists what is matched), its steps interleaved with ours;
  after 2 warmup steps, `--rounds` steps each, medians: `ratio_vs_trl` =
  trl_step_sec / step_sec. Without trl the TRL fields are null.
  `model_flops` counts 2 N per rollout token and 6 N per update token (the
  train row's convention; each prompt counted once per group, as it runs);
  `mfu` = model_flops / step_sec / peak. `floor_sec` is the step's dense
  matmuls alone at this machine's measured rates (the decode's at
  `floor_ms_per_step` of its shape, prefill and update at the matmul peak):
  a lower bound of this work's step on this machine. `goal_sec` = trl_step_sec / 3
  (DESIGN.md section 4).

The process first applies `$JAXRL_POST_HOST_MALLOC` (`launch.common.
init_host_memory`, default "retain": glibc keeps freed memory and the CPU
client runs a computation on the calling thread, so XLA:CPU's per-step temp
buffer is not page-faulted in again every step; see `jaxrl_post.host_memory`).
It is process-wide, so TRL and `transformers` run under the same setting;
`machine.host_malloc` records it.

`--quick` runs the `nano` preset at tiny shapes in seconds (for the tests).
`--only=grpo` (any of rollout, train, grpo, similarity, comma-separated)
runs only those sections; the others' lists stay empty and are named under
`"skipped"`. The measured ceilings are always written.

  python -m launch.bench --out=B.json --only=grpo   # the GRPO row vs TRL
  python -m launch.bench --out=B.json --only=grpo --grpo_shapes=tiny:8x4x32,small:8x8x128
"""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import statistics
import tempfile
import time
from typing import Any, Callable

from absl import app, flags

from launch import bench_inputs, bench_peers, common

SECTIONS = ("rollout", "train", "grpo", "similarity")  # --only choices
GrpoShape = tuple[str, int, int, int]  # (preset, prompts, samples, new_tokens)
DEFAULT_GRPO_SHAPES: tuple[GrpoShape, ...] = (("tiny", 8, 4, 32),)  # DESIGN.md section 4

FLAGS = flags.FLAGS
flags.DEFINE_string("out", None, "Path of the JSON file to write.", required=True)
flags.DEFINE_bool("quick", False, "Nano preset, tiny shapes: seconds (for tests).")
flags.DEFINE_integer("rounds", 5, "Interleaved timing rounds per rollout row; timed "
                     "steps of the GRPO row (each side, after 2 warmup steps).")
flags.DEFINE_bool("hf", True, "Compare against transformers.generate if installed.")
flags.DEFINE_list("presets", ["tiny", "small"], "Rollout presets (ignored with --quick).")
flags.DEFINE_list("grpo_shapes", [f"{p}:{a}x{b}x{c}" for p, a, b, c in DEFAULT_GRPO_SHAPES],
                  "GRPO rows as preset:PROMPTSxSAMPLESxNEW_TOKENS (prompt 32; the first is "
                  "DESIGN.md's goal shape; more rows show how the ratio moves with the shape; "
                  "ignored with --quick).")
flags.DEFINE_bool("trl", True, "Compare the GRPO step against TRL's GRPOTrainer if installed.")
flags.DEFINE_list("only", [], "Run only these sections (any of: " + ",".join(SECTIONS) + "); "
                  "default all. Skipped sections are listed under \"skipped\" in the JSON.")

EOS = 2  # blocked: every row runs to the end


# --------------------------------------------------------------------------
# Timing helpers.
# --------------------------------------------------------------------------


def _timed(fn: Callable[[], Any]) -> float:
  """Wall time of fn() in seconds (fn must block until its result is ready)."""
  t0 = time.perf_counter()
  fn()
  return time.perf_counter() - t0


def _median(xs) -> float:
  return float(statistics.median(xs))


def cpu_model() -> str:
  """The CPU model name from /proc/cpuinfo (platform.processor() otherwise)."""
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or "unknown"


def matmul_peak_gflops(n: int = 2048, reps: int = 8) -> float:
  """Best float32 n x n jitted matmul rate, 2 n^3 / time."""
  import jax
  import jax.numpy as jnp
  a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
  b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
  f = jax.jit(jnp.dot)
  f(a, b).block_until_ready()
  best = min(_timed(lambda: f(a, b).block_until_ready()) for _ in range(reps))
  return 2 * n ** 3 / best / 1e9


def copy_bandwidth_gbs(mib: int = 64, reps: int = 8) -> float:
  """Best jitted copy rate of a float32 array of `mib` MiB: (read + write) / time."""
  import jax
  import jax.numpy as jnp
  x = jnp.ones((mib * 2 ** 18,), jnp.float32)
  f = jax.jit(lambda v: v + 1.0)
  f(x).block_until_ready()
  best = min(_timed(lambda: f(x).block_until_ready()) for _ in range(reps))
  return 2 * x.nbytes / best / 1e9


# --------------------------------------------------------------------------
# Hugging Face peer (identical weights).
# --------------------------------------------------------------------------


def hf_available() -> bool:
  return (importlib.util.find_spec("torch") is not None
          and importlib.util.find_spec("transformers") is not None)


def _export_hf(params, cfg, directory: str) -> None:
  """Writes params as a HF Qwen2 directory (project exporter if present)."""
  if importlib.util.find_spec("jaxrl_post.model.hf") is not None:
    from jaxrl_post.model import hf
    if hasattr(hf, "export_hf"):
      hf.export_hf(params, cfg, directory)
      return
  _export_qwen2_minimal(params, cfg, directory)


def _export_qwen2_minimal(params, cfg, directory: str) -> None:
  """A minimal Qwen2 export: config.json + model.safetensors (float32).

  Weight mapping (PREAMBLE): q_proj.weight = q[l].reshape(D, H Dh).T,
  o_proj.weight = o[l].reshape(H Dh, D).T, gate/up/down = .T of ours.
  """
  import numpy as np
  from safetensors.numpy import save_file
  if cfg.rope_scaling is not None or cfg.head_dim * cfg.num_heads != cfg.hidden_size:
    raise ValueError("the minimal Qwen2 exporter needs head_dim * num_heads == "
                     "hidden_size and no rope_scaling")
  p = {k: np.asarray(v, np.float32) for k, v in params.items() if k != "layers"}
  lp = {k: np.asarray(v, np.float32) for k, v in params["layers"].items()}
  d = cfg.hidden_size
  t = {"model.embed_tokens.weight": p["embed"], "model.norm.weight": p["final_norm"]}
  if not cfg.tie_embeddings:
    t["lm_head.weight"] = p["lm_head"].T
  for l in range(cfg.num_layers):
    pre = f"model.layers.{l}."
    t[pre + "input_layernorm.weight"] = lp["attn_norm"][l]
    t[pre + "post_attention_layernorm.weight"] = lp["mlp_norm"][l]
    for name in ("q", "k", "v"):
      t[pre + f"self_attn.{name}_proj.weight"] = lp[name][l].reshape(d, -1).T
      if cfg.qkv_bias:
        t[pre + f"self_attn.{name}_proj.bias"] = lp[f"{name}_bias"][l].reshape(-1)
    t[pre + "self_attn.o_proj.weight"] = lp["o"][l].reshape(-1, d).T
    t[pre + "mlp.gate_proj.weight"] = lp["gate"][l].T
    t[pre + "mlp.up_proj.weight"] = lp["up"][l].T
    t[pre + "mlp.down_proj.weight"] = lp["down"][l].T
  os.makedirs(directory, exist_ok=True)
  save_file({k: np.ascontiguousarray(v) for k, v in t.items()},
            os.path.join(directory, "model.safetensors"), metadata={"format": "pt"})
  config = {
      "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2",
      "vocab_size": cfg.vocab_size, "hidden_size": d,
      "intermediate_size": cfg.intermediate_size,
      "num_hidden_layers": cfg.num_layers, "num_attention_heads": cfg.num_heads,
      "num_key_value_heads": cfg.num_kv_heads, "hidden_act": "silu",
      "max_position_embeddings": cfg.max_seq_len, "rms_norm_eps": cfg.rms_norm_eps,
      "rope_theta": cfg.rope_theta, "tie_word_embeddings": cfg.tie_embeddings,
      "use_sliding_window": False, "torch_dtype": "float32",
      "bos_token_id": 1, "eos_token_id": EOS, "pad_token_id": 0,
  }
  with open(os.path.join(directory, "config.json"), "w") as f:
    json.dump(config, f, indent=1)


class HFPeer:
  """`Qwen2ForCausalLM.generate` on our weights, every row running N tokens.

  Sampling uses transformers' default filters (top_k=50): here `top_k=0`
  (the full distribution, as ours samples) made `generate` about 4x slower,
  so the peer gets its faster setting.
  """

  def __init__(self, params, cfg, directory: str):
    import torch
    import transformers
    _export_hf(params, cfg, directory)
    self.torch = torch
    self.model = transformers.Qwen2ForCausalLM.from_pretrained(
        directory, torch_dtype=torch.float32).eval()

  def generate(self, tokens, new_tokens: int, greedy: bool, seed: int) -> None:
    torch = self.torch
    ids = torch.as_tensor(tokens, dtype=torch.long)
    torch.manual_seed(seed)
    with torch.no_grad():
      self.model.generate(
          ids, attention_mask=torch.ones_like(ids), do_sample=not greedy,
          temperature=None if greedy else 1.0, max_new_tokens=new_tokens,
          min_new_tokens=new_tokens, pad_token_id=0, eos_token_id=EOS)


# --------------------------------------------------------------------------
# Rollout rows.
# --------------------------------------------------------------------------


def decode_bytes_per_step(cfg, batch: int, cache_slots: int) -> int:
  """Bytes one decode step reads: every weight once + the whole KV cache."""
  import numpy as np
  w = cfg.num_params() * np.dtype(cfg.param_dtype).itemsize
  kv = (2 * cfg.num_layers * batch * cfg.num_kv_heads * cache_slots * cfg.head_dim
        * np.dtype(cfg.dtype).itemsize)
  return int(w + kv)


def dense_floor_ms_per_step(cfg, batch: int, steps: int) -> float:
  """ms per step of a jitted loop of only the decode step's matmuls (same shapes)."""
  import jax
  import jax.numpy as jnp
  D, F, V = cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size
  H, KV, Dh, L = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.num_layers
  dt = jnp.dtype(cfg.dtype)
  ks = jax.random.split(jax.random.key(0), 5)
  w = {"qkv": jax.random.normal(ks[0], (L, D, (H + 2 * KV) * Dh), dt) * 0.02,
       "o": jax.random.normal(ks[1], (L, H * Dh, D), dt) * 0.02,
       "gu": jax.random.normal(ks[2], (L, D, 2 * F), dt) * 0.02,
       "down": jax.random.normal(ks[3], (L, F, D), dt) * 0.02,
       "head": jax.random.normal(ks[4], (D, V), dt) * 0.02}
  ws = {k: tuple(v[l] for l in range(L)) if k != "head" else v for k, v in w.items()}

  @jax.jit
  def loop(ws, x):
    def body(_, x):
      for l in range(L):
        qkv = jnp.dot(x, ws["qkv"][l])
        x = x + jnp.dot(qkv[:, :H * Dh], ws["o"][l])
        gu = jnp.dot(x, ws["gu"][l])
        x = x + jnp.dot(gu[:, :F] * gu[:, F:], ws["down"][l])
      return x + jnp.dot(x, ws["head"])[:, :D] * 1e-3
    return jax.lax.fori_loop(0, steps, body, x)

  x = jnp.ones((batch, D), dt)
  loop(ws, x).block_until_ready()
  best = min(_timed(lambda: loop(ws, x).block_until_ready()) for _ in range(3))
  return best / steps * 1e3


def rollout_rows(preset: str, batches, prompt_len: int, new_tokens: int,
                 rounds: int, use_hf: bool, quick: bool) -> list[dict]:
  """Measures one preset at each batch size, temperature 1 and greedy."""
  import jax
  import numpy as np
  from jaxrl_post import model as M
  from jaxrl_post import sampling as S
  cfg = M.get_preset(preset)
  params = M.init_params(cfg, jax.random.key(0))
  sc = S.SamplingConfig(max_new_tokens=new_tokens, block_ids=(EOS,))
  peer = None
  hf_error = None
  tmp = tempfile.TemporaryDirectory()
  if use_hf and hf_available():
    try:
      peer = HFPeer(params, cfg, tmp.name)
    except Exception as e:  # a peer that cannot run must not stop the bench
      hf_error = f"{type(e).__name__}: {e}"
  rows = []
  for batch in batches:
    rng = np.random.default_rng(batch)
    tokens = rng.integers(3, cfg.vocab_size, (batch, prompt_len)).astype(np.int32)
    tokens[:, 0] = 1
    mask = np.ones((batch, prompt_len), bool)
    sampler = S.Sampler(cfg, sc)
    prefill = jax.jit(lambda p, t, m, r: S.prefill(p, cfg, sc, t, m, r))
    floor = dense_floor_ms_per_step(cfg, batch, new_tokens)
    for temperature in (1.0, 0.0):
      greedy = temperature == 0.0

      def ours(seed):
        return jax.block_until_ready(sampler.generate(
            params, tokens, mask, jax.random.key(seed), temperature))

      ours(0)  # compile (once for both temperatures)
      jax.block_until_ready(prefill(params, tokens, mask, jax.random.key(0)))
      if peer is not None:
        peer.generate(tokens, new_tokens, greedy, 0)  # warm up
      t_ours, t_pre, t_hf = [], [], []
      for r in range(rounds):
        t_ours.append(_timed(lambda: ours(r + 1)))
        t_pre.append(_timed(lambda: jax.block_until_ready(
            prefill(params, tokens, mask, jax.random.key(r)))))
        if peer is not None:
          t_hf.append(_timed(lambda: peer.generate(tokens, new_tokens, greedy, r)))
      gen, pre = _median(t_ours), _median(t_pre)
      dec = max(gen - pre, 1e-9)
      n_tok = batch * new_tokens
      hf = n_tok / _median(t_hf) if t_hf else None
      row = {
          "preset": preset, "batch": batch, "prompt_len": prompt_len,
          "new_tokens": new_tokens, "temperature": temperature,
          "decode_tokens_per_sec": n_tok / gen,
          "prefill_tokens_per_sec": batch * prompt_len / pre,
          "decode_only_tokens_per_sec": n_tok / dec,
          "compiles": sampler.num_traces,
          "bandwidth_gbs": decode_bytes_per_step(cfg, batch, prompt_len + new_tokens)
                           * new_tokens / dec / 1e9,
          "decode_ms_per_step": dec / new_tokens * 1e3,
          "floor_ms_per_step": floor,
          "hf_decode_tokens_per_sec": hf,
          "ratio_vs_hf": (_median(t_hf) / gen) if t_hf else None,
          "rounds": rounds,
      }
      if hf_error:
        row["hf_error"] = hf_error
      rows.append(row)
      print(json.dumps(row), flush=True)
  tmp.cleanup()
  return rows


# --------------------------------------------------------------------------
# Train rows.
# --------------------------------------------------------------------------


def train_row(preset: str, batch: int, seq_len: int, peak_gflops: float,
              reps: int) -> dict:
  """SFT train step throughput and MFU = 6 N tokens / time / peak."""
  import jax
  import jax.numpy as jnp
  import optax
  from jaxrl_post import model as M
  from jaxrl_post.trainers.sft import make_train_step
  from jaxrl_post.trainers.state import TrainState
  cfg = M.get_preset(preset)
  params = M.init_params(cfg, jax.random.key(0))
  opt = optax.adamw(1e-4)
  state = TrainState(step=jnp.int32(0), params=params, opt_state=opt.init(params),
                     rng=jax.random.key_data(jax.random.key(0)))
  traces = []

  def step(state, batch):
    traces.append(1)
    return make_train_step(cfg, opt)(state, batch)

  step = jax.jit(step, donate_argnums=0)
  toks = jax.random.randint(jax.random.key(1), (batch, seq_len + 1), 3, cfg.vocab_size)
  data = {"tokens": toks[:, :-1], "targets": toks[:, 1:],
          "positions": jnp.broadcast_to(jnp.arange(seq_len), (batch, seq_len)),
          "segment_ids": jnp.ones((batch, seq_len), jnp.int32),
          "weights": jnp.ones((batch, seq_len), jnp.float32)}
  state, m = step(state, data)
  jax.block_until_ready(m)
  times = []
  for _ in range(reps):
    t0 = time.perf_counter()
    state, m = step(state, data)
    jax.block_until_ready(m)
    times.append(time.perf_counter() - t0)
  t = _median(times)
  tokens = batch * seq_len
  row = {"preset": preset, "batch": batch, "seq_len": seq_len,
         "tokens_per_sec": tokens / t,
         "mfu": 6 * cfg.num_params() * tokens / t / (peak_gflops * 1e9),
         "compiles": len(traces), "step_sec": t,
         "step": "jaxrl_post.trainers.sft.make_train_step + optax.adamw"}
  print(json.dumps(row), flush=True)
  return row


# --------------------------------------------------------------------------
# Main.
# --------------------------------------------------------------------------


def grpo_model_flops(cfg, prompts: int, samples: int, prompt_len: int,
                     new_tokens: int) -> dict[str, int]:
  """Model FLOPs of one GRPO step, 2 N per rollout token and 6 N per update token.

  N = cfg.num_params() (the train row's MFU convention; attention's
  score and value products are not counted). As the step runs them: each
  prompt is prefilled once for its G samples, every row feeds `new_tokens`
  tokens to the decode, and the update's forward/backward sees each prompt
  once plus the first new_tokens - 1 completion tokens of every row (the
  last one is only a target).
  """
  n = cfg.num_params()
  rows = prompts * samples
  return {"prefill": 2 * n * prompts * prompt_len,
          "decode": 2 * n * rows * new_tokens,
          "update": 6 * n * (prompts * prompt_len + rows * (new_tokens - 1))}


def grpo_row(preset: str, prompts: int, samples: int, new_tokens: int, reps: int,
             peak_gflops: float, use_trl: bool = False, warmup: int = 2) -> dict:
  """One jitted GRPO step (rollout through the kernel + gp24 reward + update).

  Our step: `RLHParams` defaults (beta 0, one update per rollout, temperature
  1, group-std advantages), AdamW lr 1e-5; no stop id, so every completion
  is `new_tokens` long. Each prompt is prefilled once for its group and runs
  once through the update's forward (`forward_shared_prefix`); TRL repeats
  it per sample in both. The update's forward takes the weight products the
  rollout computed (`rl.reuse_rollout_activations`, on by default) where TRL
  recomputes them: `model_flops` (and so `mfu` and `floor_sec`) count the
  nominal work of a full forward, `xla_flops` what XLA says the compiled
  step executes. Prompts: the last 32 token ids of gp24 training
  prompts (the bench's prompt 32). Reward: the binary gp24 verifier, compiled
  into the step (1 iff the formula after `Answer:` uses the four card values
  once each and equals 24; on random weights it is 0 everywhere).

  `step_sec_alone`: median of `reps` steps after the compile. With `use_trl`
  (and trl importable), TRL's `GRPOTrainer` then runs `warmup + reps` steps
  on the same initial weights, prompts, shape and reward
  (`launch.bench_peers`), one of our steps between each two of TRL's;
  `step_sec` and `trl_step_sec` are the medians of the paired steps after
  the warmup, `ratio_vs_trl` = trl_step_sec / step_sec. Without TRL,
  `step_sec` = `step_sec_alone` and the TRL fields are null.
  """
  import jax
  from jaxrl_post.tasks import gp24
  from jaxrl_post.trainers import grpo
  work = bench_inputs.grpo_work(preset, prompts, samples, new_tokens)
  cfg, rc, opt, sh, oh = work.cfg, work.rc, work.optimizer, work.shardings, work.optim
  hp, state, batch, ex, tok = rc.hp, work.state, work.batch, work.examples, work.tokenizer
  tokens, mask = batch["prompt_tokens"], batch["prompt_mask"]
  init_params = jax.device_get(state.params) if use_trl else None  # the state is donated
  cost = jax.jit(grpo.make_rl_step(cfg, rc, opt)).lower(state, batch).compile().cost_analysis()
  xla_flops = (cost[0] if isinstance(cost, list) else cost).get("flops")
  traces = []

  def counted(st, b):
    traces.append(1)
    return grpo.make_rl_step(cfg, rc, opt)(st, b)

  step = jax.jit(counted, in_shardings=(sh, None), out_shardings=(sh, None), donate_argnums=0)
  holder = {"state": state}

  def once():
    holder["state"], m = step(holder["state"], batch)
    holder["metrics"] = jax.block_until_ready(m)

  once()
  alone = _median([_timed(once) for _ in range(reps)])
  flops = grpo_model_flops(cfg, prompts, samples, tokens.shape[1], new_tokens)
  peak = peak_gflops * 1e9
  floor_rollout = (flops["prefill"] / peak
                   + dense_floor_ms_per_step(cfg, prompts * samples, new_tokens)
                   * new_tokens / 1e3)
  floor_update = flops["update"] / peak
  row = {"preset": preset, "prompts": prompts, "samples": samples, "new_tokens": new_tokens,
         "prompt_len": tokens.shape[1], "step_sec": alone, "step_sec_alone": alone,
         "compiles": None, "trl_step_sec": None, "ratio_vs_trl": None,
         "completion_len_mean": None, "reward": "gp24 binary verifier (on device)",
         "beta": hp.beta, "model_flops": sum(flops.values()), "model_flops_parts": flops,
         "xla_flops": xla_flops, "reuse_rollout_activations": hp.reuse_rollout_activations,
         "floor_sec": floor_rollout + floor_update, "floor_rollout_sec": floor_rollout,
         "floor_update_sec": floor_update, "goal_sec": None}
  if use_trl and bench_peers.trl_available():
    paired: list[float] = []

    def gp24_host(completion_ids, prompt_index):  # the same rule, on the host
      return [float(gp24.verify_values(ex[i].meta["values"], tok.decode(c)))
              for c, i in zip(completion_ids, prompt_index)]

    try:
      with tempfile.TemporaryDirectory() as tmp:
        _export_hf(init_params, cfg, os.path.join(tmp, "hf"))
        peer = bench_peers.trl_grpo_step_sec(
            os.path.join(tmp, "hf"), [list(r[ok]) for r, ok in zip(tokens, mask)], gp24_host,
            vocab_size=cfg.vocab_size, samples=samples, new_tokens=new_tokens,
            beta=hp.beta, learning_rate=oh.learning_rate, adam_b1=oh.b1, adam_b2=oh.b2,
            weight_decay=oh.weight_decay, steps=reps, warmup=warmup,
            work_dir=os.path.join(tmp, "trl"), between_steps=lambda: paired.append(_timed(once)))
      row["step_sec"] = _median(paired[warmup:])
      row["step_secs"] = paired[warmup:]
      row.update(peer)
      row["ratio_vs_trl"] = peer["trl_step_sec"] / row["step_sec"]
      row["goal_sec"] = peer["trl_step_sec"] / 3
    except Exception as e:  # a peer that cannot run must not stop the bench
      row["trl_error"] = f"{type(e).__name__}: {e}"
  row["compiles"] = len(traces)
  row["completion_len_mean"] = float(holder["metrics"]["completion_len_mean"])
  row["mfu"] = row["model_flops"] / row["step_sec"] / peak
  print(json.dumps(row), flush=True)
  return row


def similarity_row(pairs: int, length: int, reps: int, decode_tps: float | None) -> dict:
  """SRL's sequence_ratio on `pairs` pairs against decoding the same tokens."""
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
  dt = _median([_timed(lambda: f(a, n, b, n).block_until_ready()) for _ in range(reps)])
  row = {"pairs": pairs, "length": length, "similarity_sec": dt,
         "decode_sec_same_tokens": pairs * length / decode_tps if decode_tps else None}
  print(json.dumps(row), flush=True)
  return row


def parse_grpo_shape(spec: str) -> GrpoShape:
  """`tiny:8x4x32` -> ("tiny", 8, 4, 32); ValueError naming the spec otherwise."""
  from jaxrl_post.model import PRESETS
  preset, _, dims = spec.partition(":")
  parts = dims.split("x")
  if preset not in PRESETS or len(parts) != 3 or not all(p.isdigit() and int(p) > 0
                                                          for p in parts):
    raise ValueError(f"grpo shape {spec!r}: want preset:PROMPTSxSAMPLESxNEW_TOKENS with a "
                     f"preset in {sorted(PRESETS)} and positive integers, e.g. tiny:8x4x32")
  return (preset, *map(int, parts))


def run(out: str, quick: bool, rounds: int, use_hf: bool, presets, use_trl: bool = True,
        only: tuple[str, ...] = (),
        grpo_shapes: tuple[GrpoShape, ...] = DEFAULT_GRPO_SHAPES,
        host_malloc: str = "system") -> dict:
  """Runs the benchmarks (all sections, or those in `only`) and writes `out`.

  host_malloc: what `common.init_host_memory` set up for this process
  (recorded; it applies to the peers in this process too)."""
  import jax
  sections = set(only or SECTIONS)
  result: dict[str, Any] = {
      "machine": {"cpu": cpu_model(), "devices": jax.device_count(),
                  "jax": jax.__version__, "cores": os.cpu_count(),
                  "load_avg": list(os.getloadavg()), "host_malloc": host_malloc},
  }
  if quick:
    result["matmul_peak_gflops"] = matmul_peak_gflops(n=256, reps=3)
    result["copy_bandwidth_gbs"] = copy_bandwidth_gbs(mib=4, reps=3)
  else:
    result["matmul_peak_gflops"] = matmul_peak_gflops()
    result["copy_bandwidth_gbs"] = copy_bandwidth_gbs()
  result["rollout"], result["train"], result["grpo"] = [], [], []
  if "rollout" in sections:
    if quick:
      result["rollout"] = rollout_rows("nano", (2,), 8, 4, rounds=1, use_hf=use_hf, quick=True)
    else:
      for preset in presets:
        result["rollout"] += rollout_rows(preset, (8, 32), 32, 64, rounds=rounds,
                                          use_hf=use_hf, quick=False)
  if "train" in sections:
    result["train"] = [train_row("nano", 2, 16, result["matmul_peak_gflops"], 1) if quick
                       else train_row("small", 32, 128, result["matmul_peak_gflops"], 3)]
  if "grpo" in sections:
    # GRPO step, and TRL's GRPOTrainer on the same work when installed.
    peak = result["matmul_peak_gflops"]
    result["grpo"] = ([grpo_row("nano", 2, 2, 8, 2, peak, use_trl=use_trl, warmup=1)] if quick
                      else [grpo_row(*shape, rounds, peak, use_trl=use_trl, warmup=2)
                            for shape in grpo_shapes])
  if "similarity" in sections:
    # SRL similarity reward vs the decode that produced its inputs (batch-32 row).
    dec = [r for r in result["rollout"] if r.get("temperature", 1.0) > 0]
    tps = dec[-1]["decode_tokens_per_sec"] if dec else None
    result["srl_similarity"] = similarity_row(16 if quick else 256, 16 if quick else 64,
                                              1 if quick else 3, tps)
  result["skipped"] = [s for s in SECTIONS if s not in sections]
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  with open(out, "w") as f:
    json.dump(result, f, indent=1)
  return result


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if FLAGS.rounds < 1:
    raise app.UsageError(f"--rounds={FLAGS.rounds} must be >= 1")
  bad = [s for s in FLAGS.only if s not in SECTIONS]
  if bad:
    raise app.UsageError(f"--only: unknown sections {bad}; known: {list(SECTIONS)}")
  try:
    shapes = tuple(parse_grpo_shape(s) for s in FLAGS.grpo_shapes)
  except ValueError as e:
    raise app.UsageError(f"--grpo_shapes: {e}") from e
  host_malloc = common.init_host_memory()  # before JAX's first computation
  run(FLAGS.out, FLAGS.quick, FLAGS.rounds, FLAGS.hf, FLAGS.presets, FLAGS.trl,
      tuple(FLAGS.only), shapes, host_malloc)


if __name__ == "__main__":
  app.run(main)
