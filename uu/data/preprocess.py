"""Preprocessing used by training: intensity normalisation, resampling, patch extraction."""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from .errors import DataError

CLIP_PERCENTILES = (0.5, 99.5)


def percentile_clip(image: np.ndarray, percentiles=CLIP_PERCENTILES) -> np.ndarray:
    """``image`` clipped to its own (low, high) percentiles, float32."""
    image = np.asarray(image, dtype=np.float32)
    return np.clip(image, *np.percentile(image, percentiles))


def normalize_intensity(image: np.ndarray, percentiles=CLIP_PERCENTILES, eps: float = 1e-8) -> np.ndarray:
    """Per-volume normalisation: clip to the 0.5/99.5 percentiles, then z-score (float32; constant -> zeros)."""
    clipped = percentile_clip(image, percentiles)
    mean, std = clipped.mean(dtype=np.float64), clipped.std(dtype=np.float64)
    return ((clipped - mean) / max(std, eps)).astype(np.float32)


def to_uint8(image: np.ndarray, percentiles=CLIP_PERCENTILES) -> np.ndarray:
    """Percentile clip, then scale linearly to 0..255 (rounded). A constant image gives zeros."""
    clipped = percentile_clip(image, percentiles)
    low, high = float(clipped.min()), float(clipped.max())
    scaled = (clipped - low) / (high - low) if high > low else np.zeros_like(clipped)
    return np.round(scaled * 255.0).astype(np.uint8)


def resample(
    array: np.ndarray, spacing: Optional[Sequence[float]], target_spacing: Sequence[float], order: int = 3
) -> np.ndarray:
    """Resample a (Z, Y, X) volume from ``spacing`` to ``target_spacing`` (mm, (z, y, x)); ``order=0`` for labels.
    Axes whose target is None or <= 0 keep their spacing."""
    from scipy import ndimage

    if spacing is None:
        raise DataError(
            "resample: this case has no voxel spacing (the HDF5 layout stores none); "
            "use the official NIfTI layout or skip resampling."
        )
    if len(spacing) != array.ndim or len(target_spacing) != array.ndim:
        raise ValueError(f"resample: spacing {spacing} / target {target_spacing} do not match array dims {array.shape}")
    factors = [s / t if t and t > 0 else 1.0 for s, t in zip(spacing, target_spacing)]
    new_shape = tuple(max(1, int(round(n * f))) for n, f in zip(array.shape, factors))
    if new_shape == array.shape:
        return array.copy()
    zoom = [n / o for n, o in zip(new_shape, array.shape)]
    return ndimage.zoom(array, zoom, order=order, mode="nearest", grid_mode=True).astype(array.dtype, copy=False)


def extract_patch(array: np.ndarray, start: Sequence[int], size: Sequence[int], pad_value=0) -> np.ndarray:
    """Crop ``size`` over the LAST ``len(size)`` axes beginning at ``start`` (may lie outside: ``pad_value``).
    Returns a new array of shape ``array.shape[:-k] + tuple(size)``."""
    array = np.asarray(array)
    k = len(size)
    if len(start) != k:
        raise ValueError(f"extract_patch: start {tuple(start)} and size {tuple(size)} differ in length")
    if k > array.ndim:
        raise ValueError(f"extract_patch: size {tuple(size)} has more axes than array {array.shape}")
    if any(int(s) <= 0 for s in size):
        raise ValueError(f"extract_patch: size {tuple(size)} must be positive")
    out = np.full(array.shape[: array.ndim - k] + tuple(int(s) for s in size), pad_value, dtype=array.dtype)
    src, dst = crop_slices(start, size, array.shape[array.ndim - k :])
    if src is not None:  # else no overlap: all padding
        out[(Ellipsis, *dst)] = array[(Ellipsis, *src)]
    return out


def crop_slices(start, size, shape):
    """(source slices, destination slices) of a crop of ``size`` at ``start`` out of ``shape`` into a padded patch;
    (None, None) when they do not overlap. The one crop rule (extract_patch here, the training sampler on tensors)."""
    src, dst = [], []
    for begin, length, dim in zip(start, size, shape):
        begin, length = int(begin), int(length)
        lo, hi = max(begin, 0), min(begin + length, dim)
        if hi <= lo:
            return None, None
        src.append(slice(lo, hi))
        dst.append(slice(lo - begin, hi - begin))
    return tuple(src), tuple(dst)
