"""Tables of finished runs, with their units: the ablation table, the paper's Tables I and II beside ours,
paired per-volume comparisons with bootstrap intervals, sharpness and calibration; CSV and Markdown.

Units: Dice in percent, MSE (Eq. 10) x100, differences in Dice points or MSE x100; every table meant for
reading names its unit in its headers (`ablation_table` keeps plain column names).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import yaml

from uu.data import CLASSES
from uu.evaluate import to_markdown, write_table  # noqa: F401  (one Markdown/CSV writer, re-exported)
from uu.stats import paired_bootstrap_ci

METRICS = [f"dice_{c}" for c in CLASSES] + ["dice_avg", "mse"]  # all reported x100
NAMES = {**{f"dice_{c}": f"{c} Dice" for c in CLASSES}, "dice_avg": "avg Dice", "mse": "MSE"}
HEADERS = {m: "MSE x100" if m == "mse" else f"{NAMES[m]} (%)" for m in METRICS}
DIFF_UNITS = {m: "MSE x100" if m == "mse" else "Dice points" for m in METRICS}
DIGITS = {m: 4 if m == "mse" else 2 for m in METRICS}
MIN_VOLUMES_FOR_CI = 10


# ----------------------------------------------------------------------------- per-run numbers

def run_seed(run_dir) -> int:
    """k of a RUNS/<config>/seed<k> folder, else the seed in RUN/profile.yaml (0 without one)."""
    name = Path(run_dir).name
    if name.startswith("seed") and name[4:].isdigit():
        return int(name[4:])
    profile = Path(run_dir) / "profile.yaml"
    return int((yaml.safe_load(profile.read_text()) or {}).get("seed", 0)) if profile.is_file() else 0


def read_per_case(run_dir) -> pd.DataFrame:
    """RUN/eval/per_case.csv (fractions) with dice_avg (mean of the three classes) and a seed column added."""
    path = Path(run_dir) / "eval" / "per_case.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; the run has no per-volume evaluation (re-run its evaluation)")
    df = pd.read_csv(path)
    needed = ["patient", "phase", "mse"] + [f"dice_{c}" for c in CLASSES]
    missing = [c for c in needed if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: columns {missing} missing (has {list(df.columns)})")
    df["dice_avg"], df["seed"] = df[[f"dice_{c}" for c in CLASSES]].mean(axis=1), run_seed(run_dir)
    return df


def run_means(run_dir) -> dict:
    """Per-run means over the evaluated volumes, x100 (Dice in %, MSE x100), and n_volumes."""
    df = read_per_case(run_dir)
    return {m: 100.0 * float(df[m].mean()) for m in METRICS} | {"n_volumes": len(df)}


# ----------------------------------------------------------------------------- the ablation table

def ablation_table(runs: Mapping[str, Sequence], configs: Mapping | None = None) -> pd.DataFrame:
    """One row per configuration: mean and sample std over seeds (NaN for one) of per-run means (x100).
    runs: {config: [run folders]}; configs: {config: object with .row and .label} (uu.ablation.CONFIGS).
    Columns: config, row, label, n_seeds, n_volumes, then <metric>_mean and <metric>_std for each of METRICS.
    """
    rows = []
    for name, run_dirs in runs.items():
        if not run_dirs:
            continue
        per_run = pd.DataFrame([run_means(r) for r in run_dirs])
        cfg = (configs or {}).get(name)
        row = {"config": name, "row": cfg.row if cfg else None, "label": cfg.label if cfg else name,
               "n_seeds": len(per_run), "n_volumes": int(per_run["n_volumes"].iloc[0])}
        for m in METRICS:
            row[f"{m}_mean"] = float(per_run[m].mean())
            row[f"{m}_std"] = float(per_run[m].std(ddof=1)) if len(per_run) > 1 else math.nan
        rows.append(row)
    return pd.DataFrame(rows)


def _pm(mean: float, std: float, digits: int) -> str:
    return f"{mean:.{digits}f}" if math.isnan(std) else f"{mean:.{digits}f} ± {std:.{digits}f}"


def _ours(r) -> dict:
    """One ablation_table row as {header: 'mean ± std'}."""
    return {HEADERS[m]: _pm(r[f"{m}_mean"], r[f"{m}_std"], DIGITS[m]) for m in METRICS}


def format_table(table: pd.DataFrame, protocol: str = "") -> pd.DataFrame:
    """Readable strings: 'mean ± std over seeds' per metric (Dice (%) with 2 decimals, MSE x100 with 4)."""
    out = pd.DataFrame([{"row": r["row"], "configuration": r["label"], **_ours(r), "seeds": r["n_seeds"],
                         "volumes": r["n_volumes"]} for _, r in table.iterrows()])
    if protocol:
        out["protocol"] = protocol
    return out


# The paper's numbers (percent) with the protocol each was measured under (../shared/ANCHORS.md).
_OFFICIAL = "paper; probably official 50-patient test set (trained on all 100)"
_NNFORMER = "copied from nnFormer; 20-patient test split"
_AVG, _MSE, _RV, _MYO, _LV = (HEADERS[m] for m in ("dice_avg", "mse", "dice_RV", "dice_Myo", "dice_LV"))
PAPER_TABLE_I = pd.DataFrame([
    {"method": "U-Mamba + CE", "our_row": 3, _AVG: 92.263, _MSE: 0.3843, "protocol": _OFFICIAL},
    {"method": "U-Mamba + UA loss", "our_row": 4, _AVG: 92.602, _MSE: 0.3640, "protocol": _OFFICIAL},
    {"method": "U-Mamba + UA + SAM (UU-Mamba)", "our_row": 5, _AVG: 92.787, _MSE: 0.3304, "protocol": _OFFICIAL},
])
PAPER_TABLE_II = pd.DataFrame([
    {"method": "TransUNet", "our_row": None, _AVG: 89.71, _RV: 88.86, _MYO: 84.54, _LV: 95.73, "protocol": _NNFORMER},
    {"method": "Swin-Unet", "our_row": None, _AVG: 90.00, _RV: 88.55, _MYO: 85.62, _LV: 95.83, "protocol": _NNFORMER},
    {"method": "nnU-Net (run by nnFormer authors)", "our_row": 1, _AVG: 91.61, _RV: 90.24, _MYO: 89.24, _LV: 95.36,
     "protocol": _NNFORMER},
    {"method": "nnFormer", "our_row": None, _AVG: 92.06, _RV: 90.94, _MYO: 89.58, _LV: 95.65, "protocol": _NNFORMER},
    {"method": "U-Mamba", "our_row": 2, _AVG: 92.22, _RV: 91.83, _MYO: 90.22, _LV: 94.54, "protocol": _OFFICIAL},
    {"method": "UU-Mamba", "our_row": 5, _AVG: 92.79, _RV: 92.41, _MYO: 90.90, _LV: 95.04, "protocol": _OFFICIAL},
    {"method": "U-Mamba Enc (nnU-Net Revisited)", "our_row": 2, _AVG: 91.22, _RV: None, _MYO: None, _LV: None,
     "protocol": "nnU-Net Revisited; 5-fold CV on 100 patients"},
])


def _num(value, digits: int) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{float(value):.{digits}f}"


def side_by_side(table: pd.DataFrame, protocol: str) -> pd.DataFrame:
    """Our rows and the paper's numbers in one frame (format_table's headers); protocol: how ours were measured."""
    lines = []
    for _, r in table.iterrows():
        lines.append({"source": "ours", "row": r["row"], "method": r["label"], **_ours(r),
                      "protocol": f"{protocol}; {r['n_seeds']} seed(s), {r['n_volumes']} volumes"})
        for paper_name, paper in (("Table I", PAPER_TABLE_I), ("Table II", PAPER_TABLE_II)):
            for _, p in paper[paper["our_row"] == r["row"]].iterrows():
                lines.append({"source": f"paper {paper_name}", "row": r["row"], "method": p["method"],
                              **{HEADERS[m]: _num(p.get(HEADERS[m]), DIGITS[m]) for m in METRICS},
                              "protocol": p["protocol"]})
    return pd.DataFrame(lines)


# ----------------------------------------------------------------------------- paired comparisons

def paired_comparison(runs_a: Sequence, runs_b: Sequence, metric: str = "dice_avg", n_boot: int = 10_000,
                      seed: int = 0) -> dict:
    """Paired per-volume difference b - a (x100) with a bootstrap 95% interval; volumes matched on (seed, patient,
    phase), averaged over seeds before resampling. Returns {"metric", "mean_diff", "ci_low", "ci_high",
    "n_volumes", "n_seeds", "excludes_zero"}."""
    a, b = (pd.concat([read_per_case(r)[["seed", "patient", "phase", metric]] for r in runs], ignore_index=True)
            for runs in (runs_a, runs_b))
    joined = a.merge(b, on=["seed", "patient", "phase"], suffixes=("_a", "_b"))
    if joined.empty:
        raise ValueError(f"paired_comparison: no volume and seed in common between {runs_a} and {runs_b}")
    joined["diff"] = 100.0 * (joined[f"{metric}_b"] - joined[f"{metric}_a"])
    per_vol = joined.groupby(["patient", "phase"])["diff"].mean()
    ci = paired_bootstrap_ci(np.zeros(len(per_vol)), per_vol.to_numpy(), n_boot=n_boot, seed=seed)
    return {"metric": metric, "mean_diff": ci.mean, "ci_low": ci.low, "ci_high": ci.high,
            "n_volumes": ci.n, "n_seeds": int(joined["seed"].nunique()), "excludes_zero": ci.excludes_zero()}


def paired_comparisons(runs: Mapping[str, Sequence], pairs: Sequence[tuple[str, str]],
                       metrics: Sequence[str] = ("dice_avg", "mse"), n_boot: int = 10_000) -> pd.DataFrame:
    """A row per pair (from, to) present in `runs`: per metric the mean difference (to - from) and its
    bootstrap 95% interval, headers with units, e.g. "avg Dice diff (Dice points)", "MSE CI low (MSE x100)"."""
    rows = []
    for a, b in pairs:
        if a not in runs or b not in runs:
            continue
        row = {"from": a, "to": b}
        for m in metrics:
            c = paired_comparison(runs[a], runs[b], m, n_boot=n_boot)
            name, unit = NAMES[m], DIFF_UNITS[m]
            row |= {f"{name} diff ({unit})": c["mean_diff"], f"{name} 95% CI low ({unit})": c["ci_low"],
                    f"{name} 95% CI high ({unit})": c["ci_high"]}
        n = c["n_volumes"]
        row |= {"volumes": n, "seeds": c["n_seeds"],
                "note": "" if n >= MIN_VOLUMES_FOR_CI else f"only {n} volumes: the intervals mean little"}
        rows.append(row)
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- sharpness and calibration

def sharpness_table(report: Mapping, loss: str = "") -> pd.DataFrame:
    """One row per method of a uu.landscape report; loss: its common loss's name (for the headers)."""
    name = f"{loss} loss" if loss else "loss"
    rows = []
    for m, r in report.items():
        sam, h = r["sam"], r["hessian"] or {"eigenvalue": math.nan, "dominant": math.nan, "iterations": 0,
                                            "converged": False, "method": "not computed"}
        rows.append({"method": m, f"{name} at w": sam["loss"], f"{name} max within rho": sam["max_loss"],
                     f"SAM sharpness ({name} rise)": sam["sharpness"], "rho (weight L2)": sam["rho"],
                     f"top Hessian eigenvalue ({name} / weight^2)": h["eigenvalue"],
                     f"dominant Hessian eigenvalue ({name} / weight^2)": h["dominant"],
                     "power iterations": h["iterations"], "converged": h["converged"], "Hessian method": h["method"]})
    return pd.DataFrame(rows)


def calibration_table(ece: Mapping[str, float]) -> pd.DataFrame:
    """method, "ECE (%)" from {method: expected calibration error as a fraction}."""
    return pd.DataFrame([{"method": m, "ECE (%)": 100.0 * float(e)} for m, e in ece.items()])
