"""Loss landscapes and sharpness around trained weights.

Li et al., "Visualizing the Loss Landscape of Neural Nets" (NeurIPS 2018): the loss along the straight
line from the initial to the final weights (1D), and on the plane spanned by two random
filter-normalised directions (2D). Two sharpness numbers per model: the SAM sharpness
max_{||e|| <= rho} L(w + e) - L(w) (Foret et al. 2021), estimated by projected gradient ascent, and the
largest Hessian eigenvalue, by power iteration on Hessian-vector products (double backprop).

Everything works on "weight lists": one tensor per trainable parameter, in `model.parameters()` order.
A `loss_closure()` takes no argument and returns a scalar loss of the model's *current* weights on a
fixed batch (see `fixed_patches` and `batch_loss_closure`). Every function here restores the model's
weights bit for bit before it returns (they are copied back, never re-computed as w - a*d).
"""

from __future__ import annotations

import contextlib
import json
import math
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from torch import nn

LossClosure = Callable[[], torch.Tensor]
Weights = list[torch.Tensor]


# ----------------------------------------------------------------------------- weight lists

def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def get_weights(model: nn.Module) -> Weights:
    """A detached copy of the trainable weights."""
    return [p.detach().clone() for p in trainable_parameters(model)]


@torch.no_grad()
def set_weights(model: nn.Module, weights: Sequence[torch.Tensor]) -> None:
    params = trainable_parameters(model)
    if len(params) != len(weights):
        raise ValueError(f"set_weights: the model has {len(params)} trainable tensors, got {len(weights)}")
    for p, w in zip(params, weights):
        if p.shape != w.shape:
            raise ValueError(f"set_weights: shape {tuple(w.shape)} does not fit parameter {tuple(p.shape)}")
        p.copy_(w)


@contextlib.contextmanager
def preserved_weights(model: nn.Module) -> Iterator[Weights]:
    """Yield a copy of the weights; on exit (also on error) copy them back exactly, and the train/eval mode."""
    saved = get_weights(model)
    was_training = model.training
    try:
        yield saved
    finally:
        set_weights(model, saved)
        model.train(was_training)


def _combine(base: Sequence[torch.Tensor], *terms: tuple[float, Sequence[torch.Tensor]]) -> Weights:
    """base + sum_k a_k * d_k, tensor by tensor."""
    out = [b.clone() for b in base]
    for a, d in terms:
        for o, di in zip(out, d):
            o.add_(di.to(o.dtype), alpha=float(a))
    return out


