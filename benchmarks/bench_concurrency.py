"""Aggregate training throughput of N budget runs sharing one GPU, time-sliced or under CUDA MPS (issue 12).

    python benchmarks/bench_concurrency.py --data .cache/acdc.uucache.npz --runs 3,5 --mps both \
        --seconds 40 --out results/h200/session4/concurrency.json

For each N and each mode (plain time-slicing; MPS: ``nvidia-cuda-mps-control -d`` started for the phase and
stopped after it, the card's settings untouched) N ``python -m uu train`` processes start together with the
budget profile (seeds 0..N-1, ``--set`` extras), each training ``--seconds`` of training steps. A run's samples/s
is batch x iterations / training seconds over its epochs after the first (warm-up); the aggregate is their sum,
valid because the runs overlap for the whole window (same budget, same start). Prints a table, writes JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path


def run_phase(n: int, mps: bool, args, root: Path) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="2", PYTHONUNBUFFERED="1")
    daemon = None
    if mps:
        pipe, logs = root / "mps_pipe", root / "mps_log"
        pipe.mkdir(parents=True, exist_ok=True)
        logs.mkdir(parents=True, exist_ok=True)
        env.update(CUDA_MPS_PIPE_DIRECTORY=str(pipe), CUDA_MPS_LOG_DIRECTORY=str(logs))
        daemon = subprocess.run(["nvidia-cuda-mps-control", "-d"], env=env, capture_output=True, text=True)
        if daemon.returncode != 0:
            return {"runs": n, "mps": True, "error": f"nvidia-cuda-mps-control -d: {daemon.stderr.strip()}"}
    procs, dirs = [], []
    try:
        for seed in range(n):
            out = root / f"{'mps' if mps else 'ts'}{n}" / f"seed{seed}"
            shutil.rmtree(out, ignore_errors=True)
            cmd = [sys.executable, "-m", "uu", "train", "--params", args.params, "--data", args.data, "--out", str(out),
                   "--set", f"seed={seed}", "--set", f"max_minutes={args.seconds / 60}", "--set", "iters_per_epoch=25",
                   "--set", "val_every=0", "--set", "checkpoint_minutes=1000", "--set", "eval_mirror=false",
                   "--set", "progress=false"] + [a for kv in args.set for a in ("--set", kv)]
            log = open(root / f"{'mps' if mps else 'ts'}{n}_seed{seed}.log", "w")
            procs.append(subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT))
            dirs.append(out)
        codes = [p.wait() for p in procs]
    finally:
        if daemon is not None:
            subprocess.run(["nvidia-cuda-mps-control"], input="quit\n", env=env, text=True, capture_output=True)
    per_run = []
    for out, code in zip(dirs, codes):
        lines = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()] if (out / "log.jsonl").is_file() else []
        batch = _profile_batch(out) if (out / "profile.yaml").is_file() else 0
        steady = lines[1:] or lines
        iters = sum(x["iters"] for x in steady)
        secs = sum(x["iters"] / x["it_per_s"] for x in steady if x["it_per_s"])
        per_run.append({"exit": code, "epochs": len(lines), "samples_per_s": round(batch * iters / secs, 1) if secs else 0.0})
    return {"runs": n, "mps": mps, "aggregate_samples_per_s": round(sum(r["samples_per_s"] for r in per_run), 1),
            "per_run": per_run}


def _profile_batch(run_dir: Path) -> int:
    import yaml
    return int((yaml.safe_load((run_dir / "profile.yaml").read_text()) or {}).get("batch_size", 0))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--params", default="budget")
    p.add_argument("--data", required=True)
    p.add_argument("--runs", default="3,5")
    p.add_argument("--mps", default="both", choices=["off", "on", "both"])
    p.add_argument("--seconds", type=float, default=40.0, help="training seconds of each run")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--root", default="/tmp/uu_concurrency")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    root = Path(args.root)
    root.mkdir(parents=True, exist_ok=True)
    modes = {"off": [False], "on": [True], "both": [False, True]}[args.mps]
    results = []
    for mps in modes:
        for n in [int(v) for v in args.runs.split(",")]:
            t0 = time.perf_counter()
            row = run_phase(n, mps, args, root)
            row["phase_seconds"] = round(time.perf_counter() - t0, 1)
            results.append(row)
            print(f"[concurrency] {n} runs, {'MPS' if mps else 'time-slicing'}: {row.get('aggregate_samples_per_s')} "
                  f"samples/s aggregate {row.get('error', '')} ({row['phase_seconds']} s)", flush=True)
            Path(args.out).write_text(json.dumps({"params": args.params, "set": args.set, "seconds": args.seconds,
                                                  "phases": results}, indent=1))


if __name__ == "__main__":
    main()
