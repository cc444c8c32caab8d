"""What notebook 05's segmentation, uncertainty and calibration figures need from finished runs.

Read from the probabilities the runs' evaluations saved (RUN/eval/pred): nothing is predicted again."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping

import numpy as np
import yaml

from uu.data import load_acdc
from uu.evaluate import load_probs, prediction_entries  # noqa: F401  (the one reader of saved predictions)
from uu.metrics import mse_eq10
from uu.stats import add_bins, ece_from_bins, predictive_entropy, reliability_bins


def read_predictions(run_dir) -> dict[str, Path]:
    """{case name: path of NAME_probs.npz} of RUN/eval/pred (read by uu.evaluate.prediction_entries)."""
    pred = Path(run_dir) / "eval" / "pred"
    return {e["name"]: pred / e["probs"] for e in prediction_entries(pred) if e["probs"]}


def has_predictions(run_dir) -> bool:
    """True when the run's evaluation saved its class probabilities (RUN/eval/pred/predictions.json)."""
    return (Path(run_dir) / "eval" / "pred" / "predictions.json").is_file()


def validation_cases(run_dirs: Mapping[str, Path], data_dir: str | None = None) -> list:
    """The Cases every run predicted, sorted by name; data_dir defaults to the first run's profile.yaml's."""
    names = set.intersection(*(set(read_predictions(run)) for run in run_dirs.values()))
    if not data_dir:
        first = Path(next(iter(run_dirs.values())))
        data_dir = (yaml.safe_load((first / "profile.yaml").read_text()) or {}).get("data_dir", "")
    return sorted((c for c in load_acdc(data_dir, lazy=True) if c.name in names), key=lambda c: c.name)


def figure_material(
    run_dirs: Mapping[str, Path],
    data_dir: str | None = None,
    n_slices: int = 3,
    n_bins: int = 15,
    case_names: list[str] | None = None,
) -> dict:
    """What the overlay, error, entropy and calibration figures need: the middle labelled slice of up to n_slices
    volumes, or of those named in case_names ("patient001_ED", ...). Returns {"titles", "images", "ground_truth",
    "predictions", "mses" (Eq. 10), "entropy", "errors" ({method: [per slice]}), "bins" (all volumes), "ece"}."""
    cases = validation_cases(run_dirs, data_dir)
    step = max(len(cases) // max(n_slices, 1), 1)
    out = {
        "titles": [],
        "images": [],
        "ground_truth": [],
        **{key: {m: [] for m in run_dirs} for key in ("predictions", "mses", "entropy", "errors")},
        "bins": {},
        "ece": {},
    }
    slice_of = {}
    shown = [c for c in cases if c.name in case_names] if case_names else cases[::step][:n_slices]
    for case in shown:
        label = np.asarray(case.label)
        labelled = np.flatnonzero(label.reshape(label.shape[0], -1).any(axis=1))
        z = int(labelled[len(labelled) // 2]) if len(labelled) else label.shape[0] // 2
        slice_of[case.name] = z
        out["titles"].append(f"{case.name} z{z}")
        out["images"].append(np.asarray(case.image)[z])
        out["ground_truth"].append(label[z])
    for method, run in run_dirs.items():
        preds, bins = read_predictions(run), []
        for case in cases:
            probs, label = load_probs(preds[case.name]), np.asarray(case.label)
            bins.append(reliability_bins(probs, label, n_bins))
            if case.name in slice_of:
                z = slice_of[case.name]
                p = probs[:, z]
                out["predictions"][method].append(p.argmax(0))
                out["mses"][method].append(mse_eq10(p, label[z]))
                out["entropy"][method].append(predictive_entropy(p))
                out["errors"][method].append(p.argmax(0) != label[z])
        out["bins"][method] = add_bins(*bins)
        out["ece"][method] = ece_from_bins(out["bins"][method])
    return out


def save_calibration(material: Mapping, path) -> Path:
    """The reliability bins and ECE of figure_material() as JSON (no images): {"ece", "bins"}."""
    out = {
        "ece": {m: float(e) for m, e in material["ece"].items()},
        "bins": {m: {k: np.asarray(v).tolist() for k, v in b.items()} for m, b in material["bins"].items()},
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1))
    return path


def load_calibration(path) -> dict:
    """{"ece": {method: float}, "bins": {method: {count, confidence_sum, correct_sum as arrays}}}."""
    data = json.loads(Path(path).read_text())
    return {
        "ece": data["ece"],
        "bins": {m: {k: np.asarray(v, dtype=float) for k, v in b.items()} for m, b in data["bins"].items()},
    }
