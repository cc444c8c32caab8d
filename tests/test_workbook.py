"""`python -m uu run`: parameter checking and failure reports, on small notebooks written here."""

from types import SimpleNamespace

import nbformat
import pytest
import yaml

from uu import workbook
from uu.data import DataError


def write_notebook(path, parameters: str, *cells: str):
    nb = nbformat.v4.new_notebook()
    first = nbformat.v4.new_code_cell(parameters)
    first.metadata["tags"] = ["parameters"]
    nb.cells = [first, *(nbformat.v4.new_code_cell(c) for c in cells)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, str(path))


@pytest.fixture
def notebooks(tmp_path):
    folder = tmp_path / "notebooks"
    folder.mkdir()
    write_notebook(folder / "01_data.ipynb", 'profile = "smoke"\ndata_dir = ""\nseeds = 1')
    write_notebook(folder / "04_ablation.ipynb", 'profile = "smoke"\nruns_dir = ""\nconfigurations = ["umamba_ce"]')
    return folder


STEMS = ("01_data", "04_ablation")


@pytest.fixture
def profile(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text("name: tiny\nepochs: 1\n")
    return str(path)


def workbook_file(tmp_path, content: dict):
    path = tmp_path / "wb.yaml"
    path.write_text(yaml.safe_dump(content))
    return str(path)


def test_parameters_go_only_to_notebooks_that_declare_them(tmp_path, notebooks, profile):
    params = workbook_file(
        tmp_path,
        {"profile": "tiny.yaml", "parameters": {"seeds": 2}, "notebooks": {"04": {"configurations": ["umamba_ua"]}}},
    )
    spec, jobs = workbook.plan_workbook(params, "/data", tmp_path / "run", notebooks, STEMS)
    run = (tmp_path / "run").resolve()
    assert jobs[0].parameters == {"profile": profile, "data_dir": "/data", "seeds": 2}  # resolved beside wb.yaml
    assert jobs[1].parameters == {"profile": profile, "runs_dir": str(run / "runs"), "configurations": ["umamba_ua"]}
    assert jobs[1].output == run / "notebooks" / "04_ablation.ipynb"
    assert not run.exists()  # planning runs nothing


def test_a_profile_file_and_no_data_gives_the_phantom_folder(tmp_path, notebooks, profile):
    _, jobs = workbook.plan_workbook(profile, "", tmp_path / "run", notebooks, STEMS)
    assert jobs[0].parameters["data_dir"] == str((tmp_path / "run").resolve() / "phantom")
    assert jobs[0].parameters["profile"] == profile


@pytest.mark.parametrize(
    "content, match",
    [
        ({"profile": "tiny.yaml", "parameters": {"sedes": 2}}, "'sedes' is declared by no notebook"),
        ({"profile": "tiny.yaml", "notebooks": {"04_ablation": {"seeds": 2}}}, "04_ablation has no parameter 'seeds'"),
        ({"profile": "tiny.yaml", "notebooks": {"07_extra": {"a": 1}}}, "unknown notebook '07_extra'"),
        ({"profile": "tiny.yaml", "parameter": {"seeds": 2}}, r"unknown keys \['parameter'\]"),
        ({"profile": "smokey"}, "smokey"),
    ],
)
def test_misspelt_parameters_are_errors_before_anything_runs(tmp_path, notebooks, profile, content, match):
    with pytest.raises(DataError, match=match):
        workbook.run_workbook(workbook_file(tmp_path, content), "/data", tmp_path / "run", notebooks, STEMS)
    assert not (tmp_path / "run").exists()


def test_missing_notebook_or_parameters_cell(tmp_path, notebooks, profile):
    with pytest.raises(DataError, match="05_figures.ipynb is missing"):
        workbook.plan_workbook(profile, "/data", tmp_path / "run", notebooks, ("01_data", "05_figures"))
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("x = 1")]  # not tagged
    nbformat.write(nb, str(notebooks / "02_model.ipynb"))
    with pytest.raises(DataError, match="no cell tagged 'parameters'"):
        workbook.plan_workbook(profile, "/data", tmp_path / "run", notebooks, ("02_model",))


def test_a_failing_notebook_stops_the_run_naming_notebook_and_cell(tmp_path, notebooks, profile, monkeypatch, capsys):
    write_notebook(
        notebooks / "01_data.ipynb",
        'profile = "smoke"\ndata_dir = ""',
        "x = 1",
        "raise ValueError('broken on purpose')",
        "y = 2",
    )
    monkeypatch.setattr(workbook, "NOTEBOOKS_DIR", notebooks)
    monkeypatch.setattr(workbook, "NOTEBOOKS", STEMS)
    out = tmp_path / "run"
    code = workbook.cli_run(SimpleNamespace(params=profile, data=str(tmp_path), out=str(out)))
    message = capsys.readouterr().out
    assert code == 1
    # cells of the executed copy: parameters, injected parameters, x = 1, raise -> index 3
    assert "notebook 01_data failed in cell 3" in message
    assert "ValueError: broken on purpose" in message and "raise ValueError" in message
    assert (out / "notebooks" / "01_data.ipynb").is_file()
    assert not (out / "notebooks" / "04_ablation.ipynb").exists()  # the run stopped


