"""The ablation: configurations as profile overrides, and training or reading their runs.

CONFIGS: rows 1-2 the baselines of Table II, rows 3-5 Table I (CE, UA loss of Eq. 8, UA + SAM), row 6 the authors'
code. Runs live in RUNS/<name>/seed<k>/; a run whose eval/summary.json exists is read, never retrained."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
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


def _config(row: int, name: str, label: str, arch: str, loss: str, optimizer: str, **more) -> AblationConfig:
    return AblationConfig(name, row, label, {"arch": arch, "loss": loss, "optimizer": optimizer, **more})


CONFIGS: dict[str, AblationConfig] = {
    c.name: c
    for c in [
        _config(1, "unet_dice_ce", "U-Net + Dice/CE + SGD (nnU-Net-like)", "unet", "dice_ce", "sgd"),
        _config(2, "umamba_dice_ce", "U-Mamba Enc + Dice/CE + SGD (U-Mamba default)", "umamba_enc", "dice_ce", "sgd"),
        _config(3, "umamba_ce", "U-Mamba Enc + CE + SGD (Table I: CE)", "umamba_enc", "ce", "sgd"),
        _config(4, "umamba_ua", "U-Mamba Enc + UA + SGD (Table I: UA)", "umamba_enc", "ua", "sgd"),
        _config(5, "umamba_ua_sam", "U-Mamba Enc + UA + SAM (Table I: UA+SAM, UU-Mamba)", "umamba_enc", "ua", "sam"),
        _config(
            6,
            "umamba_ua_fixed_sam",
            "U-Mamba Enc + UA (sigma fixed) + SAM, lr 1e-2 (authors' code)",
            "umamba_enc",
            "ua_fixed",
            "sam",
            lr=1e-2,
        ),
    ]
}
DEFAULT_CONFIGS = [name for name, c in CONFIGS.items() if c.row <= 5]


def get_config(name: str) -> AblationConfig:
    if name not in CONFIGS:
        raise ValueError(f"unknown ablation configuration {name!r}; known: {', '.join(CONFIGS)}")
    return CONFIGS[name]


# ----------------------------------------------------------------------------- runs
# A run of a configuration is named "seed<k>" (seed k on the profile's split) or "fold<k>" (cross-validation: fold k
# of the profile's kfold split is evaluated, the other folds train, with seed k). A bare int means "seed<k>".
def run_name(run: int | str) -> str:
    """3 -> "seed3"; "seed3" and "fold2" as they are; anything else is a ValueError."""
    name = f"seed{int(run)}" if isinstance(run, int) or str(run).isdigit() else str(run)
    if not (name[:4] in ("seed", "fold") and name[4:].isdigit()):
        raise ValueError(f"run {run!r}: expected a seed number, 'seed<k>' or 'fold<k>'")
    return name


def run_settings(run: int | str) -> dict:
    """The profile overrides that make a run: {"seed": k} or {"split": "kfold", "fold": k, "seed": k}."""
    name = run_name(run)
    k = int(name[4:])
    return {"seed": k} if name.startswith("seed") else {"split": "kfold", "fold": k, "seed": k}


def run_dir_for(runs_dir, config: str, run: int | str) -> Path:
    return Path(runs_dir) / config / run_name(run)


def is_finished(run_dir) -> bool:
    return (Path(run_dir) / "eval" / "summary.json").is_file()


def _settings(config: str, run, overrides: Mapping | None) -> dict:
    return {**get_config(config).overrides, **run_settings(run), **dict(overrides or {})}


def run_or_load(
    config: str, profile, run: int | str, data_dir="", runs_dir="runs/ablation", overrides: Mapping | None = None
) -> Path:
    """The run folder of (config, run): read when finished, else trained from `profile` with the configuration's
    overrides, the run's seed (and fold), then `overrides` on top."""
    path = run_dir_for(runs_dir, config, run)
    if is_finished(path):
        return path
    from uu.train import train_run  # late: torch and the whole training stack, only when a run must train

    return Path(
        train_run(
            profile,
            data_dir=str(data_dir or ""),
            out_dir=path,
            overrides=_settings(config, run, overrides),
            resume=(path / "checkpoint.pt").is_file(),
        )
    )


