"""Mamba's causal depthwise conv1d (kernel 4) + SiLU, forward + backward, at a plan's Mamba-layer shapes.

    python benchmarks/bench_conv1d.py --plan 2d --batch 16 --device cuda --out runs/bench/conv1d_2d_b16.json

Compares the implementations `uu.ssm.ops.causal_conv1d` dispatches between: "conv1d" (nn.functional.conv1d with
groups = channels, padding k - 1, the output cut to L: cuDNN / oneDNN), "shift" (the sum of k shifted slices,
pure elementwise) and, on CUDA, both under torch.compile. Input (B, 2 * features[s], prod(patch / strides))
for every Mamba stage s, dtype bf16 on CUDA (the budget profile's autocast) or fp32. Prints ms per call summed
over the stages; writes JSON: {"env": device, versions, commit; "rows": [...]}.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from uu.net.plan import get_plan
from uu.ssm.ops.causal_conv1d import causal_conv1d

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_env beside this file, also when loaded by path
from bench_env import environment  # noqa: E402


def stage_shapes(plan_name: str, batch: int, patch=None) -> list[tuple[int, int, int]]:
    """(batch, d_inner, tokens) of every Mamba stage of the plan (patch: another patch size)."""
    plan = get_plan(plan_name)
    plan = replace(plan, patch_size=tuple(patch)) if patch else plan
    return [
        (batch, 2 * plan.features[s], math.prod(size))
        for s, size in enumerate(plan.feature_map_sizes())
        if s in plan.mamba_stages
    ]


def time_impl(fn, shapes, device, dtype, steps: int, warmup: int) -> float:
    """ms per forward + backward, summed over the shapes."""
    total = 0.0
    for b, d, L in shapes:
        x = torch.randn(b, d, L, device=device, dtype=dtype, requires_grad=True)
        w = torch.randn(d, 4, device=device, dtype=dtype, requires_grad=True)
        bias = torch.randn(d, device=device, dtype=dtype, requires_grad=True)
        dy = torch.randn(b, d, L, device=device, dtype=dtype)
        for i in range(warmup + steps):
            if i == warmup:
                if device.type == "cuda":
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
            torch.autograd.backward(fn(x, w, bias), dy)
        if device.type == "cuda":
            torch.cuda.synchronize()
        total += (time.perf_counter() - t0) / steps * 1000
    return total


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--plan", default="2d")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--patch", default="", help="patch size, e.g. 32,32 (default: the plan's)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default=None, choices=["bf16", "fp32"], help="default: bf16 on CUDA, fp32 on CPU")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--out", default="")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[args.dtype or ("bf16" if device.type == "cuda" else "fp32")]
    shapes = stage_shapes(args.plan, args.batch, [int(v) for v in args.patch.split(",")] if args.patch else None)
    impls = {
        name: (lambda x, w, b, name=name: causal_conv1d(x, w, b, activation="silu", impl=name))
        for name in ("conv1d", "shift")
    }
    if device.type == "cuda":  # the budget profile trains compiled
        for name in ("conv1d", "shift"):
            impls[f"{name}_compiled"] = torch.compile(
                lambda x, w, b, name=name: causal_conv1d(x, w, b, activation="silu", impl=name), dynamic=False
            )
    rows = []
    for name, fn in impls.items():
        ms = time_impl(fn, shapes, device, dtype, args.steps, args.warmup)
        rows.append(
            {
                "impl": name,
                "plan": args.plan,
                "batch": args.batch,
                "dtype": str(dtype).split(".")[-1],
                "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
                "threads": torch.get_num_threads(),
                "shapes": shapes,
                "ms_fwd_bwd": round(ms, 3),
            }
        )
        print(
            f"[conv1d] {name:15s} {ms:8.3f} ms fwd+bwd over {len(shapes)} Mamba stages "
            f"(plan {args.plan}, batch {args.batch}, {rows[-1]['dtype']}, {device.type})",
            flush=True,
        )
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"env": environment(device), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
