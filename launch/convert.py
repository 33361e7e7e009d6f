"""Converts a pretrained model between formats.

  python -m launch.convert --src=<HF dir | file.gguf | workdir[:step]> --dst=<dir> \
      --dst_format=jaxrl|hf

Sources: a Hugging Face directory (LlamaForCausalLM / Qwen2ForCausalLM,
config.json + safetensors, single or sharded), a llama / qwen2 GGUF file, or
a jaxrl_post directory (one written by this tool, or a training run: its
newest good snapshot, or `:step`), e.g. to export a fine-tuned model to HF.

`--dst_format=hf` writes config.json + model.safetensors (float32) +
tokenizer.json / tokenizer_config.json that `transformers` loads.

`--dst_format=jaxrl` writes a directory that `--init_from` (training,
`launch.sample`, `launch.evaluate`) and `loading.load_model` accept:
  dst/model_config.json            our ModelConfig
  dst/tokenizer/                   the tokenizer (`tokenizers.load_tokenizer`)
  dst/checkpoints/0/state          Orbax PyTree {"params": params} (step 0),
  dst/checkpoints/0/meta           JSON {"source": ..., "format": ...}
(the same layout as a training run's snapshot; `checkpoint.load_params`
reads it). It is a model to start from, not a run to resume.

Prints one JSON line: {"src", "dst", "dst_format", "num_params", "seconds"}.
"""

import json
import os
import sys
import time

from absl import app, flags

from launch import common

_SRC = flags.DEFINE_string("src", None, "HF model directory, .gguf file or jaxrl_post "
                           "workdir[:step].")
_DST = flags.DEFINE_string("dst", None, "Output directory.")
_FORMAT = flags.DEFINE_enum("dst_format", "jaxrl", ["jaxrl", "hf"], "Output format.")
_ARCH = flags.DEFINE_enum("architecture", "auto", ["auto", "Qwen2ForCausalLM", "LlamaForCausalLM"],
                          "HF architecture for --dst_format=hf (auto: Qwen2 iff qkv bias).")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Allow a non-empty --dst.")
flags.mark_flags_as_required(["src", "dst"])


def _validate() -> str:
  """Checks the flags and the source's config (cheap); returns the source kind."""
  from jaxrl_post.model import loading
  src, dst = _SRC.value, _DST.value
  path, step = loading.split_step(src)
  if not os.path.exists(path):
    raise app.UsageError(f"--src={src}: no such file or directory")
  if loading.is_workdir(path):
    kind = "jaxrl"
  elif step is not None:
    raise app.UsageError(f"--src={src}: a :step suffix needs a jaxrl_post workdir")
  elif os.path.isfile(src):
    if not src.endswith(".gguf"):
      raise app.UsageError(f"--src={src}: a file source must be a .gguf file")
    kind = "gguf"
  elif os.path.exists(os.path.join(src, "config.json")):
    kind = "hf"
  else:
    raise app.UsageError(f"--src={src}: a directory source needs config.json "
                         "(a Hugging Face model directory) or model_config.json (jaxrl_post)")
  src = path
  if os.path.abspath(src) == os.path.abspath(dst):
    raise app.UsageError("--dst must differ from --src")
  if os.path.isfile(dst):
    raise app.UsageError(f"--dst={dst} is a file")
  if os.path.isdir(dst) and os.listdir(dst) and not _OVERWRITE.value:
    raise app.UsageError(f"--dst={dst} is not empty (pass --overwrite)")
  try:  # the config is read (and rejected) before any weight is
    if kind == "hf":
      from jaxrl_post.model import hf
      with open(os.path.join(src, "config.json")) as f:
        hf.config_from_hf(json.load(f))
    elif kind == "jaxrl":
      from jaxrl_post.model import ModelConfig
      with open(os.path.join(src, "model_config.json")) as f:
        ModelConfig.from_dict(json.load(f))
    else:
      from jaxrl_post.model import gguf
      f = gguf.GGUFFile(src)  # the header only: the tensors are not read here
      gguf.config_from_gguf(f.metadata, f.tensors)
  except (ValueError, KeyError, TypeError, json.JSONDecodeError) as e:
    raise app.UsageError(f"--src={src}: {e}") from e
  return kind


def _load(kind: str):
  """(params, cfg, tokenizer or None) of the source.

  Imported parameters go to the (first) device one by one as they are
  assembled, so the host buffers are freed as the import goes: the Orbax
  save then adds one copy, not two (SmolLM2-135M: peak ~2x float32 size
  instead of ~2.8x).
  """
  import jax
  from jaxrl_post.model import gguf, hf, loading
  place = lambda path, x: jax.device_put(x)  # noqa: E731
  if kind == "gguf":
    return gguf.import_gguf(_SRC.value, shardings=place)
  if kind == "jaxrl":
    from jaxrl_post import checkpoint, tokenizers
    from jaxrl_post.model import ModelConfig
    path, step = loading.split_step(_SRC.value)
    with open(os.path.join(path, "model_config.json")) as f:
      cfg = ModelConfig.from_dict(json.load(f))
    params, _ = checkpoint.load_params(os.path.join(path, "checkpoints"), step)
    tok = None
    if os.path.exists(os.path.join(path, "tokenizer", "tokenizer.json")):
      tok = tokenizers.load_tokenizer(os.path.join(path, "tokenizer"))
    return params, cfg, tok
  params, cfg = hf.import_hf(_SRC.value, shardings=place)
  try:
    tok = hf.load_hf_tokenizer(_SRC.value)
  except (FileNotFoundError, ValueError) as e:
    print(f"# no usable tokenizer in {_SRC.value} ({e}); converting weights only",
          file=sys.stderr)
    tok = None
  return params, cfg, tok


def write_jaxrl(params, cfg, tok, dst: str, source: str) -> None:
  """The jaxrl layout described in the module docstring."""
  from jaxrl_post import checkpoint
  os.makedirs(dst, exist_ok=True)
  with open(os.path.join(dst, "model_config.json"), "w") as f:
    json.dump(cfg.to_dict(), f, indent=1)
  if tok is not None:
    tok.save(os.path.join(dst, "tokenizer"))
  ckpt = checkpoint.Checkpointer(os.path.join(dst, "checkpoints"))
  try:
    ckpt.save(0, {"params": params}, meta={"source": source, "format": "jaxrl_post params"})
  finally:
    ckpt.close()


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  kind = _validate()
  common.init_runtime()
  t0 = time.perf_counter()
  params, cfg, tok = _load(kind)
  dst = _DST.value
  if _FORMAT.value == "hf":
    from jaxrl_post.model import hf
    hf.export_hf(params, cfg, dst, architecture=_ARCH.value, tokenizer=tok)
  else:
    write_jaxrl(params, cfg, tok, dst, os.path.abspath(_SRC.value))
  print(json.dumps({"src": _SRC.value, "dst": dst, "dst_format": _FORMAT.value,
                    "num_params": cfg.num_params(),
                    "seconds": round(time.perf_counter() - t0, 2)}))


if __name__ == "__main__":
  app.run(main)
