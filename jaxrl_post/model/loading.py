"""Resolves a model spec to (config, tokenizer, params), whatever its format.

A spec is one of:
  * `workdir[:step]`   a jaxrl_post training run (newest good snapshot by default),
  * a Hugging Face directory (config.json + *.safetensors; its tokenizer.json
    or tokenizer.model),
  * a `.gguf` file (llama / qwen2 architecture; its BPE tokenizer and chat
    template from the metadata),
  * `preset:<name>`    a randomly initialised preset with the character tokenizer.
"""

from __future__ import annotations

import json
import os

import jax

from jaxrl_post.model.config import ModelConfig, get_preset
from jaxrl_post.model.transformer import init_params


class ModelSpecError(FileNotFoundError):
  """A model spec that names nothing loadable (the launch tools turn it into a usage error)."""


def split_step(spec: str) -> tuple[str, int | None]:
  """`path[:step]` -> (path, step or None)."""
  if ":" in spec and spec.rsplit(":", 1)[1].isdigit():
    path, step = spec.rsplit(":", 1)
    return path, int(step)
  return spec, None


def is_workdir(path: str) -> bool:
  return os.path.exists(os.path.join(path, "model_config.json"))


def load_workdir(workdir: str, step: int | None = None):
  """(cfg, tokenizer, params, step) of a jaxrl_post run's snapshot."""
  from jaxrl_post import checkpoint, tokenizers
  if not is_workdir(workdir):
    raise ModelSpecError(f"{workdir}: no model_config.json (not a jaxrl_post workdir)")
  with open(os.path.join(workdir, "model_config.json")) as f:
    cfg = ModelConfig.from_dict(json.load(f))
  tokenizer = tokenizers.load_tokenizer(os.path.join(workdir, "tokenizer"))
  params, step = checkpoint.load_params(os.path.join(workdir, "checkpoints"), step)
  return cfg, tokenizer, params, step


def load_model(spec: str, *, seed: int = 0):
  """(cfg, tokenizer, params, description) for any supported spec."""
  if spec.startswith("preset:"):
    from jaxrl_post.tokenizers import CharTokenizer
    tok = CharTokenizer()
    cfg = get_preset(spec.split(":", 1)[1])
    cfg = cfg.replace(vocab_size=max(cfg.vocab_size, tok.vocab_size))
    return cfg, tok, init_params(cfg, jax.random.key(seed)), f"random {spec}"
  path, step = split_step(spec)
  if not os.path.exists(path):
    raise ModelSpecError(f"cannot load {spec!r}: {path} does not exist")
  if path.endswith(".gguf"):
    from jaxrl_post.model import gguf
    params, cfg, tok = gguf.import_gguf(path)
    return cfg, tok, params, f"gguf {path}"
  if os.path.isdir(path) and os.path.exists(os.path.join(path, "config.json")) and not is_workdir(path):
    from jaxrl_post.model import hf
    params, cfg = hf.import_hf(path)
    tok = hf.load_hf_tokenizer(path)
    return cfg, tok, params, f"hf {path}"
  if is_workdir(path):
    cfg, tok, params, got = load_workdir(path, step)
    return cfg, tok, params, f"{path} step {got}"
  raise ModelSpecError(
      f"cannot load {spec!r}: not a jaxrl_post workdir, HF directory, .gguf file or preset:<name>")
