"""Random training patches from volumes held in memory (on the training device when asked).

``PatchSampler`` keeps every normalised training volume as a tensor (image float32, label uint8) on one device and
draws a batch with a volume chosen uniformly at random for each sample. The LAST samples of the batch (nnU-Net's
rule: sample ``i`` is forced when ``i >= round(B * (1 - fraction))``) are centred on a foreground voxel (a class
present in the volume chosen uniformly, then one of its voxels; the patch clipped so that it covers as much of the
volume as it can); the other samples get a uniform random start. 2D patches ``(Y, X)`` are one slice of the volume
(the foreground voxel's slice for forced samples), 3D patches ``(Z, Y, X)``. Zero padding where the patch runs past
the volume (0 is the mean after z-scoring; background for labels). All random choices come from one numpy
Generator (exact resume); the crops are plain tensor slices, so they run where the data lives."""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch

from uu.augment import Augmenter
from uu.data import normalize_intensity
from uu.data.preprocess import crop_slices


def forced_foreground(batch_size: int, fraction: float) -> np.ndarray:
    """Boolean (B,): which samples of a batch are centred on foreground (nnU-Net's rule)."""
    first_forced = int(round(batch_size * (1.0 - fraction)))
    return np.arange(batch_size) >= first_forced


def crop_start(centre: int, dim: int, size: int) -> int:
    """Start of a ``size`` window centred on ``centre``, clipped into [min(0, dim-size), max(0, dim-size)]."""
    start = centre - size // 2
    lo, hi = min(0, dim - size), max(0, dim - size)
    return int(min(max(start, lo), hi))


class PatchSampler:
    """Batches of patches from in-memory volumes. images: float32 (Z, Y, X) arrays/tensors (already normalised);
    labels: integer (Z, Y, X) arrays/tensors; patch_size: (Y, X) for 2D or (Z, Y, X) for 3D."""

    def __init__(
        self,
        images: Sequence,
        labels: Sequence,
        patch_size: Sequence[int],
        batch_size: int,
        foreground_fraction: float = 0.33,
        device="cpu",
        seed: int = 0,
    ):
        if len(images) == 0 or len(images) != len(labels):
            raise ValueError(
                f"PatchSampler needs as many label maps as images (got {len(images)} images, "
                f"{len(labels)} labels), at least one"
            )
        if len(patch_size) not in (2, 3):
            raise ValueError(f"patch_size {tuple(patch_size)} must have 2 (Y, X) or 3 (Z, Y, X) entries")
        self.patch_size, self.batch_size = tuple(int(s) for s in patch_size), int(batch_size)
        self.spatial_dims, self.foreground_fraction = len(self.patch_size), float(foreground_fraction)
        self.device = torch.device(device)
        self.images, self.labels, self.foreground = [], [], []
        for i, (image, label) in enumerate(zip(images, labels)):
            image = torch.as_tensor(np.asarray(image, dtype=np.float32) if isinstance(image, np.ndarray) else image)
            label_np = np.asarray(label.cpu() if torch.is_tensor(label) else label)
            if image.ndim != 3 or tuple(image.shape) != label_np.shape:
                raise ValueError(
                    f"volume {i}: image {tuple(image.shape)} and label {label_np.shape} must be "
                    f"the same (Z, Y, X) shape"
                )
            self.images.append(image.to(self.device, torch.float32))
            self.labels.append(torch.as_tensor(label_np.astype(np.uint8)).to(self.device))
            # per class: flat indices of its voxels (int64, host memory; used only to pick centres)
            self.foreground.append({int(c): np.flatnonzero(label_np == c) for c in np.unique(label_np) if c > 0})
        self.rng = np.random.default_rng(seed)

    def __repr__(self):
        return (
            f"PatchSampler(volumes={len(self.images)}, patch_size={self.patch_size}, batch_size={self.batch_size}, "
            f"foreground_fraction={self.foreground_fraction}, device={self.device})"
        )

    def state_dict(self) -> dict:
        return {"rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = state["rng"]

    def _foreground_voxel(self, index: int) -> Optional[tuple[int, int, int]]:
        classes = self.foreground[index]
        if not classes:
            return None
        keys = sorted(classes)
        voxels = classes[keys[self.rng.integers(len(keys))]]
        flat = int(voxels[self.rng.integers(len(voxels))])
        return tuple(int(v) for v in np.unravel_index(flat, tuple(self.images[index].shape)))

    def draw(self) -> list[tuple[int, tuple[int, ...], bool]]:
        """Per sample (volume index, crop start over (Z, Y, X), forced); 2D patches: Z start the slice, Z size 1."""
        size = self.patch_size if self.spatial_dims == 3 else (1,) + self.patch_size
        out = []
        for forced in forced_foreground(self.batch_size, self.foreground_fraction):
            index = int(self.rng.integers(len(self.images)))
            shape = tuple(self.images[index].shape)
            voxel = self._foreground_voxel(index) if forced else None
            if voxel is not None:
                start = tuple(crop_start(c, d, s) for c, d, s in zip(voxel, shape, size))
            else:
                start = tuple(int(self.rng.integers(min(0, d - s), max(0, d - s) + 1)) for d, s in zip(shape, size))
            out.append((index, start, voxel is not None))
        return out

    def sample(self) -> tuple[torch.Tensor, torch.Tensor]:
        """images (B, 1, *patch) float32, labels (B, *patch) int64, on the sampler's device."""
        size = self.patch_size if self.spatial_dims == 3 else (1,) + self.patch_size
        batch = len(forced_foreground(self.batch_size, self.foreground_fraction))
        images = torch.zeros((batch, 1) + self.patch_size, dtype=torch.float32, device=self.device)
        labels = torch.zeros((batch,) + self.patch_size, dtype=torch.uint8, device=self.device)
        for b, (index, start, _) in enumerate(self.draw()):
            src, dst = crop_slices(start, size, tuple(self.images[index].shape))
            if src is None:
                continue
            if self.spatial_dims == 2:  # one slice: index it so the Z axis disappears
                src, dst = (src[0].start,) + src[1:], dst[1:]
            images[(b, 0) + dst] = self.images[index][src]
            labels[(b,) + dst] = self.labels[index][src]
        return images, labels.long()


class TrainBatches:
    """A PatchSampler over the normalised volumes and an Augmenter on the same device (the one place where training
    normalises its raw images). ``sample()`` -> images (B, 1, *patch) float32, labels (B, *patch) int64."""

    def __init__(self, sampler: PatchSampler, augmenter: Optional[Augmenter] = None):
        self.sampler, self.augmenter = sampler, augmenter

    @classmethod
    def from_cases(
        cls,
        cases,
        patch_size,
        batch_size: int,
        foreground_fraction: float = 0.33,
        augment: bool = True,
        device="cpu",
        seed: int = 0,
    ) -> "TrainBatches":
        images = [normalize_intensity(c.image) for c in cases]
        sampler = PatchSampler(
            images, [c.label for c in cases], patch_size, batch_size, foreground_fraction, device=device, seed=seed
        )
        return cls(sampler, Augmenter(len(patch_size), seed=seed + 1, device=device) if augment else None)

    def sample(self):
        images, labels = self.sampler.sample()
        if self.augmenter is not None:
            images, labels = self.augmenter(images, labels)
        return images, labels

    def state_dict(self) -> dict:
        return {
            "sampler": self.sampler.state_dict(),
            "augmenter": None if self.augmenter is None else self.augmenter.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.sampler.load_state_dict(state["sampler"])
        if self.augmenter is not None and state.get("augmenter") is not None:
            self.augmenter.load_state_dict(state["augmenter"])
