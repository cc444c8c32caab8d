"""Tables describing a list of cases (used by `python -m uu info` and notebook 01)."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .case import CLASS_NAMES, CLASSES, Case


def class_voxels(label: np.ndarray) -> dict[str, int]:
    """Voxel count per class name (background, RV, Myo, LV)."""
    counts = np.bincount(label.ravel(), minlength=len(CLASS_NAMES))
    return {CLASS_NAMES[k]: int(counts[k]) for k in CLASS_NAMES}


def case_rows(cases: Sequence[Case], release: bool = True):
    """One dict per case: patient, phase, group, Z/Y/X, spacing, voxels and ml per class (lazy cases released)."""
    for case in cases:
        was_loaded = case.is_loaded
        image, label = case.image, case.label
        row = {"patient": case.patient, "phase": case.phase, "group": case.group, **dict(zip("ZYX", image.shape))}
        row["spacing"] = None if case.spacing is None else "x".join(f"{s:g}" for s in case.spacing)
        row["source"] = case.source.name
        voxels = class_voxels(label) if label is not None else {n: None for n in CLASS_NAMES.values()}
        voxel_ml = None if case.spacing is None else float(np.prod(case.spacing)) / 1000.0
        for name in CLASSES:
            row[f"vox_{name}"] = voxels[name]
            row[f"ml_{name}"] = None if (voxel_ml is None or voxels[name] is None) else voxels[name] * voxel_ml
        yield row
        if release and case.loader is not None and not was_loaded:
            case.release()


def case_table(cases: Sequence[Case]):
    """pandas DataFrame of `case_rows`."""
    import pandas as pd

    return pd.DataFrame(list(case_rows(cases)))
