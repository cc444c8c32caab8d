"""``python -m uu run --params P --data D --out RUN``: the whole workbook, headless.

Executes notebooks/01_data -> 02_model -> 03_train -> 04_ablation -> 05_figures with papermill into RUN/notebooks/,
passing each the profile and the paths it declares in its ``parameters`` cell:

    profile      the profile name ("smoke") or the absolute path of a profile YAML
    data_dir     D, or RUN/phantom (uu.data.ensure_phantom, before the first notebook) when D is empty
    runs_dir     RUN/runs        (training runs; 04 and 05 share them, so 05 trains nothing new)
    results_dir  RUN/results     (figures as PNG, tables as CSV and Markdown)
    out_dir      RUN/<notebook>  (a folder of its own); 03_train gets RUN/runs/umamba_ua_sam/seed0 when its run
                 is the one 04 would train (same resolved profile and data), so it is trained once

A standard parameter is passed only to notebooks that declare it. P is either

* a profile: a name ("smoke", "budget") or a profile YAML path (a flat mapping with ``name``), or
* a workbook file: a YAML path, or a name of one in uu/params ("main", "evidence"), holding a mapping with
  ``profile`` (required) and optionally ``data_dir`` (used when --data is not given), ``only`` (the notebooks to run,
  e.g. [04_ablation, 05_figures]; default all), ``parameters`` (name: value for every notebook that declares the
  name), and ``notebooks`` (notebook stem or number: {name: value}), e.g.

      profile: smoke
      parameters: {seeds: 2}
      notebooks:
        04_ablation: {configurations: [umamba_ce, umamba_ua, umamba_ua_sam]}

Relative paths in a workbook file (``profile``, ``data_dir``, and parameters named ``*_dir`` or ``*_file``) are
relative to the file's folder, so a committed one works from any working directory. Every parameter is checked
against the notebooks' parameters cells before anything runs: a name no notebook declares (a typo) is an error,
never a silent no-op. A failing notebook stops the run; the error names the notebook, the cell and the executed copy."""

from __future__ import annotations

import ast
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import yaml

from uu.ablation import CONFIGS, run_dir_for
from uu.data import DataError, ensure_phantom
from uu.profiles import PARAMS_DIR, load_profile

NOTEBOOKS = ("01_data", "02_model", "03_train", "04_ablation", "05_figures")
NOTEBOOKS_DIR = Path(__file__).resolve().parent.parent / "notebooks"
WORKBOOK_KEYS = ("profile", "data_dir", "only", "parameters", "notebooks")
SHARED_RUN = ("umamba_ua_sam", 0)  # the ablation run (configuration, seed) that notebook 03 may train
# The kernel's own log shows errors only: its start-up warning (unencrypted local TCP) says nothing about the run.
KERNEL_ARGUMENTS = ("--IPKernelApp.log_level=ERROR",)


class WorkbookError(RuntimeError):
    """A notebook failed while the workbook ran."""


@dataclass
class NotebookJob:
    stem: str
    source: Path
    output: Path
    parameters: dict = field(default_factory=dict)


# ----------------------------------------------------------------------------- reading P
def read_params(params: str) -> dict:
    """P -> {"profile": str, "data_dir": str, "only": [stem] | None, "parameters": {...}, "notebooks": {stem: {}}}."""
    text = str(params)
    path = Path(text)
    plain = {"profile": text, "data_dir": "", "only": None, "parameters": {}, "notebooks": {}}
    looks_like_file = path.suffix in (".yaml", ".yml") or "/" in text
    if not looks_like_file and _is_workbook_file(PARAMS_DIR / f"{text}.yaml"):
        path, looks_like_file = PARAMS_DIR / f"{text}.yaml", True
    if not looks_like_file:  # a profile name; uu.profiles checks it exists
        _check_profile(text, "--params")
        return plain
    if not path.is_file():
        raise DataError(
            f"--params {text}: no such file (give a profile name such as 'smoke', a profile YAML or a workbook YAML)"
        )
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise DataError(f"--params {path}: not valid YAML ({err})") from None
    if not isinstance(raw, dict):
        raise DataError(f"--params {path}: expected a YAML mapping, got {type(raw).__name__}")
    if "profile" not in raw:  # a profile file itself
        _check_profile(str(path.resolve()), f"--params {path}")
        return {**plain, "profile": str(path.resolve())}
    unknown = sorted(set(raw) - set(WORKBOOK_KEYS))
    if unknown:
        raise DataError(f"workbook file {path}: unknown keys {unknown}; valid keys: {list(WORKBOOK_KEYS)}")
    profile = str(raw["profile"])
    if "/" in profile or profile.endswith((".yaml", ".yml")):  # relative to the workbook file
        profile = str((path.parent / profile).resolve())
    _check_profile(profile, f"workbook file {path}")
    for key in ("parameters", "notebooks"):
        if not isinstance(raw.get(key) or {}, dict):
            raise DataError(f"workbook file {path}: {key!r} must be a mapping of name: value")
    notebooks = {}
    for name, values in (raw.get("notebooks") or {}).items():
        stem = _notebook_stem(str(name), path)
        if not isinstance(values, dict):
            raise DataError(f"workbook file {path}: notebooks.{name} must be a mapping of parameter: value")
        notebooks[stem] = _relative_to(path.parent, values)
    only = raw.get("only")
    if only is not None and not isinstance(only, list):
        raise DataError(f"workbook file {path}: 'only' must be a list of notebooks, e.g. [04_ablation, 05_figures]")
    only = None if only is None else [_notebook_stem(str(name), path) for name in only]
    data_dir = _relative_to(path.parent, {"data_dir": str(raw.get("data_dir") or "")})["data_dir"]
    parameters = _relative_to(path.parent, raw.get("parameters") or {})
    return {"profile": profile, "data_dir": data_dir, "only": only, "parameters": parameters, "notebooks": notebooks}


