"""Selective scan (pure PyTorch + optional mamba-ssm kernel) and the Mamba v1 block.

    selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                   return_last_state=False, chunk_size=256, backend="auto")
    selective_scan_ref(...)                       the same scan as a plain loop over time (Eqs. 1-2)
    scan_backend(device) -> "cuda" | "torch"      which path a call on `device` would take
    last_backend() -> "cuda" | "torch" | None     which path the last call took
    Mamba(d_model, d_state=16, d_conv=4, expand=2, ...)
    scan_backend_override(model, "torch")         context: every Mamba in model uses that scan path
"""
from .modules.mamba import Mamba, scan_backend_override
from .ops.scan_chunked import DEFAULT_CHUNK_SIZE, selective_scan_torch
from .ops.scan_ref import selective_scan_ref
from .ops.selective_scan import has_mamba_ssm, last_backend, scan_backend, selective_scan

__all__ = ["selective_scan", "selective_scan_ref", "selective_scan_torch", "scan_backend", "last_backend",
           "has_mamba_ssm", "Mamba", "scan_backend_override", "DEFAULT_CHUNK_SIZE"]
