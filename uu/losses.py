"""Segmentation losses: soft Dice, cross-entropy, focal, the uncertainty-aware loss (Eq. 8) and deep supervision.

Every loss takes logits (B, C, *spatial) (or a one-element list) and a target (B, *spatial) int64 and returns a
float32 scalar; `last_components` and `sigmas()` stay detached tensors until read (no device sync). Paper vs code
choices (docs/reproduction.md): Dice is 1 - DSC (Eq. 5), as in the paper (the authors' -DSC with a learnable sigma
can diverge to -inf), per sample, background excluded, smooth 1e-5; the focal loss applies ONE softmax (the
authors' code applies two, which caps p_t near 0.475 for 4 classes); "ua" trains sigma, "ua_fixed" freezes it at 1,
what the authors' code effectively does."""

from __future__ import annotations

from typing import Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

LOSS_NAMES = ("ce", "dice_ce", "ua", "ua_fixed")


def _as_logits(outputs) -> torch.Tensor:
    """Accept a logits tensor or a one-element list of them (deep supervision off)."""
    if isinstance(outputs, (list, tuple)):
        if len(outputs) != 1:
            raise ValueError(
                f"got a list of {len(outputs)} outputs (deep supervision) but this loss takes one; "
                "wrap it in DeepSupervisionLoss or use build_loss(name, deep_supervision_outputs=N)"
            )
        outputs = outputs[0]
    if not torch.is_tensor(outputs) or outputs.ndim < 3:
        raise ValueError(
            f"logits must be a tensor (B, C, *spatial), got {type(outputs).__name__} "
            f"{tuple(getattr(outputs, 'shape', ()))}"
        )
    return outputs


def _logits_and_target(outputs, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits (B, C, *spatial) float32, target (B, *spatial) int64), checked."""
    logits = _as_logits(outputs).float()
    if target.ndim == logits.ndim and target.shape[1] == 1:  # (B, 1, *spatial) -> (B, *spatial)
        target = target[:, 0]
    if target.shape[0] != logits.shape[0] or target.shape[1:] != logits.shape[2:]:
        raise ValueError(
            f"target shape {tuple(target.shape)} does not match logits {tuple(logits.shape)}: "
            "expected logits (B, C, *spatial) and target (B, *spatial)"
        )
    if target.dtype.is_floating_point:
        raise ValueError(f"target must hold integer class labels (int64), got {target.dtype}")
    return logits, target.long()


def one_hot(target: torch.Tensor, num_classes: int, dtype=torch.float32) -> torch.Tensor:
    """(B, *spatial) int -> (B, C, *spatial) one-hot, built with scatter (no host sync)."""
    out = torch.zeros((target.shape[0], num_classes, *target.shape[1:]), dtype=dtype, device=target.device)
    return out.scatter_(1, target.unsqueeze(1), 1.0)


class ComponentLoss(nn.Module):
    """Base class: keeps the last component values (detached) for logging."""

    def __init__(self):
        super().__init__()
        self._last: dict[str, torch.Tensor] = {}

    def _record(self, **values: torch.Tensor) -> None:
        self._last = {k: v.detach() for k, v in values.items()}

    @property
    def components(self) -> dict[str, torch.Tensor]:
        """The last call's components as detached 0-dim tensors (reading them costs no synchronisation)."""
        return self._last

    @property
    def last_components(self) -> dict[str, float]:
        return {k: float(v) for k, v in self._last.items()}

    def sigmas(self) -> dict[str, float]:
        return {}


class SoftDiceLoss(ComponentLoss):
    """L_DC = 1 - DSC (Eq. 5) on softmax probabilities, DSC per sample and (foreground) class, then averaged."""

    def __init__(self, include_background: bool = False, smooth: float = 1e-5, batch_dice: bool = False):
        super().__init__()
        self.include_background, self.smooth, self.batch_dice = include_background, smooth, batch_dice

    def extra_repr(self) -> str:
        return f"include_background={self.include_background}, smooth={self.smooth}, batch_dice={self.batch_dice}"

    def forward(self, outputs, target: torch.Tensor) -> torch.Tensor:
        logits, target = _logits_and_target(outputs, target)
        probs = torch.softmax(logits, dim=1)
        gt = one_hot(target, logits.shape[1])
        if not self.include_background:
            probs, gt = probs[:, 1:], gt[:, 1:]
        axes = ((0,) if self.batch_dice else ()) + tuple(range(2, logits.ndim))
        denominator = probs.sum(axes) + gt.sum(axes)
        dsc = (2 * (probs * gt).sum(axes) + self.smooth) / (denominator + self.smooth).clamp_min(1e-8)
        loss = 1 - dsc.mean()
        self._record(dice=loss)
        return loss


