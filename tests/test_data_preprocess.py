"""Intensity normalisation, resampling, patch extraction (hand-computed expectations)."""

from __future__ import annotations

import numpy as np
import pytest

from uu.data import DataError, extract_patch, normalize_intensity, resample, to_uint8


def test_normalize_intensity_by_hand():
    # 0..999: percentiles 0.5/99.5 = 4.995 / 994.005; clipped values then have mean 499.5 and
    # std sqrt(sum((clip(i) - 499.5)^2) / 1000), computed here in plain Python
    values = list(range(1000))
    low, high = 4.995, 994.005
    clipped = [min(max(v, low), high) for v in values]
    mean = sum(clipped) / 1000
    std = (sum((c - mean) ** 2 for c in clipped) / 1000) ** 0.5
    out = normalize_intensity(np.arange(1000, dtype=np.float64).reshape(10, 10, 10))
    assert out.dtype == np.float32 and out.shape == (10, 10, 10)
    assert out.ravel()[0] == pytest.approx((low - mean) / std, rel=1e-5)
    assert out.ravel()[500] == pytest.approx((500 - mean) / std, rel=1e-5)
    assert out.ravel()[999] == pytest.approx((high - mean) / std, rel=1e-5)
    assert abs(float(out.mean())) < 1e-5 and float(out.std()) == pytest.approx(1.0, rel=1e-5)


def test_normalize_constant_image_and_outlier():
    assert not normalize_intensity(np.full((2, 3, 4), 7.0)).any()
    image = np.zeros((10, 10, 10), np.float32)
    image[0, 0, 0] = 1e6  # one hot pixel is clipped away
    assert normalize_intensity(image).max() == 0.0


def test_to_uint8():
    out = to_uint8(np.arange(200, dtype=np.float32))
    assert out.dtype == np.uint8 and out[0] == 0 and out[-1] == 255
    assert out[100] == round((100 - 0.995) / (198.005 - 0.995) * 255)


ARRAY = np.arange(2 * 4 * 5).reshape(2, 4, 5)  # e.g. (channels, Y, X)


@pytest.mark.parametrize(
    "start, size, expected",
    [
        ((1, 2), (2, 2), [[7, 8], [12, 13]]),  # inside
        ((-1, -1), (2, 2), [[-1, -1], [-1, 0]]),  # before the start: padded
        ((3, 4), (2, 2), [[19, -1], [-1, -1]]),  # past the end: padded
        ((0, 7), (1, 2), [[-1, -1]]),  # no overlap at all
        ((0, 0), (4, 5), ARRAY[0].tolist()),  # the whole plane
    ],
)
def test_extract_patch_last_axes(start, size, expected):
    patch = extract_patch(ARRAY, start, size, pad_value=-1)
    assert patch.shape == (2,) + size
    np.testing.assert_array_equal(patch[0], expected)
    np.testing.assert_array_equal(patch[1][patch[0] >= 0], np.array(expected)[np.array(expected) >= 0] + 20)


def test_extract_patch_returns_a_copy_and_checks_arguments():
    patch = extract_patch(ARRAY, (0, 0, 0), (1, 1, 1))
    patch[...] = 99
    assert ARRAY[0, 0, 0] == 0
    with pytest.raises(ValueError, match="differ in length"):
        extract_patch(ARRAY, (0,), (1, 1))
    with pytest.raises(ValueError, match="more axes"):
        extract_patch(ARRAY, (0,) * 4, (1,) * 4)


def test_resample():
    image = np.arange(2 * 4 * 4, dtype=np.float32).reshape(2, 4, 4)
    label = (image % 4).astype(np.uint8)
    out = resample(image, (10.0, 1.0, 1.0), (5.0, 2.0, 2.0))
    assert out.shape == (4, 2, 2) and out.dtype == np.float32
    lab = resample(label, (10.0, 1.0, 1.0), (10.0, 0.5, 0.5), order=0)
    assert lab.shape == (2, 8, 8) and lab.dtype == np.uint8
    np.testing.assert_array_equal(lab[:, ::2, ::2], label)  # nearest neighbour keeps labels
    np.testing.assert_array_equal(resample(image, (10.0, 1.0, 1.0), (10.0, 1.0, 1.0)), image)
    with pytest.raises(DataError, match="no voxel spacing"):
        resample(image, None, (10.0, 1.0, 1.0))