def _is_workbook_file(path: Path) -> bool:
    try:
        return path.is_file() and "profile" in (yaml.safe_load(path.read_text()) or {})
    except (yaml.YAMLError, TypeError):
        return False


def _relative_to(folder: Path, values: Mapping) -> dict:
    """Path-like values (keys data_dir, *_dir, *_file; non-empty relative strings) resolved against folder."""
    return {
        k: str((folder / v).resolve())
        if isinstance(v, str) and v and k.endswith(("_dir", "_file")) and not Path(v).is_absolute()
        else v
        for k, v in values.items()
    }


def _check_profile(profile: str, where: str) -> None:
    try:
        load_profile(profile)
    except DataError as err:
        raise DataError(f"{where}: {err}") from None


def _notebook_stem(name: str, source) -> str:
    for stem in NOTEBOOKS:
        if name in (stem, stem[:2], stem[3:], stem.lstrip("0").split("_")[0]) or name == f"{stem}.ipynb":
            return stem
    raise DataError(f"{source}: unknown notebook {name!r}; the notebooks are {list(NOTEBOOKS)}")


# ----------------------------------------------------------------------------- planning and checking
def _parameters_cell(source: Path) -> ast.Module:
    """The syntax tree of the notebook's cell tagged "parameters"."""
    import nbformat

    nb = nbformat.read(str(source), as_version=4)
    cells = [c for c in nb.cells if c.cell_type == "code" and "parameters" in c.metadata.get("tags", [])]
    if not cells:
        raise DataError(f"notebook {source}: no cell tagged 'parameters' (papermill needs one)")
    try:
        return ast.parse(cells[0].source)
    except SyntaxError as err:
        raise DataError(f"notebook {source}: the parameters cell is not valid Python ({err})") from None


def declared_parameters(source: Path, inspected: Mapping) -> set:
    """Names assigned in the notebook's parameters cell. papermill.inspect_notebook drops a line it cannot parse
    (one whose comment holds an "=") with only a log line, yet papermill injects the variable fine: so the union
    of its names and the cell's own syntax tree's counts."""
    tree = _parameters_cell(source)
    names = {
        t.id
        for node in tree.body
        if isinstance(node, (ast.Assign, ast.AnnAssign))
        for t in (node.targets if isinstance(node, ast.Assign) else [node.target])
        if isinstance(t, ast.Name)
    }
    return names | set(inspected)


def plan_workbook(params: str, data: str, out, notebooks_dir=None, stems=None) -> tuple[dict, list[NotebookJob]]:
    """Resolve P, the paths and each notebook's parameters; check every name. Runs nothing."""
    import papermill as pm

    notebooks_dir = NOTEBOOKS_DIR if notebooks_dir is None else Path(notebooks_dir)
    spec = read_params(params)
    stems = tuple(stems or spec["only"] or NOTEBOOKS)
    out = Path(out).resolve()
    data = data or spec["data_dir"]
    data_dir = str(Path(data).resolve()) if data else ""
    standard = {
        "profile": spec["profile"],
        "data_dir": data_dir or str(out / "phantom"),
        "runs_dir": str(out / "runs"),
        "results_dir": str(out / "results"),
    }
    declared, jobs = {}, []
    for stem in stems:
        source = notebooks_dir / f"{stem}.ipynb"
        if not source.is_file():
            raise DataError(f"notebook {source} is missing (the workbook runs {list(stems)})")
        papermill_log = logging.getLogger("papermill")
        level = papermill_log.level
        papermill_log.setLevel(logging.ERROR)  # "Unable to parse line": handled by declared_parameters
        try:
            inspected = pm.inspect_notebook(str(source))
        finally:
            papermill_log.setLevel(level)
        declared[stem] = declared_parameters(source, inspected)
    # user parameters: global ones must be declared somewhere, per-notebook ones by that notebook
    everywhere = set().union(*declared.values())
    for name in spec["parameters"]:
        if name not in everywhere:
            raise DataError(
                f"--params: parameter {name!r} is declared by no notebook; known parameters: {sorted(everywhere)}"
            )
    for stem, values in spec["notebooks"].items():
        if stem not in declared:
            raise DataError(f"--params: notebook {stem} is not part of this run ({list(stems)})")
        for name in values:
            if name not in declared[stem]:
                raise DataError(
                    f"--params: notebook {stem} has no parameter {name!r}; its parameters: {sorted(declared[stem])}"
                )
    for stem in stems:
        values = {k: v for k, v in {**standard, "out_dir": str(out / stem)}.items() if k in declared[stem]}
        values.update({k: v for k, v in spec["parameters"].items() if k in declared[stem]})
        values.update(spec["notebooks"].get(stem, {}))
        jobs.append(NotebookJob(stem, notebooks_dir / f"{stem}.ipynb", out / "notebooks" / f"{stem}.ipynb", values))
    if "out_dir" not in spec["parameters"] and "out_dir" not in spec["notebooks"].get("03_train", {}):
        share_training_run(jobs, notebooks_dir)
    return {**spec, "data_dir": data_dir, "out": str(out)}, jobs


