"""Mamba v1 block, parameter-for-parameter the same as `mamba_ssm.Mamba` (mamba_simple.py).

Same parameter names, shapes and initialisation, so a state_dict moves between the two unchanged:

    in_proj   Linear(d_model, 2 * d_inner, bias=bias)        x and the gate z
    conv1d    depthwise Conv1d(d_inner, kernel d_conv, causal padding d_conv - 1)
    x_proj    Linear(d_inner, dt_rank + 2 * d_state, bias=False)   -> dt, B, C (input dependent)
    dt_proj   Linear(dt_rank, d_inner), bias = inverse softplus of dt ~ logU(dt_min, dt_max)
    A_log     (d_inner, d_state) = log(1..d_state) per channel (S4D-real), A = -exp(A_log)
    D         (d_inner,) ones (the skip)
    out_proj  Linear(d_inner, d_model, bias=bias)

The forward is mamba_ssm's non-fused path (conv1d, x_proj, dt_proj, selective scan with z), with the scan
dispatched by `uu.ssm.selective_scan` (fused CUDA kernel when available, else PyTorch)."""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn as nn

from ..ops.causal_conv1d import causal_conv1d
from ..ops.selective_scan import DEFAULT_CHUNK_SIZE, selective_scan


class Mamba(nn.Module):
    """Mamba v1 mixer. Input (B, L, d_model) -> output (B, L, d_model)."""

    def __init__(
        self,
        d_model,
        d_state=16,
        d_conv=4,
        expand=2,
        dt_rank="auto",
        dt_min=0.001,
        dt_max=0.1,
        dt_init="random",
        dt_scale=1.0,
        dt_init_floor=1e-4,
        conv_bias=True,
        bias=False,
        backend="auto",
        chunk_size=DEFAULT_CHUNK_SIZE,
        conv_impl="auto",
        device=None,
        dtype=None,
    ):
        factory_kwargs = {"device": device, "dtype": dtype}
        super().__init__()
        self.d_model, self.d_state, self.d_conv, self.expand = d_model, d_state, d_conv, expand
        self.d_inner = int(expand * d_model)
        self.dt_rank = math.ceil(d_model / 16) if dt_rank == "auto" else dt_rank
        self.backend, self.chunk_size = backend, chunk_size
        self.conv_impl = conv_impl  # uu.ssm.ops.causal_conv1d: "auto" | "conv1d" | "shift" (same function)
        self.in_proj = nn.Linear(d_model, self.d_inner * 2, bias=bias, **factory_kwargs)
        conv = dict(kernel_size=d_conv, groups=self.d_inner, padding=d_conv - 1, bias=conv_bias)
        self.conv1d = nn.Conv1d(self.d_inner, self.d_inner, **conv, **factory_kwargs)
        self.act = nn.SiLU()
        self.x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * d_state, bias=False, **factory_kwargs)
        self.dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=True, **factory_kwargs)
        # dt projection: keeps the variance of dt at initialisation
        dt_init_std = self.dt_rank**-0.5 * dt_scale
        if dt_init == "constant":
            nn.init.constant_(self.dt_proj.weight, dt_init_std)
        elif dt_init == "random":
            nn.init.uniform_(self.dt_proj.weight, -dt_init_std, dt_init_std)
        else:
            raise ValueError(f"Mamba: dt_init={dt_init!r}; use 'random' or 'constant'")
        # dt bias such that softplus(bias) is log-uniform in [dt_min, dt_max]
        dt = torch.exp(
            torch.rand(self.d_inner, **factory_kwargs) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
        ).clamp(min=dt_init_floor)
        inv_dt = dt + torch.log(-torch.expm1(-dt))  # inverse of softplus
        with torch.no_grad():
            self.dt_proj.bias.copy_(inv_dt)
        self.dt_proj.bias._no_reinit = True  # a model-wide "zero every Linear bias" init must skip it
        # S4D-real initialisation, kept in fp32
        A = torch.arange(1, d_state + 1, dtype=torch.float32, device=device).repeat(self.d_inner, 1)
        self.A_log = nn.Parameter(torch.log(A))
        self.D = nn.Parameter(torch.ones(self.d_inner, device=device))  # fp32 (weight decay: see uu.runs)
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=bias, **factory_kwargs)

    def forward(self, hidden_states):
        """hidden_states (B, L, d_model) -> (B, L, d_model)."""
        xz = self.in_proj(hidden_states).transpose(1, 2)  # (B, 2 * d_inner, L)
        x, z = xz.chunk(2, dim=1)
        x = self._conv(x)
        x_dbl = self.x_proj(x.transpose(1, 2))  # (B, L, dt_rank + 2 * d_state)
        dt, B, C = torch.split(x_dbl, [self.dt_rank, self.d_state, self.d_state], dim=-1)
        dt = (dt @ self.dt_proj.weight.t()).transpose(1, 2)  # (B, d_inner, L); bias goes into the scan
        B = B.transpose(1, 2).contiguous()  # (B, d_state, L)
        C = C.transpose(1, 2).contiguous()
        y = self._scan(x.contiguous(), dt.contiguous(), B, C, z.contiguous())
        return self.out_proj(y.transpose(1, 2))

    def forward_channels_first(self, x):
        """x (B, d_model, L) -> (B, d_model, L): forward() on x.transpose(1, 2), in the layout an NCHW / NCDHW
        feature map flattens to for free; each projection W @ x gives (B, out, L), so no transpose is copied."""
        xz = torch.matmul(self.in_proj.weight, x)  # (B, 2 * d_inner, L)
        if self.in_proj.bias is not None:
            xz = xz + self.in_proj.bias[:, None]
        u, z = xz.chunk(2, dim=1)
        u = self._conv(u)
        dt, B, C = torch.split(torch.matmul(self.x_proj.weight, u), [self.dt_rank, self.d_state, self.d_state], dim=1)
        dt = torch.matmul(self.dt_proj.weight, dt)  # (B, d_inner, L); the bias goes into the scan
        y = self._scan(u, dt, B.contiguous(), C.contiguous(), z)
        out = torch.matmul(self.out_proj.weight, y)
        return out if self.out_proj.bias is None else out + self.out_proj.bias[:, None]

    def _scan(self, u, dt, B, C, z):
        """The selective scan as mamba_ssm's Mamba runs it (A = -exp(A_log), D, z, dt's bias and softplus in the
        scan): u, dt, z (B, d_inner, L), B, C (B, d_state, L) -> (B, d_inner, L)."""
        A, D, dt_bias = -torch.exp(self.A_log.float()), self.D.float(), self.dt_proj.bias.float()
        options = dict(delta_softplus=True, chunk_size=self.chunk_size, backend=self.backend)
        return selective_scan(u, dt, A, B, C, D, z=z, delta_bias=dt_bias, **options)

    def _conv(self, x):
        """The causal depthwise conv + SiLU on (B, d_inner, L)."""
        return causal_conv1d(x, self.conv1d.weight[:, 0], self.conv1d.bias, activation="silu", impl=self.conv_impl)

    def extra_repr(self):
        return (
            f"d_model={self.d_model}, d_inner={self.d_inner}, d_state={self.d_state}, "
            f"d_conv={self.d_conv}, dt_rank={self.dt_rank}, backend={self.backend!r}"
        )


@contextlib.contextmanager
def scan_backend_override(model: nn.Module, backend: str):
    """Within the block every `Mamba` in `model` scans with `backend` (double backprop needs "torch")."""
    layers = [m for m in model.modules() if isinstance(m, Mamba)]
    before = [m.backend for m in layers]
    try:
        for m in layers:
            m.backend = backend
        yield model
    finally:
        for m, b in zip(layers, before):
            m.backend = b
