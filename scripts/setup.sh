#!/usr/bin/env bash
# Create ./.venv (if missing) and install uu with its notebook and test extras, CPU torch.
# Usage: bash scripts/setup.sh        (idempotent; re-running only refreshes the project install)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
TORCH_SPEC=${UU_TORCH_SPEC:-torch==2.13.0}   # CPU build shipped on these machines' disk
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv with $($PY --version)"
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
# torch first, pinned, so nothing else pulls a multi-GB CUDA build
.venv/bin/python -m pip install -q "$TORCH_SPEC"
.venv/bin/python -m pip install -q -e ".[notebooks,dev]"
.venv/bin/python -m ipykernel install --sys-prefix --name python3 >/dev/null
.venv/bin/python -c "import uu, uu.data; print('[setup] uu', uu.__version__, 'from', uu.__path__[0])"
