"""Command line: ``python -m uu {info,train,ablation,predict,evaluate,run} ...``.

Each subcommand lives beside the code it drives (``uu.data.cli``, ``uu.train``, ``uu.infer``,
``uu.evaluate``, ``uu.workbook``); this file only parses arguments and reports errors."""

from __future__ import annotations

import argparse
import importlib
import sys


def _add_stop_at_and_set(s: argparse.ArgumentParser, stop_help: str, set_help: str) -> None:
    """The two options that train and ablation share: a pause deadline and profile overrides."""
    s.add_argument("--stop-at", type=float, default=None, metavar="UNIX_SECONDS", help=stop_help)
    s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=set_help)


def _add_train(sub) -> None:
    s = sub.add_parser("train", help="train one run from a profile")
    s.add_argument("--params", required=True, help="profile YAML (uu/params/*.yaml)")
    s.add_argument("--data", default="", help="ACDC folder; empty: a phantom made in OUT/phantom")
    s.add_argument("--out", required=True, help="run folder (checkpoints, log.jsonl, metrics)")
    s.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    _add_stop_at_and_set(
        s,
        "pause with a checkpoint before an epoch that would end after this time (resume later)",
        "override a profile entry, e.g. --set epochs=2 (repeatable)",
    )


def _add_ablation(sub) -> None:
    s = sub.add_parser(
        "ablation",
        help="train the ablation configurations' missing runs "
        "(RUNS/<config>/seed<k>, or RUNS/<config>/fold<k> with --folds)",
    )
    s.add_argument("--params", required=True, help="profile YAML (uu/params/*.yaml) shared by every configuration")
    s.add_argument("--data", default="", help="ACDC folder; empty: a phantom made in RUNS/phantom")
    s.add_argument("--runs", required=True, help="runs folder (notebook 04's runs_dir)")
    s.add_argument("--configs", default="", help="comma-separated configuration names (default: rows 1-5)")
    s.add_argument("--seeds", default="1", help="seeds: a count N (seeds 0..N-1) or a comma list, e.g. 1,2")
    s.add_argument(
        "--folds",
        default="",
        help="cross-validation instead of seeds: folds as a count N (0..N-1) or "
        "a comma list; fold k trains on the other folds with seed k and is evaluated on fold k",
    )
    s.add_argument(
        "--min-start",
        type=float,
        default=120.0,
        metavar="SECONDS",
        help="with --stop-at: start no run within this many seconds of it",
    )
    s.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="runs trained side by side, each a `python -m uu train` process (sharing the GPU)",
    )
    _add_stop_at_and_set(
        s,
        "start no run after this time and pause the running ones with a checkpoint (resume later)",
        "override a profile entry for every run (repeatable)",
    )


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m uu", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("info", help="describe an ACDC folder (either layout)")
    s.add_argument("data_dir")
    s.add_argument("--max-cases", type=int, default=None, help="read only the first N volumes")
    _add_train(sub)
    _add_ablation(sub)

    s = sub.add_parser("predict", help="predict label maps with a trained run")
    for name in ("--run", "--data"):
        s.add_argument(name, required=True)
    s.add_argument("--split", default="val", choices=["train", "val", "test", "all"])
    s.add_argument("--out", required=True)
    s.add_argument("--no-mirror", action="store_true", help="disable mirroring test-time augmentation")

    s = sub.add_parser("evaluate", help="score predictions against ground truth")
    for name in ("--pred", "--data", "--out"):
        s.add_argument(name, required=True)

    s = sub.add_parser("run", help="execute notebooks 01-05 headless with papermill")
    s.add_argument("--params", required=True)
    s.add_argument("--data", default="")
    s.add_argument("--out", required=True)
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from uu.data import DataError  # light import: numpy, nibabel, h5py

    try:  # each subcommand is imported when chosen: `info` and `--help` must not wait for torch
        if args.command == "info":
            from uu.data.cli import info

            return info(args.data_dir, max_cases=args.max_cases)
        module, function = {
            "train": ("uu.train", "cli_train"),
            "ablation": ("uu.ablation", "cli_ablation"),
            "predict": ("uu.infer", "cli_predict"),
            "evaluate": ("uu.evaluate", "cli_evaluate"),
            "run": ("uu.workbook", "cli_run"),
        }[args.command]
        return getattr(importlib.import_module(module), function)(args)
    except (DataError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
