#!/usr/bin/env bash
# The evidence campaign on a lent GPU: ablation rows 1-5 in 5-fold cross-validation (profile acdc2d_cv5), one
# device call at a time. Run it in the foreground of each call, from the repository root:
#   bash scripts/evidence_campaign.sh SECONDS FOLDS [LANDSCAPE_FOLD]
#     SECONDS         what this call may take (the call's limit less a minute for start-up and transfers)
#     FOLDS           the folds to work on, in order, as a list: 0, or 0,1 (a bare number N means folds 0..N-1)
#     LANDSCAPE_FOLD  when umamba_ua and umamba_ua_sam of this fold are trained on this machine and time is left,
#                     their loss landscapes, sharpness and calibration are computed here (the weights never leave)
# Needs (carried, ignored by git): .cache/acdc.uucache.npz (python -m uu.data ACDC .cache/acdc.uucache.npz --lzma),
# .whl/ (nibabel, monai wheels), .src/mamba_ssm-2.3.2.post1.tar.gz (built for sm_90 while the first U-Net trains),
# and best .src/prebuilt/ (bash scripts/build_mamba_wheel.sh on any machine: the bf16 kernels' wheel, installed in
# seconds instead of the 103-181 s build; the whole carry stays under 64 MiB).
# What it does:
#   - copies the runs already committed under results/evidence/acdc2d_cv5 into the runs folder: a finished run is
#     read, never retrained;
#   - trains the missing runs fold by fold, one at a time, starting a run only when its expected time (RUN_SECONDS,
#     measured on an H100: compile, 5,000 iterations, evaluation) fits in what is left of the call, so that each run
#     finishes inside one call. A run that still meets the call's end pauses with a checkpoint when a call follows
#     (the next call resumes it if it lands on the same machine, else trains it again); in the last call it trains on
#     to the call's limit, since a pause would be lost with the machine. UU_JOBS=2 trains two at a time under CUDA MPS
#     instead: measured 1.10x the throughput of one (results/performance/h100/concurrency_mps), not worth a run that
#     spans calls;
#     UU_FOLLOWS=1 says that another call follows at once on the same machine: runs start even when they cannot
#     finish in this call (they pause with a checkpoint and the next call resumes them), so no minutes go idle;
#   - packs every finished run's small files (profile, split, log, per-case table, summary), the logs and the
#     software versions into $OUT/evidence.tgz every 30 s, to be unpacked into results/evidence/acdc2d_cv5.
# UU_SET="key=value ...": profile settings for every run of this call that change its speed, not its mathematics
# (each run's profile.yaml records them).
# UU_LENGTH=10000: the length check instead, once the 25 runs are in: fold 0's umamba_ce, umamba_ua and umamba_ua_sam
# trained for that many iterations (--set epochs=LENGTH/50: the profile's 50 iterations per epoch) under
# RUNS/length10k/, brought back as length10k/<config>/fold0; run it as `UU_LENGTH=10000 ... evidence_campaign.sh 578 0,`
# with UU_FOLLOWS=1 on all but the last call (a 10,000-iteration SAM run spans two calls).
# A 30-minute lease whose machine starts at once holds about 1,650 s of training with the prebuilt wheel (1,300 s
# with the build), measured on an H100 (the campaign's README names the next lease's calls). Issue each call the
# moment the last one returns: the machine is kept about 30 s.
set -u
BUDGET=${1:?seconds for this call}; FOLDS=${2:?folds, e.g. 0,}; LANDSCAPE_FOLD=${3:-}
case $FOLDS in *,*) ;; *) FOLDS=$(seq -s, 0 $(( FOLDS - 1 ))),;; esac
JOBS=${UU_JOBS:-1}; PROFILE=${UU_PROFILE:-acdc2d_cv5}; DATA=${UU_DATA:-.cache/acdc.uucache.npz}
RUNS=${UU_RUNS:-/tmp/uu_cv5}; RESULTS=results/evidence/$PROFILE; OUT=${OUT:-/tmp/out}
# A run's expected time, from the longest fresh runs measured on an H100 (compile, 5,000 iterations, evaluation);
# it only decides whether the last call starts a run (with UU_FOLLOWS runs start anyway and pause).
declare -A RUN_SECONDS=([unet_dice_ce]=180 [umamba_ce]=330 [umamba_dice_ce]=400 [umamba_ua]=390 [umamba_ua_sam]=500)
LENGTH=${UU_LENGTH:-}; SUB=""; SET=(); ORDER=""  # SUB: where this call's runs live under RUNS; SET: overrides for every run
if [ -n "$LENGTH" ]; then
  SUB=length$(( LENGTH / 1000 ))k/; SET=(--set "epochs=$(( LENGTH / 50 ))")
  ORDER=${UU_ORDER:-umamba_ce umamba_ua umamba_ua_sam}
  for c in "${!RUN_SECONDS[@]}"; do RUN_SECONDS[$c]=$(( RUN_SECONDS[$c] * LENGTH / 5000 )); done
