"""The selective scan as the paper writes it: a readable loop over time (the reference for tests).

    continuous (Eq. 1):  h'(t) = A h(t) + B x(t),        y(t) = C h(t)
    discrete   (Eq. 2):  h_t = A_bar h_{t-1} + B_bar x_t,  y_t = C h_t
                         A_bar = exp(delta A)  (zero-order hold),  B_bar ~ delta B  (as Mamba's kernel)

"Selective": delta, B and C depend on the input at step t; semantics of `mamba_ssm.selective_scan_ref`."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def selective_scan_ref(
    u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, return_last_state=False
):
    """u, delta, z: (batch, d, L); A: (d, n) real; B, C: (batch, n, L) or constant (d, n); D, delta_bias: (d,).
    delta <- softplus(delta + delta_bias); h_t = exp(delta_t A) h_{t-1} + delta_t B_t u_t; y_t = C_t . h_t + D u_t,
    then y *= silu(z), in fp32 (fp64 if given fp64). Returns y (batch, d, L) in u's dtype, or (y, h_L (batch, d, n))."""
    work = torch.promote_types(u.dtype, torch.float32)
    u32, A32, B32, C32 = u.to(work), A.to(work), B.to(work), C.to(work)
    dt = delta.to(work)
    if delta_bias is not None:
        dt = dt + delta_bias.to(work)[:, None]
    if delta_softplus:
        dt = F.softplus(dt)
    batch, d, L = u.shape
    h = u32.new_zeros(batch, d, A.shape[1])
    ys = []
    for t in range(L):
        B_t = B32[:, None, :, t] if B.dim() == 3 else B32  # (batch, 1, n) or (d, n)
        C_t = C32[:, None, :, t] if C.dim() == 3 else C32
        A_bar = torch.exp(dt[:, :, t, None] * A32)  # (batch, d, n)
        B_bar_u = dt[:, :, t, None] * B_t * u32[:, :, t, None]
        h = A_bar * h + B_bar_u
        ys.append((h * C_t).sum(-1))  # (batch, d)
    y = torch.stack(ys, dim=-1)
    if D is not None:
        y = y + D.to(work)[:, None] * u32
    if z is not None:
        y = y * F.silu(z.to(work))
    y = y.to(u.dtype)
    return (y, h) if return_last_state else y
