"""The preprocessed HDF5 layout (data/patientNNN_frameXX.h5) and our compact cache."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import write_h5

from uu.data import Case, DataError, detect_layout, load_acdc, read_list, write_cache


@pytest.fixture
def h5_dir(tmp_path):
    rng = np.random.default_rng(0)
    for patient, frames in [(21, (1, 2)), (85, (2, 1)), (101, (1,))]:
        for frame in frames:
            image = rng.random((3, 8, 7), dtype=np.float32)
            label = (np.arange(3 * 8 * 7).reshape(3, 8, 7) % 4).astype(np.uint8)
            write_h5(tmp_path / "data" / f"patient{patient:03d}_frame{frame:02d}.h5", image, label)
    (tmp_path / "train.list").write_text("patient021_frame01\npatient021_frame02\n")
    return tmp_path


def test_hdf5_layout(h5_dir):
    assert detect_layout(h5_dir) == "hdf5"
    cases = load_acdc(h5_dir)
    assert [(c.patient, c.phase, c.group) for c in cases] == [
        (21, "ED", "HCM"),
        (21, "ES", "HCM"),
        (85, "ED", "RV"),
        (85, "ES", "RV"),
        (101, "ED", None),
    ]
    assert cases[1].source.name == "patient021_frame02.h5"  # frame02 is ES
    assert all(c.spacing is None for c in cases)
    assert cases[0].image.dtype == np.float32 and cases[0].image.shape == (3, 8, 7)
    assert cases[0].label.dtype == np.uint8 and cases[0].label[0, 1, 0] == 7 % 4
    assert read_list(h5_dir / "train.list") == ["patient021_frame01", "patient021_frame02"]
    assert read_list(h5_dir / "val.list") is None


def test_hdf5_files_directly_in_root(h5_dir):
    assert len(load_acdc(h5_dir / "data", lazy=True)) == 5


def test_cache_round_trip(h5_dir, tmp_path_factory):
    cases = load_acdc(h5_dir)
    path = write_cache(cases, tmp_path_factory.mktemp("c") / "small.uucache.npz")
    assert detect_layout(path) == "cache"
    back = load_acdc(path)
    assert [(c.patient, c.phase, c.group, c.spacing) for c in back] == [
        (c.patient, c.phase, c.group, c.spacing) for c in cases
    ]
    for a, b in zip(cases, back):
        assert b.image.dtype == np.float32 and b.image.shape == a.image.shape
        assert b.image.min() == 0.0 and b.image.max() == 1.0
        np.testing.assert_array_equal(a.label, b.label)


def test_cache_image_quantisation_by_hand(tmp_path):
    # 0..199 ramp: percentiles 0.5/99.5 are 0.995 and 198.005, so 0 and 1 clip to 0, 198/199 to 255
    ramp = np.arange(200, dtype=np.float32).reshape(2, 10, 10)
    case = Case(7, "ES", "NOR", ramp, np.ones((2, 10, 10), np.uint8), (10.0, 1.5, 1.5), "x")
    nolabel = Case(8, "ED", None, ramp, None, None, "y")
    back = load_acdc(write_cache([case, nolabel], tmp_path / "r.uucache.npz"), require_labels=False)
    image = back[0].image.ravel()
    assert image[0] == image[1] == 0.0 and image[-1] == image[-2] == 1.0
    expected_100 = np.round((100 - 0.995) / (198.005 - 0.995) * 255) / 255
    assert image[100] == pytest.approx(expected_100, abs=1e-6)
    assert back[0].spacing == (10.0, 1.5, 1.5) and back[0].group == "NOR"
    assert back[1].label is None and back[1].spacing is None and back[1].group is None
    with pytest.raises(DataError, match="no ground truth"):
        load_acdc(tmp_path / "r.uucache.npz")


def test_cache_lazy_and_bad_names(phantom_dir, tmp_path):
    cases = load_acdc(phantom_dir, lazy=True)
    with pytest.raises(DataError, match="must end in '.uucache.npz'"):
        write_cache(cases, tmp_path / "x.npz")
    path = write_cache(cases, tmp_path / "p.uucache.npz")
    assert not any(c.is_loaded for c in cases)  # write_cache released them again
    lazy = load_acdc(path, lazy=True)
    assert not lazy[3].is_loaded and lazy[3].label.shape == lazy[3].image.shape
    (tmp_path / "broken.uucache.npz").write_bytes(path.read_bytes()[:1000])
    with pytest.raises(DataError, match="broken.uucache.npz"):
        load_acdc(tmp_path / "broken.uucache.npz")
