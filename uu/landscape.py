"""Loss landscapes around trained weights, and the landscape and sharpness report over ablation runs.

Li et al. (NeurIPS 2018): the loss from the initial to the final weights (1D) and on the plane of two random
filter-normalised directions (2D), plus uu.sharpness's numbers, on one fixed batch and one common loss.
Every function restores the model's weights bit for bit."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from uu.data import NUM_CLASSES, DataError, extract_patch, load_acdc, normalize_intensity
from uu.losses import build_loss
from uu.profiles import load_profile
from uu.runs import load_run_model, resolve_plan
from uu.sharpness import LossClosure, sam_sharpness, top_hessian_eigenvalue
from uu.weights import Weights, combine, get_weights, preserved_weights, set_weights, trainable_parameters


# ----------------------------------------------------------------------------- directions
def random_direction(
    model: nn.Module, filter_normalize: bool = True, seed: int = 0, ignore_bias_and_norm: bool = True
) -> Weights:
    """A Gaussian direction in weight space, one tensor per trainable parameter. filter_normalize (Li et al.
    2018, Sec. 4): each filter (slice along the first axis) gets the norm of the matching weight filter; 1-D
    parameters get a zero direction when ignore_bias_and_norm, else the weights."""
    gen = torch.Generator().manual_seed(int(seed))
    direction = []
    for p in trainable_parameters(model):
        w = p.detach()
        d = torch.randn(w.shape, generator=gen, dtype=torch.float32).to(device=w.device, dtype=w.dtype)
        if filter_normalize:
            if w.dim() <= 1:
                d = torch.zeros_like(w) if ignore_bias_and_norm else w.clone()
            else:
                scale = w.reshape(w.shape[0], -1).norm(dim=1) / (d.reshape(d.shape[0], -1).norm(dim=1) + 1e-10)
                d = d * scale.reshape(-1, *([1] * (w.dim() - 1)))
        direction.append(d)
    return direction


# ----------------------------------------------------------------------------- 1D and 2D landscapes
@torch.no_grad()
def _loss_at(model: nn.Module, loss_closure: LossClosure, weights: Sequence[torch.Tensor]) -> float:
    set_weights(model, weights)
    return float(loss_closure())


def loss_along_line(
    model: nn.Module,
    loss_closure: LossClosure,
    w_from: Sequence[torch.Tensor],
    w_to: Sequence[torch.Tensor],
    alphas: Sequence[float],
) -> np.ndarray:
    """Loss at w_from + alpha * (w_to - w_from) for each alpha (alpha 0: w_from, 1: w_to); shape (len(alphas),)."""
    if len(w_from) != len(w_to):
        raise ValueError(f"loss_along_line: {len(w_from)} tensors against {len(w_to)}")
    direction = [b.detach() - a.detach() for a, b in zip(w_from, w_to)]
    with preserved_weights(model):
        return np.array([_loss_at(model, loss_closure, combine(w_from, (a, direction))) for a in alphas])


def loss_surface_2d(
    model: nn.Module,
    loss_closure: LossClosure,
    d1: Sequence[torch.Tensor],
    d2: Sequence[torch.Tensor],
    alphas: Sequence[float],
    betas: Sequence[float],
    center: Sequence[torch.Tensor] | None = None,
) -> np.ndarray:
    """Loss at center (default: the current weights) + alpha * d1 + beta * d2; shape (len(alphas), len(betas))."""
    with preserved_weights(model) as saved:
        base = saved if center is None else list(center)
        surface = np.empty((len(alphas), len(betas)))
        for i, a in enumerate(alphas):
            for j, b in enumerate(betas):
                surface[i, j] = _loss_at(model, loss_closure, combine(base, (a, d1), (b, d2)))
        return surface


# ----------------------------------------------------------------------------- a fixed batch of patches
def fixed_patches(
    cases, patch_size: Sequence[int], n: int = 4, seed: int = 0, foreground: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed set of n training patches, the same for every model compared, normalised as training does.
    cases: Case-like, raw image (Z,Y,X), uint8 label; patch_size (Y, X) or (Z, Y, X); foreground: centre on a
    labelled voxel. Returns images (n, 1, *patch_size) float32 and target (n, *patch_size) int64."""
    patch_size = tuple(int(s) for s in patch_size)
    if len(patch_size) not in (2, 3):
        raise ValueError(f"fixed_patches: patch_size must have 2 or 3 entries, got {patch_size}")
    if not cases:
        raise ValueError("fixed_patches: no cases given")
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for _ in range(n):
        case = cases[int(rng.integers(len(cases)))]
        image, label = normalize_intensity(case.image), np.asarray(case.label)
        fg = np.argwhere(label > 0) if foreground else np.empty((0, 3))
        center = fg[int(rng.integers(len(fg)))] if len(fg) else np.array([int(rng.integers(s)) for s in label.shape])
        if len(patch_size) == 2:  # one slice
            image, label, center = image[center[0]], label[center[0]], center[1:]
        start = [int(c) - s // 2 for c, s in zip(center, patch_size)]
        images.append(extract_patch(image, start, patch_size))
        labels.append(extract_patch(label, start, patch_size))
    return torch.from_numpy(np.stack(images)[:, None]).float(), torch.from_numpy(np.stack(labels).astype(np.int64))


def batch_loss_closure(model: nn.Module, loss_fn: Callable, images: torch.Tensor, target: torch.Tensor) -> LossClosure:
    """loss_fn(model(images), target) with the model in eval mode (full-resolution logits, no dropout)."""
    device = next(model.parameters()).device
    images, target = images.to(device), target.to(device)

    def closure() -> torch.Tensor:
        model.eval()
        return loss_fn(model(images), target)

    return closure


def training_patches(run_dir, n: int = 4, seed: int = 0, data_dir: str | None = None):
    """n fixed_patches of a run's plan and training patients (data_dir: RUN/profile.yaml's by default)."""
    run_dir = Path(run_dir)
    profile = load_profile(run_dir / "profile.yaml")
    data_dir = data_dir or profile.get("data_dir", "")
    if not data_dir or not Path(data_dir).exists():
        raise DataError(f"{run_dir}: its data folder {data_dir!r} is not here; pass data_dir= where the data is")
    train = set(json.loads((run_dir / "split.json").read_text())["train"])
    cases = sorted((c for c in load_acdc(data_dir, lazy=True) if c.patient in train), key=lambda c: c.name)
    if not cases:
        raise DataError(f"{run_dir}: none of its training patients were found in {data_dir}")
    rng = np.random.default_rng(seed)
    chosen = [cases[int(i)] for i in rng.choice(len(cases), size=min(n, len(cases)), replace=False)]
    return fixed_patches(chosen, resolve_plan(profile).patch_size, n=n, seed=seed)


# ----------------------------------------------------------------------------- the report over runs
def landscape_report(
    run_dirs: dict,
    loss: str = "dice_ce",
    n_patches: int = 4,
    rho: float = 0.05,
    sam_steps: int = 5,
    hessian_iters: int = 20,
    line_points: int = 11,
    grid_points: int = 5,
    span: float = 1.0,
    seed: int = 0,
    data_dir: str | None = None,
    device: str = "cpu",
    hessian_method: str = "double_backprop",
    hessian_budget_s: float = math.inf,
    save_to=None,
) -> dict:
    """Landscape and sharpness of several trained runs, on one fixed batch and one common loss.
    run_dirs: method -> run folder (init.pt, final.pt); loss: the uu.losses name used for every model.
    Per method: "line" (alphas -0.25..1.25, init to final), "surface" (grid in [-span, span] around the final
    weights), "sam" (sam_sharpness), "hessian" (top_hessian_eigenvalue or None). The Hessians (slow) come last,
    each started only within hessian_budget_s. save_to: JSON rewritten after every step (a cut run keeps its work).
    hessian_method "finite_difference" is unusable on U-Mamba (fp32 gradients jump); keep "double_backprop"."""
    start = time.perf_counter()
    meta = dict(loss=loss, n_patches=n_patches, rho=rho, sam_steps=sam_steps, line_points=line_points)
    meta |= dict(grid_points=grid_points, span=span, seed=seed, data_dir=data_dir, device=device)
    meta |= dict(hessian_iters=hessian_iters, hessian_method=hessian_method)
    meta["runs"] = {m: str(r) for m, r in run_dirs.items()}
    images, target = training_patches(next(iter(run_dirs.values())), n=n_patches, seed=seed, data_dir=data_dir)
    loss_fn = build_loss(loss, num_classes=NUM_CLASSES).to(device)
    alphas_line = np.linspace(-0.25, 1.25, line_points)
    grid = np.linspace(-span, span, grid_points)
    report, models = {}, {}
    for method, run in tqdm(list(run_dirs.items()), desc="landscapes", leave=False):
        model = models[method] = load_run_model(run, "final", device)[0]
        closure = batch_loss_closure(model, loss_fn, images, target)
        w_init = get_weights(load_run_model(run, "init", device)[0])
        d1, d2 = random_direction(model, seed=seed + 1), random_direction(model, seed=seed + 2)
        report[method] = {
            "line": (alphas_line, loss_along_line(model, closure, w_init, get_weights(model), alphas_line)),
            "surface": (grid, grid, loss_surface_2d(model, closure, d1, d2, grid, grid)),
            "sam": sam_sharpness(model, closure, rho=rho, steps=sam_steps),
            "hessian": None,
        }
        if save_to:
            save_report(report, save_to, **meta)
    for method, model in models.items():
        if hessian_iters <= 0 or time.perf_counter() - start > hessian_budget_s:
            continue
        closure = batch_loss_closure(model, loss_fn, images, target)
        hessian = top_hessian_eigenvalue(model, closure, iters=hessian_iters, seed=seed, method=hessian_method)
        report[method]["hessian"] = hessian
        if save_to:
            save_report(report, save_to, **meta)
    return report


def save_report(report: dict, path, **meta) -> Path:
    """A landscape_report as JSON (arrays as lists) with free-form ``meta``, to draw anywhere (``load_report``)."""
    methods = {
        m: {
            "line": {"alphas": r["line"][0], "losses": r["line"][1]},
            "surface": {"alphas": r["surface"][0], "betas": r["surface"][1], "losses": r["surface"][2]},
            "sam": r["sam"],
            "hessian": r["hessian"],
        }
        for m, r in report.items()
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # numpy arrays and scalars (np.bool_ included) become lists and Python numbers
    path.write_text(json.dumps({"meta": meta, "methods": methods}, indent=1, default=lambda x: x.tolist()))
    return path


def load_report(path) -> dict:
    """The report saved by ``save_report`` in landscape_report's form (the meta stays in the file)."""
    data = json.loads(Path(path).read_text())
    return {
        m: {
            "line": (np.asarray(r["line"]["alphas"]), list(r["line"]["losses"])),
            "surface": (
                np.asarray(r["surface"]["alphas"]),
                np.asarray(r["surface"]["betas"]),
                np.asarray(r["surface"]["losses"], dtype=float),
            ),
            "sam": r["sam"],
            "hessian": r["hessian"],
        }
        for m, r in data["methods"].items()
    }
