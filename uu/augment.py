"""Batched data augmentation in plain torch: runs on the batch's device (GPU during GPU training).

``Augmenter(spatial_dims, cfg, seed, device)(images, labels)``: images (B, 1, *spatial) float32, labels (B, *spatial)
int64; each sample draws its own transforms with nnU-Net-like probabilities (``AugmentConfig``): in-plane rotation
and scaling with ONE ``grid_sample`` per batch (3D patches rotate about Z; the corners of a rotated patch may be
zeros), Gaussian noise, brightness, contrast, gamma (also inverted), mirroring. All random numbers come from one
``torch.Generator`` on the batch's device (exact resume)."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F


@dataclass
class AugmentConfig:
    p_rotation: float = 0.2
    max_rotation_deg: float = 180.0
    p_scale: float = 0.2
    scale_range: tuple[float, float] = (0.7, 1.4)
    p_noise: float = 0.1
    noise_variance: tuple[float, float] = (0.0, 0.1)
    p_brightness: float = 0.15
    brightness_range: tuple[float, float] = (0.75, 1.25)
    p_contrast: float = 0.15
    contrast_range: tuple[float, float] = (0.75, 1.25)
    p_gamma: float = 0.3
    p_gamma_inverted: float = 0.1
    gamma_range: tuple[float, float] = (0.7, 1.5)
    p_mirror: float = 0.5

    @classmethod
    def off(cls) -> "AugmentConfig":
        """Every probability 0: the identity."""
        return cls(**{f.name: 0.0 for f in fields(cls) if f.name.startswith("p_")})


class Augmenter:
    def __init__(self, spatial_dims: int, cfg: AugmentConfig | None = None, seed: int = 0, device="cpu"):
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        self.spatial_dims, self.cfg = spatial_dims, cfg or AugmentConfig()
        self.device = torch.device(device)
        if self.device.type == "cuda" and self.device.index is None:  # "cuda" -> "cuda:0", as tensors report it
            self.device = torch.device("cuda", torch.cuda.current_device())
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(int(seed))

    def __repr__(self):
        return f"Augmenter(spatial_dims={self.spatial_dims}, {self.cfg})"

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"].cpu())  # a checkpoint loaded onto the GPU moved it there

    # random helpers: every draw happens whatever the probabilities, so the stream does not depend on them
    def _uniform(self, n: int, low: float, high: float) -> torch.Tensor:
        return low + (high - low) * torch.rand(n, generator=self.generator, device=self.device)

    def _coin(self, n: int, p: float) -> torch.Tensor:
        return torch.rand(n, generator=self.generator, device=self.device) < p

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """images (B, 1, *spatial) float, labels (B, *spatial) int -> same shapes and dtypes."""
        if images.ndim != self.spatial_dims + 2 or labels.shape != images.shape[:1] + images.shape[2:]:
            raise ValueError(
                f"Augmenter({self.spatial_dims}D) expects images (B, 1, *spatial) and labels "
                f"(B, *spatial); got {tuple(images.shape)} and {tuple(labels.shape)}"
            )
        if images.device != self.device:
            raise ValueError(f"batch on {images.device} but the Augmenter's generator is on {self.device}")
        images, labels = self.spatial(images, labels)
        return self.mirror(self.intensity(images), labels)

    def spatial(self, images, labels):
        """Rotation and scaling with one grid_sample over the whole batch; a mask keeps the samples that drew
        neither bit-identical (no torch.nonzero: nothing here waits for the GPU)."""
        c, b = self.cfg, images.shape[0]
        rotate = self._coin(b, c.p_rotation)
        angle = self._uniform(b, -math.radians(c.max_rotation_deg), math.radians(c.max_rotation_deg))
        scale_on = self._coin(b, c.p_scale)
        scale = self._uniform(b, *c.scale_range)
        angle = torch.where(rotate, angle, torch.zeros_like(angle))
        scale = torch.where(scale_on, scale, torch.ones_like(scale))
        grid = F.affine_grid(self._affine(angle, scale, images.shape[-2:]), tuple(images.shape), align_corners=False)
        outside = dict(padding_mode="zeros", align_corners=False)
        warped = F.grid_sample(images, grid, mode="bilinear", **outside)
        warped_labels = F.grid_sample(labels.unsqueeze(1).float(), grid, mode="nearest", **outside).squeeze(1)
        warped_labels = warped_labels.round().to(labels.dtype)
        chosen = (rotate | scale_on).view((-1,) + (1,) * (labels.ndim - 1))
        return torch.where(chosen[:, None], warped, images), torch.where(chosen, warped_labels, labels)

    def _affine(self, angle: torch.Tensor, scale: torch.Tensor, plane_shape) -> torch.Tensor:
        """theta (n, d, d+1) mapping output to input normalised coordinates (x, y[, z]): D^-1 (scale R) D with
        D = diag(W/2, H/2), so the rotation acts in pixel space."""
        h, w = plane_shape
        cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
        d = self.spatial_dims
        theta = torch.zeros(len(angle), d, d + 1, device=angle.device)
        theta[:, 0, 0], theta[:, 0, 1], theta[:, 1, 0], theta[:, 1, 1] = cos, -sin * (h / w), sin * (w / h), cos
        if d == 3:
            theta[:, 2, 2] = 1.0
        return theta

    def intensity(self, images):
        """Each transform is computed for the whole batch and kept where the sample drew it (a mask)."""
        c, b = self.cfg, images.shape[0]
        view = (-1,) + (1,) * (images.ndim - 1)
        dims = tuple(range(1, images.ndim))
        chosen = self._coin(b, c.p_noise).view(view)
        sigma = self._uniform(b, *c.noise_variance).sqrt().view(view)
        noise = torch.randn(images.shape, generator=self.generator, device=self.device)
        images = images + noise * (sigma * chosen)  # + 0 exactly where not chosen
        chosen = self._coin(b, c.p_brightness).view(view)
        factor = self._uniform(b, *c.brightness_range).view(view)
        images = images * torch.where(chosen, factor, torch.ones_like(factor))
        chosen = self._coin(b, c.p_contrast).view(view)
        factor = self._uniform(b, *c.contrast_range).view(view)
        mean = images.mean(dim=dims, keepdim=True)
        lo, hi = images.amin(dim=dims, keepdim=True), images.amax(dim=dims, keepdim=True)
        images = torch.where(chosen, torch.minimum(torch.maximum((images - mean) * factor + mean, lo), hi), images)
        for p, inverted in ((c.p_gamma_inverted, True), (c.p_gamma, False)):
            chosen = self._coin(b, p).view(view)
            gamma = self._uniform(b, *c.gamma_range).view(view)
            images = torch.where(chosen, self._gamma(images, gamma, inverted), images)
        return images

    @staticmethod
    def _gamma(images, gamma, inverted: bool, eps: float = 1e-7):
        """nnU-Net's gamma: x^gamma on the sample rescaled to [0, 1], original mean/std restored (inverted: -x)."""
        dims = tuple(range(1, images.ndim))
        x = -images if inverted else images
        mean, std = x.mean(dim=dims, keepdim=True), x.std(dim=dims, keepdim=True)
        lo, hi = x.amin(dim=dims, keepdim=True), x.amax(dim=dims, keepdim=True)
        span = (hi - lo).clamp_min(eps)
        y = ((x - lo) / span).clamp(0, 1).pow(gamma) * span + lo
        y_mean, y_std = y.mean(dim=dims, keepdim=True), y.std(dim=dims, keepdim=True)
        y = (y - y_mean) / (y_std + eps) * std + mean
        return -y if inverted else y

    def mirror(self, images, labels):
        b = images.shape[0]
        for axis in range(self.spatial_dims):
            chosen = self._coin(b, self.cfg.p_mirror).view((-1,) + (1,) * self.spatial_dims)
            images = torch.where(chosen[:, None], images.flip(axis + 2), images)
            labels = torch.where(chosen, labels.flip(axis + 1), labels)
        return images, labels
