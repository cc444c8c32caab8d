"""Train-step throughput, the chip's ceilings and the data pipeline, in one run.

    python benchmarks/bench_train.py --rows full --cudnn-benchmark \
        --out results/performance/h200/train_steps/full_rows.json
    python benchmarks/bench_train.py --plan tiny2d --batch 2 --steps 3 --out /tmp/b.json   # CPU check

Each configuration is one row: plan, arch, optimizer (sgd | sam), precision (bf16 autocast or fp32),
Mamba layers in fp32 (the authors' setting) or in the autocast dtype, channels-last, torch.compile.
A row reports milliseconds per step, iterations/s, voxels/s, peak memory and, for the first row of each
arch, the matmul/conv FLOPs of one step (torch.utils.flop_counter; the selective scan itself is not
counted) and the fraction of the measured bf16 matmul ceiling that implies. The ratios that say where the
time goes (SAM over SGD, U-Mamba Enc over U-Net, the residual encoder over U-Net, the authors' fp32 over our
bf16, eager over compiled) are computed at the end from rows of the same run: rows of different runs or cards
are not compared. The JSON's ``env`` records the device, versions and commit. Nothing here is a test.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_env beside this file, also when loaded by path
from bench_env import environment  # noqa: E402

from uu.losses import build_loss
from uu.net import build_network, count_parameters, get_plan
from uu.sam import SAM
from uu.step import compile_model, train_step


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def ceilings(device) -> dict:
    """Measured bf16 matmul rate (TFLOP/s) and device-to-device copy bandwidth (TB/s)."""
    if device.type != "cuda":
        return {}
    n = 8192
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    _sync(device)
    reps, t0 = 20, time.perf_counter()
    for _ in range(reps):
        a @ b
    _sync(device)
    tflops = 2 * n**3 * reps / (time.perf_counter() - t0) / 1e12
    x = torch.empty(2**30 // 2, device=device, dtype=torch.bfloat16)  # 1 GiB
    y = torch.empty_like(x)
    for _ in range(3):
        y.copy_(x)
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(20):
        y.copy_(x)
    _sync(device)
    tbs = 2 * x.numel() * 2 * 20 / (time.perf_counter() - t0) / 1e12  # read + write
    del a, b, x, y
    torch.cuda.empty_cache()
    return {"bf16_matmul_tflops": round(tflops, 1), "copy_tb_per_s": round(tbs, 2)}


def step_flops(model, loss_fn, x, y) -> float:
    """Matmul/conv FLOPs of one forward + backward (torch's flop counter; the scan is not counted)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        loss_fn(model(x), y).backward()
    model.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def bench_config(
    plan_name,
    arch,
    optimizer,
    precision,
    mamba_fp32,
    channels_last,
    compile_mode,
    batch,
    steps,
    warmup,
    device,
    count_flops=False,
) -> dict:
    """compile_mode: False (eager), "default" or "reduce-overhead" (torch.compile with CUDA graphs)."""
    plan = get_plan(plan_name)
    torch.manual_seed(0)
    model = build_network(plan, arch, mamba_fp32=mamba_fp32, channels_last=channels_last).to(device)
    model.train()
    x = torch.randn(batch, 1, *plan.patch_size, device=device)
    y = torch.randint(0, 4, (batch, *plan.patch_size), device=device)
    n_out = len(model(x[:1]))
    loss_fn = build_loss("ua", deep_supervision_outputs=n_out).to(device)
    params = [
        {"params": model.parameters(), "weight_decay": 3e-5},
        {"params": loss_fn.parameters(), "weight_decay": 0.0},
    ]
    kw = dict(lr=1e-3, momentum=0.99, nesterov=True)
    opt = SAM(params, torch.optim.SGD, rho=0.05, **kw) if optimizer == "sam" else torch.optim.SGD(params, **kw)
    autocast = torch.bfloat16 if precision == "bf16" else None
    flops = None
    if count_flops:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast is not None):
            flops = step_flops(model, loss_fn, x, y) * (2 if optimizer == "sam" else 1)
    run_model = compile_model(model, compile_mode) if compile_mode else model
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t_compile = time.perf_counter()
    for _ in range(warmup):
        train_step(run_model, loss_fn, opt, x, y, autocast_dtype=autocast)
    _sync(device)
    t_compile = time.perf_counter() - t_compile
    t0 = time.perf_counter()
    for _ in range(steps):
        train_step(run_model, loss_fn, opt, x, y, autocast_dtype=autocast)
    _sync(device)
    sec = (time.perf_counter() - t0) / steps
    row = {
        "plan": plan_name,
        "arch": arch,
        "optimizer": optimizer,
        "precision": precision,
        "mamba_fp32": mamba_fp32,
        "channels_last": channels_last,
        "compile": compile_mode,
        "batch": batch,
        "params_M": round(count_parameters(model) / 1e6, 2),
        "ms_per_step": round(sec * 1e3, 2),
        "it_per_s": round(1 / sec, 2),
        "voxels_per_s": round(batch * torch.Size(plan.patch_size).numel() / sec),
        "warmup_s": round(t_compile, 1),
    }
    if device.type == "cuda":
        row["peak_mem_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    if flops:
        row["gflop_per_step"] = round(flops / 1e9, 1)
        row["achieved_tflops"] = round(flops / sec / 1e12, 1)
    del model, opt, loss_fn, run_model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return row


def bench_pipeline(plan_name, batch, device, seconds=5.0) -> dict:
    """Batches/s that sampling + augmentation deliver for the plan's patch (data resident on `device`)."""
    import tempfile

    from uu.augment import Augmenter
    from uu.data import load_acdc, make_phantom, normalize_intensity
    from uu.sampling import PatchSampler

    plan = get_plan(plan_name)
    with tempfile.TemporaryDirectory() as tmp:
        cases = load_acdc(make_phantom(tmp, n_patients=10, seed=0))
    images = [normalize_intensity(c.image) for c in cases]
    labels = [c.label for c in cases]
    sampler = PatchSampler(images, labels, plan.patch_size, batch_size=batch, device=device, seed=0)
    aug = Augmenter(spatial_dims=plan.spatial_dims, seed=0, device=device)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        x, y = sampler.sample()
        x, y = aug(x, y)
        n += 1
    _sync(device)
    return {
        "plan": plan_name,
        "batch": batch,
        "device": str(device),
        "batches_per_s": round(n / (time.perf_counter() - t0), 1),
    }


DEFAULT_ROWS = [
    # plan, arch, optimizer, precision, mamba_fp32, channels_last, compile
    ("3d", "unet", "sgd", "bf16", True, False, False),
    ("3d", "umamba_enc", "sgd", "bf16", True, False, False),
    ("3d", "umamba_enc", "sgd", "bf16", False, False, False),
    ("3d", "umamba_enc", "sgd", "fp32", True, False, False),
    ("3d", "umamba_enc", "sam", "bf16", False, False, False),
    ("3d", "umamba_bot", "sgd", "bf16", False, False, False),
    ("3d", "unet", "sgd", "bf16", True, True, False),
    ("2d", "unet", "sgd", "bf16", True, False, False),
    ("2d", "umamba_enc", "sgd", "bf16", False, False, False),
    ("2d", "umamba_enc", "sam", "bf16", False, False, False),
    ("2d", "umamba_bot", "sgd", "bf16", False, False, False),
    ("2d", "umamba_enc", "sgd", "bf16", False, False, "default"),
]

# The same questions in channels-last (run with --cudnn-benchmark), beside the authors' setting (fp32, Mamba fp32,
# NCDHW) and our bf16 with the Mamba layers in fp32.
FAST_ROWS = [
    ("3d", "unet", "sgd", "bf16", True, True, False),
    ("3d", "umamba_enc", "sgd", "bf16", False, True, False),
    ("3d", "umamba_enc", "sam", "bf16", False, True, False),
    ("3d", "umamba_enc", "sgd", "fp32", True, False, False),
    ("3d", "umamba_enc", "sgd", "bf16", True, True, False),
    ("2d", "unet", "sgd", "bf16", True, True, False),
    ("2d", "umamba_enc", "sgd", "bf16", False, True, False),
    ("2d", "umamba_enc", "sam", "bf16", False, True, False),
    ("2d", "umamba_enc", "sgd", "fp32", True, False, False),
    ("2d", "umamba_bot", "sgd", "bf16", False, True, False),
]

# Every figure in one run. Eager rows first (a compile failure must not cost them), then torch.compile
# ("default": Inductor kernels; "reduce-overhead": the same plus CUDA graphs). "resunet" is U-Mamba Enc without
# its Mamba layers: it splits enc/unet into the residual encoder's cost and Mamba's.
FULL_ROWS = [
    ("3d", "unet", "sgd", "bf16", True, True, False),
    ("3d", "resunet", "sgd", "bf16", True, True, False),
    ("3d", "umamba_enc", "sgd", "bf16", False, True, False),
    ("3d", "umamba_enc", "sam", "bf16", False, True, False),
    ("3d", "umamba_enc", "sgd", "bf16", True, True, False),
    ("3d", "umamba_enc", "sgd", "fp32", True, False, False),
    ("3d", "umamba_enc", "sgd", "bf16", False, False, False),
    ("3d", "umamba_bot", "sgd", "bf16", False, True, False),
    ("2d", "unet", "sgd", "bf16", True, False, False),
    ("2d", "resunet", "sgd", "bf16", True, False, False),
    ("2d", "umamba_enc", "sgd", "bf16", False, False, False),
    ("2d", "umamba_enc", "sam", "bf16", False, False, False),
    ("2d", "umamba_enc", "sgd", "fp32", True, False, False),
    ("2d", "umamba_enc", "sgd", "bf16", False, True, False),
    ("2d", "umamba_bot", "sgd", "bf16", False, False, False),
    ("2d", "umamba_enc", "sam", "bf16", False, False, "default"),
    ("2d", "umamba_enc", "sam", "bf16", False, False, "reduce-overhead"),
    ("2d", "umamba_enc", "sgd", "bf16", False, False, "default"),
    ("2d", "unet", "sgd", "bf16", True, False, "default"),
    ("2d", "unet", "sgd", "bf16", True, False, "reduce-overhead"),
    ("3d", "unet", "sgd", "bf16", True, True, "default"),
    ("3d", "umamba_enc", "sgd", "bf16", False, True, "default"),
]
# The 2D SAM step of the budget profile eager, compiled, compiled with CUDA graphs.
COMPILE_ROWS = [
    ("2d", "umamba_enc", "sam", "bf16", False, False, mode) for mode in (False, "default", "reduce-overhead")
]
ROW_SETS = {"default": DEFAULT_ROWS, "fast": FAST_ROWS, "full": FULL_ROWS, "compile": COMPILE_ROWS}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/bench/bench_train.json")
    p.add_argument("--plan", default=None, help="run only rows of this plan (any plan name, e.g. tiny2d)")
    p.add_argument("--batch", type=int, default=None, help="override batch (default: 4 for 3d, 32 for 2d)")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--no-compile", action="store_true")
    p.add_argument("--max-seconds", type=float, default=1e9, help="skip remaining rows after this long")
    p.add_argument(
        "--rows",
        default="default",
        choices=sorted(ROW_SETS),
        help="default: bf16 rows in NCHW / NCDHW beside the authors' fp32; fast: channels-last rows beside "
        "the authors' fp32 setting; full: every figure in one run (compile, CUDA graphs, resunet, bot); "
        "compile: the 2D SAM step eager / compiled / compiled with CUDA graphs",
    )
    p.add_argument("--cudnn-benchmark", action="store_true", help="as training does (profile key cudnn_benchmark)")
    args = p.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.cudnn.benchmark = args.cudnn_benchmark
    rows = ROW_SETS[args.rows]
    if args.plan:
        rows = [(args.plan,) + r[1:] for r in rows if r[0] == ("3d" if args.plan in ("3d", "tiny3d") else "2d")]
    if args.no_compile or device.type != "cuda":
        rows = [r for r in rows if not r[6]]
    env = environment(device)
    result = {
        "device": env["device"],
        "torch": env["torch"],
        "env": env,
        "cudnn_benchmark": args.cudnn_benchmark,
        "rows": args.rows,
        "ceilings": ceilings(device),
        "steps": [],
        "pipeline": [],
    }
    print(json.dumps(result["ceilings"]))
    start, seen_arch = time.perf_counter(), set()
    for r in rows:
        if time.perf_counter() - start > args.max_seconds:
            print("time budget reached, skipping", r)
            continue
        batch = args.batch or (4 if r[0] == "3d" else 32)
        key = (r[0], r[1])
        try:
            row = bench_config(
                *r, batch=batch, steps=args.steps, warmup=args.warmup, device=device, count_flops=key not in seen_arch
            )
        except Exception as err:  # keep the other rows (an OOM or a compile failure is a result too)
            row = dict(
                zip(["plan", "arch", "optimizer", "precision", "mamba_fp32", "channels_last", "compile"], r),
                error=f"{type(err).__name__}: {str(err)[:300]}",
            )
        seen_arch.add(key)
        if "achieved_tflops" in row and result["ceilings"]:
            row["fraction_of_bf16_peak"] = round(row["achieved_tflops"] / result["ceilings"]["bf16_matmul_tflops"], 3)
        print(json.dumps(row), flush=True)
        result["steps"].append(row)
        _write(result, args.out)  # after every row: a run killed at its time limit keeps what it measured
    for plan_name in sorted({r[0] for r in rows}):
        try:
            result["pipeline"].append(bench_pipeline(plan_name, args.batch or (4 if plan_name == "3d" else 32), device))
        except Exception as err:
            result["pipeline"].append({"plan": plan_name, "error": f"{type(err).__name__}: {err}"})
        print(json.dumps(result["pipeline"][-1]))
    result["ratios"] = ratios(result["steps"])
    print(json.dumps(result["ratios"], indent=1))
    _write(result, args.out)


def _write(result, out):
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(result, indent=1))