class CrossEntropyLoss(ComponentLoss):
    """L_CE = -sum_c g_c log p_c (Eq. 6), averaged over all voxels of the batch."""

    def forward(self, outputs, target: torch.Tensor) -> torch.Tensor:
        logits, target = _logits_and_target(outputs, target)
        loss = F.cross_entropy(logits, target)
        self._record(ce=loss)
        return loss


class FocalLoss(ComponentLoss):
    """L_focal = -alpha_t (1 - p_t)^gamma log p_t (Eq. 7), one softmax, averaged over all voxels; alpha: None, a
    float (the authors' code: 0.5) or C per-class weights."""

    def __init__(self, gamma: float = 2.0, alpha: float | Sequence[float] | None = None):
        super().__init__()
        self.gamma = float(gamma)
        if alpha is None or isinstance(alpha, (int, float)):
            self.alpha = alpha
        else:
            self.register_buffer("alpha", torch.as_tensor(alpha, dtype=torch.float32), persistent=False)

    def extra_repr(self) -> str:
        return f"gamma={self.gamma}, alpha={self.alpha if not torch.is_tensor(self.alpha) else self.alpha.tolist()}"

    def forward(self, outputs, target: torch.Tensor) -> torch.Tensor:
        logits, target = _logits_and_target(outputs, target)
        log_pt = torch.log_softmax(logits, dim=1).gather(1, target.unsqueeze(1)).squeeze(1)  # (B, *spatial)
        pt = log_pt.exp()
        loss = -((1 - pt) ** self.gamma) * log_pt if self.gamma != 0 else -log_pt
        if torch.is_tensor(self.alpha):
            if self.alpha.numel() != logits.shape[1]:
                raise ValueError(
                    f"FocalLoss alpha has {self.alpha.numel()} weights but the logits have {logits.shape[1]} classes"
                )
            loss = loss * self.alpha[target]
        elif self.alpha is not None:
            loss = loss * self.alpha
        loss = loss.mean()
        self._record(focal=loss)
        return loss


class DiceCELoss(ComponentLoss):
    """nnU-Net / U-Mamba default: (1 - DSC) + CE; nnU-Net's -DSC differs by a constant (same gradient)."""

    def __init__(self, weight_dice: float = 1.0, weight_ce: float = 1.0, smooth: float = 1e-5):
        super().__init__()
        self.dice, self.ce = SoftDiceLoss(smooth=smooth), CrossEntropyLoss()
        self.weight_dice, self.weight_ce = weight_dice, weight_ce

    def extra_repr(self) -> str:
        return f"weight_dice={self.weight_dice}, weight_ce={self.weight_ce}"

    def forward(self, outputs, target: torch.Tensor) -> torch.Tensor:
        dice, ce = self.dice(outputs, target), self.ce(outputs, target)
        self._record(dice=dice, ce=ce)
        return self.weight_dice * dice + self.weight_ce * ce


def default_ua_terms() -> dict[str, nn.Module]:
    """The paper's M = 3 components: Dice (1 - DSC), cross-entropy and focal (gamma 2)."""
    return {"dice": SoftDiceLoss(), "ce": CrossEntropyLoss(), "focal": FocalLoss(gamma=2.0)}


class UncertaintyAwareLoss(ComponentLoss):
    """Eq. 8: L_UA = sum_m L_m / (2 sigma_m^2) + log(1 + sigma_m^2), sigma learnable, initialised to 1.
    terms: name -> scalar loss module (default: dice, ce, focal). learn_sigma=False freezes sigma at 1
    ("ua_fixed"); sigma stays an nn.Parameter either way so the state-dict keys do not depend on it."""

    def __init__(self, terms: Mapping[str, nn.Module] | None = None, learn_sigma: bool = True):
        super().__init__()
        terms = default_ua_terms() if terms is None else dict(terms)
        if not terms:
            raise ValueError("UncertaintyAwareLoss needs at least one loss term")
        self.terms = nn.ModuleDict(terms)
        self.sigma = nn.Parameter(torch.ones(len(terms)), requires_grad=learn_sigma)

    @property
    def names(self) -> list[str]:
        return list(self.terms.keys())

    def extra_repr(self) -> str:
        return f"learn_sigma={self.sigma.requires_grad}"

    def combine(self, values: torch.Tensor) -> torch.Tensor:
        """values (M,) component losses -> scalar Eq. 8."""
        if values.shape != self.sigma.shape:
            raise ValueError(f"combine expects {self.sigma.numel()} component values, got shape {tuple(values.shape)}")
        s2 = self.sigma.float() ** 2
        return (values.float() / (2 * s2) + torch.log1p(s2)).sum()

    def forward(self, outputs, target: torch.Tensor) -> torch.Tensor:
        values = torch.stack([term(outputs, target) for term in self.terms.values()])
        self._record(**dict(zip(self.names, values)))
        return self.combine(values)

    def sigmas(self) -> dict[str, float]:
        return {name: float(s) for name, s in zip(self.names, self.sigma.detach().cpu())}


