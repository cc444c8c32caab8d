"""The shell scripts: valid bash, and the campaign's harvest step on a hand-made archive."""

import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from uu.ssm.ops.fused_scan import BF16_ONLY_BUILD

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = sorted((REPO / "scripts").glob("*.sh"))


@pytest.mark.parametrize("script", SCRIPTS, ids=[s.name for s in SCRIPTS])
def test_script_is_valid_bash(script):
    subprocess.run(["bash", "-n", str(script)], check=True)


def _run(folder: Path, rel: str, finished: bool, marker: str):
    run = folder / rel
    run.mkdir(parents=True)
    (run / "log.jsonl").write_text(marker)
    if finished:
        (run / "eval").mkdir()
        (run / "eval" / "summary.json").write_text(marker)
        (run / "eval" / "per_case.csv").write_text(marker)


def test_harvest_adds_finished_runs_keeps_committed_ones_and_skips_unfinished(tmp_path):
    packed = tmp_path / "packed"
    _run(packed, "umamba_ua/fold0", True, "new")
    _run(packed, "unet_dice_ce/fold0", True, "new")  # already committed: must be kept as it is
    _run(packed, "unfinished/umamba_ua_sam/fold0", False, "partial")
    _run(packed, "length10k/umamba_ce/fold0", True, "long")  # the length check: beside the 25, not among them
    (packed / "landscape_fold0").mkdir()
    (packed / "landscape_fold0" / "landscape.json").write_text("{}")
    (packed / "versions.txt").write_text("NVIDIA H100 80GB HBM3\n")
    archive = tmp_path / "evidence.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(packed, arcname=".")
    dest = tmp_path / "dest"
    _run(dest, "unet_dice_ce/fold0", True, "committed")

    out = subprocess.run(
        ["bash", str(REPO / "scripts" / "evidence_harvest.sh"), str(archive)],
        env={"PATH": "/usr/bin:/bin", "UU_EVIDENCE_DIR": str(dest), "UU_RENDER": "0"},
        capture_output=True,
        text=True,
        check=True,
    ).stdout

    assert (dest / "umamba_ua/fold0/eval/summary.json").read_text() == "new"
    assert (dest / "unet_dice_ce/fold0/eval/summary.json").read_text() == "committed"
    assert not (dest / "umamba_ua_sam").exists() and not (dest / "unfinished").exists()
    assert (dest / "landscape/landscape.json").exists()
    assert "added  umamba_ua/fold0" in out and "kept   unet_dice_ce/fold0" in out
    assert "unfinished umamba_ua_sam/fold0 (not added)" in out
    assert "versions: NVIDIA H100 80GB HBM3" in out
    assert (dest / "length10k/umamba_ce/fold0/eval/summary.json").read_text() == "long"
    assert "runs in: 2 of 25" in out and "length check length10k: umamba_ce/fold0" in out
    assert "fold 0: unet_dice_ce umamba_ua\n" in out


