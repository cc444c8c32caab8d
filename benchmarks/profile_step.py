"""Where a training step's time goes, by kernel class: U-Net against U-Mamba Enc, SGD against SAM, eager against
compiled; one JSON, one table.

    python benchmarks/profile_step.py --plan 2d --batch 32 --rows unet:sgd,umamba_enc:sgd,umamba_enc:sam \
        --modes eager,reduce-overhead --out runs/bench/steps_2d_b32.json
    python benchmarks/profile_step.py --uu-path .old ...       # the same rows through an older checkout of uu
    python benchmarks/profile_step.py --plan tiny2d --batch 2 --steps 2 --modes eager --out /tmp/p.json  # CPU

Each row (plan, arch, optimizer, precision, batch, compile, ms_per_step, ...) times ``--steps`` steps after a
warm-up (torch.compile's included, reported as warmup_s), then profiles ``--profile-steps`` more (0: none) with
torch.profiler and sums the device time of every kernel into classes: convolution, matmul, scan, norm,
copy/cast, elementwise, reduction, optimizer, compiled (Triton kernels torch.compile fused), other; idle is the
step's wall time the device spent on nothing (launch overhead, host synchronisation). Random batches: the data
pipeline is timed elsewhere (bench_train.py). Rows of one arch and mode share one compiled network. The JSON's
``meta.env`` records the device, versions and commit (benchmarks/bench_env.py); each row its layout (channels_last,
norm_layer), compile mode and conv1d implementation. Nothing here is a test: it prints and writes numbers,
rewriting the JSON after every row.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import traceback
from functools import partial
from pathlib import Path

CLASSES = (
    "convolution",
    "matmul",
    "scan",
    "norm",
    "copy/cast",
    "elementwise",
    "reduction",
    "optim_step",
    "compiled",
    "other",
)
RULES = [  # (class, substrings of the lower-cased kernel name), first match wins
    ("scan", ("selective_scan",)),
    ("optim_step", ("multi_tensor_apply", "foreach", "fused_sgd", "_amp_")),
    ("compiled", ("triton_",)),
    ("convolution", ("conv", "fprop", "dgrad", "wgrad", "implicit_gemm", "cudnn")),
    ("matmul", ("gemm", "nvjet", "cutlass", "cublas", "matmul")),
    ("norm", ("norm", "welford")),
    ("copy/cast", ("copy", "memcpy", "cat", "transpose", "permute")),
    ("reduction", ("reduce", "sum_kernel", "argmax")),
    (
        "elementwise",
        (
            "elementwise",
            "vectorized",
            "pointwise",
            "fill",
            "memset",
            "leaky",
            "silu",
            "softmax",
            "where",
            "index",
            "scatter",
            "gather",
            "grid_sampler",
            "pool",
            "upsample",
        ),
    ),
]


def kernel_class(name: str) -> str:
    low = name.lower()
    for cls, keys in RULES:
        if any(k in low for k in keys):
            return cls
    return "other"


def top_kernels(prof, steps: int, k: int = 15) -> list:
    """The k kernels of most device time: [name (cut to 90 characters), class, ms per step]."""
    from torch.autograd import DeviceType

    events = [e for e in prof.key_averages() if e.device_type == DeviceType.CUDA and e.self_device_time_total > 0]
    events.sort(key=lambda e: -e.self_device_time_total)
    return [[e.key[:90], kernel_class(e.key), round(e.self_device_time_total / 1e3 / steps, 3)] for e in events[:k]]


def kernel_table(prof, steps: int, wall_ms: float) -> dict:
    """{class: device ms per step} + busy_ms, idle_ms from a torch.profiler run of `steps` steps."""
    from torch.autograd import DeviceType

    out = dict.fromkeys(CLASSES, 0.0)
    for e in prof.key_averages():
        if e.device_type == DeviceType.CUDA and e.self_device_time_total > 0:
            out[kernel_class(e.key)] += e.self_device_time_total / 1e3 / steps
    busy = sum(out.values())
    out = {k: round(v, 2) for k, v in out.items()}
    out["busy_ms"] = round(busy, 2)  # idle = ms_per_step - busy_ms (the profiler's own overhead inflates its wall)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--plan", default="2d")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument(
        "--rows",
        default="unet:sgd,umamba_enc:sgd,umamba_enc:sam",
        help="arch:optimizer[:loss],... (loss: ce | dice_ce | ua; default dice_ce for unet, else ua)",
    )
    p.add_argument(
        "--modes", default="eager,reduce-overhead", help="eager | default | reduce-overhead, comma-separated"
    )
    p.add_argument("--precision", default="bf16", choices=["bf16", "fp32"])
    p.add_argument("--mamba-fp32", action="store_true", help="the authors' setting (Mamba layers in fp32)")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument(
        "--norm",
        default="instance",
        choices=("instance", "instance_in_layout"),
        help="uu.net.NORMS: instance_in_layout keeps a channels-last network channels-last",
    )
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--profile-steps", type=int, default=3)
    p.add_argument(
        "--uu-path",
        default="",
        help="import uu from this folder (an older checkout: the 'before' "
        "rows); default: the checkout this script is in",
    )
    p.add_argument("--label", default="", help="written into every row (e.g. before / after)")
    p.add_argument("--max-seconds", type=float, default=1e9, help="skip the remaining rows after this long")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    # A checkout always goes first: started from a shell script with the repository on PYTHONPATH (uu not
    # installed), Python 3.12 once imported its standard-library `uu` module instead ("'uu' is not a package").
    sys.path.insert(0, str(Path(args.uu_path or Path(__file__).resolve().parents[1]).resolve()))
    sys.path.insert(1, str(Path(__file__).resolve().parent))  # bench_env beside this file
    import torch
    from bench_env import environment
    from torch.profiler import ProfilerActivity, profile

    import uu
    import uu.net
    from uu.losses import build_loss
    from uu.net import build_network, get_plan
    from uu.sam import SAM
    from uu.step import compile_model, train_step

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.cudnn.benchmark = True
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    plan = get_plan(args.plan)
    norm = {} if args.norm == "instance" else {"norm": uu.net.NORMS[args.norm]}  # an older --uu-path has no NORMS
    fused = "fused" in SAM.second_step.__code__.co_varnames or hasattr(uu, "loop")  # this checkout's SGD rule
    autocast = torch.bfloat16 if args.precision == "bf16" and device.type == "cuda" else None
    meta = {
        "uu_path": args.uu_path or str(Path(uu.__file__).parent),
        "label": args.label,
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name() if device.type == "cuda" else platform.processor(),
        "fused_sgd": fused,
        "env": environment(device),
    }
    out_path = Path(args.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    rows, start = [], time.perf_counter()
    x = torch.randn(args.batch, 1, *plan.patch_size, device=device)
    y = torch.randint(0, 4, (args.batch, *plan.patch_size), device=device)
    for mode in args.modes.split(","):
        built = {}
        for spec in args.rows.split(","):
            if time.perf_counter() - start > args.max_seconds:
                print(f"[profile_step] {args.max_seconds:.0f} s spent: skipping {mode} {spec}", flush=True)
                continue
            arch, optimizer, *named = spec.split(":")
            loss_name = named[0] if named else ("dice_ce" if arch == "unet" else "ua")
            if arch not in built:
                torch.manual_seed(0)
                model = build_network(plan, arch, mamba_fp32=args.mamba_fp32, channels_last=args.channels_last, **norm)
                model = model.to(device).train()
                built = {arch: (model, model if mode == "eager" else compile_model(model, mode))}
            model, run = built[arch]
            loss_fn = build_loss(loss_name).to(device)
            groups = [
                {"params": list(model.parameters()), "weight_decay": 3e-5},
                {"params": list(loss_fn.parameters()), "weight_decay": 0.0},
            ]
            kw = dict(
                lr=1e-3, momentum=0.99, nesterov=True, **({"fused": True} if fused and device.type == "cuda" else {})
            )
            opt = SAM(groups, torch.optim.SGD, rho=0.05, **kw) if optimizer == "sam" else torch.optim.SGD(groups, **kw)
            step = partial(train_step, run, loss_fn, opt, x, y, autocast_dtype=autocast)
            setting = {
                "label": args.label,
                "plan": plan.name,
                "arch": arch,
                "optimizer": optimizer,
                "loss": loss_name,
                "precision": args.precision,
                "mamba_fp32": args.mamba_fp32,
                "channels_last": args.channels_last,
                "norm_layer": args.norm,
                "batch": args.batch,
                "compile": False if mode == "eager" else mode,
            }
            try:
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats()
                t0 = time.perf_counter()
                for _ in range(args.warmup):
                    step()
                sync()
                warmup = time.perf_counter() - t0
                t0 = time.perf_counter()
                for _ in range(args.steps):
                    step()
                sync()
                ms = (time.perf_counter() - t0) / args.steps * 1e3
                activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
                t0, prof, wall = time.perf_counter(), None, None
                if args.profile_steps > 0:
                    with profile(activities=activities) as prof:
                        for _ in range(args.profile_steps):
                            step()
                        sync()
                    wall = (time.perf_counter() - t0) / args.profile_steps * 1e3
            except Exception as err:  # a mode that fails on this stack is reported, not fatal
                print(f"[profile_step] {mode} {spec} failed: {type(err).__name__}: {err}", flush=True)
                traceback.print_exc()  # the whole trace in the log: an inductor error's message alone names no cause
                rows.append({**setting, "error": f"{type(err).__name__}: {str(err)[:300]}"})
                out_path.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
                continue
            profiled = prof is not None and device.type == "cuda"
            row = {
                **setting,
                "ms_per_step": round(ms, 2),
                "warmup_s": round(warmup, 1),
                "profiled_ms_per_step": None if wall is None else round(wall, 2),
                "samples_per_s": round(args.batch / ms * 1e3, 1),
                "peak_mem_gb": round(torch.cuda.max_memory_allocated() / 2**30, 2) if device.type == "cuda" else None,
                "conv1d_impl": os.environ.get("UU_CONV1D", "auto"),
                "kernels_ms": kernel_table(prof, args.profile_steps, wall) if profiled else {},
                "top_kernels": top_kernels(prof, args.profile_steps) if profiled else [],
            }
            rows.append(row)
            print(
                f"[profile_step] {args.label} {plan.name} {arch} {optimizer} {loss_name} {mode}: {ms:.1f} ms/step "
                f"(warm-up {warmup:.0f} s) {row['kernels_ms']}",
                flush=True,
            )
            out_path.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
            del opt, loss_fn
        del built
        if device.type == "cuda":
            torch.cuda.empty_cache()
    out_path.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    print(markdown(rows))


def markdown(rows) -> str:
    """The kernel-class table: one line per row, device ms per step per class."""
    head = ["label", "plan", "arch", "optimizer", "loss", "compile", "channels_last", "norm_layer"]
    head += ["batch", "ms_per_step"]
    head += ["peak_mem_gb", *CLASSES, "idle_ms"]
    rows = [
        dict(r, idle_ms=round(max(r["ms_per_step"] - r["kernels_ms"]["busy_ms"], 0.0), 2)) if r.get("kernels_ms") else r
        for r in rows
    ]
    lines = ["| " + " | ".join(head) + " |", "| " + " | ".join("---" for _ in head) + " |"]
    for r in rows:
        k = r.get("kernels_ms") or {}
        if "error" in r:
            r = dict(r, ms_per_step="failed: " + r["error"][:60].replace("|", "/"))
        lines.append("| " + " | ".join(str(r[h] if h in r else k.get(h, "")) for h in head) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
