#!/usr/bin/env bash
# Set up (if needed) and run the whole test suite: ruff (lint and format, notebooks included), pytest (unit +
# notebooks via papermill) and nbval.
# Real-ACDC tests run when UU_ACDC_DIR points at an ACDC folder; CUDA tests when a GPU is present.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export MPLBACKEND=Agg
.venv/bin/python -m ruff check .
.venv/bin/python -m ruff format --check .
.venv/bin/python -m pytest -q tests "$@"
.venv/bin/python -m pytest -q --nbval-lax -p no:cacheprovider notebooks
