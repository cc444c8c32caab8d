"""Metrics against hand-computed values and MONAI (uu/metrics.py)."""

import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from uu.metrics import clinical_indices, dice_per_class, mse_eq10, surface_distances

NAN = float("nan")


@pytest.mark.parametrize(
    "pred, gt, expected",
    [
        # label 1: |P| 1, |G| 2, overlap 1 -> 2/3; label 2: |P| 2, |G| 1, overlap 1 -> 2/3; label 3 absent in both -> 1
        ([1, 2, 2, 0], [1, 1, 2, 0], {1: 2 / 3, 2: 2 / 3, 3: 1.0}),
        # label 3 only in the prediction -> 0; label 1 only in the ground truth -> 0
        ([3, 2, 0, 0], [1, 2, 0, 0], {1: 0.0, 2: 1.0, 3: 0.0}),
        ([0, 0, 0, 0], [0, 0, 0, 0], {1: 1.0, 2: 1.0, 3: 1.0}),
    ],
)
def test_dice_hand_computed(pred, gt, expected):
    pred, gt = np.array(pred).reshape(1, 1, 4), np.array(gt).reshape(1, 1, 4)
    assert dice_per_class(pred, gt) == pytest.approx(expected)
    assert dice_per_class(torch.from_numpy(pred), torch.from_numpy(gt)) == pytest.approx(expected)


def blobs(seed, shape=(6, 20, 20), n_labels=3):
    """Random smooth label maps: thresholded Gaussian-filtered noise."""
    rng = np.random.default_rng(seed)
    smooth = ndimage.gaussian_filter(rng.standard_normal((n_labels, *shape)), sigma=(0, 1, 3, 3))
    label = np.zeros(shape, np.uint8)
    for c in range(n_labels):
        label[smooth[c] > 0.05] = c + 1
    return label


def one_hot(label, n=4):
    return torch.nn.functional.one_hot(torch.from_numpy(label.astype(np.int64)), n).movedim(-1, 0)[None].float()


@pytest.mark.parametrize("seed", [0, 1])
def test_dice_matches_monai(seed):
    from monai.metrics import compute_dice

    pred, gt = blobs(seed), blobs(seed + 10)
    ours = dice_per_class(pred, gt)
    theirs = compute_dice(one_hot(pred), one_hot(gt), include_background=False)[0]
    assert all(0 < v < 1 for v in ours.values())
    assert [ours[c] for c in (1, 2, 3)] == pytest.approx(theirs.tolist(), rel=1e-5)


@pytest.mark.parametrize(
    "probs, gt, expected",
    [
        # voxel 0: (0.75-1)^2 + (0.25-0)^2 = 0.125; voxel 1: (0.5-0)^2 + (0.5-1)^2 = 0.5;
        # (0.125+0.5) / (2 classes * 2 voxels)
        ([[0.75, 0.5], [0.25, 0.5]], [0, 1], 0.15625),
        ([[1.0, 0.0], [0.0, 1.0]], [0, 1], 0.0),
        ([[0.0, 1.0], [1.0, 0.0]], [0, 1], 1.0),  # all wrong with 2 classes: 2 / 2
    ],
)
def test_mse_eq10_hand_computed(probs, gt, expected):
    assert mse_eq10(np.array(probs), np.array(gt)) == pytest.approx(expected)


def test_mse_eq10_matches_one_hot_formula():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((4, 3, 5, 6))
    probs = (np.exp(logits) / np.exp(logits).sum(0)).astype(np.float16)  # stored as float16 like our predictions
    gt = rng.integers(0, 4, (3, 5, 6))
    direct = np.mean((probs.astype(np.float64) - np.eye(4)[gt].transpose(3, 0, 1, 2)) ** 2)
    assert mse_eq10(torch.from_numpy(probs), gt) == pytest.approx(direct, rel=1e-9)
    with pytest.raises(ValueError, match="labels must lie"):
        mse_eq10(probs, gt + 1)
    with pytest.raises(ValueError, match="C, \\*spatial"):
        mse_eq10(probs, gt[0])


