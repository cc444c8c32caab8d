"""Functions of the state-space layer (no parameters)."""
from .selective_scan import (has_mamba_ssm, last_backend, scan_backend, selective_scan,
                             selective_scan_torch)

__all__ = ["selective_scan", "selective_scan_torch", "scan_backend", "last_backend", "has_mamba_ssm"]
