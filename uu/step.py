"""One training step, plain or SAM (Eq. 9), with autocast, GradScaler and non-finite steps skipped.

Rules (the authors' fp16 + SAM code lets NaN/inf into the weights: its SAM first step uses still-scaled gradients
and its second step bypasses GradScaler's inf/NaN check; docs/reproduction.md):
  - bf16 autocast (or none) needs no GradScaler. fp16 should come with a GradScaler; the gradients are UNSCALED
    before anything uses them, so SAM's perturbation e = rho g / ||g|| is taken from true gradients.
  - A non-finite loss or gradient (any pass, any parameter, sigma included, any DDP rank) skips the step: the weights
    and the optimizer state stay bit-identical and skipped is True. SAM's perturbation is always undone from the
    saved copy, so a skipped SAM step leaves no trace either.
  - No host synchronisation: the skip is decided on the device. A fused optimizer (uu.runs builds SGD(fused=True))
    takes the decision as its ``found_inf`` tensor and skips its own kernel; any other optimizer is stepped only
    after reading the flag (one synchronisation). StepResult holds 0-dim tensors, read by the loop once per epoch.
  - Under DistributedDataParallel the skip flag is max-reduced over ranks; the backward pass always runs.

Gradient clipping (norm grad_clip) applies to the gradient the update uses (SAM: the second pass); SAM's first pass
is not clipped: e = rho g / ||g|| does not depend on the scale of g. The loss and components reported are those of
the first pass (at w, not at w + e)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import torch

from uu.sam import SAM, global_norm, group_by_device_and_dtype


@dataclass
class StepResult:
    """0-dim tensors on the training device (read them with float() / bool(), which synchronises)."""

    loss: torch.Tensor  # loss at w (first pass); nan/inf when skipped for a non-finite loss
    skipped: torch.Tensor  # bool: True means the weights were not touched
    grad_norm: torch.Tensor  # L2 norm of the update's gradient before clipping (SAM: second pass)
    components: dict = field(default_factory=dict)  # name -> 0-dim tensor, the loss' components of pass 1


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The plain module under DistributedDataParallel and/or torch.compile wrappers."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif isinstance(model, torch.nn.parallel.DistributedDataParallel):
            model = model.module
        else:
            return model


def compile_model(model: torch.nn.Module, mode=True) -> torch.nn.Module:
    """torch.compile for training. mode: True or "default"; "reduce-overhead" (CUDA graphs: the step's kernels
    replayed from one recorded graph per compiled region); "max-autotune-no-cudagraphs"."""
    return torch.compile(model, mode="default" if mode is True else mode)


def _forward_backward(model, loss_fn, images, target, autocast_dtype, scaler):
    """Forward under autocast, backward (scaled when a scaler is given). Returns the detached loss."""
    if hasattr(model, "_orig_mod") and hasattr(torch.compiler, "cudagraph_mark_step_begin"):
        # CUDA graphs (compile mode "reduce-overhead") reuse their output memory on the next replay; SAM's two
        # passes and the step after are new "iterations" (no-op for the other modes)
        torch.compiler.cudagraph_mark_step_begin()
    autocast = (
        torch.autocast(device_type=images.device.type, dtype=autocast_dtype)
        if autocast_dtype is not None
        else contextlib.nullcontext()
    )
    with autocast:
        loss = loss_fn(model(images), target)
    (scaler.scale(loss) if scaler is not None else loss).backward()
    return loss.detach()


def _non_finite(loss: torch.Tensor, norm: torch.Tensor) -> torch.Tensor:
    """1.0 when the loss or the gradient norm is nan/inf (on any DDP rank), else 0.0; stays on the device."""
    flag = (~(torch.isfinite(loss) & torch.isfinite(norm.to(loss.device)))).float().reshape(1)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
    return flag[0]


def _clip_(params: list[torch.Tensor], norm: torch.Tensor, max_norm: float | None) -> None:
    """Same rule as torch.nn.utils.clip_grad_norm_: scale by max_norm / (norm + 1e-6) when that is < 1."""
    if not max_norm:
        return
    coef = (max_norm / (norm + 1e-6)).clamp(max=1.0)
    for grads in group_by_device_and_dtype([p.grad for p in params if p.grad is not None]):
        torch._foreach_mul_(grads, coef.to(grads[0].device, grads[0].dtype))  # one fused kernel, not one per tensor


def _fused(optimizer) -> bool:
    """True when the optimizer takes a device-side found_inf (fused torch optimizers)."""
    base = optimizer.base_optimizer if isinstance(optimizer, SAM) else optimizer
    return bool(getattr(base, "_step_supports_amp_scaling", False))


def _zero_momentum_buffers(optimizer) -> None:
    """Fused SGD's first step copies the gradient into fresh buffers; skipped on the device, it would leave them
    uninitialised. Zero buffers give the identical first update (buf = momentum * 0 + grad)."""
    base = optimizer.base_optimizer if isinstance(optimizer, SAM) else optimizer
    if getattr(base, "_uu_buffers_ready", False):  # once per optimizer, not a walk over every tensor per step
        return
    for group in base.param_groups:
        if group.get("momentum", 0):
            for p in group["params"]:
                if base.state[p].get("momentum_buffer") is None:
                    base.state[p]["momentum_buffer"] = torch.zeros_like(p)
    base._uu_buffers_ready = True


def _update(optimizer, found_inf: torch.Tensor, sam: bool) -> None:
    """The optimizer step, skipped when found_inf is 1 (on the device for a fused optimizer)."""
    if sam:  # puts the weights back to w (always), then the base optimizer steps with the gradient at w + e
        if _fused(optimizer):
            optimizer.second_step(found_inf=found_inf)
        elif bool(found_inf):
            optimizer.restore()
        else:
            optimizer.second_step()
    elif _fused(optimizer):
        optimizer.found_inf = found_inf
        try:
            optimizer.step()
        finally:
            optimizer.found_inf = None
    elif not bool(found_inf):
        optimizer.step()


def train_step(
    model,
    loss_fn,
    optimizer,
    images: torch.Tensor,
    target: torch.Tensor,
    *,
    autocast_dtype: torch.dtype | None = None,
    scaler=None,
    grad_clip: float | None = 12.0,
) -> StepResult:
    """One optimisation step (plain, or SAM's two passes of Eq. 9); returns StepResult of 0-dim tensors.
    model: in train mode (its output may be a list of deep-supervision logits); loss_fn(outputs, target), possibly
    wrapped in DDP; optimizer: any torch optimizer or uu.sam.SAM holding the model's parameters and the loss's (sigma,
    without weight decay); images (B, C_in, *spatial), target (B, *spatial) int64, on the model's device."""
    if scaler is not None and not scaler.is_enabled():
        scaler = None
    params = [p for group in optimizer.param_groups for p in group["params"]]
    sam = isinstance(optimizer, SAM)
    if _fused(optimizer):
        _zero_momentum_buffers(optimizer)
    optimizer.zero_grad(set_to_none=True)
    model.zero_grad(set_to_none=True)
    loss_log = unwrap(loss_fn)  # the loss may be wrapped in DDP (to average sigma's gradient)

    def true_gradient_norm():
        if scaler is not None:
            scaler.unscale_(optimizer)
        return global_norm([p.grad for p in params if p.grad is not None])

    # pass 1: the gradient at w
    loss = _forward_backward(model, loss_fn, images, target, autocast_dtype, scaler)
    components = dict(loss_log.components)
    saved_logs = {k: getattr(loss_log, k) for k in ("_last", "_last_full") if hasattr(loss_log, k)}
    norm = true_gradient_norm()
    found_inf = _non_finite(loss, norm)
    if sam:
        # pass 2: w + e with e = rho g / ||g||, the gradient there (a non-finite g gives a non-finite e: the
        # step is skipped below and the saved weights restored, so nothing of it survives)
        optimizer.first_step(zero_grad=True)
        model.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.update()  # closes pass 1 so that pass 2 can be unscaled
        loss2 = _forward_backward(model, loss_fn, images, target, autocast_dtype, scaler)
        for k, v in saved_logs.items():  # report pass 1's components, not those at w + e
            setattr(loss_log, k, v)
        norm = true_gradient_norm()
        found_inf = torch.maximum(found_inf, _non_finite(loss2, norm))
    _clip_(params, norm, grad_clip)
    _update(optimizer, found_inf, sam)
    if scaler is not None:
        scaler.update()  # found_inf was recorded by unscale_: a non-finite gradient backs the scale off
    optimizer.zero_grad(set_to_none=True)
    model.zero_grad(set_to_none=True)
    return StepResult(loss, found_inf > 0, norm, components)
