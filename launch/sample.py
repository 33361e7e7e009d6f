"""Samples completions through THE rollout kernel.

  python -m launch.sample --init_from=runs/gp24_sft --prompt="Cards: ..." --num_samples=4
  python -m launch.sample --init_from=preset:nano --prompt=hello --json
  python -m launch.sample --init_from=model.gguf --prompt="The capital of France is" \
      --temperature=0 --max_new_tokens=8

`--init_from` takes `workdir[:step]`, an HF directory, a `.gguf` file or
`preset:<name>` (random weights). With `--json` one object per sample is
printed: {"text", "tokens", "logprobs"} (log-probs under the sampling
distribution used).

BOS is prepended only when the tokenizer asks for it (`add_bos`: Llama-3
yes, SmolLM2 / Qwen2 no; the char / sentencepiece tokenizers always).
`--chat` wraps the prompt in the model's own chat template (e.g. SmolLM2's,
with its default system prompt unless `--system` is given), or ChatML for
a tokenizer without one.
"""

import json
import sys

from absl import app, flags

from launch import common
from jaxrl_post.tokenizers.base import prompt_ids

_INIT = flags.DEFINE_string("init_from", None, "workdir[:step] | HF dir | file.gguf | preset:<name>")
_PROMPT = flags.DEFINE_string("prompt", None, "Prompt text.")
_MAX_NEW = flags.DEFINE_integer("max_new_tokens", 64, "Tokens to generate per sample.")
_TEMP = flags.DEFINE_float("temperature", 1.0, "Sampling temperature; 0 = greedy.")
_TOP_P = flags.DEFINE_float("top_p", 1.0, "Nucleus mass in (0, 1].")
_TOP_K = flags.DEFINE_integer("top_k", 0, "Keep the k most likely tokens (0 = off).")
_N = flags.DEFINE_integer("num_samples", 1, "Samples for the prompt.")
_SEED = flags.DEFINE_integer("seed", 0, "Sampling seed.")
_JSON = flags.DEFINE_bool("json", False, "One JSON object per sample.")
_CHAT = flags.DEFINE_bool("chat", False, "Wrap the prompt in the model's chat template "
                          "(imported models; ChatML when the tokenizer has none).")
_SYSTEM = flags.DEFINE_string("system", None, "System prompt for --chat (default: the "
                              "template's own, if any).")
flags.mark_flags_as_required(["init_from", "prompt"])


def _validate():
  if _MAX_NEW.value <= 0:
    raise app.UsageError("--max_new_tokens must be > 0")
  if _TEMP.value < 0:
    raise app.UsageError("--temperature must be >= 0")
  if not 0 < _TOP_P.value <= 1:
    raise app.UsageError("--top_p must be in (0, 1]")
  if _TOP_K.value < 0 or _N.value < 1:
    raise app.UsageError("--top_k must be >= 0 and --num_samples >= 1")
  if _SYSTEM.value is not None and not _CHAT.value:
    raise app.UsageError("--system needs --chat")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  _validate()
  common.init_runtime()
  import jax
  from jaxrl_post import sampling as S
  from jaxrl_post.model import loading

  try:
    cfg, tok, params, desc = loading.load_model(_INIT.value, seed=_SEED.value)
  except loading.ModelSpecError as e:
    raise app.UsageError(f"--init_from: {e}") from e
  text = _PROMPT.value
  if _CHAT.value:
    from jaxrl_post.model import hf
    text = hf.chat_prompt(text, system=_SYSTEM.value, tokenizer=tok)
  ids = prompt_ids(tok, text)
  tokens, mask = S.pad_prompts([ids], tok.pad_id)
  tokens, mask = S.repeat_prompts(tokens, mask, _N.value)
  cfg = cfg.replace(max_seq_len=max(cfg.max_seq_len, tokens.shape[1] + _MAX_NEW.value))
  sc = S.SamplingConfig(max_new_tokens=_MAX_NEW.value, top_k=_TOP_K.value,
                        stop_ids=(tok.eos_id,), pad_id=tok.pad_id)
  r = S.Sampler(cfg, sc).generate(params, tokens, mask, jax.random.key(_SEED.value),
                                  _TEMP.value, _TOP_P.value)
  r = jax.device_get(r)
  if not _JSON.value:
    print(f"# {desc}", file=sys.stderr)
  for i in range(_N.value):
    n = int(r.lengths[i])
    out_ids = [int(t) for t in r.tokens[i, :n]]
    completion = tok.decode(out_ids)
    if _JSON.value:
      print(json.dumps({"text": completion, "tokens": out_ids,
                        "logprobs": [float(x) for x in r.logprobs[i, :n]]}))
    else:
      print(f"--- sample {i} ({n} tokens{'' if r.finished[i] else ', truncated'})")
      print(text + completion)


if __name__ == "__main__":
  app.run(main)
