"""Sliding-window prediction (shapes, mirroring by hand), writing predictions, and scoring them."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn as nn

from uu.data import normalize_intensity
from uu.evaluate import CSV_COLUMNS, evaluate_predictions, score_case
from uu.infer import load_label_map, predict_cases, predict_volume, save_label_map


class ShiftRight(nn.Module):
    """Logits: class 1 = the input shifted right by one pixel along X (zero at x = 0); others 0."""

    def __init__(self, dims=2):
        super().__init__()
        conv = nn.Conv2d if dims == 2 else nn.Conv3d
        k = (1, 3) if dims == 2 else (1, 1, 3)
        self.conv = conv(1, 4, k, padding=tuple(s // 2 for s in k), bias=False)
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.weight[(1, 0) + (0,) * (dims - 1) + (0,)] = 1.0  # out[x] = in[x - 1]

    def forward(self, x):
        return self.conv(x)


def softmax_np(logits):
    e = np.exp(logits - logits.max(0))
    return e / e.sum(0)


def expected_probs(image, mirror):
    right = np.zeros_like(image)
    right[..., 1:] = image[..., :-1]
    left = np.zeros_like(image)
    left[..., :-1] = image[..., 1:]
    class1 = 0.5 * (right + left) if mirror else right  # the X flip turns a right shift into a left shift
    logits = np.zeros((4,) + image.shape, np.float32)
    logits[1] = class1
    return softmax_np(logits)


@pytest.mark.parametrize("mirror", [False, True])
@pytest.mark.parametrize("dims", [2, 3])
def test_one_window_prediction_by_hand(dims, mirror):
    image = np.random.default_rng(0).normal(size=(4, 8, 8)).astype(np.float32)
    patch = (8, 8) if dims == 2 else (4, 8, 8)  # one window: the Gaussian weights cancel exactly
    probs = predict_volume(ShiftRight(dims), image, patch, mirror=mirror)
    assert probs.shape == (4, 4, 8, 8) and probs.dtype == np.float32
    # predict_volume takes the raw volume and normalises it as training does
    np.testing.assert_allclose(probs, expected_probs(normalize_intensity(image), mirror), atol=1e-5)


@pytest.mark.parametrize("dims, patch", [(2, (16, 16)), (3, (4, 16, 16))])
def test_sliding_window_shapes_and_padding(dims, patch):
    image = np.random.default_rng(1).normal(size=(3, 37, 10)).astype(np.float32)  # X smaller than the patch
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1) if dims == 2 else nn.Conv3d(1, 4, 3, padding=1))
    probs = predict_volume(model, image, patch, mirror=True, sw_batch_size=3)
    assert probs.shape == (4, 3, 37, 10)
    np.testing.assert_allclose(probs.sum(0), 1.0, atol=1e-5)


def test_a_flip_equivariant_model_gives_the_same_with_and_without_mirroring():
    image = np.random.default_rng(2).normal(size=(2, 20, 24)).astype(np.float32)
    model = nn.Conv2d(1, 4, 1)  # pointwise: flips commute with it
    a = predict_volume(model, image, (16, 16), mirror=False)
    b = predict_volume(model, image, (16, 16), mirror=True)
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_predict_volume_restores_training_mode():
    model = nn.Conv2d(1, 4, 1)
    model.train()
    predict_volume(model, np.zeros((1, 8, 8), np.float32), (8, 8), mirror=False)
    assert model.training


# --------------------------------------------------------------------------------------------- writing and scoring

def test_predict_cases_writes_label_maps_with_the_source_affine(phantom_dir, tmp_path):
    import nibabel as nib
    from uu.data import normalize_intensity, load_acdc

    cases = load_acdc(phantom_dir)[:2]
    out = predict_cases(nn.Conv2d(1, 4, 1), cases, (32, 32), tmp_path, mirror=False, progress=False)
    index = json.loads((out / "predictions.json").read_text())
    assert [c["name"] for c in index["cases"]] == [c.name for c in cases]
    for case in cases:
        label = load_label_map(out / f"{case.name}.nii.gz")
        assert label.shape == case.image.shape and label.dtype == np.uint8
        np.testing.assert_array_equal(nib.load(str(out / f"{case.name}.nii.gz")).affine,
                                      nib.load(str(case.source)).affine)
        with np.load(out / f"{case.name}_probs.npz") as f:
            assert f["probs"].dtype == np.float16 and f["probs"].shape == (4,) + case.image.shape


def write_prediction(folder, case, label, probs):
    folder.mkdir(exist_ok=True)
    save_label_map(label, folder / f"{case.name}.nii.gz", np.eye(4))
    np.savez(folder / f"{case.name}_probs.npz", probs=probs.astype(np.float16))
    index_path = folder / "predictions.json"
    index = json.loads(index_path.read_text()) if index_path.exists() else {"cases": []}
    index["cases"].append({"name": case.name, "label": f"{case.name}.nii.gz", "probs": f"{case.name}_probs.npz"})
    index_path.write_text(json.dumps(index))


def test_scores_by_hand(phantom_dir, tmp_path):
    from uu.data import load_acdc

    ed, es = load_acdc(phantom_dir)[:2]
    # ED: perfect (one-hot probabilities). ES: all background with certainty.
    write_prediction(tmp_path, ed, ed.label, np.eye(4, dtype=np.float32)[ed.label].transpose(3, 0, 1, 2))
    background = np.zeros((4,) + es.label.shape, np.float32)
    background[0] = 1.0
    write_prediction(tmp_path, es, np.zeros_like(es.label), background)
    table, summary = evaluate_predictions(tmp_path, [ed, es], tmp_path / "report", progress=False)
    assert list(table.columns) == CSV_COLUMNS
    assert list(pd.read_csv(tmp_path / "report" / "per_case.csv").columns) == CSV_COLUMNS
    perfect, empty = table.iloc[0], table.iloc[1]
    assert perfect[["dice_RV", "dice_Myo", "dice_LV", "dice_mean"]].tolist() == [1.0] * 4
    assert perfect["mse"] == 0.0 and perfect[["hd95_RV", "hd95_Myo", "hd95_LV"]].tolist() == [0.0] * 3
    assert empty[["dice_RV", "dice_Myo", "dice_LV"]].tolist() == [0.0] * 3  # ES has every class in the phantom
    # each foreground voxel contributes (1 - 0)^2 + (0 - 1)^2 = 2 over 4 classes
    assert empty["mse"] == pytest.approx(2 * (es.label > 0).sum() / (4 * es.label.size))
    assert np.isnan(empty["hd95_RV"]) and perfect["hd95_unit"] == "mm"
    assert summary["overall"]["dice"]["RV"] == pytest.approx(0.5) and summary["ED"]["dice_mean"] == 1.0
    assert summary["overall"]["hd95"]["LV"] == 0.0 and summary["overall"]["hd95_undefined"]["LV"] == 1
    assert json.loads((tmp_path / "report" / "summary.json").read_text())["ES"]["n_cases"] == 1


def test_score_case_without_probabilities_or_spacing():
    gt = np.zeros((2, 6, 6), np.uint8)
    gt[:, 1:3, 1:3] = 1
    row = score_case(gt, None, gt, spacing=None)
    assert np.isnan(row["mse"]) and row["hd95_unit"] == "voxel" and row["dice_RV"] == 1.0
    assert row["dice_Myo"] == 1.0  # both empty -> 1 (the authors' rule)
