"""Helpers shared by test modules (`from helpers import TinyNet`): tests/ is on sys.path under pytest, and
test modules import from here, never from each other. Fixtures live in conftest.py."""

from __future__ import annotations

from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

# ----------------------------------------------------------------------------- ACDC files written by hand


def write_nifti(path: Path, array_xyz: np.ndarray, zooms_xyz=(1.5, 1.25, 10.0)):
    nib.save(nib.Nifti1Image(array_xyz, np.diag([*zooms_xyz, 1.0])), str(path))


def write_patient(root: Path, patient: int, ed: int, es: int, group="NOR", shape_xyz=(5, 4, 3),
                  gt=True, zooms_xyz=(1.5, 1.25, 10.0)) -> Path:
    """A patient folder of the official layout; image voxel (x, y, z) = 100x + 10y + z + frame,
    label = (x + y + z) % 4."""
    folder = root / f"patient{patient:03d}"
    folder.mkdir(parents=True)
    (folder / "Info.cfg").write_text(f"ED: {ed}\nES: {es}\nGroup: {group}\nHeight: 180\nNbFrame: 30\n")
    x, y, z = np.meshgrid(*[np.arange(n) for n in shape_xyz], indexing="ij")
    for frame in (ed, es):
        stem = folder / f"patient{patient:03d}_frame{frame:02d}"
        write_nifti(Path(f"{stem}.nii.gz"), (100 * x + 10 * y + z + frame).astype(np.int16), zooms_xyz)
        if gt:
            write_nifti(Path(f"{stem}_gt.nii.gz"), ((x + y + z) % 4).astype(np.uint8), zooms_xyz)
    return folder


def write_h5(path: Path, image, label=None):
    """One volume of the HDF5 layout: datasets "image" and optionally "label"."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f.create_dataset("image", data=image, compression="gzip")
        if label is not None:
            f.create_dataset("label", data=label, compression="gzip")


# ----------------------------------------------------------------------------- selective-scan inputs


def scan_inputs(batch, d, n, L, seed=0, constant_bc=False, dtype=torch.float32) -> dict:
    """Random selective_scan arguments u, delta, A, B, C, D, z, delta_bias (B, C constant (d, n) if asked)."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g)
    B = r(d, n) if constant_bc else r(batch, n, L)
    C = r(d, n) if constant_bc else r(batch, n, L)
    return dict(u=r(batch, d, L).to(dtype), delta=(0.5 * r(batch, d, L) - 1).to(dtype),
                A=-torch.rand(d, n, generator=g) * 4 - 0.1, B=B.to(dtype), C=C.to(dtype),
                D=r(d), z=r(batch, d, L).to(dtype), delta_bias=0.3 * r(d))


# ----------------------------------------------------------------------------- a network for loops and steps


class TinyNet(nn.Module):
    """conv 3 (1 -> 4) -> InstanceNorm (affine) -> LeakyReLU -> 1x1 head (4 -> classes), 2D or 3D.

    Outputs like UMambaNet: train mode a list of logits, [full] or with deep_supervision [full, half]
    (every second y, x); eval mode the full-resolution logits (B, classes, *spatial).
    """

    def __init__(self, dims=2, classes=4, deep_supervision=False):
        super().__init__()
        conv = nn.Conv2d if dims == 2 else nn.Conv3d
        self.conv = conv(1, 4, 3, padding=1)
        self.norm = (nn.InstanceNorm2d if dims == 2 else nn.InstanceNorm3d)(4, affine=True)
        self.head = conv(4, classes, 1)
        self.deep_supervision = deep_supervision

    def forward(self, x):
        y = self.head(F.leaky_relu(self.norm(self.conv(x)), 0.01))
        if not self.training:
            return y
        return [y, y[..., ::2, ::2]] if self.deep_supervision else [y]
