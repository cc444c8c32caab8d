"""Sliding-window inference latency per ACDC volume, with and without mirroring TTA.

    python benchmarks/bench_infer.py --cases 4 --repeats 2 --out runs/bench/bench_infer_gpu.json    # on a GPU
    OMP_NUM_THREADS=2 python benchmarks/bench_infer.py --cases 2 --out runs/bench/bench_infer_cpu.json
    python benchmarks/bench_infer.py --plan tiny2d --cases 1 --out /tmp/bi.json          # quick check

For each arch and mirror setting, ``uu.infer.predict_volume`` runs once on the first volume (warm-up, not
counted), then on each of the first ``--cases`` volumes (sorted by name) ``--repeats`` times. A row reports
seconds per volume (mean), slices per second and the volume shapes. Weights are random (seed 0): latency
does not depend on them. Mirroring runs 4 passes (2D plans) or 8 (3D). bf16 autocast on CUDA only.
Intensity normalisation is done before timing. ``env`` in the JSON: device, versions, commit. Nothing here is
a test: it prints and writes numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

from uu.data import load_acdc
from uu.infer import predict_volume
from uu.net import build_network, count_parameters, get_plan
from uu.ssm import last_backend

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_env beside this file, also when loaded by path
from bench_env import environment  # noqa: E402


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def device_name(device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def write_json(result, out):
    result["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]  # did other processes share the CPU?
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(result, indent=1))


def bench_row(model, images, plan, mirror, device, sw_batch_size, repeats, amp) -> dict:
    kw = dict(mirror=mirror, device=device, sw_batch_size=sw_batch_size, autocast_dtype=amp)
    predict_volume(model, images[0], plan, **kw)  # warm-up (allocator, kernels, cuDNN/oneDNN choices)
    _sync(device)
    times, slices = [], 0
    for _ in range(repeats):
        for image in images:
            t0 = time.perf_counter()
            predict_volume(model, image, plan, **kw)
            _sync(device)
            times.append(time.perf_counter() - t0)
            slices += image.shape[0]
    return {
        "mirror": mirror,
        "passes": 4 if mirror and plan.spatial_dims == 2 else 8 if mirror else 1,
        "s_per_volume": round(sum(times) / len(times), 3),
        "s_min": round(min(times), 3),
        "s_max": round(max(times), 3),
        "slices_per_s": round(slices / sum(times), 2),
        "n_timed": len(times),
    }


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=".cache/acdc.uucache.npz", help="ACDC folder or compact cache")
    p.add_argument("--cases", type=int, default=2, help="first N volumes in sorted-name order")
    p.add_argument("--plan", default="2d")
    p.add_argument("--arch", default="umamba_enc,unet", help="comma-separated archs")
    p.add_argument("--device", default="auto")
    p.add_argument("--sw-batch-size", type=int, default=None, help="default: 8 on CPU, 32 on CUDA")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--mirror", default="both", choices=["both", "on", "off"])
    p.add_argument("--out", default="runs/bench/bench_infer.json")
    args = p.parse_args(argv)
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    sw = args.sw_batch_size or (32 if device.type == "cuda" else 8)
    amp = torch.bfloat16 if device.type == "cuda" else None
    plan = get_plan(args.plan)
    cases = sorted(load_acdc(args.data, lazy=True), key=lambda c: c.name)[: args.cases]
    images = [c.image for c in cases]  # raw: predict_volume normalises, as in use
    mirrors = {"both": [False, True], "on": [True], "off": [False]}[args.mirror]
    result = {
        "device": device_name(device),
        "device_type": device.type,
        "torch": torch.__version__,
        "num_threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "plan": plan.name,
        "patch_size": list(plan.patch_size),
        "sw_batch_size": sw,
        "overlap": 0.5,
        "autocast": "bf16" if amp else None,
        "repeats": args.repeats,
        "data": str(args.data),
        "cases": [c.name for c in cases],
        "volume_shapes": [list(im.shape) for im in images],
        "scan_backend": None,
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
        "env": environment(device),
        "rows": [],
    }
    print(json.dumps({k: v for k, v in result.items() if k != "rows"}), flush=True)
    for arch in args.arch.split(","):
        torch.manual_seed(0)
        model = build_network(plan, arch).to(device).eval()
        for mirror in mirrors:
            with torch.inference_mode():
                row = bench_row(model, images, plan, mirror, device, sw, args.repeats, amp)
            row = {
                "arch": arch,
                "params_M": round(count_parameters(model) / 1e6, 2),
                "scan_backend": last_backend() if len(model.mamba) else None,
                **row,
            }
            result["scan_backend"] = result["scan_backend"] or row["scan_backend"]
            print(json.dumps(row), flush=True)
            result["rows"].append(row)
            write_json(result, args.out)  # after every row: a long CPU run keeps what it measured
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()
    print("wrote", args.out)


if __name__ == "__main__":
    main()
