#!/usr/bin/env bash
# Session 2, H200 call A (device tool): build mamba-ssm, the CUDA network test (with channels-last), profile
# the budget step three ways (issue 6), then launch the five ablation rows concurrently, detached (setsid),
# so that call B (chained while the machine is warm) finds them running. Usage: bash results/h200/session2/gpu_s2_a.sh [SECONDS]
set -u
cd "$(dirname "$0")/../../.."  # the repository root
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
TOTAL=${1:-570}
T0=$(date +%s); el() { echo "[t+$(( $(date +%s) - T0 ))s] $*"; }
. scripts/gpu_env.sh > "$OUT/gpu_env.log" 2>&1; tail -3 "$OUT/gpu_env.log"
el "env ready"
timeout 120 python3 -m pytest -q -s -p no:cacheprovider tests/test_ssm_cuda.py -k network_cpu_vs_cuda 2>&1 | grep -E "rel err|passed|failed"
DATA=.cache/acdc.uucache.npz
P="python3 benchmarks/profile_step.py --plan 2d --arch umamba_enc --optimizer sam --batch 16 --data $DATA --timed-steps 10"
$P --steps 0 --json "$OUT/prof_nchw.json" | tail -1
$P --steps 0 --cudnn-benchmark --json "$OUT/prof_nchw_bench.json" | tail -1
$P --steps 3 --cudnn-benchmark --channels-last --json "$OUT/prof_cl_bench.json" --out "$OUT/prof_cl_bench.txt" > /dev/null
head -1 "$OUT/prof_cl_bench.txt"
el "profiles done"
CL=$(python3 -c "
import json; a=json.load(open('$OUT/prof_nchw_bench.json'))['step_ms']; b=json.load(open('$OUT/prof_cl_bench.json'))['step_ms']
print('true' if b < a else 'false')")
echo "channels_last=$CL"
mkdir -p /tmp/abl
for c in unet_dice_ce umamba_dice_ce umamba_ce umamba_ua umamba_ua_sam; do
  OMP_NUM_THREADS=2 setsid nohup python3 -m uu ablation --params budget --data $DATA --runs /tmp/abl --configs $c \
    --seeds 1 --set epochs=24 --set iters_per_epoch=50 --set val_every=4 --set max_minutes=10.5 \
    --set channels_last=$CL --set cudnn_benchmark=true > /tmp/abl/$c.log 2>&1 < /dev/null &
done
el "ablation launched"
while [ $(( $(date +%s) - T0 )) -lt "$TOTAL" ]; do
  sleep 30
  line="[t+$(( $(date +%s) - T0 ))s]"
  for c in unet_dice_ce umamba_dice_ce umamba_ce umamba_ua umamba_ua_sam; do
    line="$line $c:$(wc -l < /tmp/abl/$c/seed0/log.jsonl 2>/dev/null || echo 0)"
  done
  echo "$line  $(nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader)"
done
tar czf "$OUT/abl_progress.tgz" /tmp/abl/*.log /tmp/abl/*/seed0/log.jsonl 2>/dev/null
el "call A done (ablation still running, detached)"
