"""Network speed: forward + backward + SGD step of unet / umamba_bot / umamba_enc.

CUDA (default plans "3d" at batch 4 and "2d" at batch 32, bf16 autocast, Mamba layers in fp32 as the
authors ran them): iterations/s, peak memory, ratios to "unet". --quick: fewer iterations.
CPU mode (--device cpu) runs the tiny plans so the script can be checked anywhere.
Writes JSON to --out (default runs/bench/bench_network_<device>.json); ``env`` records device, versions, commit.

    python benchmarks/bench_network.py --device cuda [--quick]
    python benchmarks/bench_network.py --device cpu
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import torch

import uu.ssm as ssm
from uu.net import build_network, count_parameters, get_plan

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_env beside this file, also when loaded by path
from bench_env import environment  # noqa: E402

ARCHS = ["unet", "umamba_bot", "umamba_enc"]


def bench(plan_name, arch, batch, device, amp, iters, warmup, checkpoint_mamba=False):
    torch.manual_seed(0)
    plan = get_plan(plan_name)
    model = build_network(plan, arch, checkpoint_mamba=checkpoint_mamba).to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.99, nesterov=True)
    x = torch.randn(batch, 1, *plan.patch_size, device=device)
    y = torch.randint(0, 4, (batch, *plan.patch_size), device=device)

    def step():
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=amp):
            outs = model(x)
            loss = torch.nn.functional.cross_entropy(outs[0].float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(warmup):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    for _ in range(iters):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - t) / iters
    peak = (
        torch.cuda.max_memory_allocated()
        if device == "cuda"
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    )
    return {
        "plan": plan_name,
        "arch": arch,
        "batch": batch,
        "patch": list(plan.patch_size),
        "amp_bf16": amp,
        "checkpoint_mamba": checkpoint_mamba,
        "params": count_parameters(model),
        "s_per_iter": seconds,
        "it_per_s": 1 / seconds,
        "peak_bytes": peak,
        "scan_backend": ssm.last_backend() if len(model.mamba) else None,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda", choices=["cpu", "cuda"])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--archs", default=",".join(ARCHS))
    ap.add_argument("--checkpoint-mamba", action="store_true")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if args.device == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit("bench_network: --device cuda but no GPU is visible; use --device cpu")
        configs = [("3d", 4), ("2d", 32)]
        iters, warmup, amp = (5, 2, True) if args.quick else (20, 5, True)
    else:
        configs = [("tiny2d", 2), ("tiny3d", 2)]
        iters, warmup, amp = (2, 1, False) if args.quick else (5, 1, False)
    rows = []
    for plan_name, batch in configs:
        for arch in args.archs.split(","):
            r = bench(plan_name, arch, batch, args.device, amp, iters, warmup, args.checkpoint_mamba)
            rows.append(r)
            print(
                f"{plan_name:6s} {arch:11s} batch {batch:2d}: {r['it_per_s']:7.2f} it/s, "
                f"{r['params'] / 1e6:6.2f} M params, peak {r['peak_bytes'] / 2**30:.2f} GiB, scan {r['scan_backend']}"
            )
    for r in rows:  # ratios to the plain U-Net of the same plan
        base = next((q for q in rows if q["plan"] == r["plan"] and q["arch"] == "unet"), None)
        if base:
            r["time_ratio_vs_unet"] = r["s_per_iter"] / base["s_per_iter"]
            r["memory_ratio_vs_unet"] = r["peak_bytes"] / base["peak_bytes"]
    res = {
        "device": args.device,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name() if args.device == "cuda" else None,
        "note": "forward + backward + SGD step; CPU peak is the process max RSS",
        "env": environment(args.device),
        "rows": rows,
    }
    out = Path(args.out or f"runs/bench/bench_network_{args.device}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