def test_harvest_names_a_missing_archive(tmp_path):
    result = subprocess.run(
        ["bash", str(REPO / "scripts" / "evidence_harvest.sh"), str(tmp_path / "nope.tgz")],
        env={"PATH": "/usr/bin:/bin", "UU_EVIDENCE_DIR": str(tmp_path / "dest")},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2 and "nope.tgz: no such archive" in result.stderr


STUB_PYTHON = r"""#!/bin/bash
# python3 for the campaign's dry run: `-m uu ablation` marks its runs finished, the kernel check reads a file
echo "python3 $*" >> "$STUB_LOG"
if [ "$1" = - ]; then  # the versions check, its script on stdin
  grep -q selective_scan_cuda && { [ -e "$STUB_KERNEL" ] && echo "mamba_ssm 2.3.2" || echo "no mamba-ssm kernel"; }
  exit 0
fi
if [ "$1 $2 $3" = "-m uu ablation" ]; then
  while [ $# -gt 0 ]; do case $1 in --runs) runs=$2;; --folds) folds=$2;; --configs) configs=$2;; esac; shift; done
  for c in ${configs//,/ }; do for f in ${folds//,/ }; do
    mkdir -p "$runs/$c/fold$f/eval"; echo '{}' > "$runs/$c/fold$f/eval/summary.json"; done; done
fi
exit 0
"""


def _dry_campaign(tmp_path: Path, args: list[str], kernel: bool, **env) -> tuple[str, Path]:
    """scripts/evidence_campaign.sh on stubbed python3 and nvidia-smi: (the stub's log, the packed archive)."""
    repo, stubs = tmp_path / "repo", tmp_path / "bin"
    (repo / "scripts").mkdir(parents=True, exist_ok=True)
    for name in ("evidence_campaign.sh", "gpu_env.sh", "build_mamba.sh"):
        (repo / "scripts" / name).write_text((REPO / "scripts" / name).read_text())
    stubs.mkdir(exist_ok=True)
    for name, text in (("python3", STUB_PYTHON), ("nvidia-smi", "#!/bin/bash\necho NVIDIA H100\n")):
        (stubs / name).write_text(text)
        (stubs / name).chmod(0o755)
    if kernel:
        (tmp_path / "kernel").touch()
    log = tmp_path / "python3.log"
    log.write_text("")
    environment = {
        "PATH": f"{stubs}:/usr/bin:/bin",
        "STUB_LOG": str(log),
        "STUB_KERNEL": str(tmp_path / "kernel"),
        "UU_RUNS": str(tmp_path / "runs"),
        "OUT": str(tmp_path / "out"),
        **env,
    }
    subprocess.run(["bash", "scripts/evidence_campaign.sh", *args], cwd=repo, env=environment, check=True, timeout=60)
    return log.read_text(), tmp_path / "out" / "evidence.tgz"


def _trained(log: str) -> list[tuple[str, str]]:
    """(configs, folds) of each `uu ablation` call, in order."""
    calls = [line.split() for line in log.splitlines() if line.startswith("python3 -m uu ablation")]
    return [(c[c.index("--configs") + 1], c[c.index("--folds") + 1]) for c in calls]


def test_campaign_trains_missing_runs_fold_by_fold_reads_committed_ones_and_packs_them(tmp_path):
    committed = tmp_path / "repo" / "results" / "evidence" / "acdc2d_cv5" / "unet_dice_ce" / "fold0"
    _run(committed.parent, "fold0", True, "committed")
    order = "umamba_ce unet_dice_ce"
    log, archive = _dry_campaign(tmp_path, ["500", "0,1,"], kernel=False, UU_FOLLOWS="1", UU_ORDER=order)
    # no kernel: fold 1's U-Net trains while mamba-ssm builds (fold 0's is committed), then no U-Mamba row
    assert _trained(log) == [("unet_dice_ce", "1,")]
    log, _ = _dry_campaign(tmp_path, ["500", "0,1,"], kernel=False, UU_FOLLOWS="1", UU_ORDER="umamba_ce")
    assert _trained(log) == []  # an order without the U-Net row: no U-Net beside the build either
    with tarfile.open(archive) as tar:
        names = tar.getnames()
    assert "./unet_dice_ce/fold0/eval/summary.json" in names and "./unet_dice_ce/fold1/eval/summary.json" in names

    env = dict(UU_FOLLOWS="1", UU_ORDER=order, UU_SET="cudnn_benchmark=true")
    log, archive = _dry_campaign(tmp_path, ["500", "0,1,"], kernel=True, **env)
    assert _trained(log) == [("umamba_ce", "0,"), ("umamba_ce", "1,")]  # finished runs are never retrained
    calls = [line for line in log.splitlines() if line.startswith("python3 -m uu ablation")]
    assert all(c.endswith("--set cudnn_benchmark=true") for c in calls)
    with tarfile.open(archive) as tar:
        versions = tar.extractfile("./versions.txt").read().decode()
    assert versions.splitlines() == ["NVIDIA H100", "commit unknown", "mamba_ssm 2.3.2"]


def test_campaign_starts_no_run_in_its_last_minute_even_when_a_call_follows(tmp_path):
    # 90 s less the 40 s kept for packing leaves 50 s: a run started now would only load, compile and pause
    log, _ = _dry_campaign(tmp_path, ["90", "0,1,"], kernel=True, UU_FOLLOWS="1", UU_ORDER="umamba_ce")
    assert _trained(log) == []
    campaign_log = (tmp_path / "runs" / "campaign.log").read_text()
    assert "under a minute left: no further run starts in this call" in campaign_log


def _stop_at(log: str) -> float:
    """The --stop-at of the first `uu ablation` call."""
    call = next(line.split() for line in log.splitlines() if line.startswith("python3 -m uu ablation"))
    return float(call[call.index("--stop-at") + 1])


def test_campaign_pauses_runs_only_when_a_call_follows(tmp_path):
    # a following call resumes a paused run: it pauses 40 s before this call's end, leaving time for the packing
    start = time.time()
    log, _ = _dry_campaign(tmp_path, ["500", "0,"], kernel=True, UU_FOLLOWS="1", UU_ORDER="umamba_ce")
    assert start + 500 - 40 - 1 <= _stop_at(log) <= time.time() + 500 - 40
    # in the lease's last call a pause would be lost with the machine: the run trains on to the call's limit
    shutil.rmtree(tmp_path / "runs")
    log, _ = _dry_campaign(tmp_path, ["500", "0,"], kernel=True, UU_ORDER="umamba_ce")
    assert _trained(log) == [("umamba_ce", "0,")] and _stop_at(log) > time.time() + 3600


def test_campaign_last_call_starts_a_run_only_when_its_measured_time_fits(tmp_path):
    # the lease's last call, 590 s: 550 s before the packing, minus the environment, covers a SAM run (longest
    # measured 497 s); 520 s does not, and a run that cannot finish there is not started
    log, _ = _dry_campaign(tmp_path, ["590", "4,"], kernel=True, UU_ORDER="umamba_ua_sam")
    assert _trained(log) == [("umamba_ua_sam", "4,")]
    shutil.rmtree(tmp_path / "runs")
    log, _ = _dry_campaign(tmp_path, ["520", "4,"], kernel=True, UU_ORDER="umamba_ua_sam")
    assert _trained(log) == []
    campaign_log = (tmp_path / "runs" / "campaign.log").read_text()
    assert "umamba_ua_sam fold 4: expects 500 s" in campaign_log


def test_campaign_length_check_trains_fold0_longer_under_length10k(tmp_path):
    env = dict(UU_FOLLOWS="1", UU_LENGTH="10000", UU_SET="cudnn_benchmark=true")
    log, archive = _dry_campaign(tmp_path, ["500", "0,"], kernel=True, **env)
    calls = [line for line in log.splitlines() if line.startswith("python3 -m uu ablation")]
    assert _trained(log) == [("umamba_ce", "0,"), ("umamba_ua", "0,"), ("umamba_ua_sam", "0,")]
    assert all(f"--runs {tmp_path}/runs/length10k/" in c for c in calls)
    assert all(c.endswith("--set epochs=200 --set cudnn_benchmark=true") for c in calls)
    with tarfile.open(archive) as tar:
        assert "./length10k/umamba_ua_sam/fold0/eval/summary.json" in tar.getnames()


def _readme_results(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, str(REPO / "scripts" / "readme_results.py"), *args]
    return subprocess.run(command, capture_output=True, text=True)


def test_readme_results_block_is_the_committed_campaigns():
    result = _readme_results("--check")
    assert result.returncode == 0, result.stderr


def test_readme_results_block_from_a_hand_made_campaign(tmp_path):
    evidence = tmp_path / "evidence"
    _run(evidence, "unet_dice_ce/fold0", True, "{}")
    _run(evidence, "umamba_ua_sam/fold0", True, "{}")
    _run(evidence, "umamba_ua/fold3", False, "")  # unfinished: not counted
    claims = (
        "claim,baseline,method,paper,delta,ci_low,ci_high,n_patients,n_volumes,n_folds,verdict\n"
        "UU-Mamba over nnU-Net,unet_dice_ce,umamba_ua_sam,1.18,0.5,-0.25,1.25,16,32,1,not resolved at this scale: x\n"
        "SAM over the UA loss alone,umamba_ua,umamba_ua_sam,0.185,,,,0,0,0,not measured yet: y\n"
    )
    (evidence / "claims.csv").write_text(claims)
    (evidence / "table_I.md").write_text("TABLE ONE\n")
    (evidence / "table_II.md").write_text("TABLE TWO\n")
    (evidence / "length.csv").write_text(
        "config,slope fold0,mean slope (Dice points / 1k iterations),still rising\n"
        "unet_dice_ce,0.1,0.1,False\numamba_ua_sam,1.234,1.234,True\n"
    )
    (evidence / "length_check.csv").write_text(
        "claim,baseline,method,n_volumes,with training\n"
        "UU-Mamba over nnU-Net,unet_dice_ce,umamba_ua_sam,32,with longer training the difference holds still\n"
    )
    readme = tmp_path / "README.md"
    begin, end = (
        "<!-- results:begin: written by scripts/readme_results.py from results/evidence/acdc2d_cv5 -->",
        ("<!-- results:end -->"),
    )
    readme.write_text(f"intro\n{begin}\nold numbers\n{end}\noutro\n")
    paths = ("--readme", str(readme), "--evidence", str(evidence))
    assert _readme_results("--check", *paths).returncode == 1
    assert _readme_results(*paths).returncode == 0
    text = readme.read_text()
    assert text.startswith(f"intro\n{begin}\n**2 of the 25 runs are in** (fold 0: `unet_dice_ce`, `umamba_ua_sam`).")
    assert text.endswith(f"{end}\noutro\n") and "old numbers" not in text
    assert (
        "| UU-Mamba over nnU-Net | `unet_dice_ce` → `umamba_ua_sam` | +1.18 | +0.50 [-0.25, +1.25] | 32 (1) | "
        "not resolved at this scale (1 of 5 folds so far) |" in text
    )
    assert "| +0.185 | - | 0 | not measured yet |" in text and "TABLE ONE" in text and "TABLE TWO" in text
    assert "points per 1,000 iterations): `umamba_ua_sam` +1.23. The verdicts compare" in text  # not the U-Net
    assert "- UU-Mamba over nnU-Net: with longer training the difference holds still." in text
    assert _readme_results("--check", *paths).returncode == 0


STUB_BUILD_PYTHON = r"""#!/bin/bash
# python3 for build_mamba.sh: torch's version from STUB_TORCH, pip wheel writes a wheel, pip install a package,
# `python3 - ARGS` (the source patch) runs in STUB_REAL_PYTHON, `python3 -` (the GPU check) passes
echo "python3 $*" >> "$STUB_LOG"
case "$*" in
  "-c import torch; print(torch.__version__)") echo "$STUB_TORCH";;
  "- "*) exec "$STUB_REAL_PYTHON" "$@";;  # the source patch runs for real
  "-m pip wheel"*)
    while [ $# -gt 0 ]; do [ "$1" = -w ] && { mkdir -p "$2"; echo x > "$2/mamba_ssm-2.3.2-cp312.whl"; }; shift; done;;
  "-m pip install"*) while [ $# -gt 0 ]; do [ "$1" = --target ] && mkdir -p "$2/mamba_ssm"; shift; done;;
esac
exit 0
"""


@pytest.mark.parametrize(
    ("torch_now", "built"),
    [("2.11.0+cu130", False), ("2.12.0+cu130", True)],
    ids=["same-torch-installs-the-wheel", "other-torch-builds"],
)
def test_build_mamba_uses_a_prebuilt_wheel_only_for_its_torch(tmp_path, torch_now, built):
    repo, stubs = tmp_path / "repo", tmp_path / "bin"
    (repo / "scripts").mkdir(parents=True)
    (repo / "scripts" / "build_mamba.sh").write_text((REPO / "scripts" / "build_mamba.sh").read_text())
    source = tmp_path / "mamba_ssm-2.3.2"
    source.mkdir()
    (source / "setup.py").write_text("cc_flag = []\n")
    (repo / ".src" / "prebuilt").mkdir(parents=True)
    with tarfile.open(repo / ".src" / "mamba_ssm-2.3.2.tar.gz", "w:gz") as tar:
        tar.add(source, arcname=source.name)
    (repo / ".src" / "prebuilt" / "mamba_ssm-2.3.2-cp312.whl").write_text("x")
    (repo / ".src" / "prebuilt" / "torch_version").write_text("2.11.0+cu130\n")
    stubs.mkdir()
    (stubs / "python3").write_text(STUB_BUILD_PYTHON)
    (stubs / "python3").chmod(0o755)
    log, site, wheels = tmp_path / "python3.log", tmp_path / "site", tmp_path / "wheels"
    env = {"PATH": f"{stubs}:/usr/bin:/bin", "STUB_LOG": str(log), "STUB_TORCH": torch_now}
    env |= {"UU_SITE": str(site), "UU_WHEEL_DIR": str(wheels), "UU_BUILD_DIR": str(tmp_path / "build")}
    env |= {"STUB_REAL_PYTHON": sys.executable}

    out = subprocess.run(["bash", "scripts/build_mamba.sh"], cwd=repo, env=env, capture_output=True, text=True)

    calls = log.read_text()
    assert (site / "mamba_ssm").is_dir()
    assert ("-m pip wheel" in calls) == built
    if built:
        assert "not usable (built for torch 2.11.0+cu130, this is torch 2.12.0+cu130, or its kernel" in out.stdout
        assert "[build_mamba] built in" in out.stdout and (wheels / "torch_version").read_text() == "2.12.0+cu130\n"
    else:
        assert "prebuilt wheel mamba_ssm-2.3.2-cp312.whl installed" in out.stdout
        assert "import torch, selective_scan_cuda" in calls  # installed only after its kernel imported


SELECTIVE_SCAN_SOURCES = [
    *(f"fwd_{t}" for t in ("fp32", "fp16", "bf16")),
    *(f"bwd_{t}_{w}" for t in ("fp32", "fp16", "bf16") for w in ("real", "complex")),
]
SELECTIVE_SCAN_CPP = r"""#define DISPATCH_ITYPE_FLOAT_AND_HALF_AND_BF16(ITYPE, NAME, ...)                    \
    if (ITYPE == at::ScalarType::Half) {                                            \
        using input_t = at::Half;                                                   \
        __VA_ARGS__();                                                              \
    } else if (ITYPE == at::ScalarType::BFloat16) {                                 \
        using input_t = at::BFloat16;                                               \
        __VA_ARGS__();                                                              \
    }
    DISPATCH_ITYPE_FLOAT_AND_HALF_AND_BF16(u.scalar_type(), "selective_scan_fwd", [&] {
        DISPATCH_WTYPE_FLOAT_AND_COMPLEX(A.scalar_type(), "selective_scan_fwd", [&] {
            selective_scan_fwd_cuda<input_t, weight_t>(params, stream);
        });
    });
    DISPATCH_ITYPE_FLOAT_AND_HALF_AND_BF16(u.scalar_type(), "selective_scan_bwd", [&] {
        DISPATCH_WTYPE_FLOAT_AND_COMPLEX(A.scalar_type(), "selective_scan_bwd", [&] {
            selective_scan_bwd_cuda<input_t, weight_t>(params, stream);
        });
    });
"""


@pytest.mark.parametrize(
    ("kernels", "cpp", "sources_left", "fails"),
    [
        ("all", SELECTIVE_SCAN_CPP, SELECTIVE_SCAN_SOURCES, False),
        ("bf16", SELECTIVE_SCAN_CPP, ["fwd_fp32", "fwd_bf16", "bwd_bf16_real"], False),
        ("bf16", "an unexpected dispatch", None, True),
    ],
    ids=["all-kernels", "bf16-kernels", "unexpected-source-fails"],
)
def test_build_mamba_kernel_selection(tmp_path, kernels, cpp, sources_left, fails):
    """UU_MAMBA_KERNELS=bf16 keeps the fp32 and bf16 forward and the bf16 backward, from a source laid out as
    mamba-ssm 2.3.2's (a stub: the real one is not in the repository) and refuses one laid out otherwise."""
    repo, stubs = tmp_path / "repo", tmp_path / "bin"
    (repo / "scripts").mkdir(parents=True)
    (repo / "scripts" / "build_mamba.sh").write_text((REPO / "scripts" / "build_mamba.sh").read_text())
    source = tmp_path / "mamba_ssm-2.3.2"
    (source / "csrc" / "selective_scan").mkdir(parents=True)
    listed = "".join(f'                "csrc/selective_scan/selective_scan_{n}.cu",\n' for n in SELECTIVE_SCAN_SOURCES)
    (source / "setup.py").write_text(f"cc_flag = []\nsources = [\n{listed}]\n")
    (source / "csrc" / "selective_scan" / "selective_scan.cpp").write_text(cpp)
    (repo / ".src").mkdir()
    with tarfile.open(repo / ".src" / "mamba_ssm-2.3.2.tar.gz", "w:gz") as tar:
        tar.add(source, arcname=source.name)
    stubs.mkdir()
    (stubs / "python3").write_text(STUB_BUILD_PYTHON)
    (stubs / "python3").chmod(0o755)
    env = {"PATH": f"{stubs}:/usr/bin:/bin", "STUB_LOG": str(tmp_path / "log"), "STUB_TORCH": "2.11.0+cu130"}
    env |= {"STUB_REAL_PYTHON": sys.executable, "UU_SITE": str(tmp_path / "site"), "UU_MAMBA_KERNELS": kernels}
    env |= {"UU_WHEEL_DIR": str(tmp_path / "wheels"), "UU_BUILD_DIR": str(tmp_path / "build")}

    out = subprocess.run(["bash", "scripts/build_mamba.sh"], cwd=repo, env=env, capture_output=True, text=True)

    if fails:
        assert out.returncode == 1 and "FAILED to patch" in out.stdout
        assert "dispatch is not the expected one" in out.stderr
        return
    assert f"({kernels} kernels)" in out.stdout, out.stdout + out.stderr
    built = tmp_path / "build" / "mamba_ssm-2.3.2"
    setup, patched = (built / "setup.py").read_text(), (built / "csrc/selective_scan/selective_scan.cpp").read_text()
    assert 'cc_flag = ["-gencode", "arch=compute_90,code=sm_90"]' in setup
    assert [n for n in SELECTIVE_SCAN_SOURCES if f"selective_scan_{n}.cu" in setup] == sources_left
    if kernels == "bf16":
        assert "at::Half" not in patched and patched.count("selective_scan_fwd_cuda<input_t, weight_t>") == 1
        assert "selective_scan_bwd_cuda<at::BFloat16, float>(params, stream);" in patched
        assert BF16_ONLY_BUILD in patched  # the message the GPU tests read as "skip: the build lacks it"
    else:
        assert patched == cpp


def test_build_mamba_rejects_an_unknown_kernel_choice(tmp_path):
    env = {**os.environ, "UU_MAMBA_KERNELS": "fp16", "UU_SITE": str(tmp_path / "site")}
    out = subprocess.run(["bash", str(REPO / "scripts" / "build_mamba.sh")], env=env, capture_output=True, text=True)
    assert out.returncode == 2 and "UU_MAMBA_KERNELS=fp16: expected all or bf16" in out.stdout


def test_build_mamba_wheel_names_the_missing_python(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    if any(Path(d, "python3.12").exists() for d in ("/usr/bin", "/bin")):
        pytest.skip("this machine has python3.12 on the minimal PATH")
    script = REPO / "scripts" / "build_mamba_wheel.sh"
    out = subprocess.run(["bash", str(script)], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert out.returncode == 2
    assert "needs Python 3.12 (the GPU machine's): put python3.12 on PATH or set UU_PYTHON" in out.stdout
