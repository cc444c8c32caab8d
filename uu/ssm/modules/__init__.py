"""nn.Modules of the state-space layer."""

from .mamba import Mamba, scan_backend_override

__all__ = ["Mamba", "scan_backend_override"]
