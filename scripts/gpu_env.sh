#!/usr/bin/env bash
# Source this on an offline GPU machine (H100 / H200, no package index reachable) from the repo root, after copying
# the checkout there with the wheels and the source archive beside it (see docs/gpu.md):
#   . scripts/gpu_env.sh
# - installs the wheels in .whl/ (nibabel, monai, ...) into /tmp/site
# - builds mamba-ssm's fused kernel from the source archive .src/mamba_ssm-*.tar.gz for sm_90 only, once per
#   machine (kept in /tmp/site); 131-174 s on an H200's 16 cores
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
  bash "$(dirname "${BASH_SOURCE[0]}")/build_mamba.sh"  # the one build recipe (sm_90 only, into /tmp/site)
fi
if [ "${UU_ENV_CHECKS:-1}" = 1 ]; then  # 0: the caller checks (each check is a torch import: seconds)
  python3 -c "import torch, uu; print('[gpu_env] torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'uu from', uu.__path__[0])"
  python3 -c "import mamba_ssm; from mamba_ssm.ops.selective_scan_interface import selective_scan_fn; print('[gpu_env] mamba_ssm', mamba_ssm.__version__)" || echo "[gpu_env] mamba_ssm NOT available: pure-PyTorch scan only"
fi
