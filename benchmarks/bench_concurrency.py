"""Aggregate training throughput of N budget runs sharing one GPU, time-sliced or under CUDA MPS.

    python benchmarks/bench_concurrency.py --data .cache/acdc.uucache.npz --runs 1,3,5 --runs-mps 3,5 --mps both \
        --seconds 25 --set compile=false --out runs/bench/concurrency.json

For each N and each mode (plain time-slicing; MPS: ``nvidia-cuda-mps-control -d`` started for the phase and
stopped after it, the card's settings untouched) ``python -m uu ablation --jobs N`` trains N runs of the budget
profile's UU-Mamba (row 5, seeds 0..N-1, ``--set`` extras) side by side, each ``--seconds`` of training steps.
The aggregate samples/s counts only the window in which all N train (`overlap_throughput`, from the epoch end
times in each log.jsonl). Prints a line per phase, writes JSON after each (``env``: device, versions, commit).
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

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_env beside this file, also when loaded by path
from bench_env import environment  # noqa: E402


def run_phase(n: int, mps: bool, args, root: Path) -> dict:
    """N budget runs (row 5 of the ablation, seeds 0..N-1) through ``python -m uu ablation --jobs N``."""
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
    runs = root / f"{'mps' if mps else 'ts'}{n}"
    shutil.rmtree(runs, ignore_errors=True)
    sets = [
        f"max_minutes={args.seconds / 60}",
        "iters_per_epoch=5",
        "val_every=0",
        "val_minutes=null",
        "checkpoint_minutes=1000",
        "eval_mirror=false",
        "progress=false",
    ] + args.set
    cmd = [
        sys.executable,
        "-m",
        "uu",
        "ablation",
        "--params",
        args.params,
        "--data",
        args.data,
        "--runs",
        str(runs),
        "--configs",
        "umamba_ua_sam",
        "--seeds",
        str(n),
        "--jobs",
        str(n),
    ] + [a for kv in sets for a in ("--set", kv)]
    try:
        with open(root / f"{runs.name}.log", "w") as log:
            code = subprocess.run(cmd, env=env, stdout=log, stderr=subprocess.STDOUT).returncode
    finally:
        if daemon is not None:
            subprocess.run(["nvidia-cuda-mps-control"], input="quit\n", env=env, text=True, capture_output=True)
    if code != 0:
        return {"runs": n, "mps": mps, "exit": code, "error": f"see {root / runs.name}.log"}
    logs = [_read_log(runs / "umamba_ua_sam" / f"seed{k}") for k in range(n)]
    return {
        "runs": n,
        "mps": mps,
        "exit": code,
        **overlap_throughput(logs, _profile_batch(runs / "umamba_ua_sam" / "seed0")),
    }


def overlap_throughput(logs: list[list[dict]], batch: int) -> dict:
    """Aggregate training samples/s while all runs train: the window runs from the latest end of a first epoch
    (warm-up, cuDNN autotuning) to the earliest end of a last epoch; a run's rate is the iterations of its epochs
    ending inside the window over the time they took."""
    if not all(len(lines) >= 3 for lines in logs):
        return {"error": "a run has fewer than 3 epochs: raise --seconds", "epochs": [len(x) for x in logs]}
    start, end = max(x[0]["time"] for x in logs), min(x[-1]["time"] for x in logs)
    rates = []
    for lines in logs:
        inside = [i for i, x in enumerate(lines) if start < x["time"] <= end]
        if not inside:
            return {"error": "the runs did not overlap long enough: raise --seconds"}
        t0 = lines[inside[0] - 1]["time"]
        rates.append(batch * sum(lines[i]["iters"] for i in inside) / (lines[inside[-1]]["time"] - t0))
    return {
        "aggregate_samples_per_s": round(sum(rates), 1),
        "per_run_samples_per_s": [round(r, 1) for r in rates],
        "window_s": round(end - start, 1),
    }


def _read_log(run_dir: Path) -> list[dict]:
    path = run_dir / "log.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.is_file() else []


def _profile_batch(run_dir: Path) -> int:
    import yaml

    return int((yaml.safe_load((run_dir / "profile.yaml").read_text()) or {}).get("batch_size", 0))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--params", default="budget")
    p.add_argument("--data", required=True)
    p.add_argument("--runs", default="1,3,5")
    p.add_argument("--mps", default="both", choices=["off", "on", "both"])
    p.add_argument("--runs-mps", default="", help="the N for the MPS phases (default: --runs)")
    p.add_argument("--seconds", type=float, default=40.0, help="training seconds of each run")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--root", default="/tmp/uu_concurrency")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    root = Path(args.root)
    root.mkdir(parents=True, exist_ok=True)
    modes = {"off": [False], "on": [True], "both": [False, True]}[args.mps]
    results, env = [], environment()
    for mps in modes:
        for n in [int(v) for v in ((mps and args.runs_mps) or args.runs).split(",")]:
            t0 = time.perf_counter()
            row = run_phase(n, mps, args, root)
            row["phase_seconds"] = round(time.perf_counter() - t0, 1)
            results.append(row)
            print(
                f"[concurrency] {n} runs, {'MPS' if mps else 'time-slicing'}: {row.get('aggregate_samples_per_s')} "
                f"samples/s aggregate {row.get('error', '')} ({row['phase_seconds']} s)",
                flush=True,
            )
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(
                json.dumps(
                    {"params": args.params, "set": args.set, "seconds": args.seconds, "env": env, "phases": results},
                    indent=1,
                )
            )


if __name__ == "__main__":
    main()
