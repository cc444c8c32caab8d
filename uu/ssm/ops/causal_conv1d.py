"""Mamba's causal depthwise convolution along the sequence, optionally followed by SiLU.

    y[b, d, t] = act(bias[d] + sum_j weight[d, j] * x[b, d, t - (k - 1) + j])    (x = 0 before t = 0)

Two implementations of the same function: "conv1d", F.conv1d(groups=d, padding=k - 1) cut to the first L outputs
(nn.Conv1d's own path, as mamba_ssm's Mamba without the causal-conv1d package: the reference), and "shift", the sum
of k shifted slices with a hand-written backward (only elementwise work and k per-channel reductions). "auto" picks
"shift" on a CPU and under torch.compile, "conv1d" for eager CUDA: the faster there (benchmarks/bench_conv1d.py)."""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F

IMPLS = ("auto", "conv1d", "shift")
DEFAULT_IMPL = os.environ.get("UU_CONV1D", "auto")  # "conv1d" or "shift": what impl="auto" always runs
if DEFAULT_IMPL not in IMPLS:
    raise ValueError(f"UU_CONV1D={DEFAULT_IMPL!r}: use one of {IMPLS}")


def causal_conv1d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    activation: str | None = None,
    impl: str = "auto",
) -> torch.Tensor:
    """x (B, D, L), weight (D, K), bias (D,) or None, activation None | "silu" -> (B, D, L)."""
    if activation not in (None, "silu"):
        raise ValueError(f"causal_conv1d: activation={activation!r}; use None or 'silu'")
    if impl not in IMPLS:
        raise ValueError(f"causal_conv1d: impl={impl!r}; choose one of {IMPLS}")
    if impl == "auto":
        impl = (
            DEFAULT_IMPL
            if DEFAULT_IMPL != "auto"
            else ("conv1d" if x.is_cuda and not torch.compiler.is_compiling() else "shift")
        )
    if impl == "conv1d":
        return causal_conv1d_ref(x, weight, bias, activation)
    # as F.conv1d under autocast: the weights in the input's dtype (bf16 activations stay bf16)
    weight = weight.to(x.dtype)
    bias = weight.new_zeros(weight.shape[0]) if bias is None else bias.to(x.dtype)
    return _ShiftConv.apply(x, weight, bias, activation == "silu")


def causal_conv1d_ref(x, weight, bias=None, activation=None):
    """The reference: nn.Conv1d(D, D, K, groups=D, padding=K - 1) on x, the first L outputs."""
    seqlen, k = x.shape[-1], weight.shape[-1]
    y = F.conv1d(x, weight.unsqueeze(1), bias, padding=k - 1, groups=x.shape[1])[..., :seqlen]
    return F.silu(y) if activation == "silu" else y


def _shift_sum(xp: torch.Tensor, weight: torch.Tensor, seqlen: int) -> torch.Tensor:
    """sum_j weight[:, j] * xp[..., j : j + L] for a left-padded xp (B, D, L + K - 1)."""
    out = weight[:, 0, None] * xp[..., :seqlen]
    differentiable = torch.is_grad_enabled() and (xp.requires_grad or weight.requires_grad)
    for j in range(1, weight.shape[-1]):
        term = xp[..., j : j + seqlen]
        out = out + weight[:, j, None] * term if differentiable else out.addcmul_(weight[:, j, None], term)
    return out


class _ShiftConv(torch.autograd.Function):
    """Saves only the inputs: the backward recomputes the pre-activation (k multiply-adds), cheaper than keeping it,
    and stays differentiable in x, weight and bias (double backward for Hessian-vector products)."""

    @staticmethod
    def forward(ctx, x, weight, bias, silu: bool):
        ctx.save_for_backward(x, weight, bias)
        ctx.silu = silu
        pre = _pre_activation(x, weight, bias)
        return F.silu(pre) if silu else pre

    @staticmethod
    def backward(ctx, grad_out):
        x, weight, bias = ctx.saved_tensors
        k, seqlen = weight.shape[-1], x.shape[-1]
        xp = F.pad(x, (k - 1, 0))
        g = grad_out
        if ctx.silu:
            pre = _pre_activation(x, weight, bias, xp)
            sig = torch.sigmoid(pre)
            g = grad_out * (sig * (1 + pre * (1 - sig)))  # d silu(p) / dp = s + p s (1 - s)
        grad_x = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            # x[t] feeds outputs t .. t + k - 1 with weights w[k-1] .. w[0]: a correlation with the flipped kernel
            grad_x = _shift_sum(F.pad(g, (0, k - 1)), weight.flip(-1), seqlen)
        if ctx.needs_input_grad[1]:
            grad_weight = torch.stack([(g * xp[..., j : j + seqlen]).sum(dim=(0, 2)) for j in range(k)], dim=1)
        if ctx.needs_input_grad[2]:
            grad_bias = g.sum(dim=(0, 2))
        return grad_x, grad_weight, grad_bias, None


def _pre_activation(x, weight, bias, xp=None):
    xp = F.pad(x, (weight.shape[-1] - 1, 0)) if xp is None else xp
    return _shift_sum(xp, weight, x.shape[-1]) + bias[:, None]
