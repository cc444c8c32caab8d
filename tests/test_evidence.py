"""The claims' paired differences, intervals and verdicts from hand-made cross-validation runs (no training)."""

import json
import math

import numpy as np
import pandas as pd
import pytest

from uu import ablation, evidence
from uu.runs import read_log

GROUP = {1: "DCM", 2: "HCM", 3: "DCM", 4: "NOR"}
FOLD = {1: 0, 2: 0, 3: 1, 4: 1}


def fake_cv_run(runs_dir, config, fold, dice, mse=0.01, vals=()):
    """RUNS/<config>/fold<k> scoring its fold's patients (ED and ES), every class at `dice`."""
    run = ablation.run_dir_for(runs_dir, config, f"fold{fold}")
    (run / "eval").mkdir(parents=True)
    patients = [p for p, f in FOLD.items() if f == fold]
    rows = [
        {"patient": p, "phase": ph, "group": GROUP[p], "dice_RV": dice, "dice_Myo": dice, "dice_LV": dice, "mse": mse}
        for p in patients
        for ph in ("ED", "ES")
    ]
    pd.DataFrame(rows).to_csv(run / "eval" / "per_case.csv", index=False)
    (run / "eval" / "summary.json").write_text("{}")
    lines = [{"epoch": i + 1, "step": 1000 * (i + 1), "val": {"mean": v}} for i, v in enumerate(vals)]
    (run / "log.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))


@pytest.fixture
def scores(tmp_path):
    # umamba_ce scores 80 everywhere; umamba_ua 81 on fold 0 and 83 on fold 1: +1 and +3, pooled +2
    for fold in (0, 1):
        fake_cv_run(tmp_path, "umamba_ce", fold, 0.80, vals=[0.80, 0.82, 0.84, 0.86, 0.88])
        fake_cv_run(tmp_path, "umamba_ua", fold, 0.81 if fold == 0 else 0.83, mse=0.02, vals=[0.88] * 5)
    runs = ablation.collect_runs(tmp_path, kind="fold")
    return runs, evidence.pooled_scores(runs)


def test_pooled_scores_one_row_per_volume_in_percent(scores):
    _, table = scores
    assert len(table) == 16 and set(table["config"]) == {"umamba_ce", "umamba_ua"}
    ua = table[table["config"] == "umamba_ua"].set_index(["patient", "phase"])
    assert ua.loc[(3, "ES"), "dice_avg"] == pytest.approx(83.0) and ua.loc[(3, "ES"), "fold"] == 1
    assert ua.loc[(1, "ED"), "mse"] == pytest.approx(2.0) and ua.loc[(1, "ED"), "group"] == "DCM"


def test_claims_table_delta_interval_spread_and_verdict(scores):
    claims = evidence.claims_table(scores[1], n_boot=500).set_index("method")
    ua = claims.loc["umamba_ua"]
    assert ua["paper"] == pytest.approx(92.602 - 92.263, abs=1e-3)
    assert ua["delta"] == pytest.approx(2.0)
    # within each fold every patient gains the same: every resample has mean +2 exactly
    assert (ua["ci_low"], ua["ci_high"]) == pytest.approx((2.0, 2.0))
    assert (ua["n_patients"], ua["n_volumes"], ua["n_folds"]) == (4, 8, 2)
    assert ua["fold_mean"] == pytest.approx(2.0) and ua["fold_std"] == pytest.approx(math.sqrt(2))
    assert ua["verdict"] == (
        "holds: umamba_ua is better by +2.00 points, 95 % interval [+2.00, +2.00]; the paper's +0.339 lies below it"
    )
    assert claims.loc["umamba_ua_sam", "verdict"].iloc[0].startswith("not measured yet")


@pytest.mark.parametrize(
    "delta, low, high, start, where",
    [
        (0.1, -0.3, 0.5, "not resolved at this scale: +0.10 points", "the paper's +0.34 lies inside it"),
        (-0.1, -0.3, 0.2, "not resolved at this scale", "the paper's +0.34 lies above it"),
        (-1.0, -1.5, -0.5, "reversed: m is worse by -1.00", "above it"),
        (0.5, 0.2, 0.9, "holds: m is better by +0.50", "inside it"),
        (0.5, 0.005, 0.9, "holds: m is better by +0.50", "inside it"),
        # an end within EDGE (0.005) of 0 prints as ±0.00 and moves across 0 with the bootstrap's seed
        (
            0.32,
            0.0002,
            0.61,
            "not resolved at this scale, at the edge: +0.32 points, 95 % interval [+0.00, +0.61], whose lower end is 0",
            "inside it",
        ),
        (-0.3, -0.6, -0.004, "not resolved at this scale, at the edge: -0.30", "above it"),
        (0.2, -0.004, 0.5, "not resolved at this scale: +0.20 points", "inside it"),
    ],
)
def test_verdict_words(delta, low, high, start, where):
    text = evidence.verdict(delta, low, high, 0.34, "m")
    assert text.startswith(start) and text.endswith(where)


def test_group_fold_and_paper_tables(scores):
    _, table = scores
    groups = evidence.group_table(table).set_index("config")
    assert list(groups.columns) == ["DCM (n = 2)", "HCM (n = 1)", "NOR (n = 1)"]
    assert groups.loc["umamba_ua", "DCM (n = 2)"] == pytest.approx(82.0)  # 81, 81, 83, 83
    folds = evidence.fold_table(table).set_index("config")
    assert folds.loc["umamba_ua", "fold 1"] == pytest.approx(83.0)
    assert folds.loc["umamba_ua", "std of folds"] == pytest.approx(math.sqrt(2))
    by_group = evidence.claims_by_group(table, n_boot=200).set_index(["claim", "group"])
    assert by_group.loc[("uncertainty-aware loss over CE", "NOR"), "delta"] == pytest.approx(3.0)
    assert by_group.loc[("uncertainty-aware loss over CE", "MINF"), "n_volumes"] == 0
    table_i = evidence.beside_paper(table, evidence.TABLE_I_ROWS[:2], tables_paper_i())
    assert table_i.loc[0, "avg Dice (%)"] == "80.00 ± 0.00" and table_i.loc[1, "avg Dice (%)"] == "92.263"
    assert table_i.loc[2, "MSE x100"] == "2.0000 ± 0.0000" and table_i.loc[3, "MSE x100"] == "0.364"


def tables_paper_i():
    from uu.tables import PAPER_TABLE_I

    return PAPER_TABLE_I


def test_still_rising_from_the_validation_tail(scores):
    runs, _ = scores
    # validations 84, 86, 88 over the last 40 % (steps 3k-5k): 2 points per 1,000 iterations
    assert evidence.still_rising(read_log(runs["umamba_ce"][0])) == pytest.approx((2.0, True))
    assert evidence.still_rising([{"step": 1000 * i, "val": {"mean": 0.88}} for i in range(1, 6)]) == pytest.approx(
        (0.0, False)
    )
    assert math.isnan(evidence.still_rising([{"step": 10, "val": None}])[0])
    length = evidence.length_table(runs).set_index("config")
    assert bool(length.loc["umamba_ce", "still rising"]) and not bool(length.loc["umamba_ua", "still rising"])


def test_best_median_worst_volume_names(scores):
    # umamba_ua: fold 1's patients 3 and 4 score 83, fold 0's 81; stable sort keeps (patient, phase) order
    assert evidence.best_median_worst(scores[1], "umamba_ua") == ["patient003_ED", "patient001_ED", "patient002_ES"]
    assert evidence.best_median_worst(scores[1], "unet_dice_ce") == []
    table = evidence.volume_scores(scores[1], ["patient003_ED", "patient001_ED"])
    assert list(table.columns) == ["volume", "umamba_ce", "umamba_ua"]
    assert list(table["volume"]) == ["patient003_ED", "patient001_ED"]
    assert table[["umamba_ce", "umamba_ua"]].to_numpy() == pytest.approx(np.array([[80.0, 83.0], [80.0, 81.0]]))


def test_length_check_pairs_the_two_lengths_on_the_longer_runs_volumes(scores, tmp_path):
    # fold 0 again, longer: umamba_ce 80 -> 82, umamba_ua 81 -> 84: the difference +1 -> +2 on fold 0's 4 volumes
    long_dir = tmp_path / "length10k"
    fake_cv_run(long_dir, "umamba_ce", 0, 0.82)
    fake_cv_run(long_dir, "umamba_ua", 0, 0.84)
    long_scores = evidence.pooled_scores(ablation.collect_runs(long_dir, kind="fold"))
    check = evidence.length_check(scores[1], long_scores, n_boot=200)
    assert list(check["claim"]) == ["uncertainty-aware loss over CE"]  # the SAM claims need umamba_ua_sam
    row = check.iloc[0]
    assert row["n_volumes"] == 4
    assert (row["delta_short"], row["delta_long"], row["change"]) == pytest.approx((1.0, 2.0, 1.0))
    assert (row["change_low"], row["change_high"]) == pytest.approx((1.0, 1.0))
    assert row["with training"] == (
        "with longer training the difference moves toward umamba_ua: +1.00 -> +2.00 points (change +1.00, "
        "95 % interval [+1.00, +1.00])"
    )
    same = evidence.length_check(scores[1], scores[1][scores[1]["fold"] == 0], n_boot=200).iloc[0]
    assert same["change"] == pytest.approx(0.0) and "holds still" in same["with training"]
    assert evidence.length_check(scores[1], long_scores.iloc[0:0]).empty


def test_beside_paper_pools_the_volumes_every_row_scored(scores):
    _, table = scores
    partial = table[(table["config"] == "umamba_ce") | (table["fold"] == 0)]  # umamba_ua on fold 0 only
    rows = evidence.beside_paper(partial, evidence.TABLE_I_ROWS, tables_paper_i()).set_index("source")
    assert rows.loc["ours (umamba_ce, 4 volumes, 1 fold)", "avg Dice (%)"] == "80.00"  # fold 1 left out: 4, not 8
    assert rows.loc["ours (umamba_ua, 4 volumes, 1 fold)", "avg Dice (%)"] == "81.00"
