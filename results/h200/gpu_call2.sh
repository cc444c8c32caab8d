#!/usr/bin/env bash
# H200 lease, call 2 (device tool): build mamba-ssm, the CUDA agreement tests with their full log, then the
# budget-profile UA + SAM run on the ACDC cache (train.list -> val.list) for whatever the lease leaves.
# Usage: bash results/h200/gpu_call2.sh [TOTAL_SECONDS] [--set KEY=VALUE ...]
set -u
cd "$(dirname "$0")/../.."  # the repository root
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
TOTAL=${1:-560}; shift || true
T0=$(date +%s); el() { echo "[t+$(( $(date +%s) - T0 ))s] $*"; }
. scripts/gpu_env.sh > "$OUT/gpu_env.log" 2>&1; tail -3 "$OUT/gpu_env.log"
el "env ready"
timeout 90 python3 -m pytest -q -s -p no:cacheprovider tests/test_ssm_cuda.py > "$OUT/test_ssm_cuda.log" 2>&1
grep -E "rel err|passed|failed" "$OUT/test_ssm_cuda.log" | tail -4
el "cuda tests done"
left=$(( TOTAL - ($(date +%s) - T0) ))
mins=$(python3 -c "print(round(($left - 50) / 60, 2))")
el "training for $mins min"
python3 -m uu train --params budget --data .cache/acdc.uucache.npz --out /tmp/runs/budget \
   --set max_minutes=$mins "$@" 2>&1 | tail -25
for f in log.jsonl profile.yaml split.json eval/summary.json eval/per_case.csv; do
  cp "/tmp/runs/budget/$f" "$OUT/budget_$(basename $f)" 2>/dev/null
done
nvidia-smi --query-gpu=name,memory.used --format=csv,noheader
el "call 2 done"