@pytest.mark.parametrize(
    "pred_x, gt_x, spacing, unit, hd, msd",
    [
        ([0], [3], None, "voxel", 3.0, 3.0),  # single voxels 3 apart along x
        ([0], [3], (10.0, 1.5, 2.0), "mm", 6.0, 6.0),  # x voxels of 2 mm
        # pred -> gt: 3, 2 (p95 = 2 + 0.95 * 1); gt -> pred: 2; MSD = (3 + 2 + 2) / 3
        ([0, 1], [3], None, "voxel", 2.95, 7 / 3),
        ([0, 1], [3], (10.0, 1.5, 2.0), "mm", 5.9, 14 / 3),
        ([6], [6], None, "voxel", 0.0, 0.0),
        ([], [1, 2], None, "voxel", NAN, NAN),  # one mask empty
        ([], [], (1.0, 1.0, 1.0), "mm", NAN, NAN),  # both empty
    ],
)
def test_surface_distances_hand_computed(pred_x, gt_x, spacing, unit, hd, msd):
    pred, gt = np.zeros((1, 1, 8), np.uint8), np.zeros((1, 1, 8), np.uint8)
    pred[0, 0, pred_x] = 1
    gt[0, 0, gt_x] = 1
    out = surface_distances(pred, gt, spacing=spacing, labels=(1,))
    assert out == {
        "hd95": {1: pytest.approx(hd, nan_ok=True)},
        "msd": {1: pytest.approx(msd, nan_ok=True)},
        "unit": unit,
    }


@pytest.mark.filterwarnings("ignore:.*always_return_as_numpy:FutureWarning")
@pytest.mark.parametrize("seed, spacing", [(0, None), (1, (10.0, 1.5625, 1.5625)), (2, (5.0, 0.7, 1.3))])
def test_distances_match_monai(seed, spacing):
    from monai.metrics import compute_average_surface_distance, compute_hausdorff_distance

    pred, gt = blobs(seed), blobs(seed + 20)
    ours = surface_distances(pred, gt, spacing=spacing)
    hausdorff = compute_hausdorff_distance(one_hot(pred), one_hot(gt), percentile=95, spacing=spacing)[0]
    average = compute_average_surface_distance(one_hot(pred), one_hot(gt), symmetric=True, spacing=spacing)[0]
    assert all(ours["hd95"][c] > ours["msd"][c] > 0 for c in (1, 2, 3))
    assert [ours["hd95"][c] for c in (1, 2, 3)] == pytest.approx(hausdorff.tolist(), rel=1e-5)
    assert [ours["msd"][c] for c in (1, 2, 3)] == pytest.approx(average.tolist(), rel=1e-5)


def test_clinical_indices_hand_computed():
    spacing = (10.0, 1.5, 1.5)  # 22.5 mm^3 = 0.0225 ml per voxel
    ed, es = np.zeros((4, 20, 20), np.uint8), np.zeros((4, 20, 20), np.uint8)
    ed.flat[:100] = 3  # LV 100 voxels at ED -> 2.25 ml
    ed.flat[100:300] = 2  # Myo 200 voxels -> 4.5 ml -> 4.725 g
    ed.flat[300:380] = 1  # RV 80 voxels -> 1.8 ml
    es.flat[:40] = 3  # LV 40 voxels at ES -> 0.9 ml, EF 60 %
    es.flat[40:60] = 1  # RV 20 voxels -> 0.45 ml, EF 75 %
    out = clinical_indices(ed, torch.from_numpy(es), spacing)
    assert out == pytest.approx(
        {
            "LV_EDV_ml": 2.25,
            "LV_ESV_ml": 0.9,
            "LV_EF_pct": 60.0,
            "RV_EDV_ml": 1.8,
            "RV_ESV_ml": 0.45,
            "RV_EF_pct": 75.0,
            "Myo_mass_ED_g": 4.725,
        }
    )
    assert math.isnan(clinical_indices(es * 0, es, spacing)["LV_EF_pct"])
