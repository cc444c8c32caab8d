#!/usr/bin/env bash
# Does compiling the loss pay (profile key compile_loss)? The evidence campaign's step (2D plan, batch 16,
# U-Mamba Enc, bf16, channels-last with the in-layout norm, compiled with CUDA graphs) with the loss eager and
# compiled, for the UA loss under SGD and SAM and for Dice + CE; first the GPU test of the compiled loss against the
# eager step. In the foreground of a call of a lent GPU whose mamba-ssm kernel is built (the campaign's first call
# builds it), from the repository root:
#   bash scripts/bench_loss_compile.sh
# Rows land in $OUT/loss_compile/{eager_loss,compiled_loss}.json (+ logs), packed into $OUT/loss_compile.tgz;
# commit them under results/performance/<device>/loss_compile/. The verdict goes to $UU_SPEED_SETTINGS
# (/tmp/uu_speed_settings): "compile_loss=true" when the GPU test passed and the compiled loss made the UA + SGD and
# UA + SAM steps at least 5 % faster, else empty; scripts/evidence_campaign.sh on the same machine reads it.
# A check on a CPU (eager rows, no test):
#   UU_BENCH_PLAN=tiny2d UU_BENCH_BATCH=2 UU_BENCH_MODES=eager UU_BENCH_TEST=0 bash scripts/bench_loss_compile.sh
set -u
OUT=${OUT:-/tmp/out}; dir=$OUT/loss_compile
mkdir -p "$dir"
. scripts/gpu_env.sh > "$dir/gpu_env.log" 2>&1
export TORCHINDUCTOR_CACHE_DIR=/tmp/uu_inductor
if [ "${UU_BENCH_TEST:-1}" = 1 ]; then
  python3 -m pytest -q -s tests/test_cuda_paths.py -k compiled_loss > "$dir/test_cuda_paths.log" 2>&1
  grep -E "\[cuda paths\]|passed|failed" "$dir/test_cuda_paths.log"
fi
rows=${UU_BENCH_ROWS:-umamba_enc:sgd:ua,umamba_enc:sam:ua,umamba_enc:sgd:dice_ce,umamba_enc:sgd:ce}
for variant in eager_loss compiled_loss; do
  flag=(); [ $variant = compiled_loss ] && flag=(--compile-loss)
  python3 benchmarks/profile_step.py --plan "${UU_BENCH_PLAN:-2d}" --batch "${UU_BENCH_BATCH:-16}" --rows "$rows" \
    --modes "${UU_BENCH_MODES:-reduce-overhead}" --channels-last --norm instance_in_layout --steps 30 --warmup 5 \
    --profile-steps 3 --label $variant ${flag[@]+"${flag[@]}"} --out "$dir/$variant.json" > "$dir/$variant.log" 2>&1
  grep "^\[profile_step\]" "$dir/$variant.log"
  tar czf "$OUT/.loss_compile.tgz" -C "$OUT" loss_compile && mv "$OUT/.loss_compile.tgz" "$OUT/loss_compile.tgz"
done
python3 - "$dir" "${UU_SPEED_SETTINGS:-/tmp/uu_speed_settings}" <<'PY'
import json, sys
from pathlib import Path
folder, verdict = Path(sys.argv[1]), Path(sys.argv[2])
def ms(variant):
    path = folder / f"{variant}.json"
    rows = json.loads(path.read_text())["rows"] if path.is_file() else []
    return {(r["optimizer"], r["loss"]): r.get("ms_per_step") for r in rows}
eager, compiled = ms("eager_loss"), ms("compiled_loss")
test = folder / "test_cuda_paths.log"
tested = test.is_file() and " passed" in test.read_text() and " failed" not in test.read_text()
keys = [("sgd", "ua"), ("sam", "ua")]
ratios = {k: compiled[k] / eager[k] for k in keys if eager.get(k) and compiled.get(k)}
pays = tested and len(ratios) == len(keys) and all(r <= 0.95 for r in ratios.values())
verdict.write_text("compile_loss=true\n" if pays else "")
print("[bench_loss] compiled / eager loss, ms per step:", {f"{o}+{l}": round(r, 3) for (o, l), r in ratios.items()},
      "| GPU test passed:", tested, "| verdict:", "compile_loss=true" if pays else "keep the loss eager", flush=True)
PY
