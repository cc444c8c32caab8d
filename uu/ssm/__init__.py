"""Selective scan (pure PyTorch + optional mamba-ssm kernel) and the Mamba v1 block.

selective_scan(u, delta, A, B, C, D, z, delta_bias, ...)   mamba_ssm.selective_scan_fn's semantics
selective_scan_ref(...)                       the same scan as a plain loop over time (Eqs. 1-2)
scan_backend(device) / last_backend()         which path a call on `device` would take / the last call took
scan_backend_override(model, "torch")         context: every Mamba in model uses that scan path
"""

from .modules.mamba import Mamba, scan_backend_override
from .ops.scan_chunked import DEFAULT_CHUNK_SIZE, selective_scan_torch
from .ops.scan_ref import selective_scan_ref
from .ops.selective_scan import has_mamba_ssm, last_backend, scan_backend, selective_scan

__all__ = [
    "selective_scan",
    "selective_scan_ref",
    "selective_scan_torch",
    "scan_backend",
    "last_backend",
    "has_mamba_ssm",
    "Mamba",
    "scan_backend_override",
    "DEFAULT_CHUNK_SIZE",
]
