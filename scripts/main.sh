#!/usr/bin/env bash
# Set up (if needed) and run the main job: the workbook on the built-in phantom, CPU, smoke profile.
# Usage: bash scripts/main.sh [OUT_DIR] [DATA_DIR]   (defaults: runs/main, phantom)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export MPLBACKEND=Agg
OUT=${1:-runs/main}
DATA=${2:-}
mkdir -p "$OUT"
.venv/bin/python -m papermill notebooks/01_data.ipynb "$OUT/01_data.ipynb" -p data_dir "$DATA"
echo "[main] executed notebook: $OUT/01_data.ipynb"
