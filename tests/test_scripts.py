"""The shell scripts: valid bash, and the campaign's harvest step on a hand-made archive."""

import subprocess
import tarfile
from pathlib import Path

import pytest

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
