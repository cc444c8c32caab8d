#!/usr/bin/env bash
# Session 5 (issue 12) on the lent H200, three chained device calls (each next call within 30 s of the last):
#   bash results/h200/session5/gpu_s5.sh a 8   mamba-ssm builds (nice 19) while the U-Net + Dice/CE + SGD race run
#        trains alone (budget harness, eager, batch 32); then launches the UU-Mamba race run (budget.yaml as it
#        is: compile reduce-overhead, batch 16) with setsid so that it outlives the call
#   bash results/h200/session5/gpu_s5.sh b     waits for that run, packs it, then the 3D step rows (eager)
#   bash results/h200/session5/gpu_s5.sh c     1/3/5 concurrent budget runs time-sliced, 3/5 under MPS; the 3D
#        compiled SAM row if time is left
set -u
cd "$(dirname "$0")/../../.."
STAGE=${1:?stage a, b or c}; RUN_MIN=${2:-8}
OUT=${OUT:-/tmp/out}; W=/tmp/uu_s5; mkdir -p "$OUT" $W
T0=$(date +%s); el() { echo "[t+$(( $(date +%s) - T0 ))s] $*"; }
DATA=.cache/acdc.uucache.npz
UU_SKIP_MAMBA_BUILD=1 . scripts/gpu_env.sh > "$OUT/gpu_env_$STAGE.log" 2>&1; tail -2 "$OUT/gpu_env_$STAGE.log"
export TORCHINDUCTOR_CACHE_DIR=$W/inductor
pack_run() {  # the small files of a run folder
  mkdir -p $W/pack/$1/eval && cp $W/$1/{log.jsonl,profile.yaml,split.json} $W/pack/$1/ 2>/dev/null
  cp $W/$1/eval/{summary.json,per_case.csv} $W/pack/$1/eval/ 2>/dev/null; cp $W/$1.log $W/pack/$1/ 2>/dev/null
  tar czf "$OUT/runs.tgz" -C $W/pack .
}
wait_uu() {  # up to $1 seconds for the UU-Mamba run
  local end=$(( $(date +%s) + $1 ))
  while pgrep -f "out $W/uu8" >/dev/null && [ "$(date +%s)" -lt $end ]; do sleep 3; done
  pgrep -f "out $W/uu8" >/dev/null && return 1 || return 0
}
case "$STAGE" in
a)
  nvidia-smi --query-gpu=name,memory.used,utilization.gpu --format=csv,noheader
  setsid nohup nice -n 19 bash scripts/build_mamba.sh > $W/build.log 2>&1 < /dev/null &
  el "build started; U-Net race run ($RUN_MIN training minutes)"
  rm -rf $W/unet8
  timeout $(( RUN_MIN * 60 + 80 )) python3 -m uu train --params budget --data $DATA --out $W/unet8 --set arch=unet \
    --set loss=dice_ce --set optimizer=sgd --set batch_size=32 --set compile=false --set max_minutes=$RUN_MIN \
    > $W/unet8.log 2>&1
  tail -3 $W/unet8.log; pack_run unet8
  el "U-Net run done"
  while ! grep -q "built in\|FAILED\|already" $W/build.log 2>/dev/null; do sleep 2; done; tail -1 $W/build.log
  cp $W/build.log "$OUT/"
  python3 -c "import selective_scan_cuda, mamba_ssm; print('[s5] mamba_ssm', mamba_ssm.__version__)" || echo "[s5] NO KERNEL"
  rm -rf $W/uu8
  setsid nohup python3 -m uu train --params budget --data $DATA --out $W/uu8 --set max_minutes=$RUN_MIN \
    > $W/uu8.log 2>&1 < /dev/null &
  sleep 8; tail -2 $W/uu8.log
  el "stage a done; UU-Mamba race run launched"
  ;;
b)
  [ -d /tmp/site/mamba_ssm ] || echo "[s5] the machine was restarted: mamba-ssm and the UU-Mamba run are gone"
  wait_uu 520 && el "UU-Mamba run finished" || el "UU-Mamba run still going"
  tail -3 $W/uu8.log; pack_run uu8
  timeout 75 python3 benchmarks/profile_step.py --plan 3d --batch 4 --rows umamba_enc:sam,umamba_enc:sgd,unet:sgd \
    --modes eager --steps 5 --warmup 2 --profile-steps 1 --out $W/steps3d_eager.json 2>&1 | grep "\[profile_step\]"
  cp $W/steps3d_eager.json "$OUT/" 2>/dev/null
  el "stage b done"
  ;;
c)
  wait_uu 300 || el "UU-Mamba run STILL going"; tail -2 $W/uu8.log; pack_run uu8
  timeout 420 python3 benchmarks/bench_concurrency.py --data $DATA --runs 1,3,5 --runs-mps 3,5 --mps both \
    --seconds 30 --set compile=false --root $W/conc --out "$OUT/concurrency.json" 2>&1 | grep "\[concurrency\]"
  tail -3 $W/conc/*.log > "$OUT/concurrency_logs.txt" 2>/dev/null
  el "concurrency done"
  left=$(( 570 - $(date +%s) + T0 ))
  [ $left -gt 90 ] && timeout $left python3 benchmarks/profile_step.py --plan 3d --batch 4 --rows umamba_enc:sam \
    --modes reduce-overhead --steps 5 --warmup 2 --profile-steps 1 --out $W/steps3d_compiled.json 2>&1 | grep "\[profile_step\]"
  cp $W/steps3d_compiled.json "$OUT/" 2>/dev/null
  el "stage c done"
  ;;
esac
ls -la "$OUT"
