"""ACDC clinical evaluation (uu/clinical.py): per-patient indices from boxes of known volume, agreement by hand."""

import math

import numpy as np
import pandas as pd
import pytest

from uu.clinical import agree, agreement, column, patient_row

NAN = float("nan")


@pytest.mark.parametrize(
    "gt, pred, expected",
    [
        # differences 2, 1, 3: bias 2, SD 1, limits 2 -+ 1.96; centred gt -10, 0, 10 and pred -10, -1, 11:
        # r = 210 / sqrt(200 * 222)
        (
            [10, 20, 30],
            [12, 21, 33],
            {
                "patients": 3,
                "gt mean": 20,
                "pred mean": 22,
                "Pearson r": 210 / math.sqrt(44400),
                "bias": 2,
                "SD": 1,
                "lower limit": 0.04,
                "upper limit": 3.96,
                "mean abs difference": 2,
            },
        ),
        # a nan on either side drops the patient; differences -1, 1: bias 0, SD sqrt(2), r 1 (pred = gt spread)
        (
            [1, NAN, 5, 9],
            [0, 4, NAN, 10],
            {
                "patients": 2,
                "gt mean": 5,
                "pred mean": 5,
                "Pearson r": 1.0,
                "bias": 0,
                "SD": math.sqrt(2),
                "lower limit": -1.96 * math.sqrt(2),
                "upper limit": 1.96 * math.sqrt(2),
                "mean abs difference": 1,
            },
        ),
        # one patient: no spread, so no SD, no limits and no correlation
        (
            [4],
            [7],
            {
                "patients": 1,
                "gt mean": 4,
                "pred mean": 7,
                "Pearson r": NAN,
                "bias": 3,
                "SD": NAN,
                "lower limit": NAN,
                "upper limit": NAN,
                "mean abs difference": 3,
            },
        ),
        # constant prediction: correlation undefined
        (
            [1, 2],
            [3, 3],
            {
                "patients": 2,
                "gt mean": 1.5,
                "pred mean": 3,
                "Pearson r": NAN,
                "bias": 1.5,
                "SD": math.sqrt(0.5),
                "lower limit": 1.5 - 1.96 * math.sqrt(0.5),
                "upper limit": 1.5 + 1.96 * math.sqrt(0.5),
                "mean abs difference": 1.5,
            },
        ),
    ],
)
def test_agree_by_hand(gt, pred, expected):
    assert agree(gt, pred) == pytest.approx(expected, nan_ok=True)


def volumes(lv, myo, rv, shape=(3, 10, 10)):
    """A label map holding lv, myo and rv voxels of LV (3), Myo (2) and RV (1)."""
    label = np.zeros(shape, np.uint8)
    label.flat[:lv] = 3
    label.flat[lv : lv + myo] = 2
    label.flat[lv + myo : lv + myo + rv] = 1
    return label


def test_patient_rows_and_agreement_from_boxes():
    ed_spacing, es_spacing = (10.0, 2.0, 1.0), (10.0, 1.0, 1.0)  # 0.02 ml and 0.01 ml per voxel
    gt = {"ED": volumes(100, 50, 60), "ES": volumes(80, 40, 30)}
    pred = {"ED": volumes(110, 50, 60), "ES": volumes(80, 20, 30)}
    row = patient_row(7, "NOR", {p: (pred[p], gt[p], s) for p, s in (("ED", ed_spacing), ("ES", es_spacing))})
    # gt: LV 2 ml -> 0.8 ml, EF 60 %; RV 1.2 ml -> 0.3 ml, EF 75 %; Myo 1 ml at ED -> 1.05 g
    # pred: LV 2.2 ml -> 0.8 ml, EF 100 * 1.4 / 2.2; RV as gt; Myo as gt (ES myocardium does not count)
    assert row == pytest.approx(
        {
            "patient": 7,
            "group": "NOR",
            "LV_EDV gt (ml)": 2.0,
            "LV_ESV gt (ml)": 0.8,
            "LV_EF gt (%)": 60.0,
            "RV_EDV gt (ml)": 1.2,
            "RV_ESV gt (ml)": 0.3,
            "RV_EF gt (%)": 75.0,
            "Myo_mass_ED gt (g)": 1.05,
            "LV_EDV pred (ml)": 2.2,
            "LV_ESV pred (ml)": 0.8,
            "LV_EF pred (%)": 140 / 2.2,
            "RV_EDV pred (ml)": 1.2,
            "RV_ESV pred (ml)": 0.3,
            "RV_EF pred (%)": 75.0,
            "Myo_mass_ED pred (g)": 1.05,
        }
    )
    same = patient_row(8, "DCM", {p: (gt[p], gt[p], s) for p, s in (("ED", ed_spacing), ("ES", es_spacing))})
    table = agreement(pd.DataFrame([row, same]))
    assert list(table.columns) == [
        "LV_EDV (ml)",
        "LV_ESV (ml)",
        "LV_EF (%)",
        "RV_EDV (ml)",
        "RV_ESV (ml)",
        "RV_EF (%)",
        "Myo_mass_ED (g)",
    ]
    assert table.index.name == "statistic" and table.loc["patients"].tolist() == [2] * 7
    assert table.loc["bias", "LV_EDV (ml)"] == pytest.approx(0.1)  # differences 0.2 and 0
    assert table.loc["SD", "LV_EDV (ml)"] == pytest.approx(math.sqrt(0.02))
    assert table.loc["bias", "RV_EF (%)"] == 0.0 and table.loc["mean abs difference", "LV_ESV (ml)"] == 0.0
    assert math.isnan(table.loc["Pearson r", "LV_EDV (ml)"])  # both patients' ground truth is 2 ml: no spread


@pytest.mark.parametrize(
    "name, who, expected_label, expected_column",
    [
        ("LV_EF", "gt", "LV_EF (%)", "LV_EF gt (%)"),
        ("RV_ESV", "pred", "RV_ESV (ml)", "RV_ESV pred (ml)"),
        ("Myo_mass_ED", "pred", "Myo_mass_ED (g)", "Myo_mass_ED pred (g)"),
    ],
)
def test_column_names_carry_units(name, who, expected_label, expected_column):
    assert column(name) == expected_label and column(name, who) == expected_column
