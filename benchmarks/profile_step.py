"""Where does a training step's time go? torch.profiler over a few steps, top operators by device time.

    python benchmarks/profile_step.py --plan 2d --arch umamba_enc --optimizer sam --batch 16 --out results/profile_2d.txt
    python benchmarks/profile_step.py --plan tiny2d --batch 2 --steps 2        # CPU check

Prints the table and the fraction of wall time the device was busy (low = launch/sync bound, the
suspect for the budget run's ~4 it/s whatever the batch; results/h200/RESULTS.md).
With --data (an ACDC folder or cache) the batches are real training batches (patch sampling and
augmentation on the device, as fit() draws them) and the time of sampling alone, the step alone and
both together is reported; --json writes those numbers.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from uu.losses import build_loss
from uu.net import build_network, get_plan
from uu.sam import SAM
from uu.step import train_step


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--plan", default="2d")
    p.add_argument("--arch", default="umamba_enc")
    p.add_argument("--optimizer", default="sam", choices=["sgd", "sam"])
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--mamba-fp32", action="store_true")
    p.add_argument("--rows", type=int, default=30)
    p.add_argument("--out", default=None)
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--cudnn-benchmark", action="store_true")
    p.add_argument("--data", default="", help="ACDC folder or cache: real augmented batches (else random tensors)")
    p.add_argument("--timed-steps", type=int, default=20, help="steps for the unprofiled timings")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.cudnn.benchmark = args.cudnn_benchmark
    plan = get_plan(args.plan)
    model = build_network(plan, args.arch, mamba_fp32=args.mamba_fp32,
                          channels_last=args.channels_last).to(device).train()
    loss_fn = build_loss("ua").to(device)
    groups = [{"params": model.parameters()}, {"params": loss_fn.parameters(), "weight_decay": 0.0}]
    kw = dict(lr=1e-3, momentum=0.99, nesterov=True)
    opt = SAM(groups, torch.optim.SGD, rho=0.05, **kw) if args.optimizer == "sam" else torch.optim.SGD(groups, **kw)
    autocast = torch.bfloat16 if device.type == "cuda" else None
    batches = None
    if args.data:
        from uu.data import load_acdc
        from uu.train import TrainBatches
        cases = [c for c in load_acdc(args.data) if c.label is not None][:40]
        batches = TrainBatches.from_cases(cases, plan.patch_size, args.batch, device=device, seed=0)
        x, y = batches.sample()
    else:
        x = torch.randn(args.batch, 1, *plan.patch_size, device=device)
        y = torch.randint(0, 4, (args.batch, *plan.patch_size), device=device)
    for _ in range(3):  # warm-up (cuDNN autotuning, allocator)
        train_step(model, loss_fn, opt, x, y, autocast_dtype=autocast)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()

    def timed(fn, n):
        sync()
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        sync()
        return (time.perf_counter() - t0) / n * 1e3

    timings = {"step_ms": timed(lambda: train_step(model, loss_fn, opt, x, y, autocast_dtype=autocast),
                                args.timed_steps)}
    if batches is not None:
        timings["sample_ms"] = timed(batches.sample, args.timed_steps)
        timings["sample_and_step_ms"] = timed(
            lambda: train_step(model, loss_fn, opt, *batches.sample(), autocast_dtype=autocast), args.timed_steps)
    if device.type == "cuda":
        timings["peak_mem_gb"] = torch.cuda.max_memory_allocated() / 2**30
    print(json.dumps({"config": vars(args), **timings}))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"config": vars(args), **timings}, indent=1))
    if args.steps <= 0:
        return
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    t0 = time.perf_counter()
    with profile(activities=activities) as prof:
        for _ in range(args.steps):
            train_step(model, loss_fn, opt, x, y, autocast_dtype=autocast)
        if device.type == "cuda":
            torch.cuda.synchronize()
    wall = (time.perf_counter() - t0) / args.steps
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    table = prof.key_averages().table(sort_by=key, row_limit=args.rows)
    events = prof.key_averages()
    busy = sum(getattr(e, "self_device_time_total", 0) or 0 for e in events) / 1e6 / args.steps
    head = (f"{args.plan} {args.arch} {args.optimizer} batch {args.batch} channels_last {args.channels_last} "
            f"cudnn.benchmark {args.cudnn_benchmark} on {device}: "
            f"{wall * 1e3:.1f} ms/step (profiled), device busy {busy * 1e3:.1f} ms/step "
            f"({100 * busy / wall:.0f}% of wall)\n")
    print(head + table)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(head + table)


if __name__ == "__main__":
    main()
