"""Score predictions against ground truth: per-case table, summary (per phase and overall), clinical report.

``evaluate_predictions(pred_dir, data, out_dir, context=...)`` writes ``per_case.csv`` (CSV_COLUMNS; Dice and MSE
(Eq. 10) as fractions, HD95 and MSD in ``hd95_unit``, "mm" or "voxel") and ``summary.json``: the overall means
(dice, dice_mean, mse, mse_pct, hd95, msd, hd95_unit, n_cases), per_phase {"overall", "ED", "ES"}, the caller's
``context`` and clinical = {"available": true, "n_patients", "agreement" {"LV_EDV (ml)": {statistic: value}},
"hd95_mm", "msd_mm"} (with the clinical_* tables) when every case has a spacing, else {"available": false, "why"}.
HD95 and MSD are nan where a mask is empty (left out of the means, counted in ``hd95_undefined``)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from uu import clinical
from uu.data import CLASSES, LABELS, DataError, load_acdc
from uu.metrics import dice_per_class, mse_eq10, surface_distances

CSV_COLUMNS = (
    ["patient", "phase", "group"]
    + [f"dice_{c}" for c in CLASSES]
    + ["dice_mean", "mse", "mse_pct"]
    + [f"{d}_{c}" for d in ("hd95", "msd") for c in CLASSES]
    + ["hd95_unit"]
)


def prediction_entries(pred_dir) -> list[dict]:
    """[{"name", "label", "probs" (None when not saved)}] from PRED/predictions.json, else the NAME.nii.gz files."""
    pred_dir = Path(pred_dir)
    index = pred_dir / "predictions.json"
    if index.is_file():
        return [{"probs": None, **e} for e in json.loads(index.read_text())["cases"]]
    entries = [{"name": p.name[:-7], "label": p.name, "probs": None} for p in sorted(pred_dir.glob("*.nii.gz"))]
    if not entries:
        raise DataError(
            f"{pred_dir}: holds neither predictions.json nor NAME.nii.gz label maps; "
            f"write predictions with `python -m uu predict` (or a run's evaluation: RUN/eval/pred)"
        )
    return entries


def load_probs(path) -> np.ndarray:
    """Class probabilities (C, Z, Y, X) float32 from a NAME_probs.npz."""
    with np.load(path) as f:
        return f["probs"].astype(np.float32)


def score_case(pred_label, probs, gt, spacing=None) -> dict:
    """Metrics of one volume: dice_*, dice_mean, mse, mse_pct, hd95_*, msd_*, hd95_unit."""
    labels = tuple(LABELS.values())
    dice = dice_per_class(pred_label, gt, labels=labels)
    dist = surface_distances(pred_label, gt, spacing=spacing, labels=labels)
    row = {f"dice_{name}": dice[label] for name, label in LABELS.items()}
    row["dice_mean"] = float(np.mean([row[f"dice_{n}"] for n in CLASSES]))
    row["mse"] = float("nan") if probs is None else mse_eq10(np.asarray(probs, dtype=np.float32), gt)
    row["mse_pct"] = 100.0 * row["mse"]
    row.update({f"{d}_{name}": dist[d][label] for d in ("hd95", "msd") for name, label in LABELS.items()})
    row["hd95_unit"] = dist["unit"]
    return row


def _nanmean(values):
    values = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    return float(np.mean(values)) if values else None


def summarize(rows: list[dict]) -> dict:
    """{"overall": {...}, "ED": {...}, "ES": {...}} from per-case rows (phases without cases are left out)."""
    out = {}
    for key in ("overall", "ED", "ES"):
        subset = [r for r in rows if key in ("overall", r["phase"])]
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
            **{d: {name: _nanmean(r[f"{d}_{name}"] for r in subset) for name in CLASSES} for d in ("hd95", "msd")},
            "hd95_unit": "+".join(units),
            "hd95_undefined": {name: sum(math.isnan(r[f"hd95_{name}"]) for r in subset) for name in CLASSES},
        }
    return out


def readable_per_case(table: pd.DataFrame) -> pd.DataFrame:
    """per_case.csv for reading: Dice in %, MSE x100, HD95 and MSD in their unit, units in the headers."""
    unit = "+".join(sorted(set(table["hd95_unit"])))
    out = table[["patient", "phase", "group"]].copy()
    for name in (*CLASSES, "mean"):
        out[f"Dice {name} (%)"] = 100 * table[f"dice_{name}"]
    out["MSE x100"] = table["mse_pct"]
    for key, name in (("hd95", "HD95"), ("msd", "MSD")):
        out[[f"{name} {c} ({unit})" for c in CLASSES]] = table[[f"{key}_{c}" for c in CLASSES]].to_numpy()
    return out


def to_markdown(df: pd.DataFrame, floatfmt: str = ".4g") -> str:
    """A GitHub Markdown table of df's columns (no extra package needed)."""

    def cell(v):
        if isinstance(v, float):
            return "" if math.isnan(v) else format(v, floatfmt)
        return "" if v is None else str(v).replace("|", "\\|")

    header = "| " + " | ".join(str(c) for c in df.columns) + " |"
    rule = "| " + " | ".join("---" for _ in df.columns) + " |"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([header, rule, *body]) + "\n"


def write_table(df: pd.DataFrame, path_stem, floatfmt: str = ".4g") -> tuple[Path, Path]:
    """Write STEM.csv and STEM.md (columns only: reset a meaningful index first); returns both paths."""
    csv, md = Path(path_stem).with_suffix(".csv"), Path(path_stem).with_suffix(".md")
    csv.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(csv, index=False)
    md.write_text(to_markdown(df, floatfmt))
    return csv, md


