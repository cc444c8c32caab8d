#!/usr/bin/env bash
# Session 6 (issue 12) on the lent H200, two chained device calls:
#   bash results/h200/session6/gpu_s6.sh a   mamba-ssm builds in the background while the depthwise conv1d
#        implementations are timed (bench_conv1d.py, no kernel needed); then, in the SAME call (a machine handed
#        back between calls loses the build), 1/3/5 concurrent budget runs time-sliced and 3/5 under MPS
#        (bench_concurrency.py), then the eager step rows with the old (nn.Conv1d) and the new (shift) conv
#   bash results/h200/session6/gpu_s6.sh b   compiled step rows (reduce-overhead: U-Net SGD, U-Mamba Enc SGD
#        and SAM, 2D plan batch 32) and the compiled 3D SAM row; rebuilds mamba-ssm first if the machine is new
# Then two inline calls on the same warm machine (after `UU_SKIP_MAMBA_BUILD=1 . scripts/gpu_env.sh`):
#   c: bench_concurrency.py --runs 5,1 --mps on --seconds 25 --set compile=false; UU_CONV1D=conv1d profile_step.py
#      --plan 3d --batch 4 --rows umamba_enc:sam --modes reduce-overhead (--steps 10 --warmup 3 --profile-steps 2)
#   d: the same 3D SAM row with --channels-last (timeout 170 s: did not finish compiling); UU_CONV1D=shift
#      profile_step.py --plan 3d --batch 4 --rows unet:sgd,umamba_enc:sgd --modes reduce-overhead
# The import check below first ran without `import torch` (stage a printed "NO KERNEL" although the kernel
# was built and used); fixed before stage b.
set -u
cd "$(dirname "$0")/../../.."
STAGE=${1:?stage a or b}
OUT=${OUT:-/tmp/out}; W=/tmp/uu_s6; mkdir -p "$OUT" $W
T0=$(date +%s); el() { echo "[t+$(( $(date +%s) - T0 ))s] $*"; }
left() { echo $(( ${LIMIT:-575} - $(date +%s) + T0 )); }
DATA=.cache/acdc.uucache.npz
UU_SKIP_MAMBA_BUILD=1 . scripts/gpu_env.sh > "$OUT/gpu_env_$STAGE.log" 2>&1; tail -2 "$OUT/gpu_env_$STAGE.log"
export TORCHINDUCTOR_CACHE_DIR=$W/inductor
build() {  # in the background, logged to $W/build.log
  [ -d /tmp/site/mamba_ssm ] && { echo "[s6] mamba-ssm already built"; return; }
  setsid nohup nice -n 10 bash scripts/build_mamba.sh > $W/build.log 2>&1 < /dev/null &
  el "mamba-ssm build started"
}
wait_build() {
  while ! grep -q "built in\|FAILED\|already" $W/build.log 2>/dev/null; do sleep 2; done
  tail -1 $W/build.log; cp $W/build.log "$OUT/build_$STAGE.log"
  python3 -c "import torch, selective_scan_cuda, mamba_ssm; print('[s6] mamba_ssm', mamba_ssm.__version__)" || echo "[s6] NO KERNEL"
}
steps() {  # $1 label (conv impl), $2 modes, $3 rows, $4 plan, $5 batch, $6 timeout, $7 file tag
  UU_CONV1D=$1 timeout $6 python3 benchmarks/profile_step.py --plan $4 --batch $5 --rows $3 --modes $2 \
    --steps 10 --warmup 3 --profile-steps 2 --label $1 --out "$OUT/steps_${STAGE}_$7.json" 2>&1 \
    | grep "\[profile_step\]" | cut -c1-200
}
nvidia-smi --query-gpu=name,memory.used,utilization.gpu --format=csv,noheader
case "$STAGE" in
a)
  build
  timeout 170 python3 benchmarks/bench_conv1d.py --plan 2d --batch 16 --out "$OUT/conv1d_2d_b16.json" 2>&1 | grep "\[conv1d\]"
  timeout 100 python3 benchmarks/bench_conv1d.py --plan 3d --batch 4 --out "$OUT/conv1d_3d_b4.json" 2>&1 | grep "\[conv1d\]"
  el "conv1d timed"
  wait_build
  el "concurrency ($(left) s left)"
  timeout 330 python3 benchmarks/bench_concurrency.py --data $DATA --runs 1,3,5 --runs-mps 3,5 --mps both \
    --seconds 25 --set compile=false --root $W/conc --out "$OUT/concurrency.json" 2>&1 | grep "\[concurrency\]"
  tail -n 3 $W/conc/*.log > "$OUT/concurrency_logs.txt" 2>/dev/null
  el "concurrency done ($(left) s left)"
  for impl in conv1d shift; do
    [ "$(left)" -gt 45 ] && steps $impl eager unet:sgd,umamba_enc:sgd,umamba_enc:sam 2d 32 $(( $(left) / 2 )) eager_$impl
  done
  ;;
b)
  build
  steps shift reduce-overhead unet:sgd 2d 32 150 compiled_unet  # needs no kernel: overlaps a build
  wait_build
  steps shift reduce-overhead umamba_enc:sgd,umamba_enc:sam 2d 32 $(( $(left) - 200 )) compiled_umamba
  el "2D compiled rows done ($(left) s left)"
  [ "$(left)" -gt 60 ] && steps shift reduce-overhead umamba_enc:sam 3d 4 $(( $(left) - 10 )) compiled_3d
  ;;
esac
el "stage $STAGE done"
ls -la "$OUT"
