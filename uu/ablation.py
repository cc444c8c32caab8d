"""The ablation: configurations as profile overrides, training or reading their runs, tables.

Configurations (issue 5), all under one profile and one data folder:

| name | row | network | loss | optimizer | paper |
| --- | --- | --- | --- | --- | --- |
| unet_dice_ce | 1 | residual U-Net | Dice + CE | SGD | nnU-Net, Table II |
| umamba_dice_ce | 2 | U-Mamba Enc | Dice + CE | SGD | U-Mamba, Table II |
| umamba_ce | 3 | U-Mamba Enc | CE | SGD | Table I row 1 |
| umamba_ua | 4 | U-Mamba Enc | UA (Eq. 8) | SGD | Table I row 2 |
| umamba_ua_sam | 5 | U-Mamba Enc | UA | SAM | Table I row 3, UU-Mamba |
| umamba_ua_fixed_sam | 6 | U-Mamba Enc | UA, sigma frozen | SAM, lr 1e-2 | the authors' code |

Runs live in RUNS/<name>/seed<k>/ (the run-folder format of DEVELOPERS.md). A run whose
eval/summary.json exists is read, never retrained, so runs made on a GPU elsewhere (or their small
committed eval/ and log.jsonl files) can be tabulated anywhere.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from uu.runs import read_log  # noqa: F401  (re-exported: notebooks call ablation.read_log)
from uu.stats import paired_bootstrap_ci


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

CLASSES = ("RV", "Myo", "LV")


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
    """The run folder of (config, seed): read when RUN/eval/summary.json exists, else trained.

    profile: a profile name ("smoke"), a YAML path or a dict; the configuration's overrides and
    the seed go on top of it (then `overrides`, e.g. {"epochs": 1}). Returns the run folder.
    """
    cfg = get_config(config)
    run = run_dir_for(runs_dir, config, seed)
    if is_finished(run):
        return run
    from uu.train import train_run  # heavy import only when something must be trained

    settings = {**cfg.overrides, "seed": int(seed), **dict(overrides or {})}
    resume = (run / "checkpoint.pt").is_file()
    return Path(train_run(profile, data_dir=str(data_dir or ""), out_dir=run, overrides=settings,
                          resume=resume))


def parse_seeds(text: str) -> list[int]:
    """"3" -> [0, 1, 2]; "1,2" -> [1, 2]; "4," -> [4]."""
    text = str(text).strip()
    if "," in text:
        return [int(t) for t in text.split(",") if t.strip()]
    return list(range(int(text)))


def cli_ablation(args) -> int:
    """``python -m uu ablation --params P --runs RUNS [--data D] [--configs a,b] [--seeds N] [--set k=v]``.

    Trains, one after the other, every (configuration, seed) whose run is not finished (an interrupted one
    resumes from its checkpoint), then prints the table. Launch one process per configuration (--configs)
    to use several GPUs or to share one."""
    from uu.data import make_phantom
    from uu.profiles import load_profile, parse_overrides

    configs = [c.strip() for c in args.configs.split(",") if c.strip()] or DEFAULT_CONFIGS
    for name in configs:
        get_config(name)  # unknown names fail before anything trains
    seeds = parse_seeds(args.seeds)
    if not seeds:
        raise ValueError(f"--seeds {args.seeds!r}: no seed to run (give a count >= 1 or a list such as 0,1)")
    overrides = parse_overrides(args.set)
    profile = load_profile(args.params, overrides)  # a misspelt key or a bad value fails before anything trains
    data_dir = args.data
    if not data_dir:
        data_dir = str(Path(args.runs) / "phantom")
        if not Path(data_dir).exists():
            make_phantom(data_dir, n_patients=profile["phantom_patients"], seed=0)
    runs = {}
    for name in configs:
        runs[name] = [run_or_load(name, args.params, seed, data_dir, args.runs, overrides) for seed in seeds]
    print(to_markdown(format_table(ablation_table(runs))))
    return 0


def collect_runs(runs_dir, configs: Iterable[str] | None = None) -> dict[str, list[Path]]:
    """{config: [finished run folders, by seed]} found under runs_dir (configs without runs left out)."""
    runs_dir = Path(runs_dir)
    names = list(configs) if configs is not None else [p.name for p in sorted(runs_dir.iterdir()) if p.is_dir()]
    found = {}
    for name in names:
        runs = sorted((p for p in (runs_dir / name).glob("seed*") if is_finished(p)),
                      key=lambda p: int(p.name[4:]) if p.name[4:].isdigit() else 1 << 30)
        if runs:
            found[name] = runs
    return found


def read_per_case(run_dir) -> pd.DataFrame:
    """RUN/eval/per_case.csv with dice_avg (mean of the three classes) added and a seed column."""
    path = Path(run_dir) / "eval" / "per_case.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; the run has no per-volume evaluation (re-run its evaluation)")
    df = pd.read_csv(path)
    needed = ["patient", "phase", "mse"] + [f"dice_{c}" for c in CLASSES]
    missing = [c for c in needed if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: columns {missing} missing (has {list(df.columns)})")
    df["dice_avg"] = df[[f"dice_{c}" for c in CLASSES]].mean(axis=1)
    df["seed"] = run_seed(run_dir)
    return df


def run_seed(run_dir) -> int:
    name = Path(run_dir).name
    if name.startswith("seed") and name[4:].isdigit():
        return int(name[4:])
    profile = Path(run_dir) / "profile.yaml"
    if profile.is_file():
        import yaml
        return int((yaml.safe_load(profile.read_text()) or {}).get("seed", 0))
    return 0


def read_summary(run_dir) -> dict:
    return json.loads((Path(run_dir) / "eval" / "summary.json").read_text())


# ----------------------------------------------------------------------------- tables

METRICS = [f"dice_{c}" for c in CLASSES] + ["dice_avg", "mse"]  # all reported x100 (percent)


def run_means(run_dir) -> dict:
    """Per-run means over the evaluated volumes, in percent (Dice x100, MSE x100)."""
    df = read_per_case(run_dir)
    return {m: 100.0 * float(df[m].mean()) for m in METRICS} | {"n_volumes": len(df)}


def ablation_table(runs: Mapping[str, Sequence]) -> pd.DataFrame:
    """One row per configuration: mean and std over seeds of per-run means (percent), seeds, volumes.

    Columns: config, row, label, n_seeds, n_volumes, then <metric>_mean and <metric>_std for
    dice_RV, dice_Myo, dice_LV, dice_avg (mean of the three), mse (Eq. 10, x100).
    std is the sample std over seeds (NaN with a single seed).
    """
    rows = []
    for name, run_dirs in runs.items():
        if not run_dirs:
            continue
        per_run = pd.DataFrame([run_means(r) for r in run_dirs])
        cfg = CONFIGS.get(name)
        row = {"config": name, "row": cfg.row if cfg else None, "label": cfg.label if cfg else name,
               "n_seeds": len(per_run), "n_volumes": int(per_run["n_volumes"].iloc[0])}
        for m in METRICS:
            row[f"{m}_mean"] = float(per_run[m].mean())
            row[f"{m}_std"] = float(per_run[m].std(ddof=1)) if len(per_run) > 1 else math.nan
        rows.append(row)
    return pd.DataFrame(rows)


def _pm(mean: float, std: float, digits: int) -> str:
    return f"{mean:.{digits}f}" if math.isnan(std) else f"{mean:.{digits}f} ± {std:.{digits}f}"


def format_table(table: pd.DataFrame, protocol: str = "") -> pd.DataFrame:
    """Readable strings: 'mean ± std' per metric (Dice with 2 decimals, MSE x100 with 4)."""
    out = pd.DataFrame({
        "row": table["row"], "configuration": table["label"],
        "RV": [_pm(m, s, 2) for m, s in zip(table["dice_RV_mean"], table["dice_RV_std"])],
        "Myo": [_pm(m, s, 2) for m, s in zip(table["dice_Myo_mean"], table["dice_Myo_std"])],
        "LV": [_pm(m, s, 2) for m, s in zip(table["dice_LV_mean"], table["dice_LV_std"])],
        "avg Dice": [_pm(m, s, 2) for m, s in zip(table["dice_avg_mean"], table["dice_avg_std"])],
        "MSE x100": [_pm(m, s, 4) for m, s in zip(table["mse_mean"], table["mse_std"])],
        "seeds": table["n_seeds"], "volumes": table["n_volumes"],
    })
    if protocol:
        out["protocol"] = protocol
    return out


# The paper's numbers (percent) with the protocol each was measured under (../shared/ANCHORS.md).
_OFFICIAL = "paper; probably official 50-patient test set (trained on all 100)"
_NNFORMER = "copied from nnFormer; 20-patient test split"
PAPER_TABLE_I = pd.DataFrame([
    {"method": "U-Mamba + CE", "our_row": 3, "avg Dice": 92.263, "MSE x100": 0.3843, "protocol": _OFFICIAL},
    {"method": "U-Mamba + UA loss", "our_row": 4, "avg Dice": 92.602, "MSE x100": 0.3640, "protocol": _OFFICIAL},
    {"method": "U-Mamba + UA + SAM (UU-Mamba)", "our_row": 5, "avg Dice": 92.787, "MSE x100": 0.3304,
     "protocol": _OFFICIAL},
])
PAPER_TABLE_II = pd.DataFrame([
    {"method": "TransUNet", "our_row": None, "avg Dice": 89.71, "RV": 88.86, "Myo": 84.54, "LV": 95.73,
     "protocol": _NNFORMER},
    {"method": "Swin-Unet", "our_row": None, "avg Dice": 90.00, "RV": 88.55, "Myo": 85.62, "LV": 95.83,
     "protocol": _NNFORMER},
    {"method": "nnU-Net (run by nnFormer authors)", "our_row": 1, "avg Dice": 91.61, "RV": 90.24, "Myo": 89.24,
     "LV": 95.36, "protocol": _NNFORMER},
    {"method": "nnFormer", "our_row": None, "avg Dice": 92.06, "RV": 90.94, "Myo": 89.58, "LV": 95.65,
     "protocol": _NNFORMER},
    {"method": "U-Mamba", "our_row": 2, "avg Dice": 92.22, "RV": 91.83, "Myo": 90.22, "LV": 94.54,
     "protocol": _OFFICIAL},
    {"method": "UU-Mamba", "our_row": 5, "avg Dice": 92.79, "RV": 92.41, "Myo": 90.90, "LV": 95.04,
     "protocol": _OFFICIAL},
    {"method": "U-Mamba Enc (nnU-Net Revisited)", "our_row": 2, "avg Dice": 91.22, "RV": None, "Myo": None,
     "LV": None, "protocol": "nnU-Net Revisited; 5-fold CV on 100 patients"},
])


def side_by_side(table: pd.DataFrame, protocol: str) -> pd.DataFrame:
    """Our rows and the paper's numbers in one frame, each line with its protocol.

    protocol: how our numbers were measured, e.g. "ours: smoke profile, phantom, kfold validation".
    """
    lines = []
    for _, r in table.iterrows():
        lines.append({"source": "ours", "row": r["row"], "method": r["label"],
                      "RV": _pm(r["dice_RV_mean"], r["dice_RV_std"], 2),
                      "Myo": _pm(r["dice_Myo_mean"], r["dice_Myo_std"], 2),
                      "LV": _pm(r["dice_LV_mean"], r["dice_LV_std"], 2),
                      "avg Dice": _pm(r["dice_avg_mean"], r["dice_avg_std"], 2),
                      "MSE x100": _pm(r["mse_mean"], r["mse_std"], 4),
                      "protocol": f"{protocol}; {r['n_seeds']} seed(s), {r['n_volumes']} volumes"})
        for paper_name, paper in (("Table I", PAPER_TABLE_I), ("Table II", PAPER_TABLE_II)):
            for _, p in paper[paper["our_row"] == r["row"]].iterrows():
                lines.append({"source": f"paper {paper_name}", "row": r["row"], "method": p["method"],
                              "RV": _num(p.get("RV")), "Myo": _num(p.get("Myo")), "LV": _num(p.get("LV")),
                              "avg Dice": _num(p.get("avg Dice")), "MSE x100": _num(p.get("MSE x100"), 4),
                              "protocol": p["protocol"]})
    return pd.DataFrame(lines)


def _num(value, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{float(value):.{digits}f}"


# ----------------------------------------------------------------------------- paired comparisons

def per_volume(runs: Sequence, metric: str) -> pd.DataFrame:
    """(seed, patient, phase, value) for all runs of one configuration."""
    frames = [read_per_case(r)[["seed", "patient", "phase", metric]] for r in runs]
    return pd.concat(frames, ignore_index=True)


MIN_VOLUMES_FOR_CI = 10


def paired_comparison(runs_a: Sequence, runs_b: Sequence, metric: str = "dice_avg", n_boot: int = 10_000,
                      seed: int = 0) -> dict:
    """Paired per-volume difference b - a (percent) with a bootstrap 95% interval over volumes.

    Volumes are matched on (seed, patient, phase), so only seeds both configurations ran count;
    each volume's difference is averaged over those seeds before resampling volumes.
    """
    a, b = per_volume(runs_a, metric), per_volume(runs_b, metric)
    joined = a.merge(b, on=["seed", "patient", "phase"], suffixes=("_a", "_b"))
    if joined.empty:
        raise ValueError(f"paired_comparison: no volume and seed in common between {runs_a} and {runs_b}")
    joined["diff"] = 100.0 * (joined[f"{metric}_b"] - joined[f"{metric}_a"])
    per_vol = joined.groupby(["patient", "phase"])["diff"].mean()
    ci = paired_bootstrap_ci(np.zeros(len(per_vol)), per_vol.to_numpy(), n_boot=n_boot, seed=seed)
    return {"metric": metric, "mean_diff": ci.mean, "ci_low": ci.low, "ci_high": ci.high,
            "n_volumes": ci.n, "n_seeds": int(joined["seed"].nunique()), "excludes_zero": ci.excludes_zero(),
            "note": "" if ci.n >= MIN_VOLUMES_FOR_CI else f"only {ci.n} volumes: the interval means little"}


def paired_comparisons(runs: Mapping[str, Sequence], pairs: Sequence[tuple[str, str]] = DEFAULT_PAIRS,
                       metrics: Sequence[str] = ("dice_avg", "mse"), n_boot: int = 10_000) -> pd.DataFrame:
    """A row per (pair, metric) present in `runs`: from, to, mean difference (to - from) and its 95% CI."""
    rows = []
    for a, b in pairs:
        if a not in runs or b not in runs:
            continue
        for metric in metrics:
            rows.append({"from": a, "to": b, **paired_comparison(runs[a], runs[b], metric, n_boot=n_boot)})
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- writers

def to_markdown(df: pd.DataFrame, floatfmt: str = ".4g") -> str:
    """A GitHub Markdown table (no extra package needed)."""
    def cell(v):
        if isinstance(v, float):
            return "" if math.isnan(v) else format(v, floatfmt)
        return "" if v is None else str(v).replace("|", "\\|")

    header = "| " + " | ".join(str(c) for c in df.columns) + " |"
    rule = "| " + " | ".join("---" for _ in df.columns) + " |"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([header, rule, *body]) + "\n"


def write_table(df: pd.DataFrame, path_stem, floatfmt: str = ".4g") -> tuple[Path, Path]:
    """Write STEM.csv and STEM.md; returns both paths."""
    stem = Path(path_stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    csv, md = stem.with_suffix(".csv"), stem.with_suffix(".md")
    df.to_csv(csv, index=False)
    md.write_text(to_markdown(df, floatfmt))
    return csv, md


# ----------------------------------------------------------------------------- predictions for figures

def run_data_dir(run_dir, data_dir: str | None = None) -> str:
    """data_dir when given, else the data folder recorded in RUN/profile.yaml."""
    if data_dir:
        return str(data_dir)
    import yaml
    return str((yaml.safe_load((Path(run_dir) / "profile.yaml").read_text()) or {}).get("data_dir", ""))


def read_predictions(run_dir) -> dict[str, Path]:
    """{case name: path of NAME_probs.npz} from RUN/eval/pred/predictions.json (uu.infer.predict_cases)."""
    pred = Path(run_dir) / "eval" / "pred"
    index = pred / "predictions.json"
    if not index.is_file():
        raise FileNotFoundError(f"{index}: missing; the run's evaluation wrote no predictions")
    return {c["name"]: pred / c["probs"] for c in json.loads(index.read_text())["cases"]}


def load_probs(path) -> np.ndarray:
    """Class probabilities (C, Z, Y, X) float32 from a NAME_probs.npz."""
    with np.load(path) as f:
        return f["probs"].astype(np.float32)


def validation_cases(run_dirs: Mapping[str, Path], data_dir: str | None = None) -> list:
    """The uu.data.Case list of the validation volumes every run predicted (sorted by name)."""
    from uu.data import load_acdc

    names = None
    for run in run_dirs.values():
        found = set(read_predictions(run))
        names = found if names is None else names & found
    first = next(iter(run_dirs.values()))
    cases = load_acdc(run_data_dir(first, data_dir), lazy=True)
    return sorted((c for c in cases if c.name in names), key=lambda c: c.name)


def has_predictions(run_dir) -> bool:
    """True when the run's evaluation saved its class probabilities (RUN/eval/pred/predictions.json)."""
    return (Path(run_dir) / "eval" / "pred" / "predictions.json").is_file()


