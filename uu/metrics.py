"""Metrics on one volume (3D): Dice per class (Eq. 4), MSE (Eq. 10), HD95 and mean surface distance, ACDC clinical
indices. Inputs are numpy arrays or torch tensors; labels as uu.data.LABELS (1 = RV, 2 = Myo, 3 = LV)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import ndimage

from uu.data import LABELS

MYOCARDIUM_DENSITY_G_PER_ML = 1.05


def _np(x) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _same_shape(pred: np.ndarray, gt: np.ndarray, what: str) -> None:
    if pred.shape != gt.shape:
        raise ValueError(f"{what}: prediction shape {pred.shape} differs from ground truth shape {gt.shape}")


def dice_per_class(pred, gt, labels: Sequence[int] = (1, 2, 3)) -> dict[int, float]:
    """Eq. 4, the hard DSC 2 |P and G| / (|P| + |G|) per label; both masks empty -> 1.0 (the authors' rule)."""
    pred, gt = _np(pred), _np(gt)
    _same_shape(pred, gt, "dice_per_class")
    out = {}
    for label in labels:
        p, g = pred == label, gt == label
        total = int(p.sum()) + int(g.sum())
        out[int(label)] = 1.0 if total == 0 else 2.0 * int(np.logical_and(p, g).sum()) / total
    return out


def mse_eq10(probs, gt) -> float:
    """Eq. 10, the MSE: mean over voxels and classes of (p_c - g_c)^2, probs (C, *spatial), gt (*spatial) ints;
    a fraction in [0, 2/C], in float64 without building the one-hot."""
    probs, gt = _np(probs), _np(gt)
    if probs.ndim != gt.ndim + 1 or probs.shape[1:] != gt.shape:
        raise ValueError(f"mse_eq10: probs must be (C, *spatial) and gt (*spatial); got {probs.shape} and {gt.shape}")
    n_classes = probs.shape[0]
    gt = gt.astype(np.int64)
    if gt.size and (gt.min() < 0 or gt.max() >= n_classes):
        raise ValueError(f"mse_eq10: ground-truth labels must lie in [0, {n_classes - 1}], got {gt.min()}..{gt.max()}")
    sum_sq = sum(float(np.square(probs[c], dtype=np.float64).sum()) for c in range(n_classes))
    p_true = float(np.take_along_axis(probs, gt[None], axis=0).astype(np.float64).sum())
    return (sum_sq - 2 * p_true + gt.size) / (n_classes * gt.size)


def _surface(mask: np.ndarray) -> np.ndarray:
    """Surface voxels: mask minus its erosion (face connectivity; outside the array counts as background)."""
    return mask ^ ndimage.binary_erosion(mask)


def surface_distances(pred, gt, spacing: Sequence[float] | None = None, labels: Sequence[int] = (1, 2, 3)) -> dict:
    """HD95 and mean surface distance (MSD) per label, as MONAI's HausdorffDistanceMetric(percentile=95) and
    SurfaceDistanceMetric(symmetric=True): HD95 = max of the two directed p95, MSD = mean over both directions.
    spacing: voxel size in mm per axis ((z, y, x) for Case arrays), None -> voxel units. Returns
    {"hd95": {label: d}, "msd": {label: d}, "unit": "mm" | "voxel"}, nan where either mask is empty."""
    pred, gt = _np(pred), _np(gt)
    _same_shape(pred, gt, "surface_distances")
    if spacing is not None:
        spacing = tuple(float(s) for s in spacing)
        if len(spacing) != pred.ndim:
            raise ValueError(
                f"surface_distances: spacing {spacing} has {len(spacing)} entries for a "
                f"{pred.ndim}D volume; give one voxel size in mm per axis"
            )
    out: dict = {"hd95": {}, "msd": {}, "unit": "voxel" if spacing is None else "mm"}
    for label in labels:
        p, g = pred == label, gt == label
        if not p.any() or not g.any():
            out["hd95"][int(label)] = out["msd"][int(label)] = float("nan")
            continue
        # crop to the union's bounding box plus a margin of 1 voxel: same distances, smaller transforms
        box = tuple(slice(max(int(idx.min()) - 1, 0), int(idx.max()) + 2) for idx in np.nonzero(p | g))
        sp, sg = _surface(p[box]), _surface(g[box])
        to_g = ndimage.distance_transform_edt(~sg, sampling=spacing)[sp]
        to_p = ndimage.distance_transform_edt(~sp, sampling=spacing)[sg]
        out["hd95"][int(label)] = float(max(np.percentile(to_g, 95), np.percentile(to_p, 95)))
        out["msd"][int(label)] = float(np.concatenate([to_g, to_p]).mean())
    return out


def clinical_indices(
    pred_ed,
    pred_es,
    spacing: Sequence[float],
    spacing_es: Sequence[float] | None = None,
    labels: dict[str, int] | None = None,
) -> dict[str, float]:
    """ACDC clinical indices from the ED and ES label maps of one patient: volumes in ml, EF in % (nan when
    EDV is 0), myocardial mass at ED in g (1.05 g/ml). spacing: mm, of ED (and ES unless spacing_es).
    Keys: LV_EDV_ml, LV_ESV_ml, LV_EF_pct, RV_EDV_ml, RV_ESV_ml, RV_EF_pct, Myo_mass_ED_g."""
    labels = LABELS if labels is None else labels
    ed, es = _np(pred_ed), _np(pred_es)
    ml_ed = float(np.prod(spacing)) / 1000.0
    ml_es = float(np.prod(spacing if spacing_es is None else spacing_es)) / 1000.0
    out = {}
    for name in ("LV", "RV"):
        edv = float((ed == labels[name]).sum()) * ml_ed
        esv = float((es == labels[name]).sum()) * ml_es
        out[f"{name}_EDV_ml"], out[f"{name}_ESV_ml"] = edv, esv
        out[f"{name}_EF_pct"] = 100.0 * (edv - esv) / edv if edv > 0 else float("nan")
    out["Myo_mass_ED_g"] = float((ed == labels["Myo"]).sum()) * ml_ed * MYOCARDIUM_DENSITY_G_PER_ML
    return out
