"""The preprocessed HDF5 layout ("SSL4MIS" style) that many ACDC code bases distribute.

``data/patientNNN_frame01.h5`` (ED) / ``frame02`` (ES): ``image`` float32 (Z, Y, X) and ``label`` uint8; no
spacing is stored; the group follows the patient number. ``train.list`` / ``val.list`` may sit beside ``data/``."""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Optional

from .case import Case
from .errors import DataError
from .official import group_from_number
from .validate import checked_image, optional_label

H5_NAME = re.compile(r"^patient(\d{3})_frame(\d{2})\.h5$")
FRAME_TO_PHASE = {1: "ED", 2: "ES"}


def find_h5_files(root: Path) -> list[Path]:
    base = root / "data" if (root / "data").is_dir() else root
    return sorted(base.glob("*.h5"))


def read_h5(path: Path, require_labels: bool = True):
    """(image float32, label uint8 | None) from one .h5 volume, validated."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            if "image" not in f:
                raise DataError(f"{path}: no 'image' dataset (found {sorted(f)}); expected 'image' and 'label'.")
            image = f["image"][()]
            label = f["label"][()] if "label" in f else None
    except DataError:
        raise
    except Exception as err:  # h5py raises OSError/KeyError/RuntimeError for broken files
        raise DataError(
            f"{path}: unreadable HDF5 ({type(err).__name__}: {err}). The file is probably truncated; copy it again."
        ) from err
    if label is None and require_labels:
        raise DataError(
            f"{path}: no 'label' dataset (missing ground truth). Pass require_labels=False to load images only."
        )
    image = checked_image(image, path)
    return image, optional_label(label, path, image, path)


def load_hdf5(root: Path, lazy: bool = False, require_labels: bool = True) -> list[Case]:
    cases = []
    for path in find_h5_files(root):
        match = H5_NAME.match(path.name)
        if match is None or int(match.group(2)) not in FRAME_TO_PHASE:
            raise DataError(
                f"{path}: unexpected file name. The HDF5 layout names volumes "
                "patientNNN_frame01.h5 (ED) and patientNNN_frame02.h5 (ES); move "
                "other .h5 files out of this folder."
            )
        patient, phase = int(match.group(1)), FRAME_TO_PHASE[int(match.group(2))]
        loader = functools.partial(read_h5, path, require_labels)
        cases.append(Case.lazy(patient, phase, group_from_number(patient), None, path, loader, load_now=not lazy))
    return cases


def read_list(path: Path) -> Optional[list[str]]:
    """Volume names of a ``train.list`` / ``val.list`` file, or None if it does not exist."""
    path = Path(path)
    return [line.strip() for line in path.read_text().splitlines() if line.strip()] if path.is_file() else None
