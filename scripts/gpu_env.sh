#!/usr/bin/env bash
# Source this on the lent GPU machine (device tool) from the repo root:
#   . scripts/gpu_env.sh
# - installs carried wheels (.whl/: nibabel, monai) into /tmp/site
# - builds mamba-ssm's fused kernel from the carried source archive (.src/mamba_ssm-*.tar.gz) for sm_90
#   only, once per machine (kept in /tmp/site while the machine stays warm); ~150 s
# - puts the repo first on PYTHONPATH (the stdlib `uu` module would shadow the package otherwise)
set -u
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
mkdir -p /tmp/site
if ls .whl/*.whl >/dev/null 2>&1 && [ ! -e /tmp/site/.wheels_done ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && touch /tmp/site/.wheels_done
fi
export PYTHONPATH="$PWD:/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
if [ ! -d /tmp/site/mamba_ssm ] && ls .src/mamba_ssm-*.tar.gz >/dev/null 2>&1 && [ "${UU_SKIP_MAMBA_BUILD:-0}" != 1 ]; then
  t0=$(date +%s)
  rm -rf /tmp/mamba_build && mkdir -p /tmp/mamba_build && tar -xzf .src/mamba_ssm-*.tar.gz -C /tmp/mamba_build
  src=$(ls -d /tmp/mamba_build/mamba_ssm-*)
  # keep only sm_90 in cc_flag (the archive hard-codes ~8 architectures)
  python3 - "$src/setup.py" <<'PY'
import re, sys
p = sys.argv[1]; s = open(p).read()
s = re.sub(r'cc_flag\.append\("-gencode"\)\s*\n(\s*)cc_flag\.append\("arch=compute_\d+a?,code=sm_\d+a?"\)', "pass", s)
s = s.replace('cc_flag = []', 'cc_flag = ["-gencode", "arch=compute_90,code=sm_90"]', 1)
open(p, "w").write(s)
PY
  grep -n "compute_" "$src/setup.py" | head -5
  (cd "$src" && MAMBA_FORCE_BUILD=TRUE MAX_JOBS=16 NVCC_THREADS=4 TORCH_CUDA_ARCH_LIST=9.0 \
     python3 -m pip wheel -q --no-build-isolation --no-deps . -w /tmp/mamba_whl) \
  && python3 -m pip install -q --no-index --no-deps --target /tmp/site /tmp/mamba_whl/mamba_ssm-*.whl
  echo "[gpu_env] mamba-ssm build: $(( $(date +%s) - t0 )) s"
fi
python3 -c "import torch, uu; print('[gpu_env] torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'uu from', uu.__path__[0])"
python3 -c "import mamba_ssm; from mamba_ssm.ops.selective_scan_interface import selective_scan_fn; print('[gpu_env] mamba_ssm', mamba_ssm.__version__)" || echo "[gpu_env] mamba_ssm NOT available: pure-PyTorch scan only"
