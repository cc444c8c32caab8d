"""Sliding-window prediction (shapes, mirroring by hand), writing predictions, and scoring them."""

import json

import numpy as np
import pytest
import torch
import torch.nn as nn

from uu.data import normalize_intensity
from uu.infer import load_label_map, predict_cases, predict_volume


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

    from uu.data import load_acdc

    cases = load_acdc(phantom_dir)[:2]
    out = predict_cases(nn.Conv2d(1, 4, 1), cases, (32, 32), tmp_path, mirror=False, progress=False)
    index = json.loads((out / "predictions.json").read_text())
    assert [c["name"] for c in index["cases"]] == [c.name for c in cases]
    for case in cases:
        label = load_label_map(out / f"{case.name}.nii.gz")
        assert label.shape == case.image.shape and label.dtype == np.uint8
        np.testing.assert_array_equal(
            nib.load(str(out / f"{case.name}.nii.gz")).affine, nib.load(str(case.source)).affine
        )
        with np.load(out / f"{case.name}_probs.npz") as f:
            assert f["probs"].dtype == np.float16 and f["probs"].shape == (4,) + case.image.shape
