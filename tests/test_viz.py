"""Figures of one run and of the clinical agreement (uu/viz.py): what is drawn where, from hand-made tables."""

import json

import numpy as np
import pandas as pd
import pytest

from uu import viz
from uu.runs import log_table


def test_run_curves_from_a_log_table(tmp_path):
    lines = [
        {
            "epoch": 1,
            "step": 2,
            "lr": 0.01,
            "loss": 1.5,
            "components": {"dice": 0.5, "ce": 1.0},
            "sigma": {"dice": 1.0, "ce": 1.0},
            "val": None,
        },
        {
            "epoch": 2,
            "step": 4,
            "lr": 0.005,
            "loss": 1.0,
            "components": {"dice": 0.4, "ce": 0.6},
            "sigma": {"dice": 1.1, "ce": 0.9},
            "val": {"RV": 0.5, "Myo": 0.6, "LV": 0.7, "mean": 0.6},
        },
    ]
    (tmp_path / "log.jsonl").write_text("\n".join(json.dumps(line) for line in lines))
    fig = viz.run_curves(log_table(tmp_path), x="step", title="run", path=tmp_path / "curves.png")
    ax_loss, ax_sigma, ax_lr, ax_val = fig.axes
    assert [line.get_label() for line in ax_loss.lines] == ["total", "dice", "ce"]
    assert ax_sigma.lines[0].get_ydata().tolist() == [1.0, 1.1] and ax_lr.lines[0].get_xdata().tolist() == [2, 4]
    mean = next(line for line in ax_val.lines if line.get_label() == "mean")
    assert mean.get_xdata().tolist() == [4] and mean.get_ydata().tolist() == [60.0]  # Dice in percent
    assert ax_val.get_ylabel() == "Dice (%)" and (tmp_path / "curves.png").is_file()
    empty = viz.run_curves(pd.DataFrame())
    assert empty.axes[0].texts[0].get_text() == "no epochs logged yet"


def test_bland_altman_draws_differences_bias_and_limits():
    per_patient = pd.DataFrame(
        {"patient": [1, 2, 3], "LV_EDV gt (ml)": [100.0, 150.0, 200.0], "LV_EDV pred (ml)": [110.0, 150.0, 195.0]}
    )
    stats = pd.DataFrame(
        {"LV_EDV (ml)": {"bias": 5 / 3, "lower limit": -10.0, "upper limit": 13.0, "Pearson r": 0.99}}
    )  # only the indices of the table are drawn
    fig = viz.bland_altman(per_patient, stats)
    (ax,) = [a for a in fig.axes if a.axison]
    # means 105, 150, 197.5; differences 10, 0, -5
    np.testing.assert_allclose(ax.collections[0].get_offsets(), [[105, 10], [150, 0], [197.5, -5]])
    assert [line.get_ydata()[0] for line in ax.lines] == pytest.approx([5 / 3, -10.0, 13.0])
    assert ax.get_xlabel() == "mean of prediction and ground truth (ml)"
    assert ax.get_ylabel() == "prediction - ground truth (ml)"


def test_slice_viewer_bounds_the_slice_slider_by_the_shown_case():
    """Notebook 01's viewer: the slice slider runs 0..Z-1 of the case shown and follows a change of case."""
    pytest.importorskip("ipywidgets")
    from types import SimpleNamespace

    cases = [
        SimpleNamespace(
            patient=p,
            phase="ED",
            image=np.zeros((nz, 4, 5), np.float32),
            label=np.ones((nz, 4, 5), np.uint8) if p != 2 else None,
        )
        for p, nz in ((1, 10), (2, 6), (3, 8))
    ]
    case, z, labels = viz.slice_viewer(cases).children[0].children
    assert (case.min, case.max, z.min, z.max, z.value, labels.value) == (0, 2, 0, 9, 5, True)
    z.value = 9
    case.value = 1  # 6 slices: the last one shown is 5
    assert (z.max, z.value) == (5, 5)
    case.value = 2
    assert (z.max, z.value) == (7, 5)
    z.value = 7
    case.value = 0
    assert (z.max, z.value) == (9, 7)
    z.value = 99
    assert z.value == 9  # never beyond the case's slices
