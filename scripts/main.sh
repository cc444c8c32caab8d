#!/usr/bin/env bash
# Set up (if needed) and run the main job: the whole workbook (notebooks 01-05, papermill, headless) on
# the built-in phantom with the CPU profile `cpu` (workbook file uu/params/main.yaml): 152 s on a fresh clone on
# 2 CPU cores. Executed notebooks, figures (PNG) and tables (CSV, Markdown) land in OUT_DIR.
# Usage: bash scripts/main.sh [OUT_DIR] [DATA_DIR] [PARAMS]   (defaults: runs/main, phantom, main)
# PARAMS: a workbook file or name (main, evidence) or a profile (cpu, smoke, budget, a YAML path).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export MPLBACKEND=Agg
OUT=${1:-runs/main}
DATA=${2:-}
PARAMS=${3:-main}
start=$(date +%s)
.venv/bin/python -m uu run --params "$PARAMS" --out "$OUT" ${DATA:+--data "$DATA"}
echo "[main] workbook finished in $(( $(date +%s) - start )) s: notebooks in $OUT/notebooks, figures and tables in $OUT"
