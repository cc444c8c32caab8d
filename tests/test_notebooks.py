"""Every notebooks/*.ipynb: structure checks, and a headless papermill run on the phantom.

Notebooks run in file order and share ``out_dir`` / ``runs_dir`` within the session, so 03 can
write runs that 04 and 05 read. Each notebook gets only the parameters it declares.
"""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9]*.ipynb"))
CHECK_MARK = "# NBVAL_CHECK_OUTPUT"
# What JupyterLab writes when it opens a notebook on the ipykernel kernel (language_info's version: the kernel's)
KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
LANGUAGE_INFO = {
    "codemirror_mode": {"name": "ipython", "version": 3},
    "file_extension": ".py",
    "mimetype": "text/x-python",
    "name": "python",
    "nbconvert_exporter": "python",
    "pygments_lexer": "ipython3",
}


@pytest.fixture(scope="session")
def notebook_workspace(tmp_path_factory) -> dict:
    """Folders shared by all notebooks of one test session."""
    root = tmp_path_factory.mktemp("notebooks")
    return {"out_dir": root / "out", "runs_dir": root / "runs", "cwd": root / "cwd", "executed": root / "executed"}


def candidate_parameters(phantom_dir: Path, workspace: dict) -> dict:
    return {
        "data_dir": str(phantom_dir),
        "profile": "smoke",
        "out_dir": str(workspace["out_dir"]),
        "runs_dir": str(workspace["runs_dir"]),
        "device": "cpu",
        "interactive": False,
        "seeds": 1,
        "max_cases": 0,
    }


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_is_committed_clean(path):
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    tagged = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{path.name}: needs exactly one cell tagged 'parameters'"
    assert code[0] is tagged[0], f"{path.name}: the 'parameters' cell must be the first code cell"
    for i, cell in enumerate(code):
        if not cell.source.lstrip().startswith(CHECK_MARK):
            assert not cell.outputs, f"{path.name}: code cell {i} has stored outputs (clear them)"
        else:  # nbval: "Unrun reference cell has outputs"
            assert cell.execution_count or not cell.outputs, f"{path.name}: code cell {i}: outputs need a count"
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3", f"{path.name}: kernel must be python3"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_is_saved_as_jupyterlab_saves_it(path):
    """Opening and saving it unchanged in JupyterLab leaves no diff: the kernel metadata JupyterLab writes, and
    nbformat 4.5's JSON (sorted keys, indent 1, a final newline, cell ids)."""
    raw = path.read_text()
    assert all("id" in cell for cell in json.loads(raw)["cells"]), f"{path.name}: cells without an id"
    nb = nbformat.reads(raw, as_version=4)
    assert (nb.nbformat, nb.nbformat_minor) == (4, 5) and nbformat.writes(nb) + "\n" == raw
    info = dict(nb.metadata.get("language_info", {}))
    assert nb.metadata.get("kernelspec") == KERNELSPEC and info.pop("version", "").startswith("3.")
    assert info == LANGUAGE_INFO


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs_headless(path, phantom_dir, notebook_workspace, monkeypatch):
    import papermill  # late: an optional dependency (the notebooks extra)

    for folder in notebook_workspace.values():
        folder.mkdir(exist_ok=True)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    declared = papermill.inspect_notebook(str(path))
    candidates = candidate_parameters(phantom_dir, notebook_workspace)
    if "max_cases" in declared and declared["max_cases"]["inferred_type_name"] in ("None", "NoneType"):
        candidates["max_cases"] = None
    parameters = {k: v for k, v in candidates.items() if k in declared}
    papermill.execute_notebook(
        str(path),
        str(notebook_workspace["executed"] / path.name),
        parameters=parameters,
        kernel_name="python3",
        cwd=str(notebook_workspace["cwd"]),
        progress_bar=False,
        execution_timeout=600,
    )  # per cell


GPU_RESULTS = REPO / "results" / "evidence" / "budget_1200it_seed0"


@pytest.mark.skipif(not (GPU_RESULTS / "ablation").is_dir(), reason="no committed H200 ablation runs")
def test_notebooks_04_05_tabulate_the_committed_gpu_runs(tmp_path, monkeypatch):
    """04 and 05 read the committed H200 runs (no weights, no predictions) without training anything."""
    import papermill  # late: an optional dependency (the notebooks extra)

    monkeypatch.setenv("MPLBACKEND", "Agg")
    before = sorted(p.relative_to(GPU_RESULTS) for p in GPU_RESULTS.rglob("*"))
    common = {"profile": "budget", "runs_dir": str(GPU_RESULTS / "ablation"), "results_dir": str(tmp_path)}
    papermill.execute_notebook(
        str(REPO / "notebooks" / "04_ablation.ipynb"),
        str(tmp_path / "04.ipynb"),
        parameters={**common, "seeds": 1},
        kernel_name="python3",
        cwd=str(tmp_path),
        progress_bar=False,
    )
    papermill.execute_notebook(
        str(REPO / "notebooks" / "05_figures.ipynb"),
        str(tmp_path / "05.ipynb"),
        parameters={
            **common,
            "landscape_file": str(GPU_RESULTS / "evidence" / "landscape.json"),
            "calibration_file": str(GPU_RESULTS / "evidence" / "calibration.json"),
        },
        kernel_name="python3",
        cwd=str(tmp_path),
        progress_bar=False,
    )
    assert sorted(p.relative_to(GPU_RESULTS) for p in GPU_RESULTS.rglob("*")) == before  # nothing written there
    numbers = pd.read_csv(tmp_path / "ablation_numbers.csv").set_index("config")
    for config in numbers.index:  # the table is the runs' own evaluation, volume by volume
        summary = json.loads((GPU_RESULTS / "ablation" / config / "seed0" / "eval" / "summary.json").read_text())
        assert numbers.loc[config, "dice_avg_mean"] == pytest.approx(100 * summary["dice_mean"], abs=1e-6)
        assert numbers.loc[config, "n_volumes"] == 20
    sharpness = pd.read_csv(tmp_path / "sharpness.csv").set_index("method")
    landscape = json.loads((GPU_RESULTS / "evidence" / "landscape.json").read_text())["methods"]
    assert sorted(sharpness.index) == sorted(landscape)
    for method, report in landscape.items():  # the table is the committed report's SAM sharpness
        assert sharpness.loc[method, "SAM sharpness (dice_ce loss rise)"] == pytest.approx(
            report["sam"]["sharpness"], rel=1e-9
        )
    assert (tmp_path / "reliability.png").is_file() and (tmp_path / "landscape_2d.png").is_file()
    assert not (tmp_path / "overlays.png").exists()  # no predictions were committed
