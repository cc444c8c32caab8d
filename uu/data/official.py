"""The official ACDC layout: ``patientNNN/Info.cfg`` + ``patientNNN_frameXX[_gt].nii.gz``.

Roots: a folder of ``patientNNN/`` folders or of ``training/`` / ``testing/`` (also under ``database/``).
NIfTI (X, Y, Z) arrays become (Z, Y, X), zooms (z, y, x) mm; voxel order as stored (no reorientation)."""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Optional

import numpy as np

from .case import GROUPS, Case
from .errors import DataError
from .validate import checked_image, optional_label

PATIENT_DIR = re.compile(r"^patient(\d{3})$")
SUBSETS = ("training", "testing")


def group_from_number(patient: int) -> Optional[str]:
    """ACDC training-set rule: 1-20 DCM, 21-40 HCM, 41-60 MINF, 61-80 NOR, 81-100 RV; else None."""
    return GROUPS[(patient - 1) // 20] if 1 <= patient <= 100 else None


def parse_info_cfg(path: Path) -> dict:
    """Info.cfg (``key: value`` lines) -> dict with int ``ED``/``ES``, ``Group`` (str or None), other keys as str."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise DataError(f"{path}: cannot read Info.cfg ({err}).") from err
    info: dict = {}
    for line in text.splitlines():
        if ":" in line:
            key, value = line.split(":", 1)
            info[key.strip()] = value.strip()
    for key in ("ED", "ES"):
        if key not in info:
            raise DataError(
                f"{path}: no '{key}:' line (found keys {sorted(info)}). Info.cfg must "
                "name the ED and ES frames, e.g. 'ED: 1' and 'ES: 12'."
            )
        try:
            info[key] = int(float(info[key]))
        except ValueError:
            raise DataError(f"{path}: '{key}: {info[key]}' is not a frame number.") from None
    info["Group"] = info.get("Group") or None
    return info


def find_patient_dirs(root: Path) -> list[Path]:
    """patientNNN folders under root, root/training, root/testing (or root/database/...)."""
    if (root / "database").is_dir() and not any(PATIENT_DIR.match(p.name) for p in root.iterdir()):
        root = root / "database"
    bases = [root] + [root / s for s in SUBSETS if (root / s).is_dir()]
    dirs = [p for base in bases for p in base.iterdir() if p.is_dir() and PATIENT_DIR.match(p.name)]
    return sorted(dirs, key=lambda p: (int(PATIENT_DIR.match(p.name).group(1)), str(p)))


def _nifti_path(folder: Path, stem: str) -> Optional[Path]:
    for suffix in (".nii.gz", ".nii"):
        if (folder / (stem + suffix)).is_file():
            return folder / (stem + suffix)
    return None


def read_nifti(path: Path) -> tuple[np.ndarray, tuple[float, float, float]]:
    """Array in (Z, Y, X) order (a copy) and spacing (z, y, x) in mm."""
    import nibabel as nib

    try:
        img = nib.load(str(path))
        data, zooms = np.asanyarray(img.dataobj), img.header.get_zooms()
    except Exception as err:  # nibabel/gzip/zlib raise many types for a broken file
        raise DataError(
            f"{path}: unreadable NIfTI ({type(err).__name__}: {err}). The file is "
            "probably truncated or not a NIfTI; download or extract it again."
        ) from err
    if data.ndim not in (3, 4):
        raise DataError(f"{path}: expected a 3-D volume (X, Y, Z), got shape {data.shape}.")
    data = np.ascontiguousarray(np.transpose(data[..., 0] if data.ndim == 4 else data, (2, 1, 0)))
    return data, tuple(float(z) for z in zooms[:3][::-1])


def read_pair(image_path: Path, label_path: Optional[Path]):
    """(image float32, label uint8 | None) for one frame, validated."""
    image = checked_image(read_nifti(image_path)[0], image_path)
    label = read_nifti(label_path)[0] if label_path is not None else None
    return image, optional_label(label, label_path, image, image_path)


def load_official(root: Path, lazy: bool = False, require_labels: bool = True) -> list[Case]:
    cases = []
    for folder in find_patient_dirs(root):
        patient = int(PATIENT_DIR.match(folder.name).group(1))
        info_path = folder / "Info.cfg"
        if not info_path.is_file():
            raise DataError(
                f"{info_path}: missing. Each patient folder of the official layout "
                "needs its Info.cfg (it names the ED and ES frames)."
            )
        info = parse_info_cfg(info_path)
        group = info["Group"] or group_from_number(patient)
        for phase in ("ED", "ES"):
            stem = f"{folder.name}_frame{info[phase]:02d}"
            image_path = _nifti_path(folder, stem)
            if image_path is None:
                raise DataError(
                    f"{folder / (stem + '.nii.gz')}: missing ({phase} frame {info[phase]} per {info_path})."
                )
            label_path = _nifti_path(folder, stem + "_gt")
            if label_path is None and require_labels:
                raise DataError(
                    f"{folder / (stem + '_gt.nii.gz')}: missing ground truth for the "
                    f"{phase} frame. Pass require_labels=False to load images only "
                    "(e.g. the testing folder), or restore the file."
                )
            loader = functools.partial(read_pair, image_path, label_path)
            spacing = _header_spacing(image_path)
            cases.append(Case.lazy(patient, phase, group, spacing, image_path, loader, load_now=not lazy))
    return cases


def _header_spacing(path: Path) -> tuple[float, float, float]:
    """Spacing from the NIfTI header only (reads ~350 bytes, no voxel data)."""
    import nibabel as nib

    try:
        zooms = nib.load(str(path)).header.get_zooms()
    except Exception as err:
        raise DataError(
            f"{path}: unreadable NIfTI header ({type(err).__name__}: {err}). Download or extract the file again."
        ) from err
    return tuple(float(z) for z in zooms[:3][::-1])
