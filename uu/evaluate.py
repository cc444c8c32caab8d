"""Score predictions against ground truth: per-case table and summary (per phase and overall).

``evaluate_predictions(pred_dir, data, out_dir)`` reads what ``uu.infer.predict_cases`` wrote
(NAME.nii.gz label maps and NAME_probs.npz probabilities) and the ground truth (a data folder in any
layout ``uu.data.load_acdc`` reads, or a list of Case), and writes

- ``per_case.csv``: patient, phase, group, dice_RV, dice_Myo, dice_LV, dice_mean, mse (Eq. 10,
  fraction), mse_pct (x100, the paper's "%"), hd95_RV, hd95_Myo, hd95_LV, hd95_unit;
- ``summary.json``: for "overall", "ED" and "ES": n_cases, mean Dice per class, average Dice (mean
  of the three class means), MSE (fraction and x100), mean HD95 per class (over the cases where it
  is defined) and its unit ("mm" with spacing, "voxel" without, e.g. the HDF5 layout).

Dice rule for empty masks (uu.metrics): both empty -> 1, one empty -> 0. HD95 is nan when either
mask is empty; those cases are left out of the HD95 means and counted in ``hd95_undefined``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Optional

import numpy as np

CLASSES = {"RV": 1, "Myo": 2, "LV": 3}
CSV_COLUMNS = ["patient", "phase", "group", "dice_RV", "dice_Myo", "dice_LV", "dice_mean", "mse", "mse_pct",
               "hd95_RV", "hd95_Myo", "hd95_LV", "hd95_unit"]


def score_case(pred_label, probs, gt, spacing=None) -> dict:
    """Metrics of one volume: dice_*, dice_mean, mse, mse_pct, hd95_*, hd95_unit."""
    from uu.metrics import dice_per_class, hd95, mse_eq10

    dice = dice_per_class(pred_label, gt, labels=tuple(CLASSES.values()))
    dist = hd95(pred_label, gt, spacing=spacing, labels=tuple(CLASSES.values()))
    row = {f"dice_{name}": dice[label] for name, label in CLASSES.items()}
    row["dice_mean"] = float(np.mean([row[f"dice_{n}"] for n in CLASSES]))
    if probs is not None:
        row["mse"] = mse_eq10(np.asarray(probs, dtype=np.float32), gt)
        row["mse_pct"] = 100.0 * row["mse"]
    else:
        row["mse"] = row["mse_pct"] = float("nan")
    row.update({f"hd95_{name}": dist[label] for name, label in CLASSES.items()})
    row["hd95_unit"] = dist["unit"]
    return row


def _nanmean(values) -> Optional[float]:
    values = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    return float(np.mean(values)) if values else None


def summarize(rows: list[dict]) -> dict:
    """{"overall": {...}, "ED": {...}, "ES": {...}} from per-case rows (phases without cases are left out)."""
    out = {}
    for key, subset in (("overall", rows), ("ED", [r for r in rows if r["phase"] == "ED"]),
                        ("ES", [r for r in rows if r["phase"] == "ES"])):
        if not subset:
            continue
        dice = {name: _nanmean(r[f"dice_{name}"] for r in subset) for name in CLASSES}
        units = sorted({r["hd95_unit"] for r in subset})
        out[key] = {
            "n_cases": len(subset),
            "dice": dice,
            "dice_mean": float(np.mean(list(dice.values()))),
            "mse": _nanmean(r["mse"] for r in subset),
            "mse_pct": _nanmean(r["mse_pct"] for r in subset),
            "hd95": {name: _nanmean(r[f"hd95_{name}"] for r in subset) for name in CLASSES},
            "hd95_unit": units[0] if len(units) == 1 else "+".join(units),
            "hd95_undefined": {name: sum(math.isnan(r[f"hd95_{name}"]) for r in subset) for name in CLASSES},
        }
    return out


def evaluate_predictions(pred_dir, data, out_dir=None, progress: bool = True):
    """Score every prediction in ``pred_dir`` that has ground truth in ``data`` (folder or list of Case).

    Returns (per-case pandas DataFrame with CSV_COLUMNS, summary dict); writes per_case.csv and
    summary.json into ``out_dir`` when given."""
    import pandas as pd
    from tqdm.auto import tqdm
    from uu.data import DataError, load_acdc
    from uu.infer import load_label_map

    pred_dir = Path(pred_dir)
    cases = load_acdc(data, lazy=True) if isinstance(data, (str, Path)) else list(data)
    by_name = {c.name: c for c in cases}
    index_file = pred_dir / "predictions.json"
    if index_file.is_file():
        entries = json.loads(index_file.read_text())["cases"]
    else:  # a folder of label maps only (e.g. written by another tool): NAME.nii.gz
        entries = [{"name": p.name[:-7], "label": p.name, "probs": None}
                   for p in sorted(pred_dir.glob("*.nii.gz"))]
    entries = [e for e in entries if e["name"] in by_name]
    if not entries:
        raise DataError(f"evaluate: no prediction in {pred_dir} matches a labelled case of {data if isinstance(data, (str, Path)) else 'the given cases'} "
                        f"(expected files like patient001_ED.nii.gz written by `python -m uu predict`)")
    rows = []
    for entry in tqdm(entries, desc="evaluate", disable=not progress, leave=False):
        case = by_name[entry["name"]]
        if case.label is None:
            raise DataError(f"evaluate: case {case.name} ({case.source}) has no ground-truth label map")
        pred = load_label_map(pred_dir / entry["label"])
        if pred.shape != case.label.shape:
            raise DataError(f"evaluate: prediction {pred_dir / entry['label']} has shape {pred.shape} but the "
                            f"ground truth of {case.name} is {case.label.shape}; was it predicted from this data?")
        probs = None
        if entry.get("probs") and (pred_dir / entry["probs"]).is_file():
            with np.load(pred_dir / entry["probs"]) as f:
                probs = f["probs"].astype(np.float32)
        row = {"patient": int(case.patient), "phase": case.phase, "group": case.group}
        row.update(score_case(pred, probs, case.label, case.spacing))
        rows.append(row)
    table = pd.DataFrame(rows, columns=CSV_COLUMNS)
    summary = summarize(rows)
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        table.to_csv(out_dir / "per_case.csv", index=False)
        (out_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    return table, summary


def format_summary(summary: dict) -> str:
    """A few readable lines: Dice per class and average (%), MSE x100, HD95 per class with unit."""
    lines = []
    for key, s in summary.items():
        if not isinstance(s, dict) or "dice" not in s:
            continue
        d = s["dice"]
        hd = s["hd95"]
        fmt = lambda v: "n/a" if v is None else f"{v:.2f}"  # noqa: E731
        lines.append(f"{key:8s} n={s['n_cases']:3d}  Dice RV {100 * d['RV']:.2f}  Myo {100 * d['Myo']:.2f}  "
                     f"LV {100 * d['LV']:.2f}  avg {100 * s['dice_mean']:.2f}  MSE(%) {fmt(s['mse_pct'])}  "
                     f"HD95 [{s['hd95_unit']}] {fmt(hd['RV'])}/{fmt(hd['Myo'])}/{fmt(hd['LV'])}")
    return "\n".join(lines)


def cli_evaluate(args) -> int:
    """``python -m uu evaluate --pred PRED --data D --out REPORT_DIR``."""
    _, summary = evaluate_predictions(args.pred, args.data, args.out)
    print(format_summary(summary))
    print(f"wrote {Path(args.out) / 'per_case.csv'} and {Path(args.out) / 'summary.json'}")
    return 0
