"""The committed evidence campaign (results/evidence/acdc2d_cv5) is consistent: its claims and tables are what its
per-case files say, and its runs differ only in what their configuration names."""

from pathlib import Path

import pandas as pd
import pytest
import yaml

from uu import ablation, evidence
from uu.tables import PAPER_TABLE_I, PAPER_TABLE_II

CAMPAIGN = Path(__file__).resolve().parents[1] / "results" / "evidence" / "acdc2d_cv5"
RUNS = ablation.collect_runs(CAMPAIGN, ablation.DEFAULT_CONFIGS, kind="fold")
NAMED = {"arch", "loss", "optimizer", "fold", "seed"}  # what a row and its fold may change


@pytest.fixture(scope="module")
def scores():
    return evidence.pooled_scores(RUNS)


def test_claims_csv_is_what_the_per_case_files_say(scores):
    committed = pd.read_csv(CAMPAIGN / "claims.csv")
    recomputed = evidence.claims_table(scores, n_boot=5000)  # notebook 04's n_boot
    assert list(committed["claim"]) == list(recomputed["claim"])
    for column in ("delta", "ci_low", "ci_high", "n_patients", "n_volumes"):
        assert committed[column].to_numpy() == pytest.approx(recomputed[column].to_numpy(), nan_ok=True), column
    assert list(committed["verdict"]) == list(recomputed["verdict"])


@pytest.mark.parametrize(
    "name, rows, paper", [("table_I", "TABLE_I_ROWS", PAPER_TABLE_I), ("table_II", "TABLE_II_ROWS", PAPER_TABLE_II)]
)
def test_paper_tables_are_what_the_per_case_files_say(scores, name, rows, paper):
    committed = pd.read_csv(CAMPAIGN / f"{name}.csv", dtype=str).fillna("")
    metrics = evidence.SCORES if name == "table_I" else ["dice_avg", "dice_RV", "dice_Myo", "dice_LV"]
    recomputed = evidence.beside_paper(scores, getattr(evidence, rows), paper, metrics=metrics).fillna("")
    ours = committed["source"].str.startswith("ours")
    assert committed[ours].to_numpy().tolist() == recomputed[ours.to_numpy()].astype(str).to_numpy().tolist()


def test_runs_differ_only_in_what_their_configuration_names():
    profiles = {run: yaml.safe_load((run / "profile.yaml").read_text()) for runs in RUNS.values() for run in runs}
    assert profiles, "no committed run"
    first = next(iter(profiles.values()))
    for run, profile in profiles.items():
        assert profile["epochs"] * profile["iters_per_epoch"] == 5000 and profile["batch_size"] == 16, run
        assert {k for k in first.keys() | profile.keys() if first.get(k) != profile.get(k)} <= NAMED, run
        config = ablation.get_config(run.parent.name)
        assert {k: profile[k] for k in config.overrides} == config.overrides, run
        assert profile["fold"] == profile["seed"] == int(run.name[4:]), run
