"""Sharpness-Aware Minimization (Foret et al. 2021; the paper's Eq. 9), after the design of davda54/sam.

first_step(): e = rho * g / ||g||_2 (norm over ALL parameters, sigma included), w <- w + e; second_step(): w back
(bit-exact), then the base optimizer steps with the gradient at w + e. ASAM: e = rho * |w|^2 g / || |w| g ||_2.
SAM's param_groups ARE the base optimizer's (so LR schedulers act on it); state_dict() is the base optimizer's."""

from __future__ import annotations

from typing import Callable

import torch


class SAM(torch.optim.Optimizer):
    def __init__(
        self, params, base_optimizer: type = torch.optim.SGD, rho: float = 0.05, adaptive: bool = False, **base_kwargs
    ):
        if not isinstance(base_optimizer, type) or not issubclass(base_optimizer, torch.optim.Optimizer):
            raise TypeError(
                f"base_optimizer must be an optimizer class such as torch.optim.SGD, got {base_optimizer!r}"
            )
        if rho < 0:
            raise ValueError(f"rho must be >= 0, got {rho}")
        super().__init__(params, dict(rho=rho, adaptive=adaptive, **base_kwargs))
        self.base_optimizer = base_optimizer(self.param_groups, **base_kwargs)
        self.param_groups = self.base_optimizer.param_groups  # the same dicts: schedulers act on both
        self.defaults.update(self.base_optimizer.defaults)
        self._saved: list[tuple[list, list]] = []  # (parameters, their w before first_step)

    def _groups_with_grad(self):
        """(group, [parameters of the group that have a gradient]) for every group with at least one."""
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if params:
                yield group, params

    @torch.no_grad()
    def grad_norm(self) -> torch.Tensor:
        """||g||_2 over all parameters with a gradient (||(|w| g)||_2 for adaptive groups); a 0-dim tensor."""
        grads = []
        for group, params in self._groups_with_grad():
            g = [p.grad for p in params]
            grads.extend(torch._foreach_mul(torch._foreach_abs(params), g) if group["adaptive"] else g)
        return global_norm(grads)

    @torch.no_grad()
    def first_step(self, zero_grad: bool = False) -> None:
        """w <- w + e with e = rho * g / ||g||_2 (adaptive: rho * |w|^2 g / || |w| g ||_2). Saves w."""
        if self._saved:
            raise RuntimeError("SAM.first_step called twice without second_step()/restore() in between")
        norm = self.grad_norm()
        for group, params in self._groups_with_grad():
            for device_params in group_by_device_and_dtype(params):
                p0 = device_params[0]
                scale = (group["rho"] / (norm.to(p0.device) + 1e-12)).to(p0.dtype)
                e = torch._foreach_mul([p.grad for p in device_params], scale)
                if group["adaptive"]:
                    e = torch._foreach_mul(e, torch._foreach_mul(device_params, device_params))
                # the copy of w lives in buffers kept from step to step: one copy kernel, no allocation
                saved = [self.state[p].setdefault("w", torch.empty_like(p)) for p in device_params]
                torch._foreach_copy_(saved, device_params)
                self._saved.append((device_params, saved))
                torch._foreach_add_(device_params, e)
        if zero_grad:
            self.zero_grad()

    @torch.no_grad()
    def restore(self) -> None:
        """Put back the weights saved by first_step (bit-exact) without an update. Used to skip a step."""
        for params, saved in self._saved:
            torch._foreach_copy_(params, saved)
        self._saved.clear()

    @torch.no_grad()
    def second_step(self, zero_grad: bool = False, found_inf: torch.Tensor | None = None) -> None:
        """w <- saved w, then the base optimizer steps with the current gradient (taken at w + e).
        found_inf (a 0-dim tensor, fused base optimizers only): 1 skips the base step on the device."""
        if not self._saved:
            raise RuntimeError("SAM.second_step called without a first_step")
        self.restore()
        self.base_optimizer.found_inf = found_inf
        try:
            self.base_optimizer.step()
        finally:
            self.base_optimizer.found_inf = None
        self._opt_called = True  # tells torch LR schedulers an optimizer step happened (no spurious warning)
        if zero_grad:
            self.zero_grad()

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None):
        """Full SAM step; the gradient at w must be there, closure (zero grads, forward, backward) runs at w + e."""
        if closure is None:
            raise RuntimeError(
                "SAM.step needs a closure that recomputes the loss and its gradient; "
                "or call first_step() and second_step() yourself"
            )
        self.first_step(zero_grad=True)
        with torch.enable_grad():
            loss = closure()
        self.second_step()
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.base_optimizer.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict:
        return self.base_optimizer.state_dict()

    def load_state_dict(self, state_dict: dict) -> None:
        self.base_optimizer.load_state_dict(state_dict)
        self.param_groups = self.base_optimizer.param_groups  # load_state_dict builds new group dicts
        self._saved.clear()

    def __repr__(self) -> str:
        return f"SAM(rho={self.defaults['rho']}, adaptive={self.defaults['adaptive']}, base={self.base_optimizer!r})"


def global_norm(tensors: list[torch.Tensor]) -> torch.Tensor:
    """L2 norm over all elements of all tensors (0-dim fp32), one fused kernel per device and dtype, no sync."""
    norms = [n.float() for ts in group_by_device_and_dtype(tensors) for n in torch._foreach_norm(ts)]
    if not norms:
        return torch.zeros(())
    return torch.linalg.vector_norm(torch.stack([n.to(norms[0].device) for n in norms]))


def group_by_device_and_dtype(tensors: list[torch.Tensor]) -> list[list[torch.Tensor]]:
    """tensors split into lists of one device and dtype each (what one torch._foreach_* call accepts)."""
    buckets: dict[tuple, list] = {}
    for t in tensors:
        buckets.setdefault((t.device, t.dtype), []).append(t)
    return list(buckets.values())
