"""uu: the UU-Mamba reproduction workbook. Submodules are imported on demand, so ``import uu`` stays light;
DEVELOPERS.md maps them."""

__version__ = "0.1.0"