def save_calibration(material: Mapping, path) -> Path:
    """The reliability bins and ECE of figure_material() as JSON (no images): {"ece", "bins"}."""
    out = {"ece": {m: float(e) for m, e in material["ece"].items()},
           "bins": {m: {k: np.asarray(v).tolist() for k, v in b.items()} for m, b in material["bins"].items()}}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1))
    return path


def load_calibration(path) -> dict:
    """{"ece": {method: float}, "bins": {method: {count, confidence_sum, correct_sum as arrays}}}."""
    data = json.loads(Path(path).read_text())
    return {"ece": data["ece"], "bins": {m: {k: np.asarray(v, dtype=float) for k, v in b.items()}
                                         for m, b in data["bins"].items()}}


def figure_material(run_dirs: Mapping[str, Path], data_dir: str | None = None, n_slices: int = 3,
                    n_bins: int = 15) -> dict:
    """What the overlay, error, entropy and calibration figures need, from the runs' saved predictions.

    Slices: the middle labelled slice of up to n_slices validation volumes (the same for every
    method). Returns {"titles", "images", "ground_truth", "predictions" {method: [label slices]},
    "mses" {method: [per-slice Eq. 10 MSE]}, "entropy" {method: [maps]}, "errors" {method: [bool maps]},
    "bins" {method: reliability bins summed over all validation volumes}, "ece" {method: float}}.
    """
    from uu.data import normalize_intensity
    from uu.metrics import mse_eq10
    from uu.stats import add_bins, ece_from_bins, predictive_entropy, reliability_bins

    cases = validation_cases(run_dirs, data_dir)
    step = max(len(cases) // max(n_slices, 1), 1)
    shown = cases[::step][:n_slices]
    out = {"titles": [], "images": [], "ground_truth": [], "predictions": {m: [] for m in run_dirs},
           "mses": {m: [] for m in run_dirs}, "entropy": {m: [] for m in run_dirs},
           "errors": {m: [] for m in run_dirs}, "bins": {}, "ece": {}}
    slice_of = {}
    for case in shown:
        label = np.asarray(case.label)
        labelled = np.flatnonzero(label.reshape(label.shape[0], -1).any(axis=1))
        z = int(labelled[len(labelled) // 2]) if len(labelled) else label.shape[0] // 2
        slice_of[case.name] = z
        out["titles"].append(f"{case.name} z{z}")
        out["images"].append(normalize_intensity(case.image)[z])
        out["ground_truth"].append(label[z])
    for method, run in run_dirs.items():
        preds, bins = read_predictions(run), []
        for case in cases:
            probs = load_probs(preds[case.name])
            label = np.asarray(case.label)
            bins.append(reliability_bins(probs, label, n_bins))
            if case.name in slice_of:
                z = slice_of[case.name]
                p = probs[:, z]
                out["predictions"][method].append(p.argmax(0))
                out["mses"][method].append(mse_eq10(p, label[z]))
                out["entropy"][method].append(predictive_entropy(p))
                out["errors"][method].append(p.argmax(0) != label[z])
        out["bins"][method] = add_bins(*bins)
        out["ece"][method] = ece_from_bins(out["bins"][method])
    return out
