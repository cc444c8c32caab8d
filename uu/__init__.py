"""uu: the UU-Mamba reproduction workbook.

Submodules (imported on demand, so ``import uu`` stays light):
    uu.data       ACDC loading (official NIfTI and HDF5 layouts), phantom, splits, preprocessing
    uu.ssm        selective scan (pure PyTorch + optional mamba-ssm kernel) and the Mamba block
    uu.net        U-Mamba Enc / Bot and the plain residual U-Net, 2D and 3D
    uu.losses     Dice, CE, focal, the uncertainty-aware loss (Eq. 8), deep supervision
    uu.sam        Sharpness-Aware Minimization (Eq. 9)
    uu.train      fit(), profiles, checkpoints
    uu.infer      sliding-window prediction
    uu.metrics    Dice, MSE (Eq. 10), HD95, clinical indices
"""

__version__ = "0.1.0"
