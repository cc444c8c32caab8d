"""nn.Modules of the state-space layer."""
from .mamba import Mamba

__all__ = ["Mamba"]
