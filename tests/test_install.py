"""``import uu`` gives the project's package from any working directory, even on Python 3.10-3.12
where the standard library has a module of the same name (see DEVELOPERS.md, "The stdlib uu trap")."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PROBE = (
    "import json, uu, uu.data, sys; print(json.dumps({'file': uu.__file__, "
    "'path': list(getattr(uu, '__path__', [])), 'data': uu.data.__file__, "
    "'torch': 'torch' in sys.modules}))"
)


def run_probe(cwd: Path) -> dict:
    # -I would drop site-packages; -P is 3.11+. A plain run from cwd is what a user does.
    result = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("where", ["tmp", "notebooks"])
def test_import_uu_gives_the_project_package(where, tmp_path):
    cwd = tmp_path if where == "tmp" else REPO / "notebooks"
    if not cwd.is_dir():
        pytest.skip("no notebooks/ folder")
    found = run_probe(cwd)
    assert Path(found["file"]).resolve() == REPO / "uu" / "__init__.py"
    assert [Path(p).resolve() for p in found["path"]] == [REPO / "uu"]
    assert Path(found["data"]).resolve().parent == REPO / "uu" / "data"
    assert not found["torch"], "import uu.data must not import torch"


def test_stdlib_module_really_exists_on_this_python():
    """Documents why the finder matters (skips on 3.13+, where the stdlib module is gone)."""
    if sys.version_info >= (3, 13):
        pytest.skip("Python >= 3.13 has no stdlib uu module")
    import importlib.util
    import sysconfig

    assert (Path(sysconfig.get_paths()["stdlib"]) / "uu.py").is_file()
    assert importlib.util.find_spec("uu").submodule_search_locations is not None
