"""Sharpness around trained weights: SAM sharpness and the largest Hessian eigenvalue.

A `loss_closure()` returns the scalar loss of the model's *current* weights on a fixed batch
(uu.landscape.batch_loss_closure). Every function restores the weights bit for bit."""

from __future__ import annotations

import contextlib
from typing import Callable, Sequence

import torch
from torch import nn

from uu.ssm import scan_backend_override
from uu.weights import Weights, combine, dot, norm, preserved_weights, set_weights, trainable_parameters

LossClosure = Callable[[], torch.Tensor]
HVP_METHODS = ("double_backprop", "finite_difference")


def _loss_and_grad(model: nn.Module, loss_closure: LossClosure) -> tuple[float, Weights]:
    params = trainable_parameters(model)
    with torch.enable_grad():
        loss = loss_closure()
        grads = torch.autograd.grad(loss, params, allow_unused=True)
    grads = [torch.zeros_like(p) if g is None else g.detach() for p, g in zip(params, grads)]
    return float(loss.detach()), grads


def sam_sharpness(model: nn.Module, loss_closure: LossClosure, rho: float = 0.05, steps: int = 5) -> dict:
    """SAM sharpness max_{||e|| <= rho} L(w + e) - L(w), by projected gradient ascent: e <- rho * g(w + e) /
    ||g(w + e)||, the first step SAM's perturbation (Eq. 9), the best value kept.
    Returns {"loss", "max_loss", "sharpness": max_loss - loss, "rho", "steps", "trace"}."""
    if rho <= 0 or steps < 1:
        raise ValueError(f"sam_sharpness: need rho > 0 and steps >= 1, got rho={rho}, steps={steps}")
    with preserved_weights(model) as w:
        loss0, grad = _loss_and_grad(model, loss_closure)
        best, trace = loss0, []
        for _ in range(steps):
            g_norm = norm(grad)
            if g_norm == 0.0:  # stationary point of the linearisation: no ascent direction
                break
            set_weights(model, combine(w, (rho / g_norm, grad)))
            loss_e, grad = _loss_and_grad(model, loss_closure)
            trace.append(loss_e)
            best = max(best, loss_e)
    return {"loss": loss0, "max_loss": best, "sharpness": best - loss0, "rho": rho, "steps": steps, "trace": trace}


def _hvp_double_backprop(params, grads, used, vector) -> Weights:
    hv = [torch.zeros_like(p) for p in params]
    if used:
        products = torch.autograd.grad(
            [grads[i] for i in used],
            [params[i] for i in used],
            retain_graph=True,
            grad_outputs=[vector[i] for i in used],
            allow_unused=True,
        )
        for i, h in zip(used, products):
            if h is not None:
                hv[i] = h.detach()
    return hv


def _hvp_finite_difference(model, loss_closure, w, vector, epsilon: float) -> Weights:
    """(g(w + eps v) - g(w - eps v)) / (2 eps), eps = epsilon * max(||w||, 1) / ||v||; first derivatives only."""
    v_norm = norm(vector)
    if v_norm == 0.0:
        return [torch.zeros_like(x) for x in vector]
    eps = epsilon * max(norm(w), 1.0) / v_norm
    set_weights(model, combine(w, (eps, vector)))
    _, g_plus = _loss_and_grad(model, loss_closure)
    set_weights(model, combine(w, (-eps, vector)))
    _, g_minus = _loss_and_grad(model, loss_closure)
    set_weights(model, w)
    return [(a - b) / (2 * eps) for a, b in zip(g_plus, g_minus)]


@contextlib.contextmanager
def _hvp(model: nn.Module, loss_closure: LossClosure, method: str, epsilon: float):
    """Yield product(v) -> H v at the current weights (restored on exit); double_backprop runs the PyTorch scan."""
    if method not in HVP_METHODS:
        raise ValueError(f"method must be one of {HVP_METHODS}, got {method!r}")
    backend = scan_backend_override(model, "torch") if method == "double_backprop" else contextlib.nullcontext()
    with preserved_weights(model) as w, torch.enable_grad(), backend:
        if method == "finite_difference":
            yield lambda vec: _hvp_finite_difference(model, loss_closure, w, list(vec), epsilon)
            return
        params = trainable_parameters(model)
        grads = torch.autograd.grad(loss_closure(), params, create_graph=True, allow_unused=True)
        # parameters the loss does not use (e.g. deep-supervision heads in eval mode): zero rows of H
        used = [i for i, g in enumerate(grads) if g is not None and g.requires_grad]
        yield lambda vec: _hvp_double_backprop(params, grads, used, list(vec))


def hessian_vector_product(
    model: nn.Module,
    loss_closure: LossClosure,
    vector: Sequence[torch.Tensor],
    method: str = "double_backprop",
    epsilon: float = 1e-3,
) -> Weights:
    """H v at the current weights; method "double_backprop" or "finite_difference"."""
    with _hvp(model, loss_closure, method, epsilon) as product:
        return product(vector)


def _power_iteration(product, v, iters: int, tol: float):
    """lambda = v^T A v with v <- Av / ||Av||; returns (eigenvalue, trace, converged)."""
    eigenvalue, trace = float("nan"), []
    for _ in range(iters):
        av = product(v)
        new = dot(v, av)
        trace.append(new)
        av_norm = norm(av)
        if av_norm == 0.0:
            return 0.0, trace, True
        v = [a / av_norm for a in av]
        if len(trace) > 1 and abs(new - eigenvalue) <= tol * abs(new):
            return new, trace, True
        eigenvalue = new
    return eigenvalue, trace, False


def top_hessian_eigenvalue(
    model: nn.Module,
    loss_closure: LossClosure,
    iters: int = 20,
    tol: float = 1e-3,
    seed: int = 0,
    method: str = "double_backprop",
    epsilon: float = 1e-3,
) -> dict:
    """Largest Hessian eigenvalue by power iteration on Hessian-vector products (`iters` at most, or a relative
    change below tol); a negative "dominant" one (largest magnitude) is followed by an iteration on H - dominant * I.
    Returns {"eigenvalue" (largest), "dominant", "iterations", "converged", "trace", "method"}."""
    gen = torch.Generator().manual_seed(int(seed))
    v = [torch.randn(p.shape, generator=gen).to(p) for p in trainable_parameters(model)]
    v_norm = norm(v)
    v = [x / v_norm for x in v]
    with _hvp(model, loss_closure, method, epsilon) as product:
        dominant, trace, converged = _power_iteration(product, v, iters, tol)
        eigenvalue = dominant
        if dominant < 0:
            shifted = lambda vec: [h - dominant * x for h, x in zip(product(vec), vec)]  # noqa: E731
            mu, trace_shifted, converged_shifted = _power_iteration(shifted, v, iters, tol)
            eigenvalue, converged = mu + dominant, converged and converged_shifted
            trace = trace + [t + dominant for t in trace_shifted]
    out = {"eigenvalue": eigenvalue, "dominant": dominant, "iterations": len(trace), "converged": converged}
    return {**out, "trace": trace, "method": method}
