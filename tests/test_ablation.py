"""Ablation runs, tables and figure material from hand-made run folders (no training)."""

import json
import math
import sys
import types

import pandas as pd
import pytest

from uu import ablation, figures, tables
from uu.runs import read_log


def fake_run(runs_dir, config, seed, rv, myo, lv, mse, patients=(1, 2)):
    run = ablation.run_dir_for(runs_dir, config, seed)
    (run / "eval").mkdir(parents=True)
    pd.DataFrame(
        {
            "patient": list(patients),
            "phase": ["ED"] * len(patients),
            "dice_RV": rv,
            "dice_Myo": myo,
            "dice_LV": lv,
            "mse": mse,
        }
    ).to_csv(run / "eval" / "per_case.csv", index=False)
    (run / "eval" / "summary.json").write_text(json.dumps({"dice_mean": 0.0}))
    (run / "log.jsonl").write_text(
        json.dumps({"epoch": 0, "loss": 1.5}) + "\n" + json.dumps({"epoch": 1, "loss": 1.0}) + "\n"
    )
    return run


@pytest.fixture
def runs_dir(tmp_path):
    # umamba_ce seed 0: RV 85, Myo 75, LV 95 -> avg 85, MSE x100 2.0
    fake_run(tmp_path, "umamba_ce", 0, [0.8, 0.9], [0.7, 0.8], [0.9, 1.0], [0.01, 0.03])
    # umamba_ce seed 1: RV 90, Myo 80, LV 100 -> avg 90, MSE x100 2.0
    fake_run(tmp_path, "umamba_ce", 1, [0.9, 0.9], [0.8, 0.8], [1.0, 1.0], [0.02, 0.02])
    # umamba_ua seed 0: every Dice of umamba_ce seed 0 plus 0.01, MSE minus 0.005
    fake_run(tmp_path, "umamba_ua", 0, [0.81, 0.91], [0.71, 0.81], [0.91, 1.01], [0.005, 0.025])
    (tmp_path / "umamba_ua_sam" / "seed0").mkdir(parents=True)  # unfinished: no eval/summary.json
    return tmp_path


def test_collect_runs_finds_finished_runs_only(runs_dir):
    found = ablation.collect_runs(runs_dir)
    assert list(found) == ["umamba_ce", "umamba_ua"]
    assert [p.name for p in found["umamba_ce"]] == ["seed0", "seed1"]


def test_ablation_table_mean_and_std_over_seeds(runs_dir):
    table = tables.ablation_table(ablation.collect_runs(runs_dir), ablation.CONFIGS).set_index("config")
    ce = table.loc["umamba_ce"]
    assert ce["row"] == 3 and ce["n_runs"] == 2 and ce["kind"] == "seeds" and ce["n_volumes"] == 2
    assert ce["dice_RV_mean"] == pytest.approx(87.5)
    assert ce["dice_RV_std"] == pytest.approx(math.sqrt(2 * 2.5**2))  # sample std of 85, 90
    assert ce["dice_avg_mean"] == pytest.approx(87.5)
    assert ce["mse_mean"] == pytest.approx(2.0) and ce["mse_std"] == pytest.approx(0.0)
    ua = table.loc["umamba_ua"]
    assert ua["dice_avg_mean"] == pytest.approx(86.0) and math.isnan(ua["dice_avg_std"])

    text = tables.format_table(table.reset_index())
    assert list(text.columns) == [
        "row",
        "configuration",
        "RV Dice (%)",
        "Myo Dice (%)",
        "LV Dice (%)",
        "avg Dice (%)",
        "MSE x100",
        "runs",
        "volumes",
    ]
    assert text.loc[0, "avg Dice (%)"] == "87.50 ± 3.54" and text.loc[1, "avg Dice (%)"] == "86.00"
    assert text["runs"].tolist() == ["2 seeds", "1 seed"]
    assert text.loc[0, "MSE x100"] == "2.0000 ± 0.0000"