def ratios(rows) -> dict:
    """The step-time ratios from rows of one run (a ratio is left out when one of its rows is missing)."""

    def ms(**want):
        for r in rows:
            if all(r.get(k) == v for k, v in want.items()) and "ms_per_step" in r:
                return r["ms_per_step"]
        return None

    def ratio(a, b):
        return round(a / b, 3) if a and b else None

    out = {}
    for plan, cl in [(p, c) for p in ("3d", "2d", "tiny2d", "tiny3d") for c in (False, True)]:
        base = dict(plan=plan, precision="bf16", channels_last=cl, compile=False)
        key = plan + (" channels-last" if cl else "")
        enc = ms(**base, arch="umamba_enc", optimizer="sgd", mamba_fp32=False)
        unet = ms(**base, arch="unet", optimizer="sgd", mamba_fp32=True)
        resunet = ms(**base, arch="resunet", optimizer="sgd", mamba_fp32=True)
        enc_sam = ms(**base, arch="umamba_enc", optimizer="sam", mamba_fp32=False)
        enc_mamba_fp32 = ms(**base, arch="umamba_enc", optimizer="sgd", mamba_fp32=True)
        out[key] = {
            "sam_over_sgd (enc, mamba bf16)": ratio(enc_sam, enc),
            "enc_over_unet (enc mamba bf16)": ratio(enc, unet),
            "resunet_over_unet (residual encoder, no Mamba)": ratio(resunet, unet),
            "enc_over_resunet (the six Mamba layers)": ratio(enc, resunet),
            "enc_over_unet (enc mamba fp32)": ratio(enc_mamba_fp32, unet),
            "authors_fp32_over_ours_bf16 (enc)": ratio(
                ms(
                    plan=plan,
                    arch="umamba_enc",
                    optimizer="sgd",
                    precision="fp32",
                    mamba_fp32=True,
                    channels_last=False,
                    compile=False,
                ),
                enc,
            ),
        }
        out[key] = {k: v for k, v in out[key].items() if v is not None}
    for r in rows:  # each compiled row against the same configuration in eager mode
        if r.get("compile") and "ms_per_step" in r:
            same = {k: r[k] for k in ("plan", "arch", "optimizer", "precision", "mamba_fp32", "channels_last")}
            speedup = ratio(ms(**same, compile=False), r["ms_per_step"])
            if speedup:
                key = f"{r['plan']}{' channels-last' if r['channels_last'] else ''}"
                out.setdefault(key, {})[f"eager_over_compiled[{r['compile']}] ({r['arch']} {r['optimizer']})"] = speedup
    return {k: v for k, v in out.items() if v}


if __name__ == "__main__":
    main()
