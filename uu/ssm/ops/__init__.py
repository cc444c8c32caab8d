"""Functions of the state-space layer (no parameters): the scan as a loop (scan_ref), chunked
(scan_chunked), as mamba-ssm's fused kernel (fused_scan), and the dispatch between them (selective_scan)."""

from .scan_chunked import selective_scan_torch
from .scan_ref import selective_scan_ref
from .selective_scan import has_mamba_ssm, last_backend, scan_backend, selective_scan

__all__ = [
    "selective_scan",
    "selective_scan_ref",
    "selective_scan_torch",
    "scan_backend",
    "last_backend",
    "has_mamba_ssm",
]