def test_cross_validation_runs_are_named_by_fold_and_set_split_fold_and_seed(tmp_path):
    assert ablation.run_name(3) == "seed3" and ablation.run_name("fold2") == "fold2"
    assert ablation.run_settings("fold2") == {"split": "kfold", "fold": 2, "seed": 2}
    assert ablation.run_settings(1) == {"seed": 1}
    with pytest.raises(ValueError, match="fold<k>"):
        ablation.run_name("trial1")
    fake_run(tmp_path, "umamba_ce", "fold1", [0.8], [0.8], [0.8], [0.01], patients=(3,))
    fake_run(tmp_path, "umamba_ce", "fold0", [0.9], [0.9], [0.9], [0.01], patients=(1,))
    found = ablation.collect_runs(tmp_path, kind="fold")
    assert [p.name for p in found["umamba_ce"]] == ["fold0", "fold1"] and ablation.collect_runs(tmp_path) == {}
    table = tables.ablation_table(found, ablation.CONFIGS)  # folds: the volumes of every fold count
    assert table.loc[0, "n_runs"] == 2 and table.loc[0, "kind"] == "folds" and table.loc[0, "n_volumes"] == 2
    assert tables.format_table(table).loc[0, "runs"] == "2 folds"


def test_write_table_csv_and_markdown(tmp_path):
    df = pd.DataFrame({"a": [1.5, math.nan], "b": ["x|y", None]})
    csv, md = tables.write_table(df, tmp_path / "sub" / "t")
    assert pd.read_csv(csv).shape == (2, 2)
    assert md.read_text() == "| a | b |\n| --- | --- |\n| 1.5 | x\\|y |\n|  |  |\n"


def test_run_or_load_reads_finished_and_trains_missing(runs_dir, monkeypatch):
    calls = []

    def fake_train_run(profile, data_dir="", out_dir=None, overrides=None, resume=False):
        calls.append((profile, data_dir, out_dir, overrides, resume))
        return out_dir

    monkeypatch.setitem(sys.modules, "uu.train", types.SimpleNamespace(train_run=fake_train_run))
    assert ablation.run_or_load("umamba_ce", "smoke", 1, "", runs_dir) == runs_dir / "umamba_ce" / "seed1"
    assert calls == []
    out = ablation.run_or_load("umamba_ua_sam", "smoke", 0, "/data", runs_dir, overrides={"epochs": 1})
    assert out == runs_dir / "umamba_ua_sam" / "seed0"
    assert calls == [
        ("smoke", "/data", out, {"arch": "umamba_enc", "loss": "ua", "optimizer": "sam", "seed": 0, "epochs": 1}, False)
    ]


def test_unknown_configuration_is_an_error():
    with pytest.raises(ValueError, match="umamba_ua_sam"):
        ablation.get_config("umamba_sam_ua")


def test_figures_are_written_with_one_panel_per_method(tmp_path, runs_dir):
    import matplotlib

    matplotlib.use("Agg")
    import numpy as np

    from uu import stats, viz

    image, gt = np.random.default_rng(0).normal(size=(8, 8)), np.zeros((8, 8), int)
    gt[2:5, 2:5] = 3
    preds = {"a": [gt], "b": [np.zeros_like(gt)]}
    fig = viz.overlay_grid([image], [gt], preds, {"a": [0.001], "b": [0.02]}, path=tmp_path / "o.png")
    assert len(fig.axes) == 3 and fig.axes[2].get_title() == "b\nMSE 2.000%"
    fig = viz.error_map_grid([image], [gt], preds, path=tmp_path / "e.png")
    assert fig.axes[1].get_title() == "b\n9 wrong"
    probs = np.stack([gt == k for k in range(4)]).astype(float)
    viz.reliability_diagram({"a": stats.reliability_bins(probs, gt)}, path=tmp_path / "r.png")
    logs = {"umamba_ce": read_log(runs_dir / "umamba_ce" / "seed0")}
    viz.training_curves(logs, path=tmp_path / "c.png")
    viz.sigma_trajectories(logs, path=tmp_path / "s.png")
    viz.loss_line([0, 0.5, 1], {"a": [3, 2, 1]}, path=tmp_path / "l.png")
    grid = np.add.outer(np.linspace(-1, 1, 3) ** 2, np.linspace(-1, 1, 4) ** 2)
    fig = viz.landscape_2d({"a": ([-1, 0, 1], [-1, -0.3, 0.3, 1], grid)}, path=tmp_path / "s2.png")
    assert len(fig.axes) == 2
    viz.entropy_and_error([image], {"a": [stats.predictive_entropy(probs)]}, {"a": [gt > 0]}, path=tmp_path / "h.png")
    assert sorted(p.name for p in tmp_path.glob("*.png")) == [
        "c.png",
        "e.png",
        "h.png",
        "l.png",
        "o.png",
        "r.png",
        "s.png",
        "s2.png",
    ]
    matplotlib.pyplot.close("all")


