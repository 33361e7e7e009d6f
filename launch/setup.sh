#!/usr/bin/env bash
# Creates .venv (CPU JAX) and installs jaxrl_post with its test extra.
# Idempotent: a second run only checks that everything is installed.
# PEERS=1 also installs CPU torch + transformers + trl (for benchmarks and
# live parity checks against Hugging Face).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
.venv/bin/python -m pip install -q -e ".[test]"
if [ "${PEERS:-0}" = "1" ]; then
  # torch 2.13.0 is a local CPU wheel on the project's machines; a plain
  # `torch` would pull a multi-GB CUDA build.
  .venv/bin/python -m pip install -q "torch==2.13.0"
  .venv/bin/python -m pip install -q -e ".[test,peers]"
fi
echo "jaxrl_post: .venv ready ($(.venv/bin/python -c 'import jax; print("jax", jax.__version__)'))"
