"""Every bad input gets a DataError that names the file (or folder) at fault."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import write_h5, write_nifti, write_patient

from uu.data import DataError, load_acdc


def good_h5_folder(root: Path) -> Path:
    image = np.linspace(0, 1, 2 * 6 * 5, dtype=np.float32).reshape(2, 6, 5)
    for frame in (1, 2):
        write_h5(root / "data" / f"patient001_frame{frame:02d}.h5", image, np.zeros((2, 6, 5), np.uint8))
    return root


def truncate(path: Path, keep: float = 0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def _truncated_nifti(root):
    write_patient(root, 1, 1, 12)
    bad = root / "patient001" / "patient001_frame12.nii.gz"
    truncate(bad)
    return bad


def _truncated_h5(root):
    good_h5_folder(root)
    bad = root / "data" / "patient001_frame02.h5"
    truncate(bad, 0.3)
    return bad


def _shape_mismatch(root):
    write_patient(root, 1, 1, 12)
    bad = root / "patient001" / "patient001_frame01_gt.nii.gz"
    write_nifti(bad, np.zeros((5, 4, 2), np.uint8))  # 2 slices instead of 3
    return bad


def _label_value_5(root):
    write_patient(root, 1, 1, 12)
    bad = root / "patient001" / "patient001_frame12_gt.nii.gz"
    label = np.zeros((5, 4, 3), np.uint8)
    label[1, 1, 1] = 5
    write_nifti(bad, label)
    return bad


def _h5_label_value_5(root):
    good_h5_folder(root)
    bad = root / "data" / "patient001_frame01.h5"
    label = np.zeros((2, 6, 5), np.uint8)
    label[0, 0, 0] = 5
    write_h5(bad, np.zeros((2, 6, 5), np.float32), label)
    return bad


def _info_without_es(root):
    folder = write_patient(root, 1, 1, 12)
    (folder / "Info.cfg").write_text("ED: 1\nGroup: NOR\n")
    return folder / "Info.cfg"


def _missing_info(root):
    folder = write_patient(root, 1, 1, 12)
    (folder / "Info.cfg").unlink()
    return folder / "Info.cfg"


def _nan_in_image(root):
    good_h5_folder(root)
    bad = root / "data" / "patient001_frame02.h5"
    image = np.zeros((2, 6, 5), np.float32)
    image[1, 2, 3] = np.nan
    write_h5(bad, image, np.zeros((2, 6, 5), np.uint8))
    return bad


def _nan_in_nifti(root):
    write_patient(root, 1, 1, 12)
    bad = root / "patient001" / "patient001_frame01.nii.gz"
    image = np.zeros((5, 4, 3), np.float32)
    image[0, 0, 0] = np.nan
    write_nifti(bad, image)
    return bad


def _missing_gt(root):
    write_patient(root, 1, 1, 12)
    bad = root / "patient001" / "patient001_frame12_gt.nii.gz"
    bad.unlink()
    return bad


def _missing_h5_label(root):
    good_h5_folder(root)
    bad = root / "data" / "patient001_frame01.h5"
    write_h5(bad, np.zeros((2, 6, 5), np.float32))
    return bad


def _missing_frame(root):
    folder = write_patient(root, 1, 1, 12)
    (folder / "Info.cfg").write_text("ED: 1\nES: 13\n")  # frame13 does not exist
    return folder / "patient001_frame13.nii.gz"


def _empty_folder(root):
    return root


def _missing_folder(root):
    return root / "does_not_exist"


def _no_cases(root):
    (root / "notes.txt").write_text("nothing here")
    (root / "patients").mkdir()
    return root


def _bad_h5_name(root):
    good_h5_folder(root)
    bad = root / "data" / "patient001_frame03.h5"
    shutil.copy(root / "data" / "patient001_frame01.h5", bad)
    return bad


BAD_INPUTS = {
    "truncated .nii.gz": (_truncated_nifti, "unreadable NIfTI"),
    "truncated .h5": (_truncated_h5, "unreadable HDF5"),
    "image/label shape mismatch": (_shape_mismatch, "differs from image shape"),
    "label value 5 (NIfTI)": (_label_value_5, "outside 0..3"),
    "label value 5 (HDF5)": (_h5_label_value_5, "outside 0..3"),
    "Info.cfg without ES": (_info_without_es, "no 'ES:' line"),
    "Info.cfg missing": (_missing_info, "missing"),
    "NaN in image (HDF5)": (_nan_in_image, "NaN"),
    "NaN in image (NIfTI)": (_nan_in_nifti, "NaN"),
    "missing ground truth": (_missing_gt, "missing ground truth"),
    "HDF5 without label": (_missing_h5_label, "missing ground truth"),
    "frame named in Info.cfg missing": (_missing_frame, "missing"),
    "empty folder": (_empty_folder, "empty"),
    "missing folder": (_missing_folder, "no such folder"),
    "no cases": (_no_cases, "no cases found"),
    "unexpected .h5 name": (_bad_h5_name, "unexpected file name"),
}


@pytest.mark.parametrize("make_bad_input, message", BAD_INPUTS.values(), ids=BAD_INPUTS.keys())
@pytest.mark.parametrize("lazy", [False, True], ids=["eager", "lazy"])
def test_bad_input_names_the_file(tmp_path, make_bad_input, message, lazy):
    bad_path = make_bad_input(tmp_path)
    with pytest.raises(DataError) as info:
        cases = load_acdc(tmp_path if bad_path != tmp_path / "does_not_exist" else bad_path, lazy=lazy)
        for case in cases:  # lazy: problems inside a volume surface on first access
            case.image
    text = str(info.value)
    assert str(bad_path) in text, text
    assert message in text, text
    assert isinstance(info.value, ValueError)


def test_missing_ground_truth_allowed_when_not_required(tmp_path):
    _missing_gt(tmp_path)
    cases = load_acdc(tmp_path, require_labels=False)
    assert [c.label is None for c in cases] == [False, True]


def test_cli_reports_data_error_and_exits_2(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "uu", "info", str(tmp_path / "nope")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert result.returncode == 2
    assert str(tmp_path / "nope") in result.stderr and "no such folder" in result.stderr
