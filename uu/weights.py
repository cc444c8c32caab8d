"""Weight lists (one tensor per trainable parameter, in ``model.parameters()`` order) for uu.landscape and
uu.sharpness, which move a model through weight space and copy its weights back bit for bit (never w - a*d)."""

from __future__ import annotations

import contextlib
import math
from typing import Iterator, Sequence

import torch
from torch import nn

Weights = list[torch.Tensor]


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


def combine(base: Sequence[torch.Tensor], *terms: tuple[float, Sequence[torch.Tensor]]) -> Weights:
    """base + sum_k a_k * d_k, tensor by tensor."""
    out = [b.clone() for b in base]
    for a, d in terms:
        for o, di in zip(out, d):
            o.add_(di.to(o.dtype), alpha=float(a))
    return out


def dot(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> float:
    return float(sum((x.double() * y.double()).sum() for x, y in zip(a, b)))


def norm(a: Sequence[torch.Tensor]) -> float:
    return math.sqrt(dot(a, a))
