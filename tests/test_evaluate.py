"""Scoring saved predictions (uu/evaluate.py): per-case table, summary schema, clinical report or why it is absent."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from uu.clinical import NO_SPACING
from uu.data import DataError
from uu.evaluate import (
    CSV_COLUMNS,
    evaluate_predictions,
    format_summary,
    load_probs,
    prediction_entries,
    readable_per_case,
    score_case,
)
from uu.infer import save_label_map
from uu.metrics import clinical_indices

REPO = Path(__file__).resolve().parents[1]


def write_prediction(folder, case, label, probs=None):
    folder.mkdir(exist_ok=True)
    save_label_map(label, folder / f"{case.name}.nii.gz", np.eye(4))
    if probs is None:
        return
    np.savez(folder / f"{case.name}_probs.npz", probs=probs.astype(np.float16))
    index_path = folder / "predictions.json"
    index = json.loads(index_path.read_text()) if index_path.exists() else {"cases": []}
    index["cases"].append({"name": case.name, "label": f"{case.name}.nii.gz", "probs": f"{case.name}_probs.npz"})
    index_path.write_text(json.dumps(index))


@pytest.fixture
def perfect_ed_empty_es(phantom_dir, tmp_path):
    """Patient 1 of the phantom predicted perfectly at ED (one-hot probabilities), all background at ES."""
    from uu.data import load_acdc

    ed, es = load_acdc(phantom_dir)[:2]
    write_prediction(tmp_path / "pred", ed, ed.label, np.eye(4, dtype=np.float32)[ed.label].transpose(3, 0, 1, 2))
    background = np.zeros((4,) + es.label.shape, np.float32)
    background[0] = 1.0
    write_prediction(tmp_path / "pred", es, np.zeros_like(es.label), background)
    return ed, es, tmp_path


def test_scores_and_clinical_report_by_hand(perfect_ed_empty_es):
    ed, es, tmp = perfect_ed_empty_es
    context = {"profile": "smoke", "training": {"it_per_s": 2.5}}
    table, summary = evaluate_predictions(tmp / "pred", [ed, es], tmp / "eval", progress=False, context=context)
    assert list(table.columns) == CSV_COLUMNS == list(pd.read_csv(tmp / "eval" / "per_case.csv").columns)
    perfect, empty = table.iloc[0], table.iloc[1]
    assert perfect[["dice_RV", "dice_Myo", "dice_LV", "dice_mean"]].tolist() == [1.0] * 4
    distances = [f"{d}_{c}" for d in ("hd95", "msd") for c in ("RV", "Myo", "LV")]
    assert perfect["mse"] == 0.0 and perfect[distances].tolist() == [0.0] * 6
    assert empty[["dice_RV", "dice_Myo", "dice_LV"]].tolist() == [0.0] * 3  # ES has every class in the phantom
    # each foreground voxel contributes (1 - 0)^2 + (0 - 1)^2 = 2 over 4 classes
    assert empty["mse"] == pytest.approx(2 * (es.label > 0).sum() / (4 * es.label.size))
    assert np.isnan(empty["hd95_RV"]) and np.isnan(empty["msd_LV"]) and perfect["hd95_unit"] == "mm"

    assert set(summary) == {
        "dice",
        "dice_mean",
        "mse",
        "mse_pct",
        "hd95",
        "msd",
        "hd95_unit",
        "n_cases",
        "per_phase",
        "clinical",
        "profile",
        "training",
    }
    assert summary["dice"]["RV"] == pytest.approx(0.5) and summary["per_phase"]["ED"]["dice_mean"] == 1.0
    assert summary["hd95"]["LV"] == 0.0 and summary["per_phase"]["overall"]["hd95_undefined"]["LV"] == 1
    assert json.loads((tmp / "eval" / "summary.json").read_text()) == json.loads(json.dumps(summary))

    # one patient: prediction = ground truth at ED, nothing at ES -> ESV 0 ml, EF 100 %
    gt = clinical_indices(ed.label, es.label, ed.spacing, es.spacing)
    report = summary["clinical"]
    assert report["available"] and report["n_patients"] == 1 and report["hd95_mm"] == summary["hd95"]
    assert report["agreement"]["LV_ESV (ml)"]["bias"] == pytest.approx(-gt["LV_ESV_ml"])
    assert report["agreement"]["RV_EF (%)"]["bias"] == pytest.approx(100 - gt["RV_EF_pct"])
    assert report["agreement"]["LV_EDV (ml)"]["bias"] == 0.0 and report["agreement"]["LV_EDV (ml)"]["SD"] is None
    per_patient = pd.read_csv(tmp / "eval" / "clinical_per_patient.csv")
    assert per_patient.loc[0, "LV_EDV gt (ml)"] == pytest.approx(gt["LV_EDV_ml"])
    assert per_patient.loc[0, "LV_EF pred (%)"] == 100.0
    agreement = pd.read_csv(tmp / "eval" / "clinical_agreement.csv", index_col="statistic")
    assert agreement.loc["bias", "Myo_mass_ED (g)"] == 0.0
    assert (tmp / "eval" / "clinical_agreement.md").read_text().startswith("| statistic | LV_EDV (ml) |")
    assert (tmp / "eval" / "clinical_per_patient.md").read_text().startswith("| patient | group | LV_EDV gt (ml) |")
    assert "clinical, 1 patients, bias (pred - gt): LV_EDV (ml) 0.00" in format_summary(summary)
    readable = readable_per_case(table)
    assert list(readable.columns[3:8]) == ["Dice RV (%)", "Dice Myo (%)", "Dice LV (%)", "Dice mean (%)", "MSE x100"]
    assert readable["Dice mean (%)"].tolist() == [100.0, 0.0] and readable.loc[0, "MSD LV (mm)"] == 0.0
    assert readable.loc[1, "MSE x100"] == pytest.approx(100 * empty["mse"])


def test_without_spacing_the_report_says_why(perfect_ed_empty_es):
    ed, es, tmp = perfect_ed_empty_es
    cases = [dataclasses.replace(c, spacing=None) for c in (ed, es)]  # as the HDF5 layout loads them
    table, summary = evaluate_predictions(tmp / "pred", cases, tmp / "eval", progress=False)
    assert summary["clinical"] == {"available": False, "why": NO_SPACING} and summary["hd95_unit"] == "voxel"
    assert sorted(p.name for p in (tmp / "eval").iterdir()) == ["per_case.csv", "summary.json"]
    assert f"clinical indices absent: {NO_SPACING}" in format_summary(summary)


def test_only_one_phase_predicted(perfect_ed_empty_es):
    ed, _, tmp = perfect_ed_empty_es
    _, summary = evaluate_predictions(tmp / "pred", [ed], progress=False)
    assert summary["n_cases"] == 1 and not summary["clinical"]["available"]
    assert "both its ED and its ES" in summary["clinical"]["why"]


def test_prediction_entries_and_probs(perfect_ed_empty_es, tmp_path):
    ed, es, tmp = perfect_ed_empty_es
    entries = prediction_entries(tmp / "pred")
    assert [e["name"] for e in entries] == [ed.name, es.name]
    probs = load_probs(tmp / "pred" / entries[1]["probs"])
    assert probs.dtype == np.float32 and probs.shape == (4,) + es.label.shape and probs[0].min() == 1.0
    labels_only = tmp_path / "labels_only"
    write_prediction(labels_only, ed, ed.label)  # no probabilities, no predictions.json
    assert prediction_entries(labels_only) == [{"name": ed.name, "label": f"{ed.name}.nii.gz", "probs": None}]
    _, summary = evaluate_predictions(labels_only, [ed, es], progress=False)
    assert summary["n_cases"] == 1 and summary["mse"] is None
    (tmp_path / "nothing").mkdir()
    with pytest.raises(DataError, match="neither predictions.json nor"):
        prediction_entries(tmp_path / "nothing")


def test_score_case_without_probabilities_or_spacing():
    gt = np.zeros((2, 6, 6), np.uint8)
    gt[:, 1:3, 1:3] = 1
    row = score_case(gt, None, gt, spacing=None)
    assert np.isnan(row["mse"]) and row["hd95_unit"] == "voxel" and row["dice_RV"] == 1.0
    assert row["dice_Myo"] == 1.0  # both empty -> 1 (the authors' rule)


@pytest.mark.parametrize("path", sorted((REPO / "results").rglob("summary.json")), ids=lambda p: p.parent.name)
def test_committed_run_summaries_still_read(path):
    """Summaries written by the old train.py schema (no "clinical", no "msd") format and hold "training"."""
    summary = json.loads(path.read_text())
    lines = format_summary(summary).splitlines()
    assert lines[0].startswith("overall  n=") and f"avg {100 * summary['dice_mean']:.2f}" in lines[0]
    assert summary["training"]["it_per_s"] > 0


def test_real_hdf5_layout_has_no_clinical_report(acdc_dir, tmp_path):
    """The HDF5 layout stores no spacing: the summary says why instead of guessing mm."""
    from uu.data import load_acdc

    every = load_acdc(acdc_dir, lazy=True)
    cases = [c for c in every if c.patient == every[0].patient]  # its ED and ES volumes
    if any(c.spacing is not None for c in cases):
        pytest.skip(f"{acdc_dir} has voxel spacing (not the HDF5 layout)")
    for case in cases:
        write_prediction(tmp_path / "pred", case, case.label)
    table, summary = evaluate_predictions(tmp_path / "pred", cases, tmp_path / "eval", progress=False)
    assert table["dice_mean"].tolist() == [1.0] * len(cases) and summary["hd95_unit"] == "voxel"
    assert summary["clinical"] == {"available": False, "why": NO_SPACING}
    assert not list((tmp_path / "eval").glob("clinical_*"))