fi
ORDER=${ORDER:-${UU_ORDER:-umamba_ua_sam umamba_ua umamba_ce umamba_dice_ce unet_dice_ce}}
SPEED_SETTINGS=${UU_SET:-}
for kv in $SPEED_SETTINGS; do SET+=(--set "$kv"); done
T0=$(date +%s); STOP_AT=$(( T0 + BUDGET - 40 ))  # time for the packing after the last run
# Where a run pauses with a checkpoint. In the lease's last call (no UU_FOLLOWS) a paused run is lost with the
# machine, so a run trains on there until it finishes or the call's limit cuts it; the packer keeps what finished.
PAUSE_AT=$STOP_AT; [ -n "${UU_FOLLOWS:-}" ] || PAUSE_AT=$(( T0 + 86400 ))
mkdir -p "$RUNS" "$OUT"
log() { echo "[campaign t+$(( $(date +%s) - T0 ))s] $*" | tee -a "$RUNS/campaign.log"; }
left() { echo $(( STOP_AT - $(date +%s) )); }
lf=$RUNS/landscape_fold$LANDSCAPE_FOLD

pack() {  # the small files of the finished runs, the logs of unfinished ones, versions: $OUT/evidence.tgz
  local dir=/tmp/uu_pack run rel; rm -rf $dir; mkdir -p $dir
  for run in "$RUNS"/*/fold*/ "$RUNS"/length*/*/fold*/; do
    [ -d "$run" ] || continue
    run=${run%/}; rel=${run#"$RUNS"/}
    if [ -e "$run/eval/summary.json" ]; then
      mkdir -p "$dir/$rel/eval"
      cp "$run"/{profile.yaml,split.json,log.jsonl} "$dir/$rel/" 2>/dev/null
      cp "$run"/eval/{per_case.csv,summary.json} "$dir/$rel/eval/" 2>/dev/null
      cp "$run.log" "$dir/$rel/train.log" 2>/dev/null
    else
      mkdir -p "$dir/unfinished/$rel"; cp "$run/log.jsonl" "$run.log" "$dir/unfinished/$rel/" 2>/dev/null
    fi
  done
  [ -d "$lf" ] && cp -r "$lf" "$lf.log" "$dir/" 2>/dev/null
  cp "$RUNS"/{campaign.log,versions.txt,build.log,gpu_env.log} "$dir/" 2>/dev/null
  tar czf "$OUT/.evidence.tgz" -C $dir . && mv "$OUT/.evidence.tgz" "$OUT/evidence.tgz"
  find $dir -name summary.json | wc -l
}
( while sleep 30; do pack > /dev/null; done ) &  # a call cut at its limit still brings back what finished
packer=$!

# committed runs: read, never retrained
for done in "$RESULTS"/*/fold*/eval/summary.json "$RESULTS"/length*/*/fold*/eval/summary.json; do
  [ -e "$done" ] || continue
  run=$(dirname "$(dirname "$done")"); dest=$RUNS/${run#"$RESULTS"/}
  [ -e "$dest/eval/summary.json" ] || { mkdir -p "$dest"; cp -r "$run"/. "$dest"/; }
done

UU_ENV_CHECKS=0 UU_SKIP_MAMBA_BUILD=1 . scripts/gpu_env.sh > "$RUNS/gpu_env.log" 2>&1
log "environment ready"
export TORCHINDUCTOR_CACHE_DIR=/tmp/uu_inductor PYTHONUNBUFFERED=1  # shared by the runs of one machine (a cold
# compile of a U-Mamba row takes 70-110 s; the cache, 32-38 MB packed, is too large to carry between leases)
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  echo "commit ${UU_COMMIT:-unknown}"; } > "$RUNS/versions.txt" 2>&1
if [ "$JOBS" -gt 1 ] && command -v nvidia-cuda-mps-control > /dev/null; then
  nvidia-cuda-mps-control -d 2>/dev/null && log "CUDA MPS on"
fi

versions() {  # torch and the mamba-ssm kernel, one interpreter: a torch import costs seconds on the device
  python3 - 2>&1 <<'PY'
import torch
print("torch", torch.__version__, "cuda", torch.version.cuda)
try:
    import selective_scan_cuda, mamba_ssm
    print("mamba_ssm", mamba_ssm.__version__)
except Exception as err:  # ImportError, or a CUDA library that does not load
    print("no mamba-ssm kernel:", repr(err))
PY
}
train() {  # $1 configs, $2 folds, $3 jobs
  python3 -m uu ablation --params "$PROFILE" --data "$DATA" --runs "$RUNS/$SUB" --folds "$2" --configs "$1" \
    --jobs "$3" --stop-at "$PAUSE_AT" --min-start 60 ${SET[@]+"${SET[@]}"} 2>&1 | grep -v "^|" | tail -3
}
finished() { [ -e "$RUNS/$SUB$1/fold$2/eval/summary.json" ]; }
found=$(versions)
if ! grep -q '^mamba_ssm' <<< "$found"; then  # build mamba-ssm (CPU only) while the U-Net of the first fold trains
  log "building mamba-ssm; meanwhile the U-Net row"
  nice -n 19 bash scripts/build_mamba.sh > "$RUNS/build.log" 2>&1 &
  build=$!
  for fold in ${FOLDS//,/ }; do  # the first fold whose U-Net is missing: the GPU is not idle during the build
    [ -z "$SUB" ] || break  # the length check has no U-Net row
    [[ " $ORDER " == *" unet_dice_ce "* ]] || break  # an order without it: the build alone, a U-Mamba run sooner
    finished unet_dice_ce $fold || { train unet_dice_ce "$fold," 1; break; }
  done
  wait $build; tail -1 "$RUNS/build.log"  # the build's time
  found=$(versions)
fi
echo "$found" >> "$RUNS/versions.txt"
has_kernel=1; grep -q '^mamba_ssm' <<< "$found" || { has_kernel=0; log "NO mamba-ssm KERNEL: the U-Mamba rows cannot train"; }
log "versions and kernel checked; speed settings: ${SPEED_SETTINGS:-none}"
if [ "$JOBS" -gt 1 ]; then
  [ $has_kernel = 1 ] && train "${ORDER// /,}" "$FOLDS" "$JOBS"
else
  for fold in ${FOLDS//,/ }; do
    for config in $ORDER; do
      finished $config $fold && continue
      [ "$(left)" -lt 60 ] && { log "under a minute left: no further run starts in this call"; break 2; }
      { [ $config = unet_dice_ce ] || [ $has_kernel = 1 ]; } || continue
      if [ "$(left)" -lt "${RUN_SECONDS[$config]}" ] && [ ! -e "$RUNS/$SUB$config/fold$fold/checkpoint.pt" ] \
         && [ -z "${UU_FOLLOWS:-}" ]; then
        log "$config fold $fold: expects ${RUN_SECONDS[$config]} s, $(left) s left: not started"; continue
      fi
      log "$config fold $fold"; train $config "$fold," 1
    done
  done
fi
log "training done for this call"

if [ -n "$LANDSCAPE_FOLD" ] && [ ! -e "$lf/landscape.json" ] && [ "$(left)" -gt 150 ] \
   && [ -e "$RUNS/umamba_ua/fold$LANDSCAPE_FOLD/final.pt" ] && [ -e "$RUNS/umamba_ua_sam/fold$LANDSCAPE_FOLD/final.pt" ]; then
  log "landscapes of fold $LANDSCAPE_FOLD"
  timeout $(( $(left) + 20 )) python3 benchmarks/ablation_evidence.py --runs "$RUNS" --data "$DATA" --kind fold \
    --seed "$LANDSCAPE_FOLD" --methods umamba_ua,umamba_ua_sam --landscape-only --out "$lf" \
    --budget-s $(( $(left) - 20 )) > "$lf.log" 2>&1; tail -4 "$lf.log"
fi
[ "$JOBS" -gt 1 ] && echo quit | nvidia-cuda-mps-control 2>/dev/null
kill $packer 2>/dev/null
log "packed $(pack) finished runs into \$OUT/evidence.tgz"
