"""`load_acdc`: find out which layout a path holds and read its cases."""

from __future__ import annotations

from pathlib import Path

from .cache import is_cache_path, load_cache
from .case import Case
from .errors import DataError
from .hdf5 import find_h5_files, load_hdf5
from .official import find_patient_dirs, load_official

LAYOUTS = ("official", "hdf5", "cache")


def detect_layout(root) -> str:
    """ "official", "hdf5" or "cache" for ``root``; DataError for a missing/empty/unknown folder."""
    root = Path(root).expanduser()
    if root.is_file():
        if is_cache_path(root):
            return "cache"
        raise DataError(
            f"{root}: is a file, not a data folder or a '*.uucache.npz' cache. "
            "Point at the folder that holds patientNNN/ folders or data/*.h5."
        )
    if not root.exists():
        raise DataError(
            f"{root}: no such folder. Point at an ACDC folder (official layout with "
            "patientNNN/ folders, or the HDF5 layout with data/*.h5), or leave the data "
            "path empty to use the built-in phantom."
        )
    if not root.is_dir():
        raise DataError(f"{root}: not a folder.")
    if not any(root.iterdir()):
        raise DataError(
            f"{root}: the folder is empty. Download ACDC into it (official layout) or "
            "leave the data path empty to use the built-in phantom."
        )
    if find_patient_dirs(root):
        return "official"
    if find_h5_files(root):
        return "hdf5"
    raise DataError(
        f"{root}: no cases found: neither patientNNN/ folders (here, in training/ or "
        "testing/) nor data/*.h5 files. Check the path."
    )


def load_acdc(root, lazy: bool = False, require_labels: bool = True) -> list[Case]:
    """All cases under ``root`` (an official ACDC folder, the HDF5 layout ``data/*.h5``, or a ``*.uucache.npz``),
    sorted by (patient, phase ED before ES); never writes into it. ``lazy``: read no voxel data until a case's
    ``image`` / ``label`` is first accessed. ``require_labels=False`` allows label=None (else a DataError)."""
    root = Path(root).expanduser()
    layout = detect_layout(root)
    reader = {"official": load_official, "hdf5": load_hdf5, "cache": load_cache}[layout]
    cases = reader(root, lazy=lazy, require_labels=require_labels)
    if not cases:
        raise DataError(f"{root}: no cases found ({layout} layout).")
    return sorted(cases, key=lambda c: (c.patient, c.phase))
