"""The ablation: configurations as profile overrides (issue 5), and training or reading their runs.

CONFIGS: rows 1-2 the baselines of Table II, rows 3-5 Table I (CE, UA loss of Eq. 8, UA + SAM), row 6 the authors'
code. Runs live in RUNS/<name>/seed<k>/; a run whose eval/summary.json exists is read, never retrained.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, NamedTuple, Sequence

from uu.data import ensure_phantom
from uu.profiles import load_profile, parse_overrides
from uu.tables import ablation_table, format_table, run_seed, to_markdown


@dataclass(frozen=True)
class AblationConfig:
    name: str
    row: int
    label: str
    overrides: dict = field(default_factory=dict)


CONFIGS: dict[str, AblationConfig] = {c.name: c for c in [
    AblationConfig("unet_dice_ce", 1, "U-Net + Dice/CE + SGD (nnU-Net-like)",
                   {"arch": "unet", "loss": "dice_ce", "optimizer": "sgd"}),
    AblationConfig("umamba_dice_ce", 2, "U-Mamba Enc + Dice/CE + SGD (U-Mamba default)",
                   {"arch": "umamba_enc", "loss": "dice_ce", "optimizer": "sgd"}),
    AblationConfig("umamba_ce", 3, "U-Mamba Enc + CE + SGD (Table I: CE)",
                   {"arch": "umamba_enc", "loss": "ce", "optimizer": "sgd"}),
    AblationConfig("umamba_ua", 4, "U-Mamba Enc + UA + SGD (Table I: UA)",
                   {"arch": "umamba_enc", "loss": "ua", "optimizer": "sgd"}),
    AblationConfig("umamba_ua_sam", 5, "U-Mamba Enc + UA + SAM (Table I: UA+SAM, UU-Mamba)",
                   {"arch": "umamba_enc", "loss": "ua", "optimizer": "sam"}),
    AblationConfig("umamba_ua_fixed_sam", 6, "U-Mamba Enc + UA (sigma fixed) + SAM, lr 1e-2 (authors' code)",
                   {"arch": "umamba_enc", "loss": "ua_fixed", "optimizer": "sam", "lr": 1e-2}),
]}
DEFAULT_CONFIGS = [name for name, c in CONFIGS.items() if c.row <= 5]

# Paired per-volume comparisons the issue asks for: (3)->(4)->(5) and (2)->(5).
DEFAULT_PAIRS = [("umamba_ce", "umamba_ua"), ("umamba_ua", "umamba_ua_sam"),
                 ("umamba_ce", "umamba_ua_sam"), ("umamba_dice_ce", "umamba_ua_sam")]


def get_config(name: str) -> AblationConfig:
    if name not in CONFIGS:
        raise ValueError(f"unknown ablation configuration {name!r}; known: {', '.join(CONFIGS)}")
    return CONFIGS[name]


# ----------------------------------------------------------------------------- runs

def run_dir_for(runs_dir, config: str, seed: int) -> Path:
    return Path(runs_dir) / config / f"seed{seed}"


def is_finished(run_dir) -> bool:
    return (Path(run_dir) / "eval" / "summary.json").is_file()


def run_or_load(config: str, profile, seed: int, data_dir="", runs_dir="runs/ablation",
                overrides: Mapping | None = None) -> Path:
    """The run folder of (config, seed): read when finished, else trained from `profile` with the configuration's
    overrides, the seed, then `overrides` on top."""
    cfg = get_config(config)
    run = run_dir_for(runs_dir, config, seed)
    if is_finished(run):
        return run
    # torch and the training loop only when something must be trained (tables of committed runs need neither)
    from uu.train import train_run  # late: torch and the whole training stack, only when a run must train

    settings = {**cfg.overrides, "seed": int(seed), **dict(overrides or {})}
    return Path(train_run(profile, data_dir=str(data_dir or ""), out_dir=run, overrides=settings,
                          resume=(run / "checkpoint.pt").is_file()))


def run_all(configs: Iterable[str], seeds: Iterable[int], profile, data_dir="", runs_dir="runs/ablation",
            overrides: Mapping | None = None, jobs: int = 1) -> dict[str, list[Path]]:
    """{config: [run_or_load(config, seed) for each seed]}: one run after the other, or with jobs > 1 that many
    side by side (`train_side_by_side`) first."""
    configs, seeds = list(configs), list(seeds)
    if jobs > 1:
        train_side_by_side([(c, s) for c in configs for s in seeds], profile, data_dir, runs_dir, overrides, jobs)
    return {c: [run_or_load(c, profile, s, data_dir, runs_dir, overrides) for s in seeds] for c in configs}


def train_side_by_side(pairs: Sequence[tuple[str, int]], profile, data_dir="", runs_dir="runs/ablation",
                       overrides: Mapping | None = None, jobs: int = 2, threads: int | None = None) -> None:
    """Train the unfinished (config, seed) runs, `jobs` at a time, each in its own ``python -m uu train`` process
    (they share the GPU: time-sliced, or under CUDA MPS when its daemon runs; results/h200/session5 measured
    both). Unless OMP_NUM_THREADS is set, each process gets cores / jobs CPU threads (on 2 cores two 1-thread runs
    train ~1.4x the samples of one 2-thread run); `threads` sets it for every process. A process's output goes to
    RUNS/<config>/seed<k>.log; a failed run raises naming that log."""
    env = dict(os.environ)
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // max(1, jobs))))

    def train(pair):
        config, seed = pair
        run = run_dir_for(runs_dir, config, seed)
        settings = {**get_config(config).overrides, "seed": int(seed), **dict(overrides or {})}
        cmd = [sys.executable, "-m", "uu", "train", "--params", str(profile), "--data", str(data_dir or ""),
               "--out", str(run)] + [a for k, v in settings.items() for a in ("--set", f"{k}={json.dumps(v)}")]
        cmd += ["--resume"] if (run / "checkpoint.pt").is_file() else []
        run.parent.mkdir(parents=True, exist_ok=True)
        log = run.parent / f"{run.name}.log"
        with open(log, "w") as out:
            return log, subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env=env).returncode

    todo = [p for p in pairs if not is_finished(run_dir_for(runs_dir, *p))]
    with ThreadPoolExecutor(max(1, jobs)) as pool:
        failed = [f"{log} (exit {code})" for log, code in pool.map(train, todo) if code]
    if failed:
        raise RuntimeError("runs trained side by side failed; see " + ", ".join(failed))


@contextlib.contextmanager
def training_beside(pairs: Sequence[tuple[str, int]], profile, data_dir="", runs_dir="runs/ablation",
                    overrides: Mapping | None = None):
    """Trains the unfinished (config, seed) runs in the background (`train_side_by_side`, all at once, one CPU
    thread each) while the block runs, with this process's torch on one thread too; waits for them on leaving and
    raises if one failed. The main job trains ablation rows 1-4 beside notebook 03's row 5 this way: on 2 cores
    five one-thread runs keep both busy, where row 5 alone on two threads used them ~1.3x. No pairs: nothing."""
    pairs = list(pairs)
    if not pairs:
        yield
        return
    import torch  # late: tables of committed runs import this module without torch

    threads = torch.get_num_threads()
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(train_side_by_side, pairs, profile, data_dir, runs_dir, overrides, len(pairs), 1)
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(threads)
        pending.result()


def collect_runs(runs_dir, configs: Iterable[str] | None = None) -> dict[str, list[Path]]:
    """{config: [finished run folders, by seed]} found under runs_dir (configs without runs left out)."""
    runs_dir = Path(runs_dir)
    names = list(configs) if configs is not None else [p.name for p in sorted(runs_dir.iterdir()) if p.is_dir()]
    found = {name: sorted((p for p in (runs_dir / name).glob("seed*") if is_finished(p)), key=run_seed)
             for name in names}
    return {name: runs for name, runs in found.items() if runs}


# ----------------------------------------------------------------------------- notebooks 04 and 05

class Workspace(NamedTuple):
    runs_dir: Path
    results_dir: Path
    data_dir: str
    to_train: list  # [(config, seed)] of the runs not finished yet
    protocol: str   # how our numbers are measured (uu.tables.side_by_side)


def prepare(profile, configs: Sequence[str], seeds: Iterable[int], data_dir="", runs_dir="",
            results_dir="") -> Workspace:
    """The set-up notebooks 04 and 05 share: folders (default runs/workbook-<profile>/runs and .../results) and,
    with data_dir "" and a run to train, one phantom in runs_dir/phantom for every run."""
    settings, seeds = load_profile(profile), list(seeds)
    workbook = Path("runs") / f"workbook-{Path(str(profile)).stem}"
    runs_dir, results_dir = Path(runs_dir or workbook / "runs"), Path(results_dir or workbook / "results")
    results_dir.mkdir(parents=True, exist_ok=True)
    to_train = [(get_config(c).name, s) for c in configs for s in seeds if not is_finished(run_dir_for(runs_dir, c, s))]
    data = f"data {data_dir}" if data_dir else "the data recorded in the runs"
    if not data_dir and to_train:
        data_dir, data = str(ensure_phantom(runs_dir / "phantom", settings["phantom_patients"])), "phantom"
    return Workspace(runs_dir, results_dir, str(data_dir), to_train,
                     f"ours: profile {settings['name']}, {data}, validation split")


# ----------------------------------------------------------------------------- command line

def parse_seeds(text: str) -> list[int]:
    """"3" -> [0, 1, 2]; "1,2" -> [1, 2]; "4," -> [4]."""
    text = str(text).strip()
    if "," in text:
        return [int(t) for t in text.split(",") if t.strip()]
    return list(range(int(text)))


def cli_ablation(args) -> int:
    """``python -m uu ablation --params P --runs RUNS [--data D] [--configs a,b] [--seeds N] [--jobs J] [--set k=v]``:
    trains every unfinished (configuration, seed), J at a time (resuming), then prints the table."""
    configs = [get_config(c.strip()).name for c in args.configs.split(",") if c.strip()] or DEFAULT_CONFIGS
    seeds = parse_seeds(args.seeds)  # unknown names above, and bad seeds or keys here, fail before anything trains
    if not seeds:
        raise ValueError(f"--seeds {args.seeds!r}: no seed to run (give a count >= 1 or a list such as 0,1)")
    overrides = parse_overrides(args.set)
    profile = load_profile(args.params, overrides)
    data_dir = args.data or ensure_phantom(Path(args.runs) / "phantom", profile["phantom_patients"])
    if args.jobs < 1:
        raise ValueError(f"--jobs {args.jobs}: give the number of runs to train side by side (>= 1)")
    runs = run_all(configs, seeds, args.params, data_dir, args.runs, overrides, jobs=args.jobs)
    print(to_markdown(format_table(ablation_table(runs, CONFIGS))))
    return 0