def deep_supervision_weights(n: int) -> list[float]:
    """nnU-Net's 1 / 2^i (highest resolution first), the lowest 0, normalised: 5 -> [0.533, 0.267, 0.133, 0.067, 0]."""
    if n < 1:
        raise ValueError(f"need at least one output, got {n}")
    w = [1 / 2**i for i in range(n)]
    if n > 1:
        w[-1] = 0.0
    total = sum(w)
    return [x / total for x in w]


def downsample_target(target: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Nearest-neighbour resize of an integer label map (B, *spatial) to (B, *size) (factor 2: every other voxel)."""
    if tuple(target.shape[1:]) == tuple(size):
        return target
    return F.interpolate(target.unsqueeze(1).float(), size=tuple(size), mode="nearest").squeeze(1).long()


class DeepSupervisionLoss(ComponentLoss):
    """Weighted sum of a base loss over deep-supervision outputs (a tensor, or a list highest resolution first).
    weights: None -> deep_supervision_weights(len(outputs)) at each call; weight-0 outputs are skipped.
    last_components: sum_i w_i L_m^(i), the L_m that Eq. 8 sees (`full_resolution_components`: output 0's own)."""

    def __init__(self, base: nn.Module, weights: Sequence[float] | None = None, num_classes: int | None = None):
        super().__init__()
        self.base, self.num_classes = base, num_classes
        self.weights = None if weights is None else [float(w) for w in weights]
        self._last_full: dict[str, torch.Tensor] = {}

    def extra_repr(self) -> str:
        weights = None if self.weights is None else [round(w, 4) for w in self.weights]
        return f"num_classes={self.num_classes}, weights={weights}"

    def forward(self, outputs, target: torch.Tensor) -> torch.Tensor:
        if torch.is_tensor(outputs):  # no deep supervision (e.g. eval-mode logits): the base loss as is
            outputs, weights = [outputs], [1.0]
        else:
            outputs = list(outputs)
            weights = self.weights if self.weights is not None else deep_supervision_weights(len(outputs))
        if self.num_classes is not None and outputs[0].shape[1] != self.num_classes:
            raise ValueError(
                f"the logits have {outputs[0].shape[1]} channels but the loss was built for "
                f"num_classes={self.num_classes}"
            )
        if len(weights) != len(outputs):
            raise ValueError(
                f"DeepSupervisionLoss has {len(weights)} weights but got {len(outputs)} outputs; "
                "check the plan's deep supervision against build_loss(deep_supervision_outputs=...)"
            )
        if target.ndim == outputs[0].ndim and target.shape[1] == 1:
            target = target[:, 0]
        total, components = 0.0, {}
        for i, (w, out) in enumerate(zip(weights, outputs)):
            if w == 0:
                continue
            total = total + w * self.base(out, downsample_target(target, out.shape[2:]))
            last = getattr(self.base, "_last", {})
            if i == 0:
                self._last_full = dict(last)
            for k, v in last.items():
                components[k] = components.get(k, 0.0) + w * v
        self._last = components
        return total

    @property
    def full_resolution_components(self) -> dict[str, float]:
        return {k: float(v) for k, v in self._last_full.items()}

    def sigmas(self) -> dict[str, float]:
        return self.base.sigmas() if hasattr(self.base, "sigmas") else {}


def build_loss(name: str, num_classes: int = 4, deep_supervision_outputs: int | None = None) -> nn.Module:
    """Loss by name ("ce" | "dice_ce" | "ua" | "ua_fixed"), always wrapped in DeepSupervisionLoss (stable
    state-dict keys, e.g. "base.sigma"). deep_supervision_outputs: N fixes the weights and checks N outputs arrive."""
    if name == "ce":
        base = CrossEntropyLoss()
    elif name == "dice_ce":
        base = DiceCELoss()
    elif name in ("ua", "ua_fixed"):
        base = UncertaintyAwareLoss(default_ua_terms(), learn_sigma=(name == "ua"))
    else:
        raise ValueError(f"unknown loss {name!r}; choose one of {', '.join(LOSS_NAMES)}")
    weights = None if deep_supervision_outputs is None else deep_supervision_weights(int(deep_supervision_outputs))
    return DeepSupervisionLoss(base, weights, num_classes=num_classes)
