#!/usr/bin/env bash
# Session 4 (issue 12) on the lent H200, in chained device calls (the machine kept warm between them):
#   bash results/h200/session4/gpu_s4.sh a RUN_MINUTES   U-Net step rows while mamba-ssm builds, the CUDA checks of
#        the new paths, U-Mamba step rows (before: the code of a6a0ba1 in .old/; after: this checkout, eager and
#        CUDA graphs), then launches the UU-Mamba budget run (setsid: it outlives the call) with RUN_MINUTES
#   bash results/h200/session4/gpu_s4.sh b               waits for that run, packs it
#   bash results/h200/session4/gpu_s4.sh c RUN_MINUTES   the U-Net + Dice/CE + SGD run of the same budget, alone
set -u
cd "$(dirname "$0")/../../.."
STAGE=${1:?stage a, b or c}; RUN_MIN=${2:-7}
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT" /tmp/uu_s4
T0=$(date +%s); el() { echo "[t+$(( $(date +%s) - T0 ))s] $*"; }
DATA=.cache/acdc.uucache.npz
UU_SKIP_MAMBA_BUILD=1 . scripts/gpu_env.sh > "$OUT/gpu_env_$STAGE.log" 2>&1; tail -2 "$OUT/gpu_env_$STAGE.log"
export TORCHINDUCTOR_CACHE_DIR=/tmp/uu_s4/inductor
P=benchmarks/profile_step.py
pack() { tar czf "$OUT/$1.tgz" -C /tmp/uu_s4 "${@:2}" 2>/dev/null; }
case "$STAGE" in
a)
  command -v nvidia-cuda-mps-control >/dev/null && echo "MPS control: present" || echo "MPS control: absent"
  setsid nohup nice -n 19 bash scripts/build_mamba.sh > /tmp/uu_s4/build.log 2>&1 < /dev/null &
  el "build started; U-Net rows meanwhile"
  timeout 60 python3 $P --uu-path .old --label before --rows unet:sgd --modes eager --steps 20 --out /tmp/uu_s4/before_unet.json 2>&1 | grep "\[profile_step\]"
  timeout 150 python3 $P --label after --rows unet:sgd --modes eager,reduce-overhead --steps 20 --out /tmp/uu_s4/after_unet.json 2>&1 | grep "\[profile_step\]"
  el "U-Net rows done"
  while ! grep -q "built in\|FAILED\|already" /tmp/uu_s4/build.log 2>/dev/null; do sleep 2; done; cat /tmp/uu_s4/build.log | tail -2
  python3 -c "import mamba_ssm, selective_scan_cuda; print('[s4] mamba_ssm', mamba_ssm.__version__)" || echo "[s4] NO KERNEL"
  timeout 100 python3 -m pytest -q -s -p no:cacheprovider tests/test_cuda_paths.py tests/test_ssm_cuda.py -k "paths or fused_operator or fused or skips or compiled_sam" 2>&1 | grep -E "rel err|cuda paths|passed|failed|Error" | tail -12 | tee /tmp/uu_s4/cuda_tests.log
  el "CUDA checks done"
  timeout 80 python3 $P --uu-path .old --label before --rows umamba_enc:sgd,umamba_enc:sam --modes eager --steps 10 --out /tmp/uu_s4/before_enc.json 2>&1 | grep "\[profile_step\]"
  timeout 200 python3 $P --label after --rows umamba_enc:sgd,umamba_enc:sam --modes eager,reduce-overhead --steps 10 --out /tmp/uu_s4/after_enc.json 2>&1 | grep "\[profile_step\]"
  el "U-Mamba rows done"
  MODE=$(python3 - <<'PY'
import json
rows = [r for r in json.load(open("/tmp/uu_s4/after_enc.json"))["rows"] if r.get("optimizer") == "sam" and "ms_per_step" in r]
best = min(rows, key=lambda r: r["ms_per_step"], default={"compile": False})
print(str(best["compile"]).lower())
PY
)
  echo "budget compile mode: $MODE; run minutes $RUN_MIN"
  rm -rf /tmp/uu_s4/uu8
  setsid nohup python3 -m uu train --params budget --data $DATA --out /tmp/uu_s4/uu8 --set compile=$MODE \
    --set max_minutes=$RUN_MIN > /tmp/uu_s4/uu8.log 2>&1 < /dev/null &
  sleep 20; tail -3 /tmp/uu_s4/uu8.log
  pack steps before_unet.json after_unet.json before_enc.json after_enc.json cuda_tests.log build.log
  el "stage a done; UU-Mamba run launched"
  ;;