def clinical_report(patients: list[dict], overall: dict, spacing_known: bool, out_dir=None) -> dict:
    """summary["clinical"] from uu.clinical.patient_row rows; writes the clinical tables into out_dir."""
    if not spacing_known:
        return {"available": False, "why": clinical.NO_SPACING}
    if not patients:
        return {
            "available": False,
            "why": "no patient has both its ED and its ES volume predicted; the clinical indices need both",
        }
    table = pd.DataFrame(patients)
    agreement = clinical.agreement(table)
    if out_dir is not None:
        write_table(table, Path(out_dir) / "clinical_per_patient")
        write_table(agreement.reset_index(), Path(out_dir) / "clinical_agreement")
    undefined_to_none = {
        index: {k: None if v != v else v for k, v in stats.items()}  # JSON has no nan
        for index, stats in agreement.to_dict().items()
    }
    report = {"available": True, "n_patients": len(table), "agreement": undefined_to_none}
    return {**report, "hd95_mm": overall["hd95"], "msd_mm": overall["msd"]}


def evaluate_predictions(pred_dir, data, out_dir=None, progress: bool = True, context: dict | None = None):
    """Score every prediction in ``pred_dir`` with ground truth in ``data`` (folder or list of Case).
    Returns (per-case DataFrame with CSV_COLUMNS, summary dict as in the module docstring)."""
    from tqdm.auto import tqdm

    from uu.infer import load_label_map  # late: infer imports torch, which scoring label maps does not need

    pred_dir = Path(pred_dir)
    cases = load_acdc(data, lazy=True) if isinstance(data, (str, Path)) else list(data)
    by_name = {c.name: c for c in cases}
    entries = [e for e in prediction_entries(pred_dir) if e["name"] in by_name]
    if not entries:
        raise DataError(
            f"evaluate: no prediction in {pred_dir} matches a labelled case of "
            f"{data if isinstance(data, (str, Path)) else 'the given cases'} "
            f"(expected files like patient001_ED.nii.gz written by `python -m uu predict`)"
        )
    rows, patients, pending = [], [], {}  # pending: patient -> {phase: volumes} until ED and ES are both read
    spacing_known = all(by_name[e["name"]].spacing is not None for e in entries)
    for entry in tqdm(entries, desc="evaluate", disable=not progress, leave=False):
        case = by_name[entry["name"]]
        if case.label is None:
            raise DataError(f"evaluate: case {case.name} ({case.source}) has no ground-truth label map")
        pred = load_label_map(pred_dir / entry["label"])
        if pred.shape != case.label.shape:
            raise DataError(
                f"evaluate: prediction {pred_dir / entry['label']} has shape {pred.shape} but the "
                f"ground truth of {case.name} is {case.label.shape}; was it predicted from this data?"
            )
        probs_path = pred_dir / entry["probs"] if entry["probs"] else None
        probs = load_probs(probs_path) if probs_path and probs_path.is_file() else None
        row = {"patient": int(case.patient), "phase": case.phase, "group": case.group}
        rows.append({**row, **score_case(pred, probs, case.label, case.spacing)})
        if spacing_known:
            volumes = pending.setdefault(case.patient, {})
            volumes[case.phase] = (pred, case.label, case.spacing)
            if {"ED", "ES"} <= set(volumes):
                patients.append(clinical.patient_row(case.patient, case.group, pending.pop(case.patient)))
    table = pd.DataFrame(rows, columns=CSV_COLUMNS)
    per_phase = summarize(rows)
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        table.to_csv(out_dir / "per_case.csv", index=False)
    overall = {k: v for k, v in per_phase["overall"].items() if k != "hd95_undefined"}
    report = clinical_report(patients, overall, spacing_known, out_dir)
    summary = {**overall, "per_phase": per_phase, "clinical": report, **(context or {})}
    if out_dir is not None:
        (out_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    return table, summary


def format_summary(summary: dict) -> str:
    """A few readable lines: Dice (%), MSE x100, HD95 per class and the clinical bias (old summaries too)."""
    fmt = lambda v: "n/a" if v is None or v != v else f"{v:.2f}"  # noqa: E731
    lines = []
    for key, s in summary.get("per_phase", summary).items():
        if isinstance(s, dict) and "dice" in s:
            d, hd = s["dice"], s["hd95"]
            lines.append(
                f"{key:8s} n={s['n_cases']:3d}  Dice (%) RV {100 * d['RV']:.2f}  Myo {100 * d['Myo']:.2f}  "
                f"LV {100 * d['LV']:.2f}  avg {100 * s['dice_mean']:.2f}  MSE x100 {fmt(s['mse_pct'])}  "
                f"HD95 ({s['hd95_unit']}) {fmt(hd['RV'])}/{fmt(hd['Myo'])}/{fmt(hd['LV'])}"
            )
    report = summary.get("clinical")
    if report and report["available"]:
        lines.append(
            f"clinical, {report['n_patients']} patients, bias (pred - gt): "
            + ", ".join(f"{name} {fmt(stats['bias'])}" for name, stats in report["agreement"].items())
        )
    elif report:
        lines.append(f"clinical indices absent: {report['why']}")
    return "\n".join(lines)


def cli_evaluate(args) -> int:
    """``python -m uu evaluate --pred PRED --data D --out REPORT_DIR``."""
    _, summary = evaluate_predictions(args.pred, args.data, args.out)
    print(format_summary(summary))
    print(
        f"wrote per_case.csv, summary.json{' and the clinical tables' * summary['clinical']['available']} "
        f"into {args.out}"
    )
    return 0
