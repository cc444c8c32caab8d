#!/usr/bin/env bash
# Build mamba-ssm's CUDA extension for sm_90 (H100, H200) only from the source archive in .src/ into UU_SITE:
# setup.py's list of about eight architectures is cut to one, which divides the build time accordingly.
# The build uses the CPU only: run it in the background while the GPU trains something else, e.g.
#   setsid nohup nice -n 19 bash scripts/build_mamba.sh > build.log 2>&1 &
# UU_SITE (default /tmp/site) is where it installs; the build works in /tmp/mamba_build and leaves its wheel and the
# torch version it was built against in UU_WHEEL_DIR (default /tmp/mamba_whl).
set -u
SITE=${UU_SITE:-/tmp/site}; WHL=${UU_WHEEL_DIR:-/tmp/mamba_whl}
[ -d "$SITE/mamba_ssm" ] && { echo "[build_mamba] already built"; exit 0; }
t0=$(date +%s)
# A wheel built here before (.src/prebuilt/, with the torch version it was built against) saves the build: it is
# installed only when this torch is that torch and its kernel imports; otherwise the build below runs.
torch_now=$(python3 -c "import torch; print(torch.__version__)" 2>/dev/null)  # what a wheel is built against
pre=$(ls .src/prebuilt/mamba_ssm-*.whl 2>/dev/null | head -1)
if [ -n "$pre" ]; then
  if [ "$(cat .src/prebuilt/torch_version 2>/dev/null)" = "$torch_now" ] \
     && python3 -m pip install -q --no-index --no-deps --target "$SITE" "$pre" \
     && PYTHONPATH="$SITE:${PYTHONPATH:-}" python3 -c "import torch, selective_scan_cuda"; then
    echo "[build_mamba] prebuilt wheel $(basename "$pre") installed in $(( $(date +%s) - t0 )) s"; exit 0
  fi
  rm -rf "$SITE"/mamba_ssm* "$SITE"/selective_scan_cuda*
  echo "[build_mamba] prebuilt wheel not usable with torch $torch_now: building"
fi
rm -rf /tmp/mamba_build && mkdir -p /tmp/mamba_build "$SITE" && tar -xzf .src/mamba_ssm-*.tar.gz -C /tmp/mamba_build
src=$(ls -d /tmp/mamba_build/mamba_ssm-*)
python3 - "$src/setup.py" <<'PY'
import re, sys
p = sys.argv[1]; s = open(p).read()
s = re.sub(r'cc_flag\.append\("-gencode"\)\s*\n(\s*)cc_flag\.append\("arch=compute_\d+a?,code=sm_\d+a?"\)', "pass", s)
s = s.replace('cc_flag = []', 'cc_flag = ["-gencode", "arch=compute_90,code=sm_90"]', 1)
open(p, "w").write(s)
PY
(cd "$src" && MAMBA_FORCE_BUILD=TRUE MAX_JOBS=16 NVCC_THREADS=4 TORCH_CUDA_ARCH_LIST=9.0 \
   python3 -m pip wheel -q --no-build-isolation --no-deps . -w "$WHL") \
&& python3 -m pip install -q --no-index --no-deps --target "$SITE" "$WHL"/mamba_ssm-*.whl \
&& echo "$torch_now" > "$WHL"/torch_version \
&& echo "[build_mamba] built in $(( $(date +%s) - t0 )) s: $(du -h "$WHL"/*.whl | cut -f1) wheel" \
|| echo "[build_mamba] FAILED after $(( $(date +%s) - t0 )) s"
