"""Helpers shared by test modules (`from helpers import TinyNet`): tests/ is on sys.path under pytest, and
test modules import from here, never from each other. Fixtures live in conftest.py."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import h5py
import nibabel as nib
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from uu.losses import build_loss
from uu.profiles import load_profile
from uu.runs import build_optimizer
from uu.sampling import TrainBatches
from uu.train import validation_dice

# ----------------------------------------------------------------------------- ACDC files written by hand


def write_nifti(path: Path, array_xyz: np.ndarray, zooms_xyz=(1.5, 1.25, 10.0)):
    nib.save(nib.Nifti1Image(array_xyz, np.diag([*zooms_xyz, 1.0])), str(path))


def write_patient(
    root: Path, patient: int, ed: int, es: int, group="NOR", shape_xyz=(5, 4, 3), gt=True, zooms_xyz=(1.5, 1.25, 10.0)
) -> Path:
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
    return dict(
        u=r(batch, d, L).to(dtype),
        delta=(0.5 * r(batch, d, L) - 1).to(dtype),
        A=-torch.rand(d, n, generator=g) * 4 - 0.1,
        B=B.to(dtype),
        C=C.to(dtype),
        D=r(d),
        z=r(batch, d, L).to(dtype),
        delta_bias=0.3 * r(d),
    )


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


# ----------------------------------------------------------------------------- training parts (test_train, test_ddp)


def tiny_cases(n=3, shape=(3, 20, 18), seed=0):
    """Volumes with a bright square labelled 1-3 in bands; names like Cases."""
    rng = np.random.default_rng(seed)
    cases = []
    for i in range(n):
        label = np.zeros(shape, np.uint8)
        label[:, 5:15, 4:8], label[:, 5:15, 8:11], label[:, 5:15, 11:14] = 1, 2, 3
        image = (rng.normal(0, 0.1, shape) + label).astype(np.float32)
        cases.append(SimpleNamespace(name=f"patient{i + 1:03d}_ED", image=image, label=label))
    return cases


def make_parts(seed=0, optimizer="sam", loss_name="ua"):
    torch.manual_seed(seed)
    model = TinyNet()
    loss = build_loss(loss_name)
    return model, loss, build_optimizer(model, loss, settings(optimizer=optimizer))


def settings(**changes):
    """The smoke profile with a small CPU schedule; changes on top."""
    base = dict(
        epochs=2,
        iters_per_epoch=2,
        lr=0.05,
        batch_size=3,
        val_every=1,
        checkpoint_minutes=0.0,
        progress=False,
        seed=0,
        device="cpu",
    )
    return load_profile("smoke", {**base, **changes})


def validator(cases, profile):
    return lambda model: validation_dice(model, cases, (8, 8), torch.device("cpu"), profile)


def batches(cases, seed=0):
    return TrainBatches.from_cases(cases, (8, 8), batch_size=3, seed=seed)
