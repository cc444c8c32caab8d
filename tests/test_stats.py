"""Bootstrap intervals, calibration error and entropy against hand-computed values."""

import math

import numpy as np
import pytest

from uu import stats


def test_constant_differences_collapse_the_interval():
    a = np.array([0.80, 0.85, 0.90, 0.70, 0.95])
    ci = stats.paired_bootstrap_ci(a, a + 0.02, n_boot=500, seed=1)
    assert ci.mean == pytest.approx(0.02)
    assert ci.low == pytest.approx(0.02) and ci.high == pytest.approx(0.02)
    assert ci.excludes_zero() and ci.n == 5


def test_normal_differences_interval_width_and_coverage():
    # mean diff 0.5, sd 2, n 400: the 95% interval is about mean +- 1.96 * 2 / 20 = +- 0.196
    rng = np.random.default_rng(0)
    n, sd = 400, 2.0
    a = rng.normal(size=n)
    b = a + rng.normal(0.5, sd, size=n)
    ci = stats.paired_bootstrap_ci(a, b, n_boot=4000, seed=0)
    sample_sd = np.std(b - a, ddof=1)
    assert ci.low < np.mean(b - a) < ci.high
    assert ci.low < 0.5 < ci.high
    assert ci.high - ci.low == pytest.approx(2 * 1.96 * sample_sd / math.sqrt(n), rel=0.1)


def test_bootstrap_is_seeded_and_pairing_matters():
    a = np.array([0.1, 0.5, 0.9, 0.3])
    b = a[::-1].copy()  # mean diff 0
    assert stats.paired_bootstrap_ci(a, b, seed=3) == stats.paired_bootstrap_ci(a, b, seed=3)
    assert stats.paired_bootstrap_ci(a, b, seed=3).mean == pytest.approx(0.0)


@pytest.mark.parametrize(
    "a, b, match",
    [
        ([1.0, 2.0], [1.0], "one length"),
        ([], [], "no volumes"),
        ([1.0, np.nan], [1.0, 2.0], "NaN"),
    ],
)
def test_bootstrap_rejects_bad_input(a, b, match):
    with pytest.raises(ValueError, match=match):
        stats.paired_bootstrap_ci(a, b)


def test_ece_by_hand():
    # 4 voxels, 2 classes, 5 bins of width 0.2.
    # voxel: p(class1), gt -> confidence, correct, bin
    #   0.9, 1 -> 0.9, yes, bin 4
    #   0.7, 0 -> 0.7, no,  bin 3
    #   0.3, 0 -> 0.7, yes, bin 3
    #   0.5, 1 -> 0.5 (argmax picks class 0 on a tie), no, bin 2
    p1 = np.array([0.9, 0.7, 0.3, 0.5])
    probs = np.stack([1 - p1, p1])
    gt = np.array([1, 0, 0, 1])
    bins = stats.reliability_bins(probs, gt, n_bins=5)
    np.testing.assert_array_equal(bins["count"], [0, 0, 1, 2, 1])
    np.testing.assert_allclose(bins["confidence_sum"], [0, 0, 0.5, 1.4, 0.9])
    np.testing.assert_array_equal(bins["correct_sum"], [0, 0, 0, 1, 1])
    # ECE = 1/4 * (|0 - 0.5| + |1 - 1.4| + |1 - 0.9|) = 1/4 * 1.0
    assert stats.expected_calibration_error(probs, gt, n_bins=5) == pytest.approx(0.25)


def test_ece_perfectly_calibrated_and_one_hot():
    gt = np.array([[0, 1], [2, 1]])
    one_hot = np.eye(3)[gt].transpose(2, 0, 1)  # (C, Y, X), all correct with confidence 1
    assert stats.expected_calibration_error(one_hot, gt) == 0.0
    wrong = np.eye(3)[(gt + 1) % 3].transpose(2, 0, 1)  # all wrong with confidence 1
    assert stats.expected_calibration_error(wrong, gt) == pytest.approx(1.0)


def test_bins_add_up_over_volumes():
    p = np.array([[0.2, 0.6], [0.8, 0.4]])
    gt = np.array([1, 1])
    one = stats.reliability_bins(p, gt, n_bins=4)
    both = stats.add_bins(one, one)
    np.testing.assert_array_equal(both["count"], 2 * one["count"])
    assert stats.ece_from_bins(both) == pytest.approx(stats.ece_from_bins(one))


def test_calibration_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="spatial"):
        stats.reliability_bins(np.ones((2, 3, 3)) / 2, np.zeros((3, 4)))


def test_predictive_entropy():
    probs = np.array([[1.0, 0.5, 0.25], [0.0, 0.5, 0.25], [0.0, 0.0, 0.25], [0.0, 0.0, 0.25]])
    np.testing.assert_allclose(stats.predictive_entropy(probs), [0.0, math.log(2), math.log(4)], atol=1e-9)


def test_cluster_bootstrap_with_singleton_clusters_is_the_paired_bootstrap():
    diff = np.array([0.3, -0.1, 0.8, 0.2, 0.5, -0.4])
    plain = stats.paired_bootstrap_ci(np.zeros(6), diff, n_boot=2000, seed=4)
    clustered = stats.cluster_bootstrap_ci(diff, np.arange(6), n_boot=2000, seed=4)
    assert (clustered.mean, clustered.low, clustered.high) == pytest.approx((plain.mean, plain.low, plain.high))


def test_cluster_bootstrap_resamples_whole_patients():
    # patient 1: one volume of 0; patient 2: three volumes of 4. A resample of two patients has mean 0 (1, 1),
    # 3 (1, 2: 12 / 4 volumes) or 4 (2, 2); 0 and 4 each come with probability 1/4, so they are the 2.5 % and
    # 97.5 % percentiles. Resampling volumes instead could give 1 (one 4 among four volumes), never seen here.
    ci = stats.cluster_bootstrap_ci([0.0, 4.0, 4.0, 4.0], [1, 2, 2, 2], n_boot=4000, seed=0)
    assert ci.mean == pytest.approx(3.0) and (ci.low, ci.high) == (0.0, 4.0)


def test_cluster_bootstrap_resamples_within_strata():
    # stratum 0 scores 1, stratum 1 scores 3: drawn within strata every resample has mean 2
    values, patients, folds = [1.0, 1.0, 3.0, 3.0], [1, 2, 3, 4], [0, 0, 1, 1]
    ci = stats.cluster_bootstrap_ci(values, patients, folds, n_boot=1000, seed=0)
    assert (ci.low, ci.high) == pytest.approx((2.0, 2.0))
    assert stats.cluster_bootstrap_ci(values, patients, n_boot=1000, seed=0).low == pytest.approx(1.0)


@pytest.mark.parametrize(
    "values, clusters, match",
    [([1.0, 2.0], [1], "one non-zero length"), ([], [], "one non-zero length"), ([1.0, np.nan], [1, 2], "NaN")],
)
def test_cluster_bootstrap_rejects_bad_input(values, clusters, match):
    with pytest.raises(ValueError, match=match):
        stats.cluster_bootstrap_ci(values, clusters)
