"""`selective_scan`: which implementation of the scan runs (the dispatch), with shape checks.

Semantics of `mamba_ssm.selective_scan_fn` (loop in scan_ref.py). On a GPU with mamba-ssm its fused kernel runs,
through fused_scan.py's operators or (UU_FUSED_SCAN=autograd_function) selective_scan_fn; else scan_chunked.py."""

from __future__ import annotations

import os

import torch

from . import scan_cpu
from .fused_scan import fused_scan_applies, fused_selective_scan, has_kernel
from .scan_chunked import DEFAULT_CHUNK_SIZE, selective_scan_torch

try:  # the fused kernel is optional: a CUDA build of mamba-ssm
    from mamba_ssm.ops.selective_scan_interface import selective_scan_fn as _cuda_selective_scan_fn
except Exception:  # ImportError, or a build that does not match the installed torch
    _cuda_selective_scan_fn = None

FUSED_CALL = os.environ.get("UU_FUSED_SCAN", "op")
if FUSED_CALL not in ("op", "autograd_function"):
    raise ValueError(f"UU_FUSED_SCAN={FUSED_CALL!r}: use 'op' (the default) or 'autograd_function'")

_last_backend: str | None = None
# what ran, in words: "torch" dispatches to scan_chunked.py, whose scan hands the work to the C kernel on CPUs
KERNELS = {"cuda": "mamba-ssm fused CUDA kernel", "c": "C CPU kernel (scan_cpu.c)", "torch": "PyTorch chunked scan"}


def has_mamba_ssm() -> bool:
    """True when mamba-ssm's fused selective-scan kernel imported."""
    return _cuda_selective_scan_fn is not None


def scan_backend(device: torch.device | str, backend: str = "auto") -> str:
    """Which implementation `selective_scan` would use for tensors on `device`: "cuda" or "torch"."""
    if backend not in ("auto", "torch", "cuda"):
        raise ValueError(f"selective_scan: backend={backend!r}; use 'auto', 'torch' or 'cuda'")
    on_gpu = torch.device(device).type == "cuda"
    if backend == "cuda" and not has_mamba_ssm():
        raise RuntimeError(
            "selective_scan: backend='cuda' needs mamba-ssm (pip install mamba-ssm "
            "on a CUDA machine); use backend='auto' or 'torch' to run without it"
        )
    if backend == "cuda" and not on_gpu:
        raise RuntimeError("selective_scan: backend='cuda' needs CUDA tensors; move them to a GPU or use 'auto'")
    if backend == "auto":
        return "cuda" if (on_gpu and has_mamba_ssm()) else "torch"
    return backend


def last_backend() -> str | None:
    """The dispatch of the most recent `selective_scan` call ("cuda" or "torch"), or None."""
    return _last_backend


def last_kernel() -> str | None:
    """The kernel the most recent `selective_scan` call ran, a value of KERNELS, or None before any call."""
    if _last_backend is None:
        return None
    return KERNELS["cuda" if _last_backend == "cuda" else scan_cpu.last_cpu_path or "torch"]


def selective_scan(
    u,
    delta,
    A,
    B,
    C,
    D=None,
    z=None,
    delta_bias=None,
    delta_softplus=False,
    return_last_state=False,
    chunk_size=DEFAULT_CHUNK_SIZE,
    backend="auto",
):
    """Selective scan with `mamba_ssm.selective_scan_fn` semantics (real A); backend "auto", "torch" or "cuda".
    u, delta, z: (batch, d, L); A: (d, n); B, C: (batch, n, L) or (d, n); D, delta_bias: (d,).
    Returns y (batch, d, L) in u's dtype, or (y, last_state) with last_state (batch, d, n) fp32."""
    global _last_backend
    _check_shapes(u, delta, A, B, C, D, z, delta_bias)
    _last_backend = which = scan_backend(u.device, backend)
    if which == "cuda":
        # the operator needs mamba-ssm's extension module by name (a build that renames it keeps the function)
        if FUSED_CALL == "op" and has_kernel() and fused_scan_applies(u, B, C, D, z, delta_bias, return_last_state):
            return fused_selective_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
        return _cuda_selective_scan_fn(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)
    return selective_scan_torch(
        u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state, chunk_size=chunk_size
    )


def _check_shapes(u, delta, A, B, C, D, z, delta_bias):
    if u.dim() != 3:
        raise ValueError(f"selective_scan: u must be (batch, d, L), got shape {tuple(u.shape)}")
    batch, d, L = u.shape
    if tuple(delta.shape) != (batch, d, L):
        raise ValueError(f"selective_scan: delta has shape {tuple(delta.shape)}, expected {(batch, d, L)} like u")
    if A.dim() != 2 or A.shape[0] != d or A.is_complex():
        raise ValueError(f"selective_scan: A must be real (d={d}, n), got {tuple(A.shape)} {A.dtype}")
    n = A.shape[1]
    for name, t in (("B", B), ("C", C)):
        if tuple(t.shape) not in ((batch, n, L), (d, n)):
            raise ValueError(
                f"selective_scan: {name} has shape {tuple(t.shape)}; expected "
                f"(batch, n, L)={(batch, n, L)} or constant (d, n)={(d, n)}"
            )
    if z is not None and tuple(z.shape) != (batch, d, L):
        raise ValueError(f"selective_scan: z has shape {tuple(z.shape)}, expected {(batch, d, L)}")
    for name, t in (("D", D), ("delta_bias", delta_bias)):
        if t is not None and tuple(t.shape) != (d,):
            raise ValueError(f"selective_scan: {name} has shape {tuple(t.shape)}, expected ({d},)")
