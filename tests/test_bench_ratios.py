"""benchmarks/bench_train.py: the step-time ratios reported in results/performance/, from hand-made rows;
benchmarks/bench_concurrency.py: the window in which all runs train."""

import importlib.util
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location(
    "bench_train", Path(__file__).resolve().parent.parent / "benchmarks" / "bench_train.py"
)
bench_train = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_train)


def row(arch, ms, optimizer="sgd", precision="bf16", mamba_fp32=False, channels_last=True, compile=False, plan="3d"):
    return dict(
        plan=plan,
        arch=arch,
        optimizer=optimizer,
        precision=precision,
        mamba_fp32=mamba_fp32,
        channels_last=channels_last,
        compile=compile,
        ms_per_step=ms,
    )


ROWS = [
    row("unet", 100.0, mamba_fp32=True),
    row("resunet", 200.0, mamba_fp32=True),
    row("umamba_enc", 400.0),
    row("umamba_enc", 820.0, optimizer="sam"),
    row("umamba_enc", 500.0, precision="fp32", mamba_fp32=True, channels_last=False),
    row("umamba_enc", 300.0, plan="2d", channels_last=False, optimizer="sam"),
    row("umamba_enc", 200.0, plan="2d", channels_last=False, optimizer="sam", compile="reduce-overhead"),
    {"plan": "3d", "arch": "umamba_bot", "error": "OutOfMemoryError"},  # a failed row is skipped
]


@pytest.mark.parametrize(
    "key, name, expected",
    [
        ("3d channels-last", "sam_over_sgd (enc, mamba bf16)", 2.05),  # 820 / 400
        ("3d channels-last", "enc_over_unet (enc mamba bf16)", 4.0),  # 400 / 100
        ("3d channels-last", "resunet_over_unet (residual encoder, no Mamba)", 2.0),
        ("3d channels-last", "enc_over_resunet (the six Mamba layers)", 2.0),
        ("3d channels-last", "authors_fp32_over_ours_bf16 (enc)", 1.25),  # 500 / 400
        ("2d", "eager_over_compiled[reduce-overhead] (umamba_enc sam)", 1.5),  # 300 / 200
    ],
)
def test_ratios_from_hand_made_rows(key, name, expected):
    assert bench_train.ratios(ROWS)[key][name] == expected


def test_missing_rows_give_no_ratio():
    out = bench_train.ratios(ROWS)
    assert "enc_over_unet (enc mamba fp32)" not in out["3d channels-last"]  # no Mamba-fp32 enc row
    assert "3d" not in out  # nothing measured in NCDHW but the authors' row, which needs our row beside it


_cspec = importlib.util.spec_from_file_location(
    "bench_concurrency", Path(__file__).resolve().parent.parent / "benchmarks" / "bench_concurrency.py"
)
bench_concurrency = importlib.util.module_from_spec(_cspec)
_cspec.loader.exec_module(bench_concurrency)


def epochs(*times, iters=10):
    return [{"time": t, "iters": iters} for t in times]


def test_concurrency_counts_only_the_window_all_runs_train():
    # run a: epochs end at 10, 12, 14, 16, 30 (alone after 16); run b: 13, 15, 17
    # window (13, 17]: a's epochs ending at 14 and 16 (20 iterations in 16 - 12 = 4 s), b's at 15 and 17 (20 in 4 s)
    out = bench_concurrency.overlap_throughput([epochs(10, 12, 14, 16, 30), epochs(13, 15, 17)], batch=2)
    assert out == {"aggregate_samples_per_s": 20.0, "per_run_samples_per_s": [10.0, 10.0], "window_s": 4.0}


@pytest.mark.parametrize(
    "logs, message",
    [
        ([epochs(1, 2, 3), epochs(1, 2)], "fewer than 3 epochs"),
        ([epochs(1, 2, 3), epochs(10, 11, 12)], "did not overlap"),
    ],
)
def test_concurrency_reports_windows_too_short(logs, message):
    assert message in bench_concurrency.overlap_throughput(logs, batch=2)["error"]