def share_training_run(jobs: list, notebooks_dir) -> bool:
    """Point 03_train's out_dir at 04's RUNS/umamba_ua_sam/seed0 when 03 would train exactly that run (the same
    resolved profile), so that 04 reads it instead of training it again. Returns True if so."""
    by_stem = {job.stem: job for job in jobs}
    if "03_train" not in by_stem or "04_ablation" not in by_stem:
        return False

    train, table = (
        {**notebook_defaults(Path(notebooks_dir) / f"{s}.ipynb"), **by_stem[s].parameters}
        for s in ("03_train", "04_ablation")
    )
    name, seed = SHARED_RUN
    if name not in table["configurations"] or table["seeds"] <= seed or train["data_dir"] != table["data_dir"]:
        return False
    mine = load_profile(train["profile"], {"seed": train["seed"], "device": train["device"]})
    theirs = load_profile(table["profile"], {**CONFIGS[name].overrides, "seed": seed, **table["overrides"]})
    if mine != theirs:
        return False
    by_stem["03_train"].parameters["out_dir"] = str(run_dir_for(table["runs_dir"], name, seed))
    return True


def notebook_defaults(source: Path) -> dict:
    """{name: value} of the parameters cell's literal assignments (what runs when nothing is passed)."""
    out = {}
    for node in _parameters_cell(source).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                out[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                pass
    return out


# ----------------------------------------------------------------------------- running
def run_notebook(job: NotebookJob, cwd) -> float:
    """Execute one notebook with papermill; returns seconds. Raises WorkbookError naming the cell."""
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    job.output.parent.mkdir(parents=True, exist_ok=True)
    options = dict(kernel_name="python3", progress_bar=False, cwd=str(cwd), extra_arguments=list(KERNEL_ARGUMENTS))
    start = time.time()
    try:
        pm.execute_notebook(str(job.source), str(job.output), parameters=job.parameters, **options)
    except PapermillExecutionError as err:
        first_line = next((line for line in str(err.source).splitlines() if line.strip()), "")
        raise WorkbookError(
            f"notebook {job.stem} failed in cell {err.cell_index} (execution count {err.exec_count}, "
            f"starting {first_line.strip()!r}): {err.ename}: {err.evalue}\n"
            f"the executed copy with the full traceback: {job.output}"
        ) from None
    return time.time() - start


def run_workbook(params: str, data: str, out, notebooks_dir=None, stems=None) -> dict:
    """Check, then run every notebook in order. Writes RUN/workbook.json; returns its content."""
    spec, jobs = plan_workbook(params, data, out, notebooks_dir, stems)
    out = Path(spec["out"])
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("MPLBACKEND", "Agg")  # kernels inherit it: no display needed
    phantom = out / "phantom"
    if any(j.parameters.get("data_dir") == str(phantom) for j in jobs):
        ensure_phantom(phantom, load_profile(spec["profile"])["phantom_patients"])
    record = {
        "params": str(params),
        "profile": spec["profile"],
        "data_dir": spec["data_dir"] or str(out / "phantom"),
        "notebooks": [],
    }
    for job in jobs:
        print(f"[run] {job.stem}: executing into {job.output}", flush=True)
        seconds = run_notebook(job, cwd=out)
        entry = {"notebook": job.stem, "seconds": round(seconds, 1), "parameters": job.parameters}
        record["notebooks"].append({**entry, "output": str(job.output)})
        (out / "workbook.json").write_text(json.dumps(record, indent=2))
        print(f"[run] {job.stem}: done in {seconds:.0f} s", flush=True)
    return record


def cli_run(args) -> int:
    """Entry point of ``python -m uu run`` (args: params, data, out)."""
    start = time.time()
    try:
        record = run_workbook(args.params, args.data, args.out)
    except WorkbookError as err:
        print(f"error: {err}", flush=True)
        return 1
    total = time.time() - start
    print(
        f"[run] workbook finished in {total:.0f} s: notebooks in {Path(args.out) / 'notebooks'}, "
        f"figures and tables in {Path(args.out) / 'results'}",
        flush=True,
    )
    record["seconds"] = round(total, 1)
    (Path(args.out) / "workbook.json").write_text(json.dumps(record, indent=2))
    return 0
