"""Statistics for comparing runs (numpy only): paired bootstrap intervals, calibration, predictive entropy.

The paper's rows differ by tenths of a Dice point, so comparisons are paired per volume with a bootstrap interval."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


# ----------------------------------------------------------------------------- paired bootstrap
@dataclass
class BootstrapCI:
    """Mean of the per-volume differences (b - a) and its percentile bootstrap interval."""

    mean: float
    low: float
    high: float
    n: int
    confidence: float
    n_boot: int

    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0


def paired_bootstrap_ci(a, b, n_boot: int = 10_000, confidence: float = 0.95, seed: int = 0) -> BootstrapCI:
    """Percentile bootstrap interval of mean(b - a); a, b (n,): per-volume scores, the same volumes in order."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired_bootstrap_ci: need two 1-D arrays of one length, got {a.shape} and {b.shape}")
    if len(a) == 0:
        raise ValueError("paired_bootstrap_ci: no volumes to compare")
    if not 0 < confidence < 1:
        raise ValueError(f"paired_bootstrap_ci: confidence must lie in (0, 1), got {confidence}")
    diff = b - a
    if not np.all(np.isfinite(diff)):
        raise ValueError("paired_bootstrap_ci: the scores contain NaN or infinity")
    means = diff[np.random.default_rng(seed).integers(0, len(diff), size=(n_boot, len(diff)))].mean(axis=1)
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(means, [tail, 100 - tail])
    return BootstrapCI(float(diff.mean()), float(low), float(high), len(diff), confidence, n_boot)


def cluster_bootstrap_ci(
    values, clusters, strata=None, n_boot: int = 10_000, confidence: float = 0.95, seed: int = 0
) -> BootstrapCI:
    """Percentile bootstrap interval of mean(values) that resamples whole clusters (a patient's ED and ES
    volumes) with replacement, within each stratum (a fold) when strata are given; values, clusters, strata (n,)."""
    values, clusters = np.asarray(values, np.float64), np.asarray(clusters)
    strata = np.zeros(len(values), int) if strata is None else np.asarray(strata)
    if not (values.ndim == 1 and values.shape == clusters.shape == strata.shape) or len(values) == 0:
        raise ValueError(
            f"cluster_bootstrap_ci: need 1-D values, clusters, strata of one non-zero length, got "
            f"{values.shape}, {clusters.shape}, {strata.shape}"
        )
    if not np.all(np.isfinite(values)):
        raise ValueError("cluster_bootstrap_ci: the values contain NaN or infinity")
    rng = np.random.default_rng(seed)
    sums, counts = np.zeros(n_boot), np.zeros(n_boot)
    for stratum in np.unique(strata):
        inside = strata == stratum
        _, index = np.unique(clusters[inside], return_inverse=True)
        cluster_sums, cluster_sizes = np.bincount(index, values[inside]), np.bincount(index).astype(np.float64)
        draw = rng.integers(0, len(cluster_sums), size=(n_boot, len(cluster_sums)))
        sums += cluster_sums[draw].sum(axis=1)
        counts += cluster_sizes[draw].sum(axis=1)
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(sums / counts, [tail, 100 - tail])
    return BootstrapCI(float(values.mean()), float(low), float(high), len(values), confidence, n_boot)


# ----------------------------------------------------------------------------- calibration
def _confidence_and_correct(probs, gt) -> tuple[np.ndarray, np.ndarray]:
    probs, gt = np.asarray(probs), np.asarray(gt)
    if probs.shape[1:] != gt.shape:
        raise ValueError(f"calibration: probs must be (C, *spatial) with spatial {gt.shape}, got {probs.shape}")
    return probs.max(axis=0).ravel().astype(np.float64), (probs.argmax(axis=0) == gt).ravel()


def reliability_bins(probs, gt, n_bins: int = 15) -> dict:
    """Per-bin voxel count, summed confidence (max probability) and correctness; probs (C, *spatial), gt (*spatial).
    Bin k holds confidences in (k/n_bins, (k+1)/n_bins] (0 in the first); bins of volumes add up (`add_bins`)."""
    confidence, correct = _confidence_and_correct(probs, gt)
    index = np.clip(np.ceil(confidence * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    return {
        "count": np.bincount(index, minlength=n_bins).astype(np.float64),
        "confidence_sum": np.bincount(index, weights=confidence, minlength=n_bins),
        "correct_sum": np.bincount(index, weights=correct.astype(np.float64), minlength=n_bins),
    }


def add_bins(*bins: dict) -> dict:
    return {key: sum(b[key] for b in bins) for key in bins[0]}


def ece_from_bins(bins: dict) -> float:
    """sum_k (n_k / N) |accuracy_k - confidence_k|."""
    count = bins["count"]
    return float(np.abs(bins["correct_sum"] - bins["confidence_sum"]).sum() / max(count.sum(), 1.0))


def expected_calibration_error(probs, gt, n_bins: int = 15) -> float:
    """Expected calibration error (Guo et al. 2017) over the voxels of one volume; see reliability_bins."""
    return ece_from_bins(reliability_bins(probs, gt, n_bins))


# ----------------------------------------------------------------------------- uncertainty
def predictive_entropy(probs, axis: int = 0) -> np.ndarray:
    """-sum_c p_c log p_c (nats) over the class axis; 0 for a one-hot prediction, log C at most."""
    probs = np.asarray(probs, np.float64)
    return -(probs * np.log(np.clip(probs, 1e-12, None))).sum(axis=axis)
