#!/usr/bin/env bash
# The evidence campaign on a lent GPU: ablation rows 1-5 in 5-fold cross-validation (profile acdc2d_cv5), one
# device call at a time. Run it in the foreground of each call, from the repository root:
#   bash scripts/evidence_campaign.sh SECONDS FOLDS [LANDSCAPE_FOLD]
#     SECONDS         what this call may take (the call's limit less a minute for start-up and transfers)
#     FOLDS           the folds to work on, in order, e.g. 0 or 0,1
#     LANDSCAPE_FOLD  when umamba_ua and umamba_ua_sam of this fold finish on this machine with time left, their
#                     loss landscapes, sharpness and calibration are computed there (the weights never leave it)
# Needs (carried, ignored by git): .cache/acdc.uucache.npz (python -m uu.data ACDC .cache/acdc.uucache.npz --lzma),
# .whl/ (nibabel, monai), .src/mamba_ssm-2.3.2.post1.tar.gz (built for sm_90 while the first U-Net trains).
# What it does:
#   - copies the runs already committed under results/evidence/acdc2d_cv5 into the runs folder: a finished run is
#     read, never retrained;
#   - trains the missing runs fold by fold, UU_JOBS (default 2) at a time under CUDA MPS; the runs pause with a
#     checkpoint before the call's end and the next call (on the same machine) resumes them; on a new machine an
#     unfinished run starts again;
#   - packs every finished run's small files (profile, split, log, per-case table, summary), the logs and the
#     software versions into $OUT/evidence.tgz, to be unpacked into results/evidence/acdc2d_cv5.
set -u
BUDGET=${1:?seconds for this call}; FOLDS=${2:?folds, e.g. 0}; LANDSCAPE_FOLD=${3:-}
JOBS=${UU_JOBS:-2}; PROFILE=${UU_PROFILE:-acdc2d_cv5}; DATA=${UU_DATA:-.cache/acdc.uucache.npz}
RUNS=${UU_RUNS:-/tmp/uu_cv5}; RESULTS=results/evidence/$PROFILE; OUT=${OUT:-/tmp/out}
T0=$(date +%s); STOP_AT=$(( T0 + BUDGET - 60 ))  # a minute for the last evaluation and the packing
mkdir -p "$RUNS" "$OUT"
log() { echo "[campaign t+$(( $(date +%s) - T0 ))s] $*" | tee -a "$RUNS/campaign.log"; }
lf=$RUNS/landscape_fold$LANDSCAPE_FOLD
pack() {  # the small files of the finished runs, the logs of unfinished ones, versions: $OUT/evidence.tgz
  local pack=/tmp/uu_pack run rel; rm -rf $pack; mkdir -p $pack
  for run in "$RUNS"/*/fold*/; do
    run=${run%/}; rel=${run#"$RUNS"/}
    if [ -e "$run/eval/summary.json" ]; then
      mkdir -p "$pack/$rel/eval"
      cp "$run"/{profile.yaml,split.json,log.jsonl} "$pack/$rel/" 2>/dev/null
      cp "$run"/eval/{per_case.csv,summary.json} "$pack/$rel/eval/" 2>/dev/null
      cp "$run.log" "$pack/$rel/train.log" 2>/dev/null
    else
      mkdir -p "$pack/unfinished/$rel"; cp "$run/log.jsonl" "$run.log" "$pack/unfinished/$rel/" 2>/dev/null
    fi
  done
  [ -d "$lf" ] && cp -r "$lf" "$lf.log" "$pack/" 2>/dev/null
  cp "$RUNS"/{campaign.log,versions.txt,build.log,gpu_env.log} "$pack/" 2>/dev/null
  tar czf "$OUT/.evidence.tgz" -C $pack . && mv "$OUT/.evidence.tgz" "$OUT/evidence.tgz"
}
( while sleep 30; do pack; done ) &  # a call cut at its limit still brings back what finished
packer=$!

for done in "$RESULTS"/*/fold*/eval/summary.json; do  # committed runs: read, never retrained
  [ -e "$done" ] || continue
  run=$(dirname "$(dirname "$done")"); dest=$RUNS/${run#"$RESULTS"/}
  [ -e "$dest/eval/summary.json" ] || { mkdir -p "$dest"; cp -r "$run"/. "$dest"/; }
done

UU_SKIP_MAMBA_BUILD=1 . scripts/gpu_env.sh > "$RUNS/gpu_env.log" 2>&1
export TORCHINDUCTOR_CACHE_DIR=/tmp/uu_inductor PYTHONUNBUFFERED=1
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
  echo "commit ${UU_COMMIT:-unknown}"; } > "$RUNS/versions.txt" 2>&1
if [ "$JOBS" -gt 1 ] && command -v nvidia-cuda-mps-control > /dev/null; then
  nvidia-cuda-mps-control -d 2>/dev/null && log "CUDA MPS on"
fi

kernel() { python3 -c "import torch, selective_scan_cuda, mamba_ssm; print('mamba_ssm', mamba_ssm.__version__)"; }
ablation() {  # $1 configs, $2 jobs
  python3 -m uu ablation --params "$PROFILE" --data "$DATA" --runs "$RUNS" --folds "$FOLDS" --configs "$1" \
    --jobs "$2" --stop-at "$STOP_AT" 2>&1 | tail -12
}
if ! kernel > /dev/null 2>&1; then  # build mamba-ssm (CPU only) while the U-Net of the first fold trains
  log "building mamba-ssm; meanwhile the U-Net row"
  nice -n 19 bash scripts/build_mamba.sh > "$RUNS/build.log" 2>&1 &
  build=$!
  FOLDS=${FOLDS%%,*} ablation unet_dice_ce 1
  wait $build; tail -1 "$RUNS/build.log"
fi
kernel >> "$RUNS/versions.txt" 2>&1 || { log "NO mamba-ssm KERNEL: stopping"; }
if kernel > /dev/null 2>&1; then
  log "training folds $FOLDS, $JOBS at a time"
  ablation umamba_ua_sam,umamba_ua,umamba_ce,umamba_dice_ce,unet_dice_ce "$JOBS"
fi
log "training done for this call"

if [ -n "$LANDSCAPE_FOLD" ] && [ ! -e "$lf/landscape.json" ] \
   && [ -e "$RUNS/umamba_ua/fold$LANDSCAPE_FOLD/final.pt" ] && [ -e "$RUNS/umamba_ua_sam/fold$LANDSCAPE_FOLD/final.pt" ] \
   && [ $(( T0 + BUDGET - $(date +%s) )) -gt 150 ]; then
  log "landscapes of fold $LANDSCAPE_FOLD"
  timeout $(( T0 + BUDGET - $(date +%s) - 20 )) python3 benchmarks/ablation_evidence.py --runs "$RUNS" --data "$DATA" \
    --kind fold --seed "$LANDSCAPE_FOLD" --methods umamba_ua,umamba_ua_sam --landscape-only --out "$lf" \
    --budget-s $(( T0 + BUDGET - $(date +%s) - 40 )) > "$lf.log" 2>&1; tail -4 "$lf.log"
fi
[ "$JOBS" -gt 1 ] && echo quit | nvidia-cuda-mps-control 2>/dev/null
kill $packer 2>/dev/null

pack
log "packed $(find $pack -name summary.json | wc -l) finished runs into \$OUT/evidence.tgz"
