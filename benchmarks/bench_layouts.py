"""Whole training runs of a profile in several memory layouts: the compile warm-up and the steady rate of each.

    python benchmarks/bench_layouts.py --data .cache/acdc.uucache.npz --out runs/layouts \
        --layouts channels_last_in_layout,nchw_instance
    python benchmarks/bench_layouts.py --report results/performance/h200/layouts/*/      # committed runs

Each layout is one ``python -m uu train --params PROFILE --set epochs=EPOCHS`` run (default: the budget profile,
4 epochs of 50 iterations), alone on the device, one after the other, in OUT/<layout>:
    channels_last_in_layout   channels_last=true,  norm=instance_in_layout   (the budget profile's layout)
    channels_last_instance    channels_last=true,  norm=instance             (nn.InstanceNorm)
    nchw_instance             channels_last=false, norm=instance
Reported from each log.jsonl: the first epoch's seconds (torch.compile's warm-up included: the first run of a
process tree finds the inductor cache empty, later ones find the graphs earlier runs compiled, so the order
matters) and the steady it/s of epochs 2 onwards (their iterations over their seconds, validation and checkpoints
left out). Every layout computes the same function (tests/test_net.py): only speed differs. Writes OUT/layouts.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_env beside this file, also when loaded by path
from bench_env import environment  # noqa: E402

LAYOUTS = {
    "channels_last_in_layout": ["channels_last=true", "norm=instance_in_layout"],
    "channels_last_instance": ["channels_last=true", "norm=instance"],
    "nchw_instance": ["channels_last=false", "norm=instance"],
}


def rates(run_dir: Path) -> dict:
    """First-epoch seconds and steady it/s (epochs 2..) of a run folder's log.jsonl."""
    rows = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines() if line.strip()]
    if len(rows) < 2:
        return {"run": run_dir.name, "error": f"{len(rows)} epochs logged: need 2 or more"}
    steady = rows[1:]
    seconds = sum(r["seconds"] - r.get("val_seconds", 0.0) - r.get("checkpoint_seconds", 0.0) for r in steady)
    iters = sum(r["iters"] for r in steady)
    return {
        "run": run_dir.name,
        "epochs": len(rows),
        "first_epoch_s": round(rows[0]["train_seconds"], 1),
        "steady_it_per_s": round(iters / seconds, 2),
        "steady_s_per_epoch": [round(r["seconds"] - r.get("val_seconds", 0.0), 2) for r in steady],
    }


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=".cache/acdc.uucache.npz")
    p.add_argument("--out", default="runs/layouts")
    p.add_argument("--params", default="budget")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--layouts", default="channels_last_in_layout,nchw_instance", help=f"comma list of {list(LAYOUTS)}")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override for every run")
    p.add_argument("--report", nargs="+", metavar="RUN_DIR", help="only read these run folders")
    args = p.parse_args(argv)
    if args.report:
        for run in args.report:
            print(json.dumps(rates(Path(run))))
        return
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = {"params": args.params, "epochs": args.epochs, "set": args.set, "env": environment(), "runs": []}
    for name in args.layouts.split(","):
        sets = [*LAYOUTS[name], f"epochs={args.epochs}", "val_minutes=null", "val_every=0", *args.set]
        cmd = [
            sys.executable,
            "-m",
            "uu",
            "train",
            "--params",
            args.params,
            "--data",
            args.data,
            "--out",
            str(out / name),
        ] + [a for kv in sets for a in ("--set", kv)]
        print("[layouts]", " ".join(cmd), flush=True)
        with open(out / f"{name}.log", "w") as log:
            code = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT).returncode
        row = rates(out / name) if (out / name / "log.jsonl").is_file() else {"run": name, "error": f"exit {code}"}
        row["layout"] = name
        print("[layouts]", json.dumps(row), flush=True)
        result["runs"].append(row)
        (out / "layouts.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
