"""ACDC's clinical evaluation (needs voxel spacing): per patient the LV/RV EDV, ESV, EF and the myocardial mass at
ED for prediction and ground truth (uu.metrics.clinical_indices), and their agreement as the challenge reports it.
    row = patient_row(1, "DCM", {"ED": (pred_ed, gt_ed, spacing_ed), "ES": (pred_es, gt_es, spacing_es)})
    table = pd.DataFrame(rows)          # patient, group, "LV_EDV gt (ml)", "LV_EDV pred (ml)", ...
    agreement(table)                    # rows: statistics; columns: "LV_EDV (ml)", ..., "Myo_mass_ED (g)"
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd

from uu.metrics import clinical_indices

# index -> unit, in the order of the tables; the uu.metrics key is NAME_ml, NAME_pct or NAME_g
INDICES = dict(LV_EDV="ml", LV_ESV="ml", LV_EF="%", RV_EDV="ml", RV_ESV="ml", RV_EF="%", Myo_mass_ED="g")
NO_SPACING = (
    "the HDF5 layout stores no voxel spacing, so volumes, ejection fractions, myocardial mass and "
    "distances in mm cannot be computed; evaluate on the official NIfTI layout (or a phantom) for them"
)


def column(name: str, who: str = "") -> str:
    """Column of an index: "LV_EDV (ml)" (agreement table), "LV_EDV gt (ml)" (per-patient, who = "gt" | "pred")."""
    return f"{name}{' ' + who if who else ''} ({INDICES[name]})"


def patient_row(patient: int, group, volumes: Mapping[str, tuple]) -> dict:
    """One per-patient row; volumes: "ED" and "ES" -> (pred (Z, Y, X), gt (Z, Y, X), spacing (z, y, x) mm)."""
    (pred_ed, gt_ed, spacing_ed), (pred_es, gt_es, spacing_es) = volumes["ED"], volumes["ES"]
    row = {"patient": int(patient), "group": group}
    for who, ed, es in (("gt", gt_ed, gt_es), ("pred", pred_ed, pred_es)):
        values = clinical_indices(ed, es, spacing_ed, spacing_es)
        row.update(
            {column(name, who): values[f"{name}_{'pct' if unit == '%' else unit}"] for name, unit in INDICES.items()}
        )
    return row


def agree(gt, pred) -> dict:
    """Agreement of paired values as the ACDC challenge reports it (pairs with a nan left out): "patients", "gt mean",
    "pred mean", "Pearson r", "bias" (mean pred - gt), "SD", "lower limit" / "upper limit" (bias -+ 1.96 SD),
    "mean abs difference"."""
    gt, pred = np.asarray(gt, dtype=np.float64), np.asarray(pred, dtype=np.float64)
    keep = np.isfinite(gt) & np.isfinite(pred)
    gt, pred = gt[keep], pred[keep]
    n = len(gt)
    diff = pred - gt
    bias = float(diff.mean()) if n else float("nan")
    sd = float(diff.std(ddof=1)) if n > 1 else float("nan")
    spread = float(gt.std() * pred.std()) if n > 1 else 0.0
    r = float(((gt - gt.mean()) * (pred - pred.mean())).mean() / spread) if spread > 0 else float("nan")
    mean = lambda v: float(v.mean()) if n else float("nan")  # noqa: E731
    return {
        "patients": n,
        "gt mean": mean(gt),
        "pred mean": mean(pred),
        "Pearson r": r,
        "bias": bias,
        "SD": sd,
        "lower limit": bias - 1.96 * sd,
        "upper limit": bias + 1.96 * sd,
        "mean abs difference": mean(np.abs(diff)),
    }


def agreement(per_patient: pd.DataFrame) -> pd.DataFrame:
    """agree() per index: index = the statistics, columns = column(index)."""
    return pd.DataFrame(
        {column(name): agree(per_patient[column(name, "gt")], per_patient[column(name, "pred")]) for name in INDICES}
    ).rename_axis("statistic")
