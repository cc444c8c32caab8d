"""Official NIfTI layout: Info.cfg, orientation, folder shapes, lazy loading."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from helpers import write_nifti, write_patient

import uu.data.official as official
from uu.data import Case, DataError, load_acdc, parse_info_cfg, read_nifti


@pytest.mark.parametrize(
    "text, expected",
    [
        (
            "ED: 1\nES: 12\nGroup: DCM\nHeight: 184.0\nNbFrame: 30\nWeight: 95.0\n",
            {"ED": 1, "ES": 12, "Group": "DCM", "Height": "184.0", "NbFrame": "30", "Weight": "95.0"},
        ),
        ("ED:4\nES:   9\n", {"ED": 4, "ES": 9, "Group": None}),  # no spaces, no group (testing)
        ("ES: 7\r\nED: 11\r\nGroup: RV\r\n", {"ED": 11, "ES": 7, "Group": "RV"}),  # CRLF, any order
    ],
)
def test_parse_info_cfg(tmp_path, text, expected):
    path = tmp_path / "Info.cfg"
    path.write_bytes(text.encode())
    assert parse_info_cfg(path) == expected


def test_nifti_orientation_and_spacing(tmp_path):
    # voxel (x, y, z) holds 100x + 10y + z, so every axis is distinguishable
    x, y, z = np.meshgrid(np.arange(5), np.arange(4), np.arange(3), indexing="ij")
    write_nifti(tmp_path / "v.nii.gz", (100 * x + 10 * y + z).astype(np.int16), (1.5, 1.25, 10.0))
    array, spacing = read_nifti(tmp_path / "v.nii.gz")
    assert array.shape == (3, 4, 5)  # (Z, Y, X)
    assert spacing == (10.0, 1.25, 1.5)  # (z, y, x)
    assert array[2, 1, 4] == 100 * 4 + 10 * 1 + 2  # array[z, y, x] == voxel (x, y, z)
    assert array[0, 3, 0] == 30


def test_frames_come_from_info_cfg(tmp_path):
    write_patient(tmp_path, 90, ed=4, es=13, group="RV")  # ED is not frame01 (like patient090)
    cases = load_acdc(tmp_path)
    assert [(c.patient, c.phase, c.group) for c in cases] == [(90, "ED", "RV"), (90, "ES", "RV")]
    assert [c.source.name for c in cases] == ["patient090_frame04.nii.gz", "patient090_frame13.nii.gz"]
    ed = cases[0]
    assert ed.image.dtype == np.float32 and ed.image.shape == (3, 4, 5)
    assert ed.image[2, 1, 4] == 412 + 4  # frame number was added to the ED image
    assert ed.label.dtype == np.uint8 and ed.label[2, 1, 4] == (4 + 1 + 2) % 4
    assert ed.spacing == (10.0, 1.25, 1.5)


def test_training_and_testing_folders(tmp_path):
    write_patient(tmp_path / "training", 1, 1, 12, group="DCM")
    write_patient(tmp_path / "testing", 101, 1, 10, group="", gt=False)
    with pytest.raises(DataError, match="patient101_frame01_gt.nii.gz"):
        load_acdc(tmp_path)
    cases = load_acdc(tmp_path, require_labels=False)
    assert [(c.patient, c.phase) for c in cases] == [(1, "ED"), (1, "ES"), (101, "ED"), (101, "ES")]
    assert cases[0].group == "DCM" and cases[0].label is not None
    assert cases[2].group is None and cases[2].label is None  # empty Group, number > 100


def test_group_falls_back_to_patient_number(tmp_path):
    folder = write_patient(tmp_path, 45, 1, 10)
    (folder / "Info.cfg").write_text("ED: 1\nES: 10\n")
    assert load_acdc(tmp_path)[0].group == "MINF"  # 41-60


def test_download_root_with_database_folder(tmp_path):
    write_patient(tmp_path / "database" / "training", 3, 1, 9)
    assert len(load_acdc(tmp_path)) == 2


def test_phantom_loads_as_official_layout(phantom_dir):
    cases = load_acdc(phantom_dir)
    assert len(cases) == 12 and sorted({c.patient for c in cases}) == [1, 2, 3, 4, 5, 6]
    for case in cases:
        assert case.image.ndim == 3 and case.image.shape == case.label.shape
        assert case.spacing is not None and case.spacing[0] > case.spacing[1]


def test_lazy_loading_reads_no_voxels_until_asked(tmp_path, monkeypatch):
    write_patient(tmp_path, 1, 1, 12)
    write_patient(tmp_path, 2, 1, 11)
    reads = []
    real = official.read_nifti
    monkeypatch.setattr(official, "read_nifti", lambda p: reads.append(Path(p).name) or real(p))
    cases = load_acdc(tmp_path, lazy=True)
    assert len(cases) == 4 and reads == []
    assert cases[1].spacing == (10.0, 1.25, 1.5)  # header only, still no voxel read
    assert not cases[1].is_loaded and reads == []
    assert cases[1].label.shape == (3, 4, 5)
    assert reads == ["patient001_frame12.nii.gz", "patient001_frame12_gt.nii.gz"]
    cases[1].image  # cached: no second read
    assert len(reads) == 2
    cases[1].release()
    assert not cases[1].is_loaded
    cases[1].image
    assert len(reads) == 4


def test_reading_never_writes_into_the_data_folder(tmp_path):
    write_patient(tmp_path, 1, 1, 12)
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")}
    load_acdc(tmp_path)
    load_acdc(tmp_path, lazy=True)
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")} == before


def test_case_is_a_dataclass_with_the_contract_fields():
    names = [f.name for f in dataclasses.fields(Case)]
    assert names[:7] == ["patient", "phase", "group", "image", "label", "spacing", "source"]
    case = Case(1, "ED", None, np.zeros((2, 3, 4), np.float32), None, None, "x.h5")
    assert case.source == Path("x.h5") and case.label is None
    with pytest.raises(ValueError, match="phase"):
        Case(1, "MID", None, None, None, None, "x.h5")
