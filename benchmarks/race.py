"""The race: UU-Mamba (the budget profile) against a U-Net + Dice/CE + SGD, the same minutes of training steps each,
alone on one GPU, one after the other; then the table, the paired difference and the time-to-accuracy figure.

    python benchmarks/race.py --data .cache/acdc.uucache.npz --out runs/race              # trains both: ~20 min
    python benchmarks/race.py --report results/races/h200/8min_warm_compile_cache --no-figure   # committed runs

Runs: OUT/unet (``--params budget --set arch=unet loss=dice_ce optimizer=sgd batch_size=32 compile=false``, the
nnU-Net-like baseline, eager) and OUT/uu_mamba (``--params budget``), both with ``max_minutes=MINUTES``; a finished
run folder (eval/summary.json) is read, not trained again. Both are trained on the split's training patients and
evaluated once at the end, with mirroring, on its validation volumes.
Writes OUT/race.json: per run the iterations, it/s, training samples/s, the share of the fit's wall-clock spent in
training steps and the final Dice per class; the paired per-volume difference U-Net minus UU-Mamba with its 95 %
bootstrap interval (10,000 resamples of the volumes); ``env`` (device, versions, commit) when it trained here.
OUT/time_to_accuracy.png: periodic validation Dice against seconds in training steps, stars at the final scores.
torch.compile's warm-up counts as training time: a second run of the budget profile on the same machine finds the
inductor cache warm (TORCHINDUCTOR_CACHE_DIR) and trains about 76 s more of its 8 minutes (measured on an H200).
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_env beside this file, also when loaded by path
from bench_env import environment  # noqa: E402

RUNS = {  # folder: (label, --set overrides of the budget profile)
    "unet": ("U-Net + Dice/CE + SGD", ["arch=unet", "loss=dice_ce", "optimizer=sgd", "batch_size=32", "compile=false"]),
    "uu_mamba": ("UU-Mamba (budget profile)", []),
}


def train(run_dir: Path, data: str, minutes: float, sets: list[str]) -> None:
    """``python -m uu train --params budget`` into run_dir, unless it already holds a finished run."""
    if (run_dir / "eval" / "summary.json").is_file():
        print(f"[race] {run_dir}: finished run found, not trained again", flush=True)
        return
    cmd = [sys.executable, "-m", "uu", "train", "--params", "budget", "--data", data, "--out", str(run_dir)]
    cmd += [a for kv in [*sets, f"max_minutes={minutes}"] for a in ("--set", kv)]
    if (run_dir / "checkpoint.pt").is_file():
        cmd.append("--resume")
    print("[race]", " ".join(cmd), flush=True)
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    with open(run_dir.parent / f"{run_dir.name}.log", "w") as log:
        subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, check=True)


def run_row(run_dir: Path, label: str) -> dict:
    summary = json.loads((run_dir / "eval" / "summary.json").read_text())
    profile = yaml.safe_load((run_dir / "profile.yaml").read_text())
    t = summary["training"]
    return {
        "run": run_dir.name,
        "label": label,
        "arch": profile["arch"],
        "loss": profile["loss"],
        "optimizer": profile["optimizer"],
        "batch_size": profile["batch_size"],
        "compile": profile["compile"],
        "channels_last": profile["channels_last"],
        "norm": profile.get("norm", "instance"),
        "minutes": profile["max_minutes"],
        "iterations": t["steps"],
        "it_per_s": round(t["it_per_s"], 2),
        "samples_per_s": round(t["it_per_s"] * profile["batch_size"], 1),
        "train_fraction": round(t["train_fraction"], 4),
        "train_seconds": round(t["train_seconds"], 1),
        "n_volumes": summary["n_cases"],
        "dice_mean": round(100 * summary["dice_mean"], 2),
        **{f"dice_{k}": round(100 * v, 2) for k, v in summary["dice"].items()},
    }


def per_volume(run_dir: Path) -> dict:
    with open(run_dir / "eval" / "per_case.csv") as f:
        return {(r["patient"], r["phase"]): float(r["dice_mean"]) for r in csv.DictReader(f)}


def report(out: Path, figure: bool = True, env: dict | None = None) -> dict:
    """race.json (and time_to_accuracy.png) from OUT/unet and OUT/uu_mamba (either may be missing)."""
    from uu.runs import read_log
    from uu.stats import paired_bootstrap_ci

    present = {name: out / name for name in RUNS if (out / name / "eval" / "summary.json").is_file()}
    result = {"runs": [run_row(path, RUNS[name][0]) for name, path in present.items()]}
    if env:
        result["env"] = env
    if len(present) == 2:
        unet, uu = per_volume(present["unet"]), per_volume(present["uu_mamba"])
        keys = [k for k in uu if k in unet]  # the evaluation's order: the bootstrap resamples positions
        ci = paired_bootstrap_ci([100 * uu[k] for k in keys], [100 * unet[k] for k in keys])
        result["unet_minus_uu_mamba"] = {
            "dice_points": round(ci.mean, 2),
            "ci95": [round(ci.low, 2), round(ci.high, 2)],
            "n_volumes": len(keys),
        }
    (out / "race.json").write_text(json.dumps(result, indent=1))
    for row in result["runs"]:
        print(
            f"[race] {row['label']}: {row['iterations']} iterations, {row['it_per_s']} it/s, "
            f"{row['samples_per_s']} samples/s, {100 * row['train_fraction']:.1f} % in training steps, "
            f"Dice {row['dice_mean']} (RV {row['dice_RV']}, Myo {row['dice_Myo']}, LV {row['dice_LV']})"
        )
    if "unet_minus_uu_mamba" in result:
        d = result["unet_minus_uu_mamba"]
        print(f"[race] U-Net minus UU-Mamba: {d['dice_points']:+.2f} Dice points, 95 % CI {d['ci95']}")
    if figure and present:
        from uu.viz import time_to_accuracy

        logs = {RUNS[name][0]: read_log(path) for name, path in present.items()}
        finals = {row["label"]: (row["train_seconds"], row["dice_mean"] / 100) for row in result["runs"]}
        time_to_accuracy(logs, out / "time_to_accuracy.png", x="train_seconds", finals=finals)
    return result


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=".cache/acdc.uucache.npz", help="ACDC folder or compact cache")
    p.add_argument("--out", default="runs/race")
    p.add_argument("--minutes", type=float, default=8.0, help="minutes of training steps per run")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override for both runs")
    p.add_argument("--report", metavar="RACE_DIR", help="only recompute race.json (and the figure) from its runs")
    p.add_argument("--no-figure", action="store_true")
    args = p.parse_args(argv)
    if args.report:
        report(Path(args.report), figure=not args.no_figure)
        return
    out = Path(args.out)
    for name, (_, sets) in RUNS.items():
        train(out / name, args.data, args.minutes, [*sets, *args.set])
    report(out, figure=not args.no_figure, env=environment())


if __name__ == "__main__":
    main()
