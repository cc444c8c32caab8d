#!/usr/bin/env bash
# Session 2, H200 call B (chained to call A while the machine is warm): wait for the five ablation runs, then
# tables, landscapes, sharpness and calibration (benchmarks/ablation_evidence.py); pack the small files.
# Usage: bash results/h200/session2/gpu_s2_b.sh [SECONDS]
set -u
cd "$(dirname "$0")/../../.."  # the repository root
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
TOTAL=${1:-570}
T0=$(date +%s); el() { echo "[t+$(( $(date +%s) - T0 ))s] $*"; }
if [ ! -d /tmp/abl ]; then echo "no /tmp/abl: this is a fresh machine, the ablation runs are lost"; exit 3; fi
. scripts/gpu_env.sh > "$OUT/gpu_env.log" 2>&1; tail -1 "$OUT/gpu_env.log"
CONFIGS="unet_dice_ce umamba_dice_ce umamba_ce umamba_ua umamba_ua_sam"
while pgrep -f "uu ablation" > /dev/null && [ $(( $(date +%s) - T0 )) -lt $(( TOTAL - 200 )) ]; do
  sleep 15
  line="[t+$(( $(date +%s) - T0 ))s]"
  for c in $CONFIGS; do line="$line $c:$(wc -l < /tmp/abl/$c/seed0/log.jsonl)$([ -f /tmp/abl/$c/seed0/eval/summary.json ] && echo +eval)"; done
  echo "$line"
done
el "runs finished (or out of time)"; for c in $CONFIGS; do tail -2 /tmp/abl/$c.log; done
left=$(( TOTAL - ($(date +%s) - T0) - 30 ))
python3 benchmarks/ablation_evidence.py --runs /tmp/abl --data .cache/acdc.uucache.npz --out /tmp/evidence \
  --budget-s $left --protocol "ours: budget profile, 1200 iterations, ACDC train.list -> val.list (20 volumes), H200" 2>&1 \
  | grep -v "it/s\]" | tee "$OUT/evidence.log" | tail -40
mkdir -p /tmp/pack
for c in $CONFIGS; do
  d=/tmp/pack/ablation/$c/seed0; mkdir -p $d/eval
  cp /tmp/abl/$c/seed0/{log.jsonl,profile.yaml,split.json} $d/ 2>/dev/null
  cp /tmp/abl/$c/seed0/eval/{summary.json,per_case.csv} $d/eval/ 2>/dev/null
  cp /tmp/abl/$c.log $d/train.log 2>/dev/null
done
cp -r /tmp/evidence /tmp/pack/evidence
tar czf "$OUT/ablation.tgz" -C /tmp/pack ablation evidence
ls -la "$OUT"
el "call B done"
