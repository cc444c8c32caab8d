#!/usr/bin/env bash
# The paper's 3D SAM step (plan 3d: batch 4 of 20 x 256 x 224, U-Mamba Enc, bf16, compiled with CUDA graphs) in
# each memory-layout variant, every one beside the NCHW row of the same machine. In the foreground of a call of a
# lent GPU, from the repository root (with .whl/ and .src/ carried, as for scripts/evidence_campaign.sh):
#   bash scripts/bench_3d_variants.sh [VARIANTS]      default: nchw cl_in_layout_mor0 cl_in_layout
# Variants (benchmarks/profile_step.py rows; every layout computes the same function, tests/test_net.py):
#   nchw               NCDHW, nn.InstanceNorm: the paper profile's layout today, the baseline of every lease
#   cl_in_layout_mor0  channels-last-3d with the in-layout norm, inductor's mix-order reduction off
#                      (TORCHINDUCTOR_MIX_ORDER_REDUCTION=0): with it on, torch 2.11 failed to compile this layout
#   cl_in_layout       the same with the mix-order reduction on: does torch's version at hand still fail?
#   cl_instance        channels-last-3d with nn.InstanceNorm (which returns NCDHW)
# Each row: ms per step (15 steps after 4 warm-up steps), peak memory, device time by kernel class (3 profiled
# steps), the device, versions, commit and inductor settings (the JSON's meta.env). A row that fails to compile is
# written with its error. Rows land in $OUT/bench3d/<variant>.json, packed into $OUT/bench3d.tgz after each row;
# commit them under results/performance/<device>/step_3d/. A check of the script on a CPU:
#   UU_BENCH_PLAN=tiny3d UU_BENCH_BATCH=1 UU_BENCH_MODES=eager bash scripts/bench_3d_variants.sh
set -u
VARIANTS=${1:-nchw cl_in_layout_mor0 cl_in_layout}
OUT=${OUT:-/tmp/out}; dir=$OUT/bench3d
mkdir -p "$dir"
. scripts/gpu_env.sh > "$dir/gpu_env.log" 2>&1  # wheels, and mamba-ssm's kernel built for sm_90 (about 150 s)
export TORCHINDUCTOR_CACHE_DIR=/tmp/uu_inductor
python3 -c "import selective_scan_cuda" 2> /dev/null || echo "[bench_3d] no mamba-ssm kernel: rows use the PyTorch scan"
for variant in $VARIANTS; do
  settings=()
  case $variant in
    nchw) args=() ;;
    cl_in_layout_mor0) args=(--channels-last --norm instance_in_layout); settings=(TORCHINDUCTOR_MIX_ORDER_REDUCTION=0) ;;
    cl_in_layout) args=(--channels-last --norm instance_in_layout) ;;
    cl_instance) args=(--channels-last) ;;
    *) echo "error: unknown variant '$variant' (nchw, cl_in_layout_mor0, cl_in_layout, cl_instance)" >&2; exit 2 ;;
  esac
  echo "[bench_3d] $variant"
  env "${settings[@]}" python3 benchmarks/profile_step.py --plan "${UU_BENCH_PLAN:-3d}" --batch "${UU_BENCH_BATCH:-4}" \
    --rows umamba_enc:sam --modes "${UU_BENCH_MODES:-reduce-overhead}" --steps 15 --warmup 4 --profile-steps 3 \
    --label "$variant" "${args[@]}" \
    --out "$dir/$variant.json" > "$dir/$variant.log" 2>&1
  grep "^\[profile_step\]" "$dir/$variant.log" | tail -2
  tar czf "$OUT/.bench3d.tgz" -C "$OUT" bench3d && mv "$OUT/.bench3d.tgz" "$OUT/bench3d.tgz"
done