def prediction_run(tmp_path, name, data_dir, cases, make_probs):
    """A run folder holding only what figure_material reads: profile.yaml and eval/pred."""
    import numpy as np

    run = tmp_path / name / "seed0"
    pred = run / "eval" / "pred"
    pred.mkdir(parents=True)
    (run / "profile.yaml").write_text(f"name: t\ndata_dir: {data_dir}\n")
    index = []
    for case in cases:
        np.savez_compressed(pred / f"{case.name}_probs.npz", probs=make_probs(case.label).astype(np.float16))
        index.append({"name": case.name, "probs": f"{case.name}_probs.npz"})
    (pred / "predictions.json").write_text(json.dumps({"cases": index}))
    return run


def test_figure_material_perfect_and_uniform_predictions(tmp_path):
    import numpy as np

    from uu.data import load_acdc, make_phantom

    data = make_phantom(tmp_path / "data", n_patients=1)
    cases = load_acdc(data)
    one_hot = lambda label: np.eye(4)[label].transpose(3, 0, 1, 2)
    uniform = lambda label: np.full((4, *label.shape), 0.25)
    runs = {
        "perfect": prediction_run(tmp_path, "perfect", data, cases, one_hot),
        "uniform": prediction_run(tmp_path, "uniform", data, cases, uniform),
    }
    m = figures.figure_material(runs, n_slices=2)

    assert m["titles"][0].startswith("patient001_ED z") and len(m["images"]) == 2
    z = int(m["titles"][0].split("z")[-1])
    np.testing.assert_array_equal(m["images"][0], cases[0].image[z])  # raw: the figure scales it
    np.testing.assert_array_equal(m["predictions"]["perfect"][0], cases[0].label[z])
    assert m["mses"]["perfect"] == [0.0, 0.0] and m["ece"]["perfect"] == 0.0
    assert not m["errors"]["perfect"][0].any() and np.abs(m["entropy"]["perfect"][0]).max() < 1e-6
    # uniform: MSE = ((1 - 1/4)^2 + 3 (1/4)^2) / 4 = 0.1875; entropy log 4; argmax is class 0, so
    # ECE = |accuracy - 0.25| with accuracy = the background fraction of all voxels
    assert m["mses"]["uniform"][0] == pytest.approx(0.1875)
    assert m["entropy"]["uniform"][0].max() == pytest.approx(math.log(4), rel=1e-3)
    background = sum(int((c.label == 0).sum()) for c in cases) / sum(c.label.size for c in cases)
    assert m["ece"]["uniform"] == pytest.approx(abs(background - 0.25))


@pytest.mark.parametrize("text, expected", [("1", [0]), ("3", [0, 1, 2]), ("1,2", [1, 2]), ("4,", [4]), ("0", [])])
def test_parse_seeds(text, expected):
    assert ablation.parse_seeds(text) == expected


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--configs", "nope"], "unknown ablation configuration 'nope'"),
        (["--seeds", "0"], "--seeds: nothing to run"),
        (["--set", "epoch=1"], "unknown key 'epoch'"),
    ],
)
def test_ablation_cli_rejects_bad_input_before_training(tmp_path, capsys, argv, message):
    from uu.__main__ import main

    assert main(["ablation", "--params", "smoke", "--runs", str(tmp_path / "runs")] + argv) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()  # nothing trained, no phantom made


