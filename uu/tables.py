"""Tables of finished runs, with their units: the ablation table, the paper's Tables I and II (uu.evidence puts
ours beside them), sharpness and calibration; CSV and Markdown.

Units: Dice in percent, MSE (Eq. 10) x100, differences in Dice points or MSE x100; every table meant for
reading names its unit in its headers (`ablation_table` keeps plain column names)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping, Sequence

import pandas as pd
import yaml

from uu.data import CLASSES
from uu.evaluate import to_markdown, write_table  # noqa: F401  (one Markdown/CSV writer, re-exported)

METRICS = [f"dice_{c}" for c in CLASSES] + ["dice_avg", "mse"]  # all reported x100
NAMES = {**{f"dice_{c}": f"{c} Dice" for c in CLASSES}, "dice_avg": "avg Dice", "mse": "MSE"}
HEADERS = {m: "MSE x100" if m == "mse" else f"{NAMES[m]} (%)" for m in METRICS}
DIGITS = {m: 4 if m == "mse" else 2 for m in METRICS}


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
    """One row per configuration: mean and sample std over its runs (NaN for one) of per-run means (x100); runs:
    {config: [run folders]}; configs: uu.ablation.CONFIGS. Columns: config, row, label, n_runs, kind ("seeds" or
    "folds"), n_volumes (all folds' volumes, or one seed's), <metric>_mean and <metric>_std for each of METRICS."""
    rows = []
    for name, run_dirs in runs.items():
        if not run_dirs:
            continue
        per_run = pd.DataFrame([run_means(r) for r in run_dirs])
        folds = all(Path(r).name.startswith("fold") for r in run_dirs)
        cfg = (configs or {}).get(name)
        row = {
            "config": name,
            "row": cfg.row if cfg else None,
            "label": cfg.label if cfg else name,
            "n_runs": len(per_run),
            "kind": "folds" if folds else "seeds",
            "n_volumes": int(per_run["n_volumes"].sum() if folds else per_run["n_volumes"].iloc[0]),
        }
        for m in METRICS:
            row[f"{m}_mean"] = float(per_run[m].mean())
            row[f"{m}_std"] = float(per_run[m].std(ddof=1)) if len(per_run) > 1 else math.nan
        rows.append(row)
    return pd.DataFrame(rows)


def _pm(mean: float, std: float, digits: int) -> str:
    return f"{mean:.{digits}f}" if math.isnan(std) else f"{mean:.{digits}f} ± {std:.{digits}f}"


def format_table(table: pd.DataFrame) -> pd.DataFrame:
    """Readable strings: 'mean ± std over runs' per metric (Dice (%) with 2 decimals, MSE x100 with 4)."""
    return pd.DataFrame(
        [
            {
                "row": r["row"],
                "configuration": r["label"],
                **{HEADERS[m]: _pm(r[f"{m}_mean"], r[f"{m}_std"], DIGITS[m]) for m in METRICS},
                "runs": f"{r['n_runs']} {r['kind'] if r['n_runs'] > 1 else r['kind'][:-1]}",
                "volumes": r["n_volumes"],
            }
            for _, r in table.iterrows()
        ]
    )


# The paper's numbers (percent) with the protocol each was measured under (docs/reproduction.md).
_OFFICIAL = "paper; probably official 50-patient test set (trained on all 100)"
_NNFORMER = "copied from nnFormer; 20-patient test split"
_AVG, _MSE, _RV, _MYO, _LV = (HEADERS[m] for m in ("dice_avg", "mse", "dice_RV", "dice_Myo", "dice_LV"))
PAPER_TABLE_I = pd.DataFrame(
    [
        {"method": "U-Mamba + CE", "our_row": 3, _AVG: 92.263, _MSE: 0.3843, "protocol": _OFFICIAL},
        {"method": "U-Mamba + UA loss", "our_row": 4, _AVG: 92.602, _MSE: 0.3640, "protocol": _OFFICIAL},
        {"method": "U-Mamba + UA + SAM (UU-Mamba)", "our_row": 5, _AVG: 92.787, _MSE: 0.3304, "protocol": _OFFICIAL},
    ]
)
PAPER_TABLE_II = pd.DataFrame(
    [
        {
            "method": "TransUNet",
            "our_row": None,
            _AVG: 89.71,
            _RV: 88.86,
            _MYO: 84.54,
            _LV: 95.73,
            "protocol": _NNFORMER,
        },
        {
            "method": "Swin-Unet",
            "our_row": None,
            _AVG: 90.00,
            _RV: 88.55,
            _MYO: 85.62,
            _LV: 95.83,
            "protocol": _NNFORMER,
        },
        {
            "method": "nnU-Net (run by nnFormer authors)",
            "our_row": 1,
            _AVG: 91.61,
            _RV: 90.24,
            _MYO: 89.24,
            _LV: 95.36,
            "protocol": _NNFORMER,
        },
        {
            "method": "nnFormer",
            "our_row": None,
            _AVG: 92.06,
            _RV: 90.94,
            _MYO: 89.58,
            _LV: 95.65,
            "protocol": _NNFORMER,
        },
        {"method": "U-Mamba", "our_row": 2, _AVG: 92.22, _RV: 91.83, _MYO: 90.22, _LV: 94.54, "protocol": _OFFICIAL},
        {"method": "UU-Mamba", "our_row": 5, _AVG: 92.79, _RV: 92.41, _MYO: 90.90, _LV: 95.04, "protocol": _OFFICIAL},
        {
            "method": "U-Mamba Enc (nnU-Net Revisited)",
            "our_row": 2,
            _AVG: 91.22,
            _RV: None,
            _MYO: None,
            _LV: None,
            "protocol": "nnU-Net Revisited; 5-fold CV on 100 patients",
        },
    ]
)


# ----------------------------------------------------------------------------- sharpness and calibration
def sharpness_table(report: Mapping, loss: str = "") -> pd.DataFrame:
    """One row per method of a uu.landscape report; loss: its common loss's name (for the headers)."""
    name = f"{loss} loss" if loss else "loss"
    rows = []
    for m, r in report.items():
        sam, h = (
            r["sam"],
            r["hessian"]
            or {
                "eigenvalue": math.nan,
                "dominant": math.nan,
                "iterations": 0,
                "converged": False,
                "method": "not computed",
            },
        )
        rows.append(
            {
                "method": m,
                f"{name} at w": sam["loss"],
                f"{name} max within rho": sam["max_loss"],
                f"SAM sharpness ({name} rise)": sam["sharpness"],
                "rho (weight L2)": sam["rho"],
                f"top Hessian eigenvalue ({name} / weight^2)": h["eigenvalue"],
                f"dominant Hessian eigenvalue ({name} / weight^2)": h["dominant"],
                "power iterations": h["iterations"],
                "converged": h["converged"],
                "Hessian method": h["method"],
            }
        )
    return pd.DataFrame(rows)


def calibration_table(ece: Mapping[str, float]) -> pd.DataFrame:
    """method, "ECE (%)" from {method: expected calibration error as a fraction}."""
    return pd.DataFrame([{"method": m, "ECE (%)": 100.0 * float(e)} for m, e in ece.items()])