def test_the_kernels_start_up_warnings_stay_out_of_the_output(tmp_path, notebooks, capfd):
    """The kernel writes its log to the inherited stderr (capfd sees the child's file descriptors): its TCP
    warning must not reach the job's output; a warning of the notebook's own code goes to the notebook."""
    write_notebook(notebooks / "01_data.ipynb", "x = 1", "import warnings\nwarnings.warn('from the notebook')")
    job = workbook.NotebookJob("01_data", notebooks / "01_data.ipynb", tmp_path / "out.ipynb", {"x": 2})
    workbook.run_notebook(job, tmp_path)
    out, err = capfd.readouterr()
    assert "without encryption" not in out + err and "IPKernelApp" not in out + err
    outputs = nbformat.read(str(job.output), as_version=4).cells[-1].outputs
    assert any("from the notebook" in o.get("text", "") for o in outputs)


def test_a_parameter_papermill_cannot_parse_still_counts(tmp_path, notebooks, profile):
    # papermill.inspect_notebook drops a line whose comment holds "=" (papermill issue #772)
    write_notebook(notebooks / "01_data.ipynb", 'data_dir = ""   # empty = a phantom\nseeds: int = 1')
    _, jobs = workbook.plan_workbook(profile, "/data", tmp_path / "run", notebooks, ("01_data",))
    assert jobs[0].parameters == {"data_dir": "/data"}


def test_a_workbook_file_resolves_its_paths_and_runs_only_the_notebooks_it_names(tmp_path, notebooks, profile):
    params = workbook_file(
        tmp_path, {"profile": "tiny.yaml", "only": ["04"], "parameters": {"runs_dir": "committed/runs"}}
    )
    _, jobs = workbook.plan_workbook(params, "", tmp_path / "run", notebooks)
    assert [j.stem for j in jobs] == ["04_ablation"]
    assert jobs[0].parameters["runs_dir"] == str((tmp_path / "committed" / "runs").resolve())


@pytest.mark.parametrize(
    "name, profile_name, stems",
    [
        ("main", "cpu", list(workbook.NOTEBOOKS)),
        ("evidence", "acdc2d_cv5", ["04_ablation", "05_figures"]),
    ],
)
def test_the_shipped_workbook_files_are_found_by_name(tmp_path, name, profile_name, stems):
    spec, jobs = workbook.plan_workbook(name, "", tmp_path / "run")
    assert spec["profile"] == profile_name and [j.stem for j in jobs] == stems


def test_the_evidence_reads_the_committed_campaign_and_trains_nothing(tmp_path):
    _, jobs = workbook.plan_workbook("evidence", "", tmp_path / "run")
    campaign = workbook.NOTEBOOKS_DIR.parent / "results" / "evidence" / "acdc2d_cv5"
    table, figures = (job.parameters for job in jobs)
    for parameters in (table, figures):
        assert parameters["runs_dir"] == str(campaign) and parameters["data_dir"] == "" and parameters["train"] is False
    assert table["folds"] == 5 and figures["run"] == "fold0"
    for key in ("landscape_file", "calibration_file"):  # the GPU's reports beside the runs (drawn once they exist)
        assert figures[key].startswith(str(campaign))


@pytest.mark.parametrize(
    "table_parameters, user_out_dir, shared",
    [
        ({}, False, True),  # 03's run is 04's UU-Mamba run
        ({"overrides": {"epochs": 2}}, False, False),  # 04 would train another run
        ({"configurations": ["umamba_ce"]}, False, False),  # 04 does not train it at all
        ({"seeds": 0}, False, False),
        ({}, True, False),  # an out_dir given for 03 stays
    ],
)
def test_notebook_03_trains_the_ablation_run_only_when_it_is_the_same(
    tmp_path, notebooks, profile, table_parameters, user_out_dir, shared
):
    write_notebook(
        notebooks / "03_train.ipynb", 'profile = "smoke"\ndata_dir = ""\nout_dir = ""\nseed = 0\ndevice = "auto"'
    )
    write_notebook(
        notebooks / "04_ablation.ipynb",
        'profile = "smoke"\ndata_dir = ""\nruns_dir = ""\n'
        'configurations = ["unet_dice_ce", "umamba_ua_sam"]\nseeds = 1\noverrides = {}',
    )
    content = {"profile": "tiny.yaml", "notebooks": {"04": table_parameters}}
    if user_out_dir:
        content["notebooks"]["03"] = {"out_dir": "/elsewhere"}
    _, jobs = workbook.plan_workbook(
        workbook_file(tmp_path, content), "", tmp_path / "run", notebooks, ("03_train", "04_ablation")
    )
    run = (tmp_path / "run").resolve()
    expected = (
        run / "runs" / "umamba_ua_sam" / "seed0" if shared else ("/elsewhere" if user_out_dir else run / "03_train")
    )
    assert jobs[0].parameters["out_dir"] == str(expected)
