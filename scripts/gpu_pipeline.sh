#!/usr/bin/env bash
# The shared half of a device-lease pipeline script (results/h200/session7/gpu_s7.sh onwards): one background
# pipeline for the whole lease, harvested by chained calls. A session's script sets TAG (e.g. s9), RUNS (the run
# folders to pack) and DATA, defines `pipeline` (its jobs, one after the other, touching marker files in $W),
# sources this file from the repo root and ends with `pipeline_main "$@"`:
#   bash SCRIPT start              launch the pipeline (setsid: it outlives the call)
#   bash SCRIPT harvest S MARK     wait up to S seconds for $W/MARK (or $W/stop), then pack the small result files
#                                  into $OUT/$TAG.tgz; on a fresh machine (no pipeline started there) exit 3 at once
# Issue the calls back to back, reading nothing in between: the machine is released 30 s after a call.
OUT=${OUT:-/tmp/out}; W=/tmp/uu_$TAG; mkdir -p "$OUT" $W

el() { echo "[$TAG t+$(( $(date +%s) - $(cat $W/t0) ))s] $*"; }

rates() {  # steady-state it/s of a run folder: epochs 2.. of log.jsonl
  python3 - "$1" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1] + "/log.jsonl")]
first = rows[0]["train_seconds"] if rows else float("nan")
steady = rows[1:]
its = sum(r["iters"] for r in steady) / sum(r["seconds"] - r["val_seconds"] - r["checkpoint_seconds"] for r in steady) if steady else 0.0
print(f"{its:.3f} {first:.1f} {len(rows)}")
PY
}

warm() {  # $1 channels_last, $2 norm, $3 folder: budget.yaml stopped after 4 epochs (or 240 s)
  rm -rf $W/$3
  python3 -m uu train --params budget --data $DATA --out $W/$3 --set channels_last=$1 --set norm=$2 \
    > $W/$3.log 2>&1 &
  local pid=$! end=$(( $(date +%s) + 240 ))
  while kill -0 $pid 2>/dev/null && [ "$(date +%s)" -lt $end ]; do
    [ "$(cat $W/$3/log.jsonl 2>/dev/null | wc -l)" -ge 4 ] && break; sleep 1
  done
  kill $pid 2>/dev/null; pkill -f "out $W/$3 "; sleep 4; pkill -9 -f "out $W/$3 "; wait $pid 2>/dev/null
  el "warm-up channels_last=$1 norm=$2: it/s, first-epoch s, epochs = $(rates $W/$3 2>/dev/null)"
}

steps() {  # $1 plan, $2 batch, $3 rows, $4 timeout, $5 tag, $6 layout flags, $7 label, $8 mix-order reduction
  # (0|1; empty: inductor's default) -> $W/steps_$5.{json,log}, compiled with CUDA graphs
  env ${8:+TORCHINDUCTOR_MIX_ORDER_REDUCTION=$8} TORCH_LOGS=recompiles timeout $4 python3 \
    benchmarks/profile_step.py --plan $1 --batch $2 --rows $3 --modes reduce-overhead $6 --steps 10 --warmup 3 \
    --profile-steps 2 --label $7 --out $W/steps_$5.json > $W/steps_$5.log 2>&1
  grep "\[profile_step\]\|ecompil" $W/steps_$5.log | cut -c1-240
}

pack() {
  local p=$W/pack; rm -rf $p; mkdir -p $p
  for r in $RUNS; do
    [ -d $W/$r ] || continue; mkdir -p $p/$r/eval
    cp $W/$r/{log.jsonl,profile.yaml,split.json} $p/$r/ 2>/dev/null
    cp $W/$r/eval/{summary.json,per_case.csv} $p/$r/eval/ 2>/dev/null; cp $W/$r.log $p/$r/ 2>/dev/null
  done
  cp $W/*.json $W/steps_*.log $W/build.log $W/decision.txt $W/cuda_paths.log $W/pipeline.log $p/ 2>/dev/null
  tar czf "$OUT/$TAG.tgz" -C $p .
}

pipeline_main() {
  case "${1:?start or harvest}" in
  start)
    date +%s > $W/t0
    UU_SKIP_MAMBA_BUILD=1 . scripts/gpu_env.sh > $W/gpu_env.log 2>&1; tail -2 $W/gpu_env.log
    export TORCHINDUCTOR_CACHE_DIR=$W/inductor
    export -f el rates warm steps pipeline; export W DATA TAG
    setsid nohup bash -c pipeline > $W/pipeline.log 2>&1 < /dev/null &
    sleep 5; cat $W/pipeline.log
    ;;
  harvest)
    [ -e $W/t0 ] || { echo "NEW MACHINE: no pipeline here (the lease's machine was given back); nothing to wait for"
                      exit 3; }
    local end=$(( $(date +%s) + ${2:?seconds} ))
    while [ "$(date +%s)" -lt $end ] && [ ! -e $W/${3:?mark} ] && [ ! -e $W/stop ]; do sleep 5; pack; done
    pack; cat $W/pipeline.log; ls -la $OUT
    ;;
  esac
}
