#!/usr/bin/env bash
# Set up (if needed) and run the main job: the whole workbook (notebooks 01-05, papermill, headless) on
# the built-in phantom with the CPU smoke profile. Executed notebooks, figures (PNG) and tables
# (CSV, Markdown) land in OUT_DIR.
# Usage: bash scripts/main.sh [OUT_DIR] [DATA_DIR] [PROFILE]   (defaults: runs/main, phantom, smoke)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export MPLBACKEND=Agg
OUT=${1:-runs/main}
DATA=${2:-}
PROFILE=${3:-smoke}
start=$(date +%s)
.venv/bin/python -m uu run --params "$PROFILE" --out "$OUT" ${DATA:+--data "$DATA"}
echo "[main] workbook finished in $(( $(date +%s) - start )) s: notebooks in $OUT/notebooks, figures and tables in $OUT"
