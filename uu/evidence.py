"""The paper's claims tested on ablation runs: paired differences per volume, intervals, verdicts in words.

Runs are cross-validated (RUNS/<config>/fold<k>: each volume is evaluated once, by the model that did not train
on it) or repeated seeds on one split (RUNS/<config>/seed<k>: a volume's scores are averaged over the seeds).
Differences are paired volume by volume; the 95 % intervals resample patients (ED and ES together) within
folds (uu.stats.cluster_bootstrap_ci). Dice in percent, MSE (Eq. 10) x100, as the paper reports them."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import yaml

from uu.data import CLASSES, GROUPS
from uu.runs import read_log
from uu.stats import cluster_bootstrap_ci
from uu.tables import PAPER_TABLE_I, PAPER_TABLE_II, read_per_case

SCORES = [f"dice_{c}" for c in CLASSES] + ["dice_avg", "mse"]


TABLE_I_ROWS = [
    ("umamba_ce", "U-Mamba + CE"),
    ("umamba_ua", "U-Mamba + UA loss"),
    ("umamba_ua_sam", "U-Mamba + UA + SAM (UU-Mamba)"),
]
TABLE_II_ROWS = [
    ("unet_dice_ce", "nnU-Net (run by nnFormer authors)"),
    ("umamba_dice_ce", "U-Mamba"),
    ("umamba_ua_sam", "UU-Mamba"),
]


def _claim(claim: str, baseline: str, method: str, table: pd.DataFrame, rows) -> tuple:
    """(claim, baseline, method, the paper's mean Dice % of the baseline and of the method in `table`)."""
    paper = dict(rows)
    dice = [float(table.loc[table["method"] == paper[c], "avg Dice (%)"].iloc[0]) for c in (baseline, method)]
    return (claim, baseline, method, *dice)


CLAIMS = [
    _claim("uncertainty-aware loss over CE", "umamba_ce", "umamba_ua", PAPER_TABLE_I, TABLE_I_ROWS),
    _claim("SAM over the UA loss alone", "umamba_ua", "umamba_ua_sam", PAPER_TABLE_I, TABLE_I_ROWS),
    _claim("UU-Mamba over U-Mamba", "umamba_dice_ce", "umamba_ua_sam", PAPER_TABLE_II, TABLE_II_ROWS),
    _claim("UU-Mamba over nnU-Net", "unet_dice_ce", "umamba_ua_sam", PAPER_TABLE_II, TABLE_II_ROWS),
]


def run_fold(run_dir) -> int:
    """k of RUNS/<config>/fold<k>, else the fold in RUN/profile.yaml when its split is kfold, else 0."""
    name = Path(run_dir).name
    if name.startswith("fold") and name[4:].isdigit():
        return int(name[4:])
    profile = Path(run_dir) / "profile.yaml"
    settings = (yaml.safe_load(profile.read_text()) or {}) if profile.is_file() else {}
    return int(settings.get("fold", 0)) if settings.get("split") == "kfold" else 0


def pooled_scores(runs: Mapping[str, Sequence]) -> pd.DataFrame:
    """One row per (config, patient, phase) with fold, group and SCORES (x100), averaged over a config's runs
    that scored the same volume (seeds); runs: {config: [run folders]} (uu.ablation.collect_runs)."""
    frames = []
    for config, run_dirs in runs.items():
        for run in run_dirs:
            df = read_per_case(run)
            df["config"], df["fold"] = config, run_fold(run)
            if "group" not in df:
                df["group"] = None
            frames.append(df[["config", "fold", "patient", "phase", "group"] + SCORES])
    columns = ["config", "fold", "patient", "phase", "group"] + SCORES
    if not frames:  # a campaign not begun: every claim reads "not measured yet"
        return pd.DataFrame(columns=columns).astype({c: float for c in SCORES})
    scores = pd.concat(frames, ignore_index=True)
    scores[SCORES] *= 100.0
    keys = ["config", "patient", "phase"]
    return scores.groupby(keys, as_index=False).agg(
        {"fold": "first", "group": "first", **dict.fromkeys(SCORES, "mean")}
    )


def _per_volume_difference(scores: pd.DataFrame, baseline: str, method: str, metric: str) -> pd.DataFrame:
    """method - baseline per volume scored by both: columns diff, fold; index (patient, phase)."""
    a, b = (scores[scores["config"] == c].set_index(["patient", "phase"]) for c in (baseline, method))
    both = a[["fold", metric]].join(b[[metric]], rsuffix="_method", how="inner")
    return pd.DataFrame({"diff": both[f"{metric}_method"] - both[metric], "fold": both["fold"]})


def paired_difference(
    scores: pd.DataFrame,
    baseline: str,
    method: str,
    metric: str = "dice_avg",
    n_boot: int = 10_000,
    seed: int = 0,
    where: pd.Series | None = None,
) -> dict:
    """method - baseline over the volumes both scored (optionally those `where` selects): the mean, its 95 %
    interval (patients resampled within folds), the spread of the fold means and the counts."""
    both = _per_volume_difference(scores, baseline, method, metric)
    if where is not None:
        both = both[where.reindex(both.index).fillna(False).to_numpy(bool)]
    if both.empty:
        keys = ("delta", "ci_low", "ci_high", "n_patients", "n_volumes", "n_folds", "fold_mean", "fold_std")
        return {k: 0 if k.startswith("n_") else math.nan for k in keys}
    diff = both["diff"]
    patients = both.index.get_level_values("patient").to_numpy()
    ci = cluster_bootstrap_ci(diff.to_numpy(), patients, both["fold"].to_numpy(), n_boot=n_boot, seed=seed)
    per_fold = diff.groupby(both["fold"].to_numpy()).mean()
    return {
        "delta": ci.mean,
        "ci_low": ci.low,
        "ci_high": ci.high,
        "n_patients": len(set(patients)),
        "n_volumes": len(diff),
        "n_folds": len(per_fold),
        "fold_mean": float(per_fold.mean()),
        "fold_std": float(per_fold.std(ddof=1)) if len(per_fold) > 1 else math.nan,
    }


# Points: an interval's end closer to 0 than this prints as ±0.00, and the bootstrap's resampling alone moves it
# by about as much (std 0.003 over 20 seeds on the campaign's 128 volumes), so it counts as touching 0.
EDGE = 0.005


def _side(low: float, high: float) -> int:
    """+1 when the interval [low, high] lies above 0, -1 below, 0 when it includes 0 or an end touches it."""
    return 1 if low >= EDGE else -1 if high <= -EDGE else 0


def verdict(delta: float, low: float, high: float, paper: float, method: str = "the method") -> str:
    """The claim in plain words: holds (interval above 0), reversed (below 0) or not resolved (it includes 0 or an
    end lies within EDGE of it: "at the edge"), and where the paper's difference lies against our interval."""
    if math.isnan(delta):
        return "not measured yet: no volume scored by both configurations"
    where = (
        "the paper's {p:+.3g} lies inside it"
        if low <= paper <= high
        else "the paper's {p:+.3g} lies above it"
        if paper > high
        else "the paper's {p:+.3g} lies below it"
    ).format(p=paper)
    interval = f"{delta:+.2f} points, 95 % interval [{low:+.2f}, {high:+.2f}]"
    side = _side(low, high)
    if side > 0:
        return f"holds: {method} is better by {interval}; {where}"
    if side < 0:
        return f"reversed: {method} is worse by {interval}; {where}"
    if low > 0 or high < 0:
        end = "lower" if low > 0 else "upper"
        return (
            f"not resolved at this scale, at the edge: {interval}, whose {end} end is 0 within the bootstrap's own "
            f"noise; {where}"
        )
    return f"not resolved at this scale: {interval}; {where}"


def claims_table(scores: pd.DataFrame, claims=CLAIMS, n_boot: int = 10_000, seed: int = 0) -> pd.DataFrame:
    """One row per claim: claim, baseline, method, paper (its difference in mean Dice points), delta, ci_low,
    ci_high, n_patients, n_volumes, n_folds, fold_mean, fold_std, verdict."""
    rows = []
    for claim, baseline, method, paper_a, paper_b in claims:
        d = paired_difference(scores, baseline, method, n_boot=n_boot, seed=seed)
        paper = round(paper_b - paper_a, 3)
        words = verdict(d["delta"], d["ci_low"], d["ci_high"], paper, method)
        rows.append({"claim": claim, "baseline": baseline, "method": method, "paper": paper, **d, "verdict": words})
    return pd.DataFrame(rows)


def claims_by_group(scores: pd.DataFrame, claims=CLAIMS, n_boot: int = 10_000, seed: int = 0) -> pd.DataFrame:
    """The claims' differences within each pathology group: claim, group, delta, ci_low, ci_high, n_patients."""
    rows = []
    for claim, baseline, method, *_ in claims:
        for group in GROUPS:
            where = scores[scores["config"] == baseline].set_index(["patient", "phase"])["group"] == group
            d = paired_difference(scores, baseline, method, n_boot=n_boot, seed=seed, where=where)
            keys = ("delta", "ci_low", "ci_high", "n_patients", "n_volumes")
            rows.append({"claim": claim, "group": group, **{k: d[k] for k in keys}})
    return pd.DataFrame(rows)


def group_table(scores: pd.DataFrame) -> pd.DataFrame:
    """Mean Dice (%) per configuration (rows) and pathology group (columns), with the number of patients."""
    table = scores.pivot_table(index="config", columns="group", values="dice_avg", aggfunc="mean")
    table = table.reindex(columns=[g for g in GROUPS if g in table.columns])
    counts = scores.groupby("group")["patient"].nunique()
    table.columns = [f"{g} (n = {counts[g]})" for g in table.columns]
    return table.reset_index()


def fold_table(scores: pd.DataFrame, metric: str = "dice_avg") -> pd.DataFrame:
    """Per configuration: the mean of `metric` on each fold, and the mean ± std of the fold means."""
    table = scores.pivot_table(index="config", columns="fold", values=metric, aggfunc="mean")
    table.columns = [f"fold {k}" for k in table.columns]
    folds = table.to_numpy()
    table["mean of folds"] = np.nanmean(folds, axis=1)
    table["std of folds"] = np.nanstd(folds, axis=1, ddof=1) if folds.shape[1] > 1 else math.nan
    return table.reset_index()


def beside_paper(
    scores: pd.DataFrame, rows: Sequence[tuple[str, str]], paper: pd.DataFrame, metrics: Sequence[str] = SCORES
) -> pd.DataFrame:
    """A paper table with ours interleaved: rows [(config, paper method)]; ours pooled over the volumes that every
    row with scores has scored (all of them once a campaign is complete: rows of a partial one stay comparable),
    with the std of the fold means after ±."""
    headers = {**{f"dice_{c}": f"{c} Dice (%)" for c in CLASSES}, "dice_avg": "avg Dice (%)", "mse": "MSE x100"}
    volumes = [
        set(zip(g["patient"], g["phase"])) for _, g in scores[scores["config"].isin(dict(rows))].groupby("config")
    ]
    common = set.intersection(*volumes) if volumes else set()
    scores = scores[[v in common for v in zip(scores["patient"], scores["phase"])]]
    lines = []
    for config, method in rows:
        ours = scores[scores["config"] == config]
        if len(ours):
            folds = ours.groupby("fold")[list(metrics)].mean()
            spread = folds.std(ddof=1) if len(folds) > 1 else pd.Series(math.nan, index=list(metrics))
            digits = {m: 4 if m == "mse" else 2 for m in metrics}
            lines.append(
                {
                    "method": method,
                    "source": f"ours ({config}, {len(ours)} volumes, {len(folds)} fold{'s' * (len(folds) > 1)})",
                    **{
                        headers[m]: f"{ours[m].mean():.{digits[m]}f}"
                        + ("" if math.isnan(spread[m]) else f" ± {spread[m]:.{digits[m]}f}")
                        for m in metrics
                    },
                }
            )
        p = paper[paper["method"] == method].iloc[0]
        lines.append({"method": method, "source": "paper", **{headers[m]: _fmt(p.get(headers[m])) for m in metrics}})
    return pd.DataFrame(lines)


def _fmt(value) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{float(value):g}"


def _case_name(patient, phase: str) -> str:
    """ "patient001_ED": the name of a volume, as the data layer and the overlays call it."""
    return f"patient{int(patient):03d}_{phase}"


def best_median_worst(scores: pd.DataFrame, config: str, metric: str = "dice_avg") -> list[str]:
    """The case names ("patient001_ED") of the best, the median and the worst volume of a configuration."""
    ranked = scores[scores["config"] == config].sort_values([metric, "patient", "phase"], ascending=[False, True, True])
    if ranked.empty:
        return []
    picks = ranked.iloc[[0, len(ranked) // 2, len(ranked) - 1]]
    return [_case_name(p, ph) for p, ph in zip(picks["patient"], picks["phase"])]


def still_rising(log: Sequence[dict], tail: float = 0.4, threshold: float = 0.25) -> tuple[float, bool]:
    """(slope, rising) of a run's validation curve: the least-squares slope of validation mean Dice (points per
    1,000 iterations) over the last `tail` of its iterations; rising when the slope exceeds `threshold` (half a
    Dice point more for 2,000 more iterations). NaN, False with fewer than 3 validations in the tail."""
    points = [(line["step"], 100.0 * line["val"]["mean"]) for line in log if line.get("val")]
    if not points:
        return math.nan, False
    last = points[-1][0]
    steps, dice = (np.array(v, float) for v in zip(*[p for p in points if p[0] >= (1 - tail) * last]))
    if len(steps) < 3:
        return math.nan, False
    slope = 1000.0 * float(np.polyfit(steps, dice, 1)[0])
    return slope, slope > threshold


def length_table(runs: Mapping[str, Sequence], tail: float = 0.4, threshold: float = 0.25) -> pd.DataFrame:
    """Per configuration: the slope of the validation curve's tail on each run and whether the row is still
    rising at its end (the mean slope over its runs above `threshold`: see still_rising)."""
    rows = []
    for config, run_dirs in runs.items():
        slopes = {Path(r).name: still_rising(read_log(r), tail, threshold)[0] for r in run_dirs}
        mean = float(np.nanmean(list(slopes.values()))) if any(not math.isnan(s) for s in slopes.values()) else math.nan
        rising = bool(mean > threshold) if not math.isnan(mean) else False
        row = {"config": config, **{f"slope {k}": v for k, v in slopes.items()}}
        rows.append({**row, "mean slope (Dice points / 1k iterations)": mean, "still rising": rising})
    return pd.DataFrame(rows)


def length_check(
    scores: pd.DataFrame,
    long_scores: pd.DataFrame,
    claims=CLAIMS,
    metric: str = "dice_avg",
    n_boot: int = 10_000,
    seed: int = 0,
) -> pd.DataFrame:
    """Each claim whose two configurations were also trained longer (long_scores, e.g. fold 0 at 10,000
    iterations), on the volumes both lengths scored: the difference at the campaign's length (delta_short), at
    the longer one (delta_long), and the change with training (delta_long - delta_short, paired per volume), each
    with its 95 % interval (patients resampled within folds), and the change in words ("holds still" when the
    change's interval includes 0 or an end touches it, as in `verdict`)."""
    rows = []
    for claim, baseline, method, *_ in claims:
        if not {baseline, method} <= set(long_scores["config"]):
            continue
        short = _per_volume_difference(scores, baseline, method, metric)
        long = _per_volume_difference(long_scores, baseline, method, metric)
        both = short.join(long[["diff"]], rsuffix="_long", how="inner")
        if both.empty:
            continue
        patients = both.index.get_level_values("patient").to_numpy()
        row = {"claim": claim, "baseline": baseline, "method": method, "n_volumes": len(both)}
        for name, values in (
            ("delta_short", both["diff"]),
            ("delta_long", both["diff_long"]),
            ("change", both["diff_long"] - both["diff"]),
        ):
            ci = cluster_bootstrap_ci(values.to_numpy(), patients, both["fold"].to_numpy(), n_boot=n_boot, seed=seed)
            row.update({name: ci.mean, f"{name}_low": ci.low, f"{name}_high": ci.high})
        low, high = row["change_low"], row["change_high"]
        side = _side(low, high)
        trend = f"moves toward {method}" if side > 0 else f"moves away from {method}" if side < 0 else "holds still"
        row["with training"] = (
            f"with longer training the difference {trend}: {row['delta_short']:+.2f} -> {row['delta_long']:+.2f} "
            f"points (change {row['change']:+.2f}, 95 % interval [{low:+.2f}, {high:+.2f}])"
        )
        rows.append(row)
    return pd.DataFrame(rows)


def volume_scores(scores: pd.DataFrame, case_names: Sequence[str], metric: str = "dice_avg") -> pd.DataFrame:
    """`metric` of each configuration (columns) on the named volumes (rows, "patient001_ED"), e.g. the best, median
    and worst of best_median_worst."""
    names = [_case_name(p, ph) for p, ph in zip(scores["patient"], scores["phase"])]
    table = scores.assign(volume=names).pivot_table(index="volume", columns="config", values=metric)
    return table.reindex(list(case_names)).rename_axis(columns=None).reset_index()
