"""Real ACDC data (UU_ACDC_DIR: an official folder, or the HDF5 layout of the 80 non-test training patients);
skipped without it."""

from __future__ import annotations

import numpy as np
import pytest

from uu.data import NNFORMER_TEST, detect_layout, load_acdc, read_list, split_patients

pytestmark = pytest.mark.acdc


@pytest.fixture(scope="module")
def acdc_cases(acdc_dir):
    return load_acdc(acdc_dir, lazy=True)


def test_all_volumes_load(acdc_cases, acdc_dir):
    layout = detect_layout(acdc_dir)
    patients = sorted({c.patient for c in acdc_cases})
    if layout == "hdf5":  # the development copy: the 80 training patients outside nnFormer's test split
        assert len(patients) == 80 and len(acdc_cases) == 160
        assert not set(patients) & set(NNFORMER_TEST)
    for case in acdc_cases:
        image, label = case.image, case.label
        assert image.dtype == np.float32 and image.ndim == 3 and np.isfinite(image).all()
        assert label.dtype == np.uint8 and label.shape == image.shape
        assert label.max() <= 3
        assert case.group in ("DCM", "HCM", "MINF", "NOR", "RV")
        case.release()


def test_both_phases_per_patient(acdc_cases):
    phases = {}
    for case in acdc_cases:
        phases.setdefault(case.patient, []).append(case.phase)
    assert all(v == ["ED", "ES"] for v in phases.values())


def test_nnformer_split_of_present_patients(acdc_cases, acdc_dir):
    split = split_patients(acdc_cases, "nnformer")
    if detect_layout(acdc_dir) == "hdf5":
        assert (len(split["train"]), len(split["val"]), len(split["test"])) == (70, 10, 0)
        listed = read_list(acdc_dir / "val.list")
        if listed is not None:
            assert sorted({int(n[7:10]) for n in listed}) == split["val"]
        listed = read_list(acdc_dir / "train.list")
        if listed is not None:
            assert sorted({int(n[7:10]) for n in listed}) == split["train"]
