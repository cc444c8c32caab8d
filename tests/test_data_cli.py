"""``python -m uu info``."""

from __future__ import annotations

import subprocess
import sys

from uu.data.cli import info


def test_info_on_phantom(phantom_dir, capsys):
    assert info(phantom_dir) == 0
    out = capsys.readouterr().out
    assert "layout : official" in out
    assert "6 patients, 12 volumes" in out
    assert "groups: DCM 2, HCM 1, MINF 1, NOR 1, RV 1" in out
    rows = [line for line in out.splitlines() if line.split()[:2] in (["3", "ED"], ["3", "ES"])]
    assert len(rows) == 2 and all("MINF" in r for r in rows)


def test_info_max_cases(phantom_dir, capsys):
    info(phantom_dir, max_cases=3)
    out = capsys.readouterr().out
    assert "(table shows the first 3)" in out
    assert sum(1 for line in out.splitlines() if line.split()[1:2] in (["ED"], ["ES"])) == 3


def test_module_entry_point(phantom_dir, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "uu", "info", str(phantom_dir), "--max-cases", "1"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "6 patients, 12 volumes" in result.stdout