b)
  while pgrep -f "out /tmp/uu_s4/uu8" >/dev/null; do sleep 5; done
  tail -4 /tmp/uu_s4/uu8.log
  mkdir -p /tmp/uu_s4/pack/uu8/eval && cp /tmp/uu_s4/uu8/{log.jsonl,profile.yaml,split.json} /tmp/uu_s4/pack/uu8/ \
    && cp /tmp/uu_s4/uu8/eval/{summary.json,per_case.csv} /tmp/uu_s4/pack/uu8/eval/; cp /tmp/uu_s4/uu8.log /tmp/uu_s4/pack/uu8/
  tar czf "$OUT/uu8.tgz" -C /tmp/uu_s4/pack uu8
  el "stage b done"
  ;;
c)
  rm -rf /tmp/uu_s4/unet8
  python3 -m uu train --params budget --data $DATA --out /tmp/uu_s4/unet8 --set arch=unet --set loss=dice_ce \
    --set optimizer=sgd --set batch_size=32 --set compile=false --set max_minutes=$RUN_MIN > /tmp/uu_s4/unet8.log 2>&1
  tail -4 /tmp/uu_s4/unet8.log
  mkdir -p /tmp/uu_s4/pack/unet8/eval && cp /tmp/uu_s4/unet8/{log.jsonl,profile.yaml,split.json} /tmp/uu_s4/pack/unet8/ \
    && cp /tmp/uu_s4/unet8/eval/{summary.json,per_case.csv} /tmp/uu_s4/pack/unet8/eval/; cp /tmp/uu_s4/unet8.log /tmp/uu_s4/pack/unet8/
  tar czf "$OUT/unet8.tgz" -C /tmp/uu_s4/pack unet8
  el "stage c done"
  ;;
d)
  # one call for both runs of the race (the machine of stage a was given back before b): the U-Net run while
  # mamba-ssm builds (CPU only, nice 19), then the UU-Mamba run; both eager, RUN_MINUTES of training each
  setsid nohup nice -n 19 bash scripts/build_mamba.sh > /tmp/uu_s4/build.log 2>&1 < /dev/null &
  for r in "unet8 --set arch=unet --set loss=dice_ce --set optimizer=sgd --set batch_size=32" "uu8"; do
    set -- $r; name=$1; shift
    [ "$name" = uu8 ] && { while ! grep -q "built in\|FAILED\|already" /tmp/uu_s4/build.log 2>/dev/null; do sleep 2; done; tail -1 /tmp/uu_s4/build.log; }
    el "$name run"
    rm -rf /tmp/uu_s4/$name
    timeout $(( RUN_MIN * 60 + 75 )) python3 -m uu train --params budget --data $DATA --out /tmp/uu_s4/$name "$@" \
      --set compile=false --set max_minutes=$RUN_MIN > /tmp/uu_s4/$name.log 2>&1
    tail -3 /tmp/uu_s4/$name.log
    mkdir -p /tmp/uu_s4/pack/$name/eval && cp /tmp/uu_s4/$name/{log.jsonl,profile.yaml,split.json} /tmp/uu_s4/pack/$name/
    cp /tmp/uu_s4/$name/eval/{summary.json,per_case.csv} /tmp/uu_s4/pack/$name/eval/; cp /tmp/uu_s4/$name.log /tmp/uu_s4/pack/$name/
    tar czf "$OUT/runs.tgz" -C /tmp/uu_s4/pack .
  done
  el "stage d done"
  ;;
esac
ls -la "$OUT"