def _dot(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> float:
    return float(sum((x.double() * y.double()).sum() for x, y in zip(a, b)))


def _norm(a: Sequence[torch.Tensor]) -> float:
    return math.sqrt(_dot(a, a))


# ----------------------------------------------------------------------------- directions

def random_direction(model: nn.Module, filter_normalize: bool = True, seed: int = 0,
                     ignore_bias_and_norm: bool = True) -> Weights:
    """A Gaussian direction in weight space, one tensor per trainable parameter.

    filter_normalize (Li et al. 2018, Sec. 4): each filter d_i (a slice along the first axis, i.e. one
    output channel of a conv or one row of a linear layer) is rescaled to the norm of the matching
    filter of the weights, d_i <- d_i * ||w_i|| / ||d_i||, so the plot is comparable across networks
    whatever their weight scale. 1-D parameters (biases, norm scales) get a zero direction when
    ignore_bias_and_norm (the paper's choice), else the weights themselves.
    """
    gen = torch.Generator().manual_seed(int(seed))
    direction = []
    for p in trainable_parameters(model):
        w = p.detach()
        d = torch.randn(w.shape, generator=gen, dtype=torch.float32).to(device=w.device, dtype=w.dtype)
        if filter_normalize:
            if w.dim() <= 1:
                d = torch.zeros_like(w) if ignore_bias_and_norm else w.clone()
            else:
                w_norm = w.reshape(w.shape[0], -1).norm(dim=1)
                d_norm = d.reshape(d.shape[0], -1).norm(dim=1)
                scale = w_norm / (d_norm + 1e-10)
                d = d * scale.reshape(-1, *([1] * (w.dim() - 1)))
        direction.append(d)
    return direction


def line_between(w0: Sequence[torch.Tensor], w1: Sequence[torch.Tensor]) -> Weights:
    """The direction w1 - w0 (so w0 + 1.0 * direction == w1)."""
    if len(w0) != len(w1):
        raise ValueError(f"line_between: {len(w0)} tensors against {len(w1)}")
    return [b.detach() - a.detach() for a, b in zip(w0, w1)]


# ----------------------------------------------------------------------------- 1D and 2D landscapes

@torch.no_grad()
def _loss_at(model: nn.Module, loss_closure: LossClosure, weights: Sequence[torch.Tensor]) -> float:
    set_weights(model, weights)
    return float(loss_closure())


def loss_along_line(model: nn.Module, loss_closure: LossClosure, w_from: Sequence[torch.Tensor],
                    w_to: Sequence[torch.Tensor], alphas: Sequence[float]) -> np.ndarray:
    """Loss at w_from + alpha * (w_to - w_from) for each alpha (alpha 0: w_from, 1: w_to); shape (len(alphas),)."""
    direction = line_between(w_from, w_to)
    with preserved_weights(model):
        return np.array([_loss_at(model, loss_closure, _combine(w_from, (a, direction))) for a in alphas])


def loss_surface_2d(model: nn.Module, loss_closure: LossClosure, d1: Sequence[torch.Tensor],
                    d2: Sequence[torch.Tensor], alphas: Sequence[float], betas: Sequence[float],
                    center: Sequence[torch.Tensor] | None = None, progress: bool = False) -> np.ndarray:
    """Loss at center + alpha * d1 + beta * d2 on the grid; shape (len(alphas), len(betas)).

    center defaults to the model's current weights.
    """
    with preserved_weights(model) as saved:
        base = saved if center is None else list(center)
        grid = [(i, j) for i in range(len(alphas)) for j in range(len(betas))]
        if progress:
            from tqdm.auto import tqdm
            grid = tqdm(grid, desc="loss surface", leave=False)
        surface = np.empty((len(alphas), len(betas)))
        for i, j in grid:
            surface[i, j] = _loss_at(model, loss_closure, _combine(base, (alphas[i], d1), (betas[j], d2)))
        return surface


# ----------------------------------------------------------------------------- sharpness

def _loss_and_grad(model: nn.Module, loss_closure: LossClosure) -> tuple[float, Weights]:
    params = trainable_parameters(model)
    with torch.enable_grad():
        loss = loss_closure()
        grads = torch.autograd.grad(loss, params, allow_unused=True)
    grads = [torch.zeros_like(p) if g is None else g.detach() for p, g in zip(params, grads)]
    return float(loss.detach()), grads


def sam_sharpness(model: nn.Module, loss_closure: LossClosure, rho: float = 0.05, steps: int = 5) -> dict:
    """SAM sharpness max_{||e|| <= rho} L(w + e) - L(w), by projected gradient ascent on e.

    Each step moves e to the ball point that maximises the linearised loss at w + e:
    e <- rho * g(w + e) / ||g(w + e)|| (projected gradient ascent with an unbounded step). The first step
    is exactly SAM's perturbation (Eq. 9). For a convex loss every step can only raise L(w + e), and
    the fixed points are the KKT points of the ball-constrained maximum. The best value seen is kept.

    Returns {"loss": L(w), "max_loss": max found, "sharpness": max_loss - loss, "rho", "steps",
    "trace": [L(w + e_k) for k = 1..steps]}.
    """
    if rho <= 0 or steps < 1:
        raise ValueError(f"sam_sharpness: need rho > 0 and steps >= 1, got rho={rho}, steps={steps}")
    with preserved_weights(model) as w:
        loss0, grad = _loss_and_grad(model, loss_closure)
        best, trace = loss0, []
        for _ in range(steps):
            g_norm = _norm(grad)
            if g_norm == 0.0:  # stationary point of the linearisation: no ascent direction
                break
            e = [g * (rho / g_norm) for g in grad]
            set_weights(model, _combine(w, (1.0, e)))
            loss_e, grad = _loss_and_grad(model, loss_closure)
            trace.append(loss_e)
            best = max(best, loss_e)
    return {"loss": loss0, "max_loss": best, "sharpness": best - loss0, "rho": rho, "steps": steps,
            "trace": trace}


def _hvp_double_backprop(params, grads, used, vector) -> Weights:
    hv = [torch.zeros_like(p) for p in params]
    if used:
        products = torch.autograd.grad([grads[i] for i in used], [params[i] for i in used],
                                       grad_outputs=[vector[i] for i in used], retain_graph=True,
                                       allow_unused=True)
        for i, h in zip(used, products):
            if h is not None:
                hv[i] = h.detach()
    return hv


def _hvp_finite_difference(model, loss_closure, w, vector, epsilon: float) -> Weights:
    """(g(w + eps v) - g(w - eps v)) / (2 eps), eps = epsilon * max(||w||, 1) / ||v||.

    Needs first derivatives only, so it also works through custom autograd Functions whose backward
    is not itself differentiable. Exact for a quadratic loss; for a real network it needs a smooth
    gradient in float64 or a well-chosen epsilon (check against double backprop first).
    """
    v_norm = _norm(vector)
    if v_norm == 0.0:
        return [torch.zeros_like(x) for x in vector]
    eps = epsilon * max(_norm(w), 1.0) / v_norm
    set_weights(model, _combine(w, (eps, vector)))
    _, g_plus = _loss_and_grad(model, loss_closure)
    set_weights(model, _combine(w, (-eps, vector)))
    _, g_minus = _loss_and_grad(model, loss_closure)
    set_weights(model, w)
    return [(a - b) / (2 * eps) for a, b in zip(g_plus, g_minus)]


def _double_backprop_graph(model, loss_closure):
    params = trainable_parameters(model)
    grads = torch.autograd.grad(loss_closure(), params, create_graph=True, allow_unused=True)
    # parameters the loss does not use (e.g. deep-supervision heads in eval mode): zero rows of H
    used = [i for i, g in enumerate(grads) if g is not None and g.requires_grad]
    return params, grads, used


def hessian_vector_product(model: nn.Module, loss_closure: LossClosure, vector: Sequence[torch.Tensor],
                           method: str = "double_backprop", epsilon: float = 1e-3) -> Weights:
    """H v at the current weights; method "double_backprop" or "finite_difference" (see below)."""
    backend = "torch" if method == "double_backprop" else None  # see top_hessian_eigenvalue
    with preserved_weights(model) as w, torch.enable_grad(), _scan_backend(model, backend):
        if method == "finite_difference":
            return _hvp_finite_difference(model, loss_closure, w, list(vector), epsilon)
        if method != "double_backprop":
            raise ValueError(f"hessian_vector_product: method must be double_backprop or finite_difference, "
                             f"got {method!r}")
        params, grads, used = _double_backprop_graph(model, loss_closure)
        return _hvp_double_backprop(params, grads, used, list(vector))


def _scan_backend(model: nn.Module, backend: str | None):
    """uu.ssm.scan_backend_override(model, backend), or nothing when backend is None."""
    if backend is None:
        return contextlib.nullcontext()
    from uu.ssm import scan_backend_override
    return scan_backend_override(model, backend)


def _power_iteration(product, v, iters: int, tol: float):
    """lambda = v^T A v with v <- Av / ||Av||; returns (eigenvalue, trace, converged)."""
    eigenvalue, trace, converged = float("nan"), [], False
    for _ in range(iters):
        av = product(v)
        new = _dot(v, av)
        trace.append(new)
        av_norm = _norm(av)
        if av_norm == 0.0:
            return 0.0, trace, True
        v = [a / av_norm for a in av]
        if len(trace) > 1 and abs(new - eigenvalue) <= tol * abs(new):
            return new, trace, True
        eigenvalue = new
    return eigenvalue, trace, converged


def top_hessian_eigenvalue(model: nn.Module, loss_closure: LossClosure, iters: int = 20,
                           tol: float = 1e-3, seed: int = 0, method: str = "double_backprop",
                           epsilon: float = 1e-3) -> dict:
    """Largest Hessian eigenvalue by power iteration on Hessian-vector products.

    Power iteration v <- Hv / ||Hv||, lambda = v^T H v finds the eigenvalue of largest MAGNITUDE
    ("dominant"). At a minimum that is the largest one; away from one (an under-trained model) it can be
    negative, and then a second power iteration on H - dominant * I (whose eigenvalues are all >= 0, the
    largest being lambda_max - dominant) recovers lambda_max. Each run stops after `iters` products or when
    lambda changes by less than tol * |lambda|.
    method "double_backprop": Hessian-vector products by differentiating the gradient (the graph of
    the gradient is built once and reused); "finite_difference": central differences of gradients,
    for models whose backward is not twice differentiable (see _hvp_finite_difference).
    Returns {"eigenvalue" (largest), "dominant", "iterations", "converged", "trace", "method"}.
    """
    if method not in ("double_backprop", "finite_difference"):
        raise ValueError(f"top_hessian_eigenvalue: method must be double_backprop or finite_difference, got {method!r}")
    params = trainable_parameters(model)
    gen = torch.Generator().manual_seed(int(seed))
    v = [torch.randn(p.shape, generator=gen).to(p) for p in params]
    v_norm = _norm(v)
    v = [x / v_norm for x in v]
    # the fused CUDA scan's backward is not differentiable: double backprop goes through the PyTorch scan
    backend = "torch" if method == "double_backprop" else None
    with preserved_weights(model) as w, torch.enable_grad(), _scan_backend(model, backend):
        if method == "double_backprop":
            params, grads, used = _double_backprop_graph(model, loss_closure)
            product = lambda vec: _hvp_double_backprop(params, grads, used, vec)  # noqa: E731
        else:
            product = lambda vec: _hvp_finite_difference(model, loss_closure, w, vec, epsilon)  # noqa: E731
        dominant, trace, converged = _power_iteration(product, v, iters, tol)
        eigenvalue = dominant
        if dominant < 0:
            shifted = lambda vec: [h - dominant * x for h, x in zip(product(vec), vec)]  # noqa: E731
            mu, trace_shifted, converged_shifted = _power_iteration(shifted, v, iters, tol)
            eigenvalue, converged = mu + dominant, converged and converged_shifted
            trace = trace + [t + dominant for t in trace_shifted]
    return {"eigenvalue": eigenvalue, "dominant": dominant, "iterations": len(trace), "converged": converged,
            "trace": trace, "method": method}


# ----------------------------------------------------------------------------- a fixed batch of patches

def fixed_patches(cases, patch_size: Sequence[int], n: int = 4, seed: int = 0,
                  foreground: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed set of n training patches, the same for every model compared.

    cases: `uu.data.Case` list (image float32 (Z,Y,X), already normalised as training sees it,
    label uint8). patch_size: (Y, X) for 2D plans (one slice per patch) or (Z, Y, X) for 3D.
    foreground: centre each patch on a random labelled voxel (when the volume has one).
    Returns images (n, 1, *patch_size) float32 and target (n, *patch_size) int64.
    """
    patch_size = tuple(int(s) for s in patch_size)
    if len(patch_size) not in (2, 3):
        raise ValueError(f"fixed_patches: patch_size must have 2 or 3 entries, got {patch_size}")
    if not cases:
        raise ValueError("fixed_patches: no cases given")
    from uu.data import extract_patch

    rng = np.random.default_rng(seed)
    images, labels = [], []
    for k in range(n):
        case = cases[int(rng.integers(len(cases)))]
        image, label = np.asarray(case.image, np.float32), np.asarray(case.label)
        fg = np.argwhere(label > 0) if foreground else np.empty((0, 3))
        center = fg[int(rng.integers(len(fg)))] if len(fg) else np.array([int(rng.integers(s)) for s in label.shape])
        if len(patch_size) == 2:  # one slice
            image, label, center = image[center[0]], label[center[0]], center[1:]
        start = [int(c) - s // 2 for c, s in zip(center, patch_size)]
        images.append(extract_patch(image, start, patch_size))
        labels.append(extract_patch(label, start, patch_size))
    return (torch.from_numpy(np.stack(images)[:, None]).float(),
            torch.from_numpy(np.stack(labels).astype(np.int64)))



def batch_loss_closure(model: nn.Module, loss_fn: Callable, images: torch.Tensor,
                       target: torch.Tensor) -> LossClosure:
    """loss_fn(model(images), target) with the model in eval mode (full-resolution logits, no dropout)."""
    device = next(model.parameters()).device
    images, target = images.to(device), target.to(device)

    def closure() -> torch.Tensor:
        model.eval()
        return loss_fn(model(images), target)

    return closure


# ----------------------------------------------------------------------------- trained runs

def training_patches(run_dir, n: int = 4, seed: int = 0, data_dir: str | None = None):
    """n fixed training patches of a run (its profile's plan, its split's training patients, the
    intensity normalisation training uses). Runs of one profile, data and split get the same patches.

    data_dir: where the data lives now (default: the data_dir recorded in RUN/profile.yaml).
    Returns images (n, 1, *patch) and target (n, *patch) as in fixed_patches.
    """
    from types import SimpleNamespace

    from uu.data import DataError, load_acdc, normalize_intensity
    from uu.profiles import load_profile
    from uu.runs import resolve_plan

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
    normalised = [SimpleNamespace(image=normalize_intensity(c.image), label=c.label) for c in chosen]
    return fixed_patches(normalised, resolve_plan(profile).patch_size, n=n, seed=seed)


def landscape_report(run_dirs: dict, loss: str = "dice_ce", n_patches: int = 4, rho: float = 0.05,
                     sam_steps: int = 5, hessian_iters: int = 20, line_points: int = 11, grid_points: int = 5,
                     span: float = 1.0, seed: int = 0, data_dir: str | None = None, device: str = "cpu",
                     hessian_method: str = "double_backprop") -> dict:
    """Landscape and sharpness of several trained runs, on one fixed batch and one common loss.

    run_dirs: method -> run folder (with init.pt and final.pt). loss: the uu.losses name used for
    every model, so rows trained with different objectives are compared on the same function.
    Per method: "line" (alphas from -0.25 to 1.25, losses from init to final), "surface" (alphas,
    betas in [-span, span], grid of losses around the final weights along two filter-normalised
    directions, seeded), "sam" (sam_sharpness dict), "hessian" (top_hessian_eigenvalue dict).
    hessian_iters 0: no Hessian estimate ("hessian" is None; sharpness_table shows NaN).
    hessian_method: "double_backprop" (default) or "finite_difference". Measured on a smoke U-Mamba:
    double backprop through the pure-PyTorch scan's blockwise-recompute backward differs by ~0.7% from
    plain autograd (that backward is not itself differentiated), while finite differences of the
    U-Mamba's fp32 gradients are unusable (the gradient jumps under tiny weight changes).
    """
    from tqdm.auto import tqdm

    from uu.losses import build_loss
    from uu.runs import load_run_model

    first = next(iter(run_dirs.values()))
    images, target = training_patches(first, n=n_patches, seed=seed, data_dir=data_dir)
    loss_fn = build_loss(loss, num_classes=4).to(device)
    alphas_line = np.linspace(-0.25, 1.25, line_points)
    grid = np.linspace(-span, span, grid_points)
    report = {}
    for method, run in tqdm(list(run_dirs.items()), desc="landscapes", leave=False):
        model = load_run_model(run, "final", device)[0]
        w_init = get_weights(load_run_model(run, "init", device)[0])
        w_final = get_weights(model)
        closure = batch_loss_closure(model, loss_fn, images, target)
        d1 = random_direction(model, seed=seed + 1)
        d2 = random_direction(model, seed=seed + 2)
        report[method] = {
            "line": (alphas_line, loss_along_line(model, closure, w_init, w_final, alphas_line)),
            "surface": (grid, grid, loss_surface_2d(model, closure, d1, d2, grid, grid)),
            "sam": sam_sharpness(model, closure, rho=rho, steps=sam_steps),
            "hessian": (top_hessian_eigenvalue(model, closure, iters=hessian_iters, seed=seed, method=hessian_method)
                        if hessian_iters > 0 else None),
        }
    return report


def save_report(report: dict, path, **meta) -> Path:
    """A landscape_report as JSON (arrays as lists) with free-form ``meta`` (loss, patches, rho...), so that a
    report computed on a GPU can be drawn and tabulated anywhere (``load_report``)."""
    def plain(x):
        if isinstance(x, dict):
            return {k: plain(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [plain(v) for v in x]
        if isinstance(x, np.ndarray):
            return x.tolist()
        if isinstance(x, (np.floating, np.integer, np.bool_)):
            return x.item()
        return x

    methods = {m: {"line": {"alphas": r["line"][0], "losses": r["line"][1]},
                   "surface": {"alphas": r["surface"][0], "betas": r["surface"][1], "losses": r["surface"][2]},
                   "sam": r["sam"], "hessian": r["hessian"]} for m, r in report.items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(plain({"meta": meta, "methods": methods}), indent=1))
    return path


def load_report(path) -> dict:
    """The report saved by ``save_report`` in landscape_report's form ({method: {"line": (alphas, losses),
    "surface": (alphas, betas, grid), "sam", "hessian"}}); the meta dict stays in the file ("meta")."""
    data = json.loads(Path(path).read_text())
    return {m: {"line": (np.asarray(r["line"]["alphas"]), list(r["line"]["losses"])),
                "surface": (np.asarray(r["surface"]["alphas"]), np.asarray(r["surface"]["betas"]),
                            np.asarray(r["surface"]["losses"], dtype=float)),
                "sam": r["sam"], "hessian": r["hessian"]} for m, r in data["methods"].items()}


def sharpness_table(report: dict):
    """pandas DataFrame: method, loss at the final weights, SAM max loss, SAM sharpness, top eigenvalue."""
    import pandas as pd

    nan = float("nan")
    none = {"eigenvalue": nan, "dominant": nan, "iterations": 0, "converged": False, "method": "not computed"}
    return pd.DataFrame([{"method": m, "loss": r["sam"]["loss"], "sam_max_loss": r["sam"]["max_loss"],
                          "sam_sharpness": r["sam"]["sharpness"], "rho": r["sam"]["rho"],
                          "top_hessian_eigenvalue": (r["hessian"] or none)["eigenvalue"],
                          "dominant_hessian_eigenvalue": (r["hessian"] or none)["dominant"],
                          "power_iterations": (r["hessian"] or none)["iterations"],
                          "converged": (r["hessian"] or none)["converged"],
                          "hessian_method": (r["hessian"] or none)["method"]}
                         for m, r in report.items()])