def test_ablation_cli_reads_finished_runs_and_prints_the_table(runs_dir, capsys):
    from uu.__main__ import main

    assert (
        main(
            [
                "ablation",
                "--params",
                "smoke",
                "--runs",
                str(runs_dir),
                "--configs",
                "umamba_ce,umamba_ua",
                "--seeds",
                "0,",
                "--data",
                str(runs_dir),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "| 3 | U-Mamba Enc + CE + SGD (Table I: CE) | 85.00 | 75.00 | 95.00 | 85.00 |" in out  # seed 0 alone
    assert "| 4 | U-Mamba Enc + UA + SGD (Table I: UA) |" in out


def test_time_to_accuracy_plots_validation_dice_against_wall_seconds(tmp_path):
    from uu import viz

    log = [
        {"epoch": 1, "wall": 10.0, "val": None},
        {"epoch": 2, "wall": 21.5, "val": {"mean": 0.5}},
        {"epoch": 3, "wall": 30.0, "val": {"mean": 0.75}},
    ]
    fig = viz.time_to_accuracy({"a": log, "b": log[:2]}, path=tmp_path / "t.png")
    first, second = fig.axes[0].lines
    assert list(first.get_xdata()) == [21.5, 30.0] and list(first.get_ydata()) == [50.0, 75.0]
    assert list(second.get_xdata()) == [21.5] and (tmp_path / "t.png").is_file()


def test_prepare_makes_one_phantom_only_when_a_run_must_train(runs_dir, tmp_path, monkeypatch):
    made = []

    def fake_phantom(root, n_patients):
        made.append((root, n_patients))
        root.mkdir(parents=True, exist_ok=True)
        return root

    monkeypatch.setattr(ablation, "ensure_phantom", fake_phantom)  # itself idempotent (test_data_phantom)
    results = tmp_path / "results"
    ws = ablation.prepare("smoke", ["umamba_ce", "umamba_ua"], [0], runs_dir=runs_dir, results_dir=results)
    assert ws.to_train == [] and ws.data_dir == "" and made == [] and results.is_dir()

    ws = ablation.prepare("smoke", ["umamba_ce", "umamba_ua"], range(2), runs_dir=runs_dir, results_dir=results)
    assert ws.to_train == [("umamba_ua", 1)]
    assert made == [(runs_dir / "phantom", 5)] and ws.data_dir == str(runs_dir / "phantom")  # smoke: 5 patients
    ablation.prepare("smoke", ["umamba_ua"], [1], runs_dir=runs_dir, results_dir=results)
    assert made == [(runs_dir / "phantom", 5)] * 2  # the same phantom asked for again (reused, not remade)

    ws = ablation.prepare("smoke", ["umamba_ua"], [1], data_dir="/data", runs_dir=runs_dir, results_dir=results)
    assert ws.data_dir == "/data" and len(made) == 2
    with pytest.raises(ValueError, match="unknown ablation configuration"):
        ablation.prepare("smoke", ["nope"], [0], runs_dir=runs_dir, results_dir=results)


def test_calibration_table_in_percent():
    table = tables.calibration_table({"a": 0.0125, "b": 0.0})
    assert list(table.columns) == ["method", "ECE (%)"] and table["ECE (%)"].tolist() == [1.25, 0.0]


def test_train_side_by_side_launches_unfinished_runs_jobs_at_a_time(runs_dir, monkeypatch):
    import threading
    import time

    from uu.profiles import parse_overrides

    launched, threads, running, peak, lock = [], [], [0], [0], threading.Lock()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(ablation.os, "cpu_count", lambda: 4)

    def fake_run(cmd, stdout=None, stderr=None, env=None):
        with lock:
            launched.append(cmd)
            threads.append(env["OMP_NUM_THREADS"])
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.2)
        with lock:
            running[0] -= 1
        return types.SimpleNamespace(returncode=0)

    monkeypatch.setattr(ablation.subprocess, "run", fake_run)
    (runs_dir / "umamba_ua_sam" / "seed0" / "checkpoint.pt").write_bytes(b"")  # interrupted: resumed
    pairs = [("umamba_ce", 0), ("umamba_ua_sam", 0), ("unet_dice_ce", 0), ("umamba_ua", 1)]
    ablation.train_side_by_side(pairs, "smoke", "/data", runs_dir, {"lr": 1e-2, "amp": "off"}, jobs=2)
    by_out = {cmd[cmd.index("--out") + 1]: cmd for cmd in launched}
    assert sorted(by_out) == sorted(str(runs_dir / c / f"seed{s}") for c, s in pairs[1:])  # umamba_ce 0 is finished
    assert peak[0] == 2 and threads == ["2"] * 3  # 4 cores, 2 jobs
    cmd = by_out[str(runs_dir / "umamba_ua_sam" / "seed0")]
    assert cmd[1:9] == ["-m", "uu", "train", "--params", "smoke", "--data", "/data", "--out"] and cmd[-1] == "--resume"
    sets = parse_overrides([cmd[i + 1] for i, a in enumerate(cmd) if a == "--set"])
    assert sets == {"arch": "umamba_enc", "loss": "ua", "optimizer": "sam", "seed": 0, "lr": 0.01, "amp": "off"}
    assert "--resume" not in by_out[str(runs_dir / "unet_dice_ce" / "seed0")]


def test_train_side_by_side_names_the_log_of_a_failed_run(runs_dir, monkeypatch):
    monkeypatch.setattr(ablation.subprocess, "run", lambda cmd, **kw: types.SimpleNamespace(returncode=3))
    with pytest.raises(RuntimeError, match=r"umamba_ua_sam/seed0\.log \(exit 3\)"):
        ablation.train_side_by_side([("umamba_ua_sam", 0)], "smoke", "", runs_dir, jobs=2)


def test_training_beside_runs_the_pairs_while_the_block_runs_on_one_thread(runs_dir, monkeypatch):
    import threading

    import torch

    started, release, seen = threading.Event(), threading.Event(), {}

    def fake_run(cmd, stdout=None, stderr=None, env=None):
        seen.setdefault("threads", []).append(env["OMP_NUM_THREADS"])
        started.set()
        release.wait(10)  # the background run lasts until the block is done with it
        return types.SimpleNamespace(returncode=0)

    monkeypatch.setattr(ablation.subprocess, "run", fake_run)
    monkeypatch.setenv("OMP_NUM_THREADS", "2")  # the pairs get 1 thread each all the same
    torch.set_num_threads(2)
    with ablation.training_beside([("umamba_ua_sam", 0), ("umamba_ua", 1)], "smoke", "/data", runs_dir):
        assert started.wait(10)  # the runs are going while the block runs
        seen["block_threads"] = torch.get_num_threads()
        release.set()
    assert seen == {"threads": ["1", "1"], "block_threads": 1} and torch.get_num_threads() == 2


def test_training_beside_raises_after_the_block_when_a_run_failed(runs_dir, monkeypatch):
    monkeypatch.setattr(ablation.subprocess, "run", lambda cmd, **kw: types.SimpleNamespace(returncode=1))
    done = []
    with pytest.raises(RuntimeError, match=r"umamba_ua_sam/seed0\.log \(exit 1\)"):
        with ablation.training_beside([("umamba_ua_sam", 0)], "smoke", "", runs_dir):
            done.append(True)
    assert done == [True]


def test_training_beside_without_pairs_changes_nothing(runs_dir, monkeypatch):
    import torch

    monkeypatch.setattr(ablation.subprocess, "run", lambda *a, **k: pytest.fail("nothing should be launched"))
    before = torch.get_num_threads()
    with ablation.training_beside([], "smoke", "", runs_dir):
        assert torch.get_num_threads() == before