def run_all(
    configs: Iterable[str],
    runs: Iterable[int | str],
    profile,
    data_dir="",
    runs_dir="runs/ablation",
    overrides: Mapping | None = None,
    jobs: int = 1,
) -> dict[str, list[Path]]:
    """{config: [run_or_load(config, run) for each run]}: one run after the other, or with jobs > 1 that many
    side by side (`train_side_by_side`) first. `runs`: seeds (ints) or run names ("fold0", ...)."""
    configs, runs = list(configs), list(runs)
    if jobs > 1:
        train_side_by_side([(c, r) for c in configs for r in runs], profile, data_dir, runs_dir, overrides, jobs)
    return {c: [run_or_load(c, profile, r, data_dir, runs_dir, overrides) for r in runs] for c in configs}


def train_side_by_side(
    pairs: Sequence[tuple[str, int | str]],
    profile,
    data_dir="",
    runs_dir="runs/ablation",
    overrides: Mapping | None = None,
    jobs: int = 2,
    threads: int | None = None,
    stop_at: float | None = None,
    min_start_s: float = 120.0,
) -> list:
    """Train the unfinished (config, run) pairs in the order given, `jobs` at a time, each in its own ``python -m uu
    train`` process (they share the GPU: time-sliced, or under CUDA MPS when its daemon runs). Unless OMP_NUM_THREADS
    is set, each process gets cores / jobs CPU threads; `threads` sets it for every process. A process's output goes
    to RUNS/<config>/<run>.log; a failed run raises naming that log. `stop_at` (Unix seconds): no run starts within
    `min_start_s` of it, and running ones pause there with a checkpoint (a later call resumes them). Returns the
    (config, run) pairs left unfinished."""
    env = dict(os.environ)
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // max(1, jobs))))

    def train(pair):
        config, run = pair
        path = run_dir_for(runs_dir, config, run)
        if stop_at is not None and time.time() > stop_at - min_start_s:
            return None, 0
        sets = [a for k, v in _settings(config, run, overrides).items() for a in ("--set", f"{k}={json.dumps(v)}")]
        cmd = [sys.executable, "-m", "uu", "train", "--params", str(profile), "--data", str(data_dir or ""), "--out"]
        cmd += [str(path)] + sets
        cmd += ["--resume"] if (path / "checkpoint.pt").is_file() else []
        cmd += [] if stop_at is None else ["--stop-at", repr(float(stop_at))]
        path.parent.mkdir(parents=True, exist_ok=True)
        log = path.parent / f"{path.name}.log"
        with open(log, "a") as out:
            return log, subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env=env).returncode

    todo = [p for p in pairs if not is_finished(run_dir_for(runs_dir, *p))]
    with ThreadPoolExecutor(max(1, jobs)) as pool:
        failed = [f"{log} (exit {code})" for log, code in pool.map(train, todo) if code]
    if failed:
        raise RuntimeError("runs trained side by side failed; see " + ", ".join(failed))
    return [p for p in todo if not is_finished(run_dir_for(runs_dir, *p))]


@contextlib.contextmanager
def training_beside(
    pairs: Sequence[tuple[str, int]], profile, data_dir="", runs_dir="runs/ablation", overrides: Mapping | None = None
):
    """Trains the unfinished (config, seed) runs in the background (`train_side_by_side`, all at once, one CPU
    thread each) while the block runs, with this process's torch on one thread too; waits for them on leaving and
    raises if one failed (the main job trains ablation rows 1-4 beside notebook 03's row 5). No pairs: nothing."""
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


def collect_runs(runs_dir, configs: Iterable[str] | None = None, kind: str = "seed") -> dict[str, list[Path]]:
    """{config: [finished RUNS/<config>/<kind><k> folders, by k]} (kind "seed" or "fold"; configs without runs out)."""
    runs_dir = Path(runs_dir)
    names = list(configs) if configs is not None else [p.name for p in sorted(runs_dir.iterdir()) if p.is_dir()]
    found = {
        name: sorted(
            (p for p in (runs_dir / name).glob(f"{kind}*") if p.is_dir() and is_finished(p)),
            key=lambda p: int(p.name[4:]) if p.name[4:].isdigit() else run_seed(p),
        )
        for name in names
    }
    return {name: runs for name, runs in found.items() if runs}


