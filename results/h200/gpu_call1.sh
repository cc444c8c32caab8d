#!/usr/bin/env bash
# H200 lease, call 1 (device tool): build mamba-ssm, check our scan against the fused kernel, benchmark
# the networks and train steps, and a short probe of the budget training run. Writes to $OUT.
# Carry: .cache (acdc.uucache.npz), .whl (nibabel, monai), .src (mamba_ssm sdist).
set -u
cd "$(dirname "$0")/../.."  # the repository root
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
T0=$(date +%s); el() { echo "[t+$(( $(date +%s) - T0 ))s] $*"; }
. scripts/gpu_env.sh > "$OUT/gpu_env.log" 2>&1; tail -4 "$OUT/gpu_env.log"
el "env ready"; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
timeout 120 python3 -m pytest -q -s -p no:cacheprovider tests/test_ssm_cuda.py 2>&1 | tail -40 > "$OUT/test_ssm_cuda.log"; tail -25 "$OUT/test_ssm_cuda.log"
el "cuda tests done"
timeout 60 python3 benchmarks/bench_scan.py --device cuda --chunks 256:16 --out "$OUT/bench_scan_cuda.json" 2>&1 | tail -8
el "scan bench done"
timeout 100 python3 benchmarks/bench_network.py --device cuda --out "$OUT/bench_network_cuda.json" 2>&1 | tail -12
el "network bench done"
timeout 150 python3 benchmarks/bench_train.py --max-seconds 110 --steps 8 --out "$OUT/bench_train_h200.json" 2>&1 | tail -25
el "train bench done"
left=$(( 560 - ($(date +%s) - T0) ))
if [ $left -gt 60 ]; then
  mins=$(python3 -c "print(round(($left - 45) / 60, 2))")
  timeout $left python3 -m uu train --params budget --data .cache/acdc.uucache.npz --out /tmp/runs/probe \
     --set max_minutes=$mins 2>&1 | grep -v "^\s*$" | tail -15
  cp /tmp/runs/probe/log.jsonl "$OUT/probe_log.jsonl" 2>/dev/null; cp /tmp/runs/probe/eval/summary.json "$OUT/probe_summary.json" 2>/dev/null
fi
el "call 1 done"
