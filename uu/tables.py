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

    def row(r) -> dict:
        cells = {HEADERS[m]: _pm(r[f"{m}_mean"], r[f"{m}_std"], DIGITS[m]) for m in METRICS}
        runs = f"{r['n_runs']} {r['kind'] if r['n_runs'] > 1 else r['kind'][:-1]}"
        return {"row": r["row"], "configuration": r["label"], **cells, "runs": runs, "volumes": r["n_volumes"]}

    return pd.DataFrame([row(r) for _, r in table.iterrows()])


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
        ("TransUNet", None, 89.71, 88.86, 84.54, 95.73, _NNFORMER),
        ("Swin-Unet", None, 90.00, 88.55, 85.62, 95.83, _NNFORMER),
        ("nnU-Net (run by nnFormer authors)", 1, 91.61, 90.24, 89.24, 95.36, _NNFORMER),
        ("nnFormer", None, 92.06, 90.94, 89.58, 95.65, _NNFORMER),
        ("U-Mamba", 2, 92.22, 91.83, 90.22, 94.54, _OFFICIAL),
        ("UU-Mamba", 5, 92.79, 92.41, 90.90, 95.04, _OFFICIAL),
        ("U-Mamba Enc (nnU-Net Revisited)", 2, 91.22, None, None, None, "nnU-Net Revisited; 5-fold CV on 100 patients"),
    ],
    columns=["method", "our_row", _AVG, _RV, _MYO, _LV, "protocol"],
)


# ----------------------------------------------------------------------------- sharpness and calibration
_NO_HESSIAN = dict(eigenvalue=math.nan, dominant=math.nan, iterations=0, converged=False, method="not computed")


def sharpness_table(report: Mapping, loss: str = "") -> pd.DataFrame:
    """One row per method of a uu.landscape report; loss: its common loss's name (for the headers)."""
    name = f"{loss} loss" if loss else "loss"
    rows = []
    for m, r in report.items():
        sam, h = r["sam"], r["hessian"] or _NO_HESSIAN
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
