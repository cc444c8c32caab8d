"""One training step for a plain optimizer or SAM, with autocast, GradScaler and non-finite skipping.

Rules (the authors' fp16 + SAM code lets NaN/inf into the weights; see ../shared/ANCHORS.md):
  - bf16 autocast (or none) needs no GradScaler. fp16 should come with a GradScaler.
  - With a GradScaler the loss is scaled for backward and the gradients are UNSCALED before anything uses
    them: SAM's perturbation e = rho g / ||g|| is taken from true gradients.
  - A non-finite loss or any non-finite gradient (checked over all the optimizer's parameters, sigma
    included) skips the step: the weights stay bit-identical, the gradients are zeroed, skipped=True.
    With a scaler, scaler.update() still runs after the inf check so that the scale backs off.
  - SAM: each of the two passes is checked; if the second pass is non-finite the perturbation is undone
    (saved weights copied back) and the base optimizer does not step.
  - Under DistributedDataParallel the skip decision is OR-reduced over ranks so all ranks agree.
  - The backward pass always runs, even for a non-finite loss, so DDP ranks never wait for each other.

Gradient clipping (norm grad_clip) applies to the gradient the update uses (SAM: the second pass).
SAM's first pass is NOT clipped: clipping rescales g uniformly and e = rho g / ||g|| does not depend on the
scale of g (for adaptive SAM neither), so it would change nothing.

With a GradScaler and SAM, scaler.update() runs once per pass (two per step), so the scale's growth
interval counts passes, not steps.

The loss and components reported are those of the first pass (at w, not at w + e), as usual for SAM;
loss_fn.last_components is set back to them after the second pass.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import torch

from uu.sam import SAM, group_by_device_and_dtype


@dataclass
class StepResult:
    loss: float  # loss at w (first pass); nan/inf when skipped for a non-finite loss
    skipped: bool  # True: weights untouched
    grad_norm: float  # L2 norm of the update's gradient before clipping (SAM: second pass); may be inf/nan if skipped
    components: dict = field(default_factory=dict)  # loss_fn.last_components of the first pass


def _optimizer_params(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    return [p for group in optimizer.param_groups for p in group["params"]]


def _grad_norm(params: list[torch.Tensor]) -> torch.Tensor:
    """L2 norm over all gradients (a 0-dim tensor; inf/nan when a gradient is non-finite)."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros(())
    if hasattr(torch.nn.utils, "get_total_norm"):  # torch >= 2.6: foreach kernels
        return torch.nn.utils.get_total_norm(grads, 2.0)
    device = grads[0].device
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.float()).to(device) for g in grads]))


def _clip_(params: list[torch.Tensor], norm: torch.Tensor, max_norm: float | None) -> None:
    """Same rule as torch.nn.utils.clip_grad_norm_: scale by max_norm / (norm + 1e-6) when that is < 1."""
    if not max_norm:
        return
    coef = (max_norm / (norm + 1e-6)).clamp(max=1.0)
    for grads in group_by_device_and_dtype([p.grad for p in params if p.grad is not None]):
        torch._foreach_mul_(grads, coef.to(grads[0].device, grads[0].dtype))  # one fused kernel, not one per tensor


def _any_rank(flag: bool, device) -> bool:
    """OR of a flag over DDP ranks (the flag itself outside a process group)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        t = torch.tensor([1.0 if flag else 0.0], device=device)
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
        return bool(t.item() > 0)
    return flag


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
    autocast = (torch.autocast(device_type=images.device.type, dtype=autocast_dtype)
                if autocast_dtype is not None else contextlib.nullcontext())
    with autocast:
        loss = loss_fn(model(images), target)
    (scaler.scale(loss) if scaler is not None else loss).backward()
    return loss.detach()


def train_step(model, loss_fn, optimizer, images: torch.Tensor, target: torch.Tensor, *,
               autocast_dtype: torch.dtype | None = None, scaler=None, grad_clip: float | None = 12.0) -> StepResult:
    """One optimisation step; returns StepResult(loss, skipped, grad_norm, components).

    model: in train mode (its output may be a list of deep-supervision logits); loss_fn(outputs, target),
    possibly wrapped in DDP (components are read from the unwrapped module);
    optimizer: any torch optimizer or uu.sam.SAM holding the model's parameters and the loss's (sigma);
    put the loss's parameters in the optimizer (without weight decay) so sigma is trained by the same update;
    images (B, C_in, *spatial), target (B, *spatial) int64, on the model's device;
    autocast_dtype: None (fp32), torch.bfloat16 or torch.float16; scaler: torch.amp.GradScaler or None.
    """
    if scaler is not None and not scaler.is_enabled():
        scaler = None
    params = _optimizer_params(optimizer)
    is_sam = isinstance(optimizer, SAM)
    optimizer.zero_grad(set_to_none=True)
    model.zero_grad(set_to_none=True)

    def check(loss):
        """Unscale, measure the gradient; True when the loss or a gradient is non-finite (on any rank)."""
        if scaler is not None:
            scaler.unscale_(optimizer)
        norm = _grad_norm(params)
        bad = not (torch.isfinite(loss) and torch.isfinite(norm))
        return _any_rank(bool(bad), loss.device), norm

    def skip(loss_value, norm, components):
        optimizer.zero_grad(set_to_none=True)
        model.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.update()  # found_inf was recorded by unscale_ -> the scale backs off
        return StepResult(loss_value, True, float(norm), components)

    # pass 1: gradient at w
    loss = _forward_backward(model, loss_fn, images, target, autocast_dtype, scaler)
    loss_value = float(loss)
    loss_log = unwrap(loss_fn)  # the loss may be wrapped in DDP (to average sigma's gradient)
    components = dict(getattr(loss_log, "last_components", {}))
    saved_logs = {k: getattr(loss_log, k) for k in ("_last", "_last_full") if hasattr(loss_log, k)}
    bad, norm = check(loss)
    if bad:
        return skip(loss_value, norm, components)

    if not is_sam:
        _clip_(params, norm, grad_clip)
        if scaler is not None:
            scaler.step(optimizer)  # no inf found by unscale_ -> optimizer.step()
            scaler.update()
        else:
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return StepResult(loss_value, False, float(norm), components)

    # SAM: perturb with the true (unscaled, unclipped) gradient, then pass 2 at w + e
    optimizer.first_step(zero_grad=True)
    model.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.update()  # closes pass 1 (no inf) so that pass 2 can be unscaled
    loss2 = _forward_backward(model, loss_fn, images, target, autocast_dtype, scaler)
    for k, v in saved_logs.items():  # report pass 1's components, not those at w + e
        setattr(loss_log, k, v)
    bad, norm2 = check(loss2)
    if bad:
        optimizer.restore()
        return skip(loss_value, norm2, components)
    _clip_(params, norm2, grad_clip)
    optimizer.second_step(zero_grad=True)
    if scaler is not None:
        scaler.update()
    return StepResult(loss_value, False, float(norm2), components)


__all__ = ["StepResult", "train_step", "compile_model", "unwrap"]
