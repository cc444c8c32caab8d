"""Checks every loader runs on the arrays it read (so all layouts fail the same way)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from .case import NUM_CLASSES
from .errors import DataError


def checked_image(array: np.ndarray, path: Path) -> np.ndarray:
    """Return ``array`` as float32 (Z, Y, X); DataError if it is not 3-D or holds NaN/inf."""
    image = np.asarray(array)
    if image.ndim == 4 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.ndim != 3:
        raise DataError(
            f"{path}: expected a 3-D image, got shape {image.shape}. Pass one frame per file (not the 4-D cine series)."
        )
    image = image.astype(np.float32, copy=False)
    if not np.isfinite(image).all():
        bad = int((~np.isfinite(image)).sum())
        raise DataError(
            f"{path}: image holds {bad} NaN or infinite voxels. "
            "Re-export the volume, or remove this case from the folder."
        )
    return image


def checked_label(array: np.ndarray, path: Path, image_shape: tuple, image_path: Path) -> np.ndarray:
    """Return ``array`` as uint8 with values in 0..3 and the image's shape, else DataError."""
    label = np.asarray(array)
    if label.ndim == 4 and label.shape[-1] == 1:
        label = label[..., 0]
    if label.shape != tuple(image_shape):
        raise DataError(
            f"{path}: label shape {label.shape} differs from image shape "
            f"{tuple(image_shape)} of {image_path}. The two files do not belong together."
        )
    if label.dtype.kind == "f":
        if not np.isfinite(label).all() or (np.round(label) != label).any():
            raise DataError(f"{path}: label map holds non-integer values; expected 0..3.")
    values = np.unique(label)
    if values.size and (values.min() < 0 or values.max() >= NUM_CLASSES):
        raise DataError(
            f"{path}: label values {values.tolist()} outside 0..3 "
            "(0 background, 1 RV, 2 Myo, 3 LV). Is this an ACDC ground-truth file?"
        )
    return label.astype(np.uint8, copy=False)


def optional_label(
    array: Optional[np.ndarray], path: Optional[Path], image: np.ndarray, image_path: Path
) -> Optional[np.ndarray]:
    return None if array is None else checked_label(array, path, image.shape, image_path)
