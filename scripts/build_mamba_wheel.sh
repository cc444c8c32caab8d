#!/usr/bin/env bash
# Build mamba-ssm's sm_90 wheel on a machine without a GPU (CUDA from the package registry), for an offline GPU
# machine whose torch is TORCH, and leave it in .src/prebuilt/ where scripts/build_mamba.sh installs it instead of
# building (2 to 3 minutes of the GPU machine saved per fresh machine):
#   bash scripts/build_mamba_wheel.sh [TORCH]          TORCH default 2.11.0 (PyPI's build for CUDA 13.0)
# UU_MAMBA_KERNELS (default bf16 here) picks the kernels (scripts/build_mamba.sh): bf16 makes an 8 MB wheel, all a
# 40 MB one. Debug information is stripped (half of the bf16 wheel; the kernels themselves do not compress).
# UU_BUILD_ENV (default /tmp/mamba_cpu_env) is the Python 3.12 environment it builds in (about 5 GB: torch, nvcc,
# the CUDA 13.0 headers and runtime), made once from UU_PYTHON (default python3.12) and reused.
# About 2 minutes (bf16) or 6 (all) on 2 cores.
set -eu
TORCH=${1:-2.11.0}; ENV=${UU_BUILD_ENV:-/tmp/mamba_cpu_env}; KERNELS=${UU_MAMBA_KERNELS:-bf16}
OUT=.src/prebuilt; WORK=/tmp/mamba_cpu_wheel
PY312=${UU_PYTHON:-$(command -v python3.12 || true)}  # the GPU machine's Python: the wheel is for cp312
[ -n "$PY312" ] || {
  echo "[build_mamba_wheel] needs Python 3.12 (the GPU machine's): put python3.12 on PATH or set UU_PYTHON"; exit 2; }
ls .src/mamba_ssm-*.tar.gz > /dev/null || {
  echo "[build_mamba_wheel] run from the repository root with .src/ (docs/gpu.md)"; exit 2; }
if [ ! -x "$ENV/bin/python3" ]; then
  "$PY312" -m venv "$ENV"
  # nvcc 13.0 needs nvvm 13.0 (a newer nvvm fails in ptxas); torch's own CUDA libraries come with it
  "$ENV/bin/python3" -m pip install -q "torch==$TORCH" numpy ninja packaging setuptools wheel \
    "cuda-toolkit[nvcc,cccl,cudart,crt]==13.0.2" "nvidia-nvvm~=13.0.0"
fi
CUDA=$(ls -d "$ENV"/lib/python3.12/site-packages/nvidia/cu13)
[ -e "$CUDA/lib64" ] || ln -s lib "$CUDA/lib64"  # where torch's extension builder looks for libcudart
[ -e "$CUDA/lib/libcudart.so" ] || ln -s libcudart.so.13 "$CUDA/lib/libcudart.so"
rm -rf "$WORK" && mkdir -p "$WORK"
PATH="$ENV/bin:$CUDA/bin:$PATH" CUDA_HOME=$CUDA UU_PREBUILT="" UU_MAMBA_KERNELS=$KERNELS UU_SITE=$WORK/site \
  UU_BUILD_DIR=$WORK/build UU_WHEEL_DIR=$WORK/wheel MAX_JOBS=$(nproc) NVCC_THREADS=1 \
  bash scripts/build_mamba.sh | tee "$WORK/build.log"
ls "$WORK"/wheel/mamba_ssm-*.whl > /dev/null || { echo "[build_mamba_wheel] the build failed: $WORK/build.log"; exit 1; }
"$ENV/bin/python3" -m wheel unpack -d "$WORK/unpacked" "$WORK"/wheel/mamba_ssm-*.whl > /dev/null
strip --strip-debug "$WORK"/unpacked/*/selective_scan_cuda*.so
rm -rf "$OUT" && mkdir -p "$OUT"
"$ENV/bin/python3" -m wheel pack -d "$OUT" "$WORK"/unpacked/mamba_ssm-* > /dev/null  # writes a new RECORD
cp "$WORK/wheel/torch_version" "$OUT/"
echo "$KERNELS" > "$OUT/kernels"
echo "[build_mamba_wheel] $(ls "$OUT"/*.whl) ($(du -h "$OUT"/*.whl | cut -f1), $KERNELS kernels," \
  "torch $(cat "$OUT/torch_version"))"