# ----------------------------------------------------------------------------- notebooks 04 and 05
class Workspace(NamedTuple):
    runs_dir: Path
    results_dir: Path
    data_dir: str
    to_train: list  # [(config, run)] of the runs not finished yet


def prepare(
    profile,
    configs: Sequence[str],
    runs: Iterable[int | str],
    data_dir="",
    runs_dir="",
    results_dir="",
    train: bool = True,
) -> Workspace:
    """The set-up notebooks 04 and 05 share: folders (default runs/workbook-<profile>/runs and .../results) and, with
    data_dir "" and a run to train, one phantom in runs_dir/phantom for every run. train=False: only read runs."""
    settings, runs = load_profile(profile), list(runs)
    workbook = Path("runs") / f"workbook-{Path(str(profile)).stem}"
    runs_dir, results_dir = Path(runs_dir or workbook / "runs"), Path(results_dir or workbook / "results")
    results_dir.mkdir(parents=True, exist_ok=True)
    to_train = [
        (get_config(c).name, r) for c in configs for r in runs if train and not is_finished(run_dir_for(runs_dir, c, r))
    ]
    if not data_dir and to_train:
        data_dir = str(ensure_phantom(runs_dir / "phantom", settings["phantom_patients"]))
    return Workspace(runs_dir, results_dir, str(data_dir), to_train)


# ----------------------------------------------------------------------------- command line
def parse_seeds(text: str) -> list[int]:
    """ "3" -> [0, 1, 2]; "1,2" -> [1, 2]; "4," -> [4]."""
    text = str(text).strip()
    if "," in text:
        return [int(t) for t in text.split(",") if t.strip()]
    return list(range(int(text)))


def cli_ablation(args) -> int:
    """``python -m uu ablation``: trains every unfinished (configuration, run), --jobs at a time (resuming), fold by
    fold (or seed by seed) in the order of --configs, then prints the table of the finished runs."""
    configs = [get_config(c.strip()).name for c in args.configs.split(",") if c.strip()] or DEFAULT_CONFIGS
    kind, numbers = (
        ("fold", parse_seeds(args.folds)) if getattr(args, "folds", "") else ("seed", parse_seeds(args.seeds))
    )
    if not numbers:  # unknown names above, and bad numbers or keys here, fail before anything trains
        raise ValueError(
            f"--{kind}s: nothing to run (give a count >= 1, or a list such as 0,1; {kind} 0 alone is 0, with the comma)"
        )
    overrides = parse_overrides(args.set)
    profile = load_profile(args.params, overrides)
    if kind == "fold" and max(numbers) >= profile["n_folds"]:
        raise ValueError(
            f"--folds {args.folds!r}: the profile has n_folds {profile['n_folds']} (folds 0..{profile['n_folds'] - 1})"
        )
    data_dir = args.data or ensure_phantom(Path(args.runs) / "phantom", profile["phantom_patients"])
    if args.jobs < 1:
        raise ValueError(f"--jobs {args.jobs}: give the number of runs to train side by side (>= 1)")
    pairs = [(c, f"{kind}{k}") for k in numbers for c in configs]
    stop_at = getattr(args, "stop_at", None)
    if args.jobs == 1 and stop_at is None:  # in this process, one after the other
        left = [
            p for p in pairs if not is_finished(run_or_load(p[0], args.params, p[1], data_dir, args.runs, overrides))
        ]
    else:
        left = train_side_by_side(
            pairs,
            args.params,
            data_dir,
            args.runs,
            overrides,
            args.jobs,
            stop_at=stop_at,
            min_start_s=getattr(args, "min_start", 120.0),
        )
    if left:
        print(
            f"{len(left)} run(s) left for a later call (--stop-at came first): "
            + ", ".join(f"{c}/{r}" for c, r in left)
        )
    runs = {
        c: [run_dir_for(args.runs, c, r) for cc, r in pairs if cc == c and is_finished(run_dir_for(args.runs, c, r))]
        for c in configs
    }
    runs = {c: found for c, found in runs.items() if found}
    if runs:
        print(to_markdown(format_table(ablation_table(runs, CONFIGS))))
    return 0
