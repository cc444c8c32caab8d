"""Selective scan speed: our chunked PyTorch scan vs a naive per-step loop (vs the fused kernel on CUDA).

CPU default: batch 1, d_inner 64, d_state 16, L = 57,344 (one 256 x 224 slice at stage 0 of the 2D
plan). The naive loop is timed on a prefix of --naive-prefix steps and extrapolated linearly to L
(its cost per step does not depend on L); the JSON says so. Also sweeps chunk sizes.
Writes JSON to --out (default runs/bench/bench_scan_<device>.json); ``env`` records device, versions, commit.
--tiny2d: instead, the scan at the shapes of the four Mamba layers of the "tiny2d" plan (batch 4, 32 x 32
patches: d_inner 16..128, L 1024..16), forward and forward + backward, next to the scan_chunked.py of the
git revision --before if given (the CPU main job's hot spot).
--cpu-kernel: `_Scan` forward + backward at the tiny2d shapes of batch 8, the C kernel (scan_cpu.c) against the
PyTorch scan (UU_CPU_SCAN=torch), interleaved.

    python benchmarks/bench_scan.py                 # CPU
    python benchmarks/bench_scan.py --device cuda   # + fused kernel, paper stage shapes
    python benchmarks/bench_scan.py --tiny2d --threads 2 --before 26067e7
    python benchmarks/bench_scan.py --cpu-kernel --threads 1
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
import types
from pathlib import Path

import torch
import torch.nn.functional as F

import uu.ssm as ssm
from uu.ssm.ops import scan_chunked, scan_cpu
from uu.ssm.ops.selective_scan import selective_scan_torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_env beside this file, also when loaded by path
from bench_env import environment  # noqa: E402


def naive_loop(u, delta, A, B, C, D, z, delta_bias):
    """The textbook recurrence, one Python step per token (what selective_scan_ref does)."""
    delta = F.softplus(delta.float() + delta_bias[:, None])
    h = u.new_zeros(u.shape[0], u.shape[1], A.shape[1], dtype=torch.float32)
    ys = []
    for t in range(u.shape[-1]):
        h = torch.exp(delta[:, :, t, None] * A) * h + (delta[:, :, t] * u[:, :, t])[..., None] * B[:, None, :, t]
        ys.append((h * C[:, None, :, t]).sum(-1))
    y = torch.stack(ys, dim=-1) + u * D[:, None]
    return y * F.silu(z)


def inputs(b, d, n, L, device, dtype=torch.float32, grad=False):
    g = torch.Generator(device=device).manual_seed(0)
    r = lambda *s: torch.randn(*s, device=device, generator=g)
    x = dict(
        u=r(b, d, L).to(dtype),
        delta=(0.5 * r(b, d, L) - 3).to(dtype),
        A=-torch.arange(1, n + 1.0, device=device).repeat(d, 1),
        B=r(b, n, L).to(dtype),
        C=r(b, n, L).to(dtype),
        D=torch.ones(d, device=device),
        z=r(b, d, L).to(dtype),
        delta_bias=0.1 * r(d),
    )
    if grad:
        x = {k: v.requires_grad_() for k, v in x.items()}
    return x


def timed(fn, device, repeats=1, backward=False):
    """Seconds per call (best of `repeats`) and peak memory (CUDA: allocated bytes; CPU: max RSS)."""
    best = float("inf")
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        if backward:
            out.float().sum().backward()
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    peak = (
        torch.cuda.max_memory_allocated()
        if device == "cuda"
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    )
    return best, peak


def scan_at(rev):
    """selective_scan_torch of uu/ssm/ops/scan_chunked.py as it was at git revision `rev`."""
    src = subprocess.run(
        ["git", "show", f"{rev}:uu/ssm/ops/scan_chunked.py"],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).parent,
    ).stdout
    module = types.ModuleType(f"scan_chunked_{rev}")
    exec(compile(src, f"{rev}:scan_chunked.py", "exec"), module.__dict__)
    return module.selective_scan_torch


def tiny2d_rows(dev, before, repeats):
    """Best-of-`repeats` ms per stage of the tiny2d plan, the implementations interleaved (shared CPUs)."""
    impls = {"now": selective_scan_torch, **({f"at {before}": scan_at(before)} if before else {})}
    rows = []
    for s, feats in enumerate([8, 16, 32, 64]):
        d, L = 2 * feats, (32 // 2**s) ** 2
        x, xg = inputs(4, d, 16, L, dev), inputs(4, d, 16, L, dev, grad=True)
        calls = {}
        for name, scan in impls.items():
            calls[(name, "forward_ms")] = lambda scan=scan: torch.no_grad()(scan)(**x, delta_softplus=True)
            calls[(name, "fwd_bwd_ms")] = lambda scan=scan: scan(**xg, delta_softplus=True).sum().backward()
        best = {k: timed(f, dev, repeats=2)[0] for k, f in calls.items()}  # warm-up
        for _ in range(repeats):
            for k, f in calls.items():
                best[k] = min(best[k], timed(f, dev)[0])
        for name in impls:
            row = {
                "stage": s,
                "d_inner": d,
                "L": L,
                "impl": name,
                **{m: best[(name, m)] * 1e3 for m in ("forward_ms", "fwd_bwd_ms")},
            }
            rows.append(row)
            print(
                f"stage {s} d {d:3d} L {L:4d} {name:>14}: fwd {row['forward_ms']:7.2f} ms, "
                f"fwd+bwd {row['fwd_bwd_ms']:7.2f} ms"
            )
    return rows


def cpu_kernel_rows(repeats):
    """Best-of-`repeats` ms of `_Scan` forward + backward (delta already softplus'ed) per tiny2d stage at batch
    8, by the C kernel and by the PyTorch scan."""
    if scan_cpu.load_kernel() is None:
        raise SystemExit("the C scan kernel did not build")
    rows = []
    for s in range(4):
        d, L = 16 * 2**s, (32 // 2**s) ** 2
        x = inputs(8, d, 16, L, "cpu", grad=True)
        args = [x[k] for k in ("u", "delta", "A", "B", "C")]
        args[1] = F.softplus(args[1].detach()).requires_grad_()

        def step(mode):
            os.environ["UU_CPU_SCAN"] = mode
            y, last = scan_chunked._Scan.apply(*args, scan_chunked.DEFAULT_SUB_CHUNK, scan_chunked.DEFAULT_CHUNK_SIZE)
            assert scan_cpu.last_cpu_path == ("torch" if mode == "torch" else "c")
            torch.autograd.backward((y, last), (torch.ones_like(y), torch.zeros_like(last)))

        best = {}
        for _ in range(repeats + 1):  # the first round warms up
            for mode in ("torch", "c"):
                t = time.perf_counter()
                step(mode)
                best[mode] = min(best.get(mode, float("inf")), time.perf_counter() - t) if _ else float("inf")
        os.environ.pop("UU_CPU_SCAN")
        row = {
            "shape": [8, d, 16, L],
            "torch_ms": best["torch"] * 1e3,
            "c_ms": best["c"] * 1e3,
            "speedup": best["torch"] / best["c"],
        }
        rows.append(row)
        print(
            f"(8, {d:3d}, 16, {L:4d}): _Scan torch {row['torch_ms']:7.2f} ms, C {row['c_ms']:7.2f} ms, "
            f"{row['speedup']:.1f}x"
        )
    total = {m: sum(r[f"{m}_ms"] for r in rows) for m in ("torch", "c")}
    print(f"all four: torch {total['torch']:.2f} ms, C {total['c']:.2f} ms, {total['torch'] / total['c']:.1f}x")
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--d-inner", type=int, default=64)
    ap.add_argument("--d-state", type=int, default=16)
    ap.add_argument("--length", type=int, default=57_344)
    ap.add_argument("--naive-prefix", type=int, default=2048)
    ap.add_argument(
        "--chunks", default="64:16,128:16,256:16,256:32,512:32,1024:32", help="chunk_size:sub_chunk pairs to sweep"
    )
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = leave as is)")
    ap.add_argument("--quick", action="store_true", help="L = 8192 and a short sweep")
    ap.add_argument("--tiny2d", action="store_true", help="the tiny2d plan's layer shapes only")
    ap.add_argument("--cpu-kernel", action="store_true", help="the C kernel vs the PyTorch scan (tiny2d, batch 8)")
    ap.add_argument("--before", default=None, help="with --tiny2d: also time scan_chunked.py of this git revision")
    ap.add_argument("--repeats", type=int, default=10, help="with --tiny2d: best of this many")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.length, args.chunks, args.naive_prefix = 8192, "128:16,256:16", 512
    dev, b, d, n, L = args.device, args.batch, args.d_inner, args.d_state, args.length
    res = {
        "device": dev,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
        "shape": {"batch": b, "d_inner": d, "d_state": n, "L": L},
        "env": environment(dev),
        "rows": [],
    }
    if args.cpu_kernel:
        print(f"_Scan forward + backward, C kernel vs PyTorch ({res['threads']} threads)")
        res["cpu_kernel"] = cpu_kernel_rows(args.repeats)
        out = Path(args.out or "runs/bench/bench_scan_cpu_kernel.json")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(res, indent=2))
        print(f"wrote {out}")
        return
    if args.tiny2d:
        print(f"selective scan at the tiny2d shapes on {dev} ({res['threads']} threads)")
        res["tiny2d"] = tiny2d_rows(dev, args.before, args.repeats)
        out = Path(args.out or f"runs/bench/bench_scan_tiny2d_{dev}.json")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(res, indent=2))
        print(f"wrote {out}")
        return
    print(f"selective scan, batch {b}, d_inner {d}, d_state {n}, L {L:,} on {dev} ({res['threads']} threads)")

    # naive loop on a prefix, extrapolated
    x = inputs(b, d, n, args.naive_prefix, dev)
    with torch.no_grad():
        t, _ = timed(lambda: naive_loop(**x), dev)
    naive_s = t * L / args.naive_prefix
    res["naive_forward_s"] = naive_s
    res["naive_note"] = f"timed on the first {args.naive_prefix} steps, extrapolated linearly to L={L}"
    print(f"naive loop forward: {naive_s:.2f} s (extrapolated from {args.naive_prefix} steps)")

    warm = inputs(1, 2, 2, 600, dev, grad=True)  # the first checkpointed backward in a process is slow
    selective_scan_torch(**warm, chunk_size=256).sum().backward()
    x = inputs(b, d, n, L, dev)
    for pair in args.chunks.split(","):
        cs, sub = (int(v) for v in pair.split(":"))
        with torch.no_grad():
            fwd, peak_f = timed(
                lambda: selective_scan_torch(**x, delta_softplus=True, chunk_size=cs, sub_chunk=sub), dev
            )
        xg = inputs(b, d, n, L, dev, grad=True)
        fb, peak_b = timed(
            lambda: selective_scan_torch(**xg, delta_softplus=True, chunk_size=cs, sub_chunk=sub), dev, backward=True
        )
        row = {
            "impl": "torch",
            "chunk_size": cs,
            "sub_chunk": sub,
            "forward_s": fwd,
            "fwd_bwd_s": fb,
            "peak_bytes_fwd": peak_f,
            "peak_bytes_fwd_bwd": peak_b,
            "speedup_vs_naive_fwd": naive_s / fwd,
        }
        res["rows"].append(row)
        print(
            f"torch chunk {cs:5d} sub {sub:3d}: fwd {fwd:.3f} s, fwd+bwd {fb:.3f} s, "
            f"{naive_s / fwd:.1f}x naive, peak {peak_b / 2**20:.0f} MiB"
        )

    if dev == "cuda" and ssm.has_mamba_ssm():
        for dtype in (torch.float32, torch.bfloat16):
            xg = inputs(b, d, n, L, dev, dtype=dtype, grad=True)
            call = lambda: ssm.selective_scan(**xg, delta_softplus=True, backend="cuda")
            timed(call, dev, backward=True)  # warm-up
            fb, peak = timed(call, dev, repeats=5, backward=True)
            res["rows"].append({"impl": "fused", "dtype": str(dtype), "fwd_bwd_s": fb, "peak_bytes_fwd_bwd": peak})
            print(f"fused kernel {dtype}: fwd+bwd {fb * 1e3:.1f} ms, peak {peak / 2**20:.0f} MiB")
    best = min((r for r in res["rows"] if r["impl"] == "torch"), key=lambda r: r["fwd_bwd_s"])
    res["best_torch"] = best
    print(f"best torch setting: chunk {best['chunk_size']} sub {best['sub_chunk']}")
    out = Path(args.out or f"runs/bench/bench_scan_{dev}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
