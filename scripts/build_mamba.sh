#!/usr/bin/env bash
# Build mamba-ssm's CUDA extension for sm_90 (H100, H200) only from the source archive in .src/ into UU_SITE:
# setup.py's list of about eight architectures is cut to one, which divides the build time accordingly.
# The build uses the CPU only: run it in the background while the GPU trains something else, e.g.
#   setsid nohup nice -n 19 bash scripts/build_mamba.sh > build.log 2>&1 &
# UU_SITE (default /tmp/site) is where it installs; the build works in UU_BUILD_DIR (default /tmp/mamba_build) and
# leaves its wheel and the torch version it was built against in UU_WHEEL_DIR (default /tmp/mamba_whl).
# UU_MAMBA_KERNELS=bf16 builds only what a bf16 profile (amp: bf16, mamba_fp32: false) trains and evaluates with:
# the forward for fp32 and bf16 inputs and the backward for bf16 inputs (real A). The fp16 and complex kernels and
# the fp32 backward are left out (the fp32 backward then raises a clear error): a quarter of the kernels, so that
# the wheel travels to the GPU beside the data (scripts/build_mamba_wheel.sh). Default: all of them.
set -u
SITE=${UU_SITE:-/tmp/site}; WHL=${UU_WHEEL_DIR:-/tmp/mamba_whl}; BUILD=${UU_BUILD_DIR:-/tmp/mamba_build}
KERNELS=${UU_MAMBA_KERNELS:-all}
PREBUILT=${UU_PREBUILT-.src/prebuilt}  # empty: never use a prebuilt wheel
[ -d "$SITE/mamba_ssm" ] && { echo "[build_mamba] already built"; exit 0; }
case $KERNELS in all|bf16) ;; *) echo "[build_mamba] UU_MAMBA_KERNELS=$KERNELS: expected all or bf16"; exit 2;; esac
t0=$(date +%s)
# A wheel built before ($PREBUILT/, with the torch version it was built against) saves the build: it is installed
# only when this torch is that torch, its kernel imports and, on a GPU, it matches the PyTorch scan (bf16 forward
# and backward, fp32 forward: what every build holds); otherwise the build below runs.
torch_now=$(python3 -c "import torch; print(torch.__version__)" 2>/dev/null)  # what a wheel is built against
pre=$( [ -n "$PREBUILT" ] && ls "$PREBUILT"/mamba_ssm-*.whl 2>/dev/null | head -1)
if [ -n "$pre" ]; then
  if [ "$(cat "$PREBUILT"/torch_version 2>/dev/null)" = "$torch_now" ] \
     && python3 -m pip install -q --no-index --no-deps --target "$SITE" "$pre" \
     && PYTHONPATH="$SITE:${PYTHONPATH:-}" python3 -c "import torch, selective_scan_cuda" \
     && PYTHONPATH="$SITE:${PYTHONPATH:-}" python3 - <<'PY'
import torch
if torch.cuda.is_available():  # no GPU here: the import above is all that can be checked
    from uu.ssm.ops.fused_scan import kernel_errors
    errs = {f"bf16 {k}": v for k, v in kernel_errors(torch.bfloat16).items()}
    errs |= {f"fp32 {k}": v for k, v in kernel_errors(torch.float32, backward=False).items()}
    print("[build_mamba] prebuilt kernel against the PyTorch scan: largest relative error "
          + ", ".join(f"{k} {v:.1e}" for k, v in sorted(errs.items(), key=lambda kv: -kv[1])[:3]))
    assert max(v for k, v in errs.items() if k.startswith("bf16")) < 2e-2, errs
    assert max(v for k, v in errs.items() if k.startswith("fp32")) < 1e-4, errs
PY
  then
    echo "[build_mamba] prebuilt wheel $(basename "$pre") installed in $(( $(date +%s) - t0 )) s"; exit 0
  fi
  rm -rf "$SITE"/mamba_ssm* "$SITE"/selective_scan_cuda*
  echo "[build_mamba] prebuilt wheel not usable (built for torch $(cat "$PREBUILT"/torch_version 2>/dev/null), this is" \
    "torch $torch_now, or its kernel failed above): building"
fi
rm -rf "$BUILD" && mkdir -p "$BUILD" "$SITE" && tar -xzf .src/mamba_ssm-*.tar.gz -C "$BUILD"
src=$(ls -d "$BUILD"/mamba_ssm-*)
python3 - "$src" "$KERNELS" <<'PY' || { echo "[build_mamba] FAILED to patch $src"; exit 1; }
import re, sys
src, kernels = sys.argv[1:]
p = f"{src}/setup.py"; s = open(p).read()
s = re.sub(r'cc_flag\.append\("-gencode"\)\s*\n(\s*)cc_flag\.append\("arch=compute_\d+a?,code=sm_\d+a?"\)', "pass", s)
s = s.replace('cc_flag = []', 'cc_flag = ["-gencode", "arch=compute_90,code=sm_90"]', 1)
if kernels == "bf16":
    dropped = ("fwd_fp16", "bwd_fp32_real", "bwd_fp32_complex", "bwd_fp16_real", "bwd_fp16_complex", "bwd_bf16_complex")
    for name in dropped:
        line = f'"csrc/selective_scan/selective_scan_{name}.cu",'
        assert line in s, f"setup.py does not list {line}"
        s = re.sub(rf"\s*{re.escape(line)}", "", s)
    c = f"{src}/csrc/selective_scan/selective_scan.cpp"; cpp = open(c).read()
    half = re.compile(r"if \(ITYPE == at::ScalarType::Half\) \{[^}]*\} else (if \(ITYPE == at::ScalarType::BFloat16\))")
    bwd = re.compile(r'DISPATCH_ITYPE_FLOAT_AND_HALF_AND_BF16\(u\.scalar_type\(\), "selective_scan_bwd", \[&\] \{\s*'
                     r'DISPATCH_WTYPE_FLOAT_AND_COMPLEX\(A\.scalar_type\(\), "selective_scan_bwd", \[&\] \{\s*'
                     r'selective_scan_bwd_cuda<input_t, weight_t>\(params, stream\);\s*\}\);\s*\}\);')
    assert half.search(cpp) and bwd.search(cpp), "selective_scan.cpp's dispatch is not the expected one"
    cpp = half.sub(r"\1", cpp, count=1)  # fp16 inputs: "not implemented for input type 'Half'"
    cpp = bwd.sub('TORCH_CHECK(u.scalar_type() == at::ScalarType::BFloat16 && A.scalar_type() == at::ScalarType::Float,'
                  ' "selective_scan_bwd: this build has the bf16 backward only (UU_MAMBA_KERNELS=bf16)");\n'
                  '    selective_scan_bwd_cuda<at::BFloat16, float>(params, stream);', cpp)
    open(c, "w").write(cpp)
open(p, "w").write(s)
PY
(cd "$src" && MAMBA_FORCE_BUILD=TRUE MAX_JOBS=${MAX_JOBS:-16} NVCC_THREADS=${NVCC_THREADS:-4} TORCH_CUDA_ARCH_LIST=9.0 \
   python3 -m pip wheel -q --no-build-isolation --no-deps . -w "$WHL") \
&& python3 -m pip install -q --no-index --no-deps --target "$SITE" "$WHL"/mamba_ssm-*.whl \
&& echo "$torch_now" > "$WHL"/torch_version \
&& echo "[build_mamba] built in $(( $(date +%s) - t0 )) s ($KERNELS kernels): $(du -h "$WHL"/*.whl | cut -f1) wheel" \
|| echo "[build_mamba] FAILED after $(( $(date +%s) - t0 )) s"
