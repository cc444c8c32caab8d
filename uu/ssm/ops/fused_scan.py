"""mamba-ssm's fused selective-scan kernel registered as PyTorch custom operators (torch.library).

Why: torch.compile cannot trace into `mamba_ssm.selective_scan_fn` (a graph break per Mamba layer); as operators
with fake implementations and an autograd formula it is one opaque node that CUDA graphs can hold.
    uu::selective_scan_fwd(u, delta, A, B, C, D, z, delta_bias, delta_softplus) -> (out_z, x, out)
    uu::selective_scan_bwd(u, delta, A, B, C, D, z, delta_bias, dout, x, out, delta_softplus)
        -> (du, ddelta, dA, dB, dC, dD, dz, ddelta_bias)      (the order of the inputs)
Shapes: u, delta, z (batch, d, L) in the input dtype; A (d, n) fp32; B, C (batch, n, L) in the input dtype (one
group); D, delta_bias (d,) fp32. out is the scan before the z gate, out_z = out * silu(z), x (batch, d,
ceil(L / 2048), 2 n) fp32 the kernel's saved chunk prefixes (decay product, state). CUDA runs mamba-ssm's kernel;
the CPU implementation (scan_chunked.py) exists only to test the contract."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from .scan_chunked import _linear_scan, selective_scan_torch

try:  # mamba-ssm's compiled extension (a CUDA build only)
    import selective_scan_cuda as _kernel
except Exception:  # ImportError, or a build that does not match the installed torch
    _kernel = None

# The error of a build with the bf16 backward only (UU_MAMBA_KERNELS=bf16 in scripts/build_mamba.sh: the prebuilt
# wheel that travels to a lent GPU), when an fp32 or fp16 backward is asked of it.
BF16_ONLY_BUILD = "this build has the bf16 backward only"
KERNEL_CHUNK = 2048  # steps per chunk of the fused kernel (csrc/selective_scan/selective_scan.cpp)
HAS_CUSTOM_OP = hasattr(torch.library, "custom_op")  # torch >= 2.4


def _chunk_prefixes(u, delta, A, B, C, delta_bias, delta_softplus) -> Tensor:
    """The kernel's x: (batch, d, n_chunks, 2 n) fp32, per 2048-step chunk the decay product since step 0
    (even entries) and the state h (odd entries)."""
    (batch, d, L), n = u.shape, A.shape[1]
    dt = delta.float() + delta_bias.float()[:, None]
    if delta_softplus:
        dt = F.softplus(dt)
    n_chunks = math.ceil(L / KERNEL_CHUNK)
    x = u.new_empty(batch, d, n_chunks, 2 * n, dtype=torch.float32)
    for c in range(n_chunks):
        end = min((c + 1) * KERNEL_CHUNK, L)
        x[..., c, 0::2] = torch.exp(A.float()[None] * dt[..., :end].sum(-1)[..., None])
        x[..., c, 1::2] = selective_scan_torch(
            u[..., :end],
            delta[..., :end],
            A,
            B[..., :end],
            C[..., :end],
            delta_bias=delta_bias,
            delta_softplus=delta_softplus,
            return_last_state=True,
        )[1]
    return x


def _reference_fwd(u, delta, A, B, C, D, z, delta_bias, delta_softplus):
    out = selective_scan_torch(u, delta, A, B, C, D, None, delta_bias, delta_softplus)
    work = torch.promote_types(u.dtype, torch.float32)
    out_z = (out.to(work) * F.silu(z.to(work))).to(u.dtype)
    return out_z, _chunk_prefixes(u, delta, A, B, C, delta_bias, delta_softplus), out


def _reference_bwd(u, delta, A, B, C, D, z, delta_bias, dout, delta_softplus):
    """The scan's gradients by hand (an operator's kernel runs below autograd): the adjoint
    g_t = C_t dy_t + a_{t+1} g_{t+1} is the same linear scan run backwards. Whole-sequence: tests only."""
    f32 = lambda t: t.to(torch.promote_types(t.dtype, torch.float32))
    u32, z32, dout32, A32 = f32(u), f32(z), f32(dout), f32(A)
    pre = f32(delta) + f32(delta_bias)[:, None]
    dt = F.softplus(pre) if delta_softplus else pre  # (b, d, L)
    Bv, Cv = f32(B)[:, None], f32(C)[:, None]  # (b, 1, n, L)
    a = torch.exp(dt[:, :, None] * A32[None, :, :, None])  # (b, d, n, L) decays
    h, _ = _linear_scan(a, (dt * u32)[:, :, None] * Bv)  # states h_t
    y = (h * Cv).sum(2) + u32 * f32(D)[:, None]
    gate = torch.sigmoid(z32)
    dy = dout32 * z32 * gate  # d out_z / d y = silu(z)
    dz = dout32 * y * gate * (1 + z32 * (1 - gate))  # silu'(z)
    a_next = torch.cat([a[..., 1:], torch.ones_like(a[..., :1])], dim=-1)  # a_{t+1}
    g = _linear_scan(a_next.flip(-1), (dy[:, :, None] * Cv).flip(-1))[0].flip(-1)  # dL/dh_t
    h_prev = torch.cat([torch.zeros_like(h[..., :1]), h[..., :-1]], dim=-1)
    da = g * h_prev * a  # dL/d(dt A) per state
    du = dy * f32(D)[:, None] + (g * Bv).sum(2) * dt
    ddt = (g * Bv).sum(2) * u32 + (da * A32[None, :, :, None]).sum(2)
    dA = (da * dt[:, :, None]).sum((0, 3))
    dB = (g * (dt * u32)[:, :, None]).sum(1)
    dC = (dy[:, :, None] * h).sum(1)
    dD = (dy * u32).sum((0, 2))
    dpre = ddt * torch.sigmoid(pre) if delta_softplus else ddt
    grads = (du, dpre, dA, dB, dC, dD, dz, dpre.sum((0, 2)))
    return tuple(gr.to(t.dtype) for gr, t in zip(grads, (u, delta, A, B, C, D, z, delta_bias)))


if HAS_CUSTOM_OP:

    @torch.library.custom_op("uu::selective_scan_fwd", mutates_args=())
    def selective_scan_fwd(
        u: Tensor,
        delta: Tensor,
        A: Tensor,
        B: Tensor,
        C: Tensor,
        D: Tensor,
        z: Tensor,
        delta_bias: Tensor,
        delta_softplus: bool,
    ) -> tuple[Tensor, Tensor, Tensor]:
        if u.is_cuda:
            if _kernel is None:
                raise RuntimeError(
                    "uu::selective_scan_fwd on CUDA needs mamba-ssm's selective_scan_cuda "
                    "extension (pip install mamba-ssm on a CUDA machine)"
                )
            out, x, out_z = _kernel.fwd(u, delta, A, B.unsqueeze(1), C.unsqueeze(1), D, z, delta_bias, delta_softplus)
            return out_z, x, out
        return _reference_fwd(u, delta, A, B, C, D, z, delta_bias, delta_softplus)

    @selective_scan_fwd.register_fake
    def _(u, delta, A, B, C, D, z, delta_bias, delta_softplus):
        batch, d, L = u.shape
        x = u.new_empty(batch, d, (L + KERNEL_CHUNK - 1) // KERNEL_CHUNK, 2 * A.shape[1], dtype=torch.float32)
        return torch.empty_like(z), x, torch.empty_like(delta)

    @torch.library.custom_op("uu::selective_scan_bwd", mutates_args=())
    def selective_scan_bwd(
        u: Tensor,
        delta: Tensor,
        A: Tensor,
        B: Tensor,
        C: Tensor,
        D: Tensor,
        z: Tensor,
        delta_bias: Tensor,
        dout: Tensor,
        x: Tensor,
        out: Tensor,
        delta_softplus: bool,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
        if u.is_cuda:
            if _kernel is None:
                raise RuntimeError("uu::selective_scan_bwd on CUDA needs mamba-ssm's selective_scan_cuda extension")
            du, ddelta, dA, dB, dC, dD, ddelta_bias, dz = _kernel.bwd(
                u, delta, A, B.unsqueeze(1), C.unsqueeze(1), D, z, delta_bias, dout, x, out, None, delta_softplus, False
            )
            return du, ddelta, dA, dB.squeeze(1), dC.squeeze(1), dD, dz, ddelta_bias  # the inputs' order
        return _reference_bwd(u, delta, A, B, C, D, z, delta_bias, dout, delta_softplus)

    @selective_scan_bwd.register_fake
    def _(u, delta, A, B, C, D, z, delta_bias, dout, x, out, delta_softplus):
        return tuple(torch.empty_like(t) for t in (u, delta, A, B, C, D, z, delta_bias))

    def _setup_context(ctx, inputs, output):
        u, delta, A, B, C, D, z, delta_bias, delta_softplus = inputs
        _, x, out = output
        ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, x, out)
        ctx.delta_softplus = delta_softplus

    def _backward(ctx, d_out_z, d_x, d_out):
        """Only out_z is differentiable: x and out are the kernel's saved intermediates."""
        u, delta, A, B, C, D, z, delta_bias, x, out = ctx.saved_tensors
        return (
            *selective_scan_bwd(u, delta, A, B, C, D, z, delta_bias, d_out_z.contiguous(), x, out, ctx.delta_softplus),
            None,
        )

    selective_scan_fwd.register_autograd(_backward, setup_context=_setup_context)


def fused_scan_applies(u, B, C, D, z, delta_bias, return_last_state) -> bool:
    """Whether the operators cover the call (the Mamba block's: B, C (b, n, L), D, z, delta_bias, no last state)."""
    fits = B.dim() == 3 and C.dim() == 3 and all(t is not None for t in (D, z, delta_bias))
    return HAS_CUSTOM_OP and not return_last_state and fits


def fused_selective_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus=False) -> Tensor:
    """out_z (batch, d, L) through uu::selective_scan_fwd (see the module docstring for shapes)."""
    args = [t if t.stride(-1) == 1 else t.contiguous() for t in (u, delta, A, B, C, D, z, delta_bias)]
    return torch.ops.uu.selective_scan_fwd(*args, bool(delta_softplus))[0]


def has_kernel() -> bool:
    """True when mamba-ssm's compiled extension imported (the CUDA implementation exists)."""
    return _kernel is not None


def random_scan_inputs(b, d, L, n=16, dtype=torch.float32, seed=0, device="cuda") -> dict[str, Tensor]:
    """Mamba-like arguments of the scan, by name in the operators' order: u, delta, z (b, d, L) and B, C (b, n, L)
    random in `dtype`; A (d, n) S4D-real and D, delta_bias (d,) in fp32."""
    g = torch.Generator(device=device).manual_seed(seed)
    r = lambda *s: torch.randn(*s, device=device, generator=g)
    u, delta = r(b, d, L).to(dtype), (0.5 * r(b, d, L) - 3).to(dtype)
    B, C = r(b, n, L).to(dtype), r(b, n, L).to(dtype)
    z, delta_bias = r(b, d, L).to(dtype), 0.1 * r(d)
    A = -torch.arange(1, n + 1, device=device, dtype=torch.float32).repeat(d, 1)  # S4D-real, as Mamba
    return dict(u=u, delta=delta, A=A, B=B, C=C, D=torch.ones(d, device=device), z=z, delta_bias=delta_bias)


def kernel_errors(dtype=torch.float32, backward=True, shape=(2, 64, 5000), seed=3) -> dict[str, float]:
    """Relative errors of mamba-ssm's kernel (CUDA) against the operators' PyTorch implementation (CPU) on random
    Mamba-like inputs of `shape` (batch, d, L; n = 16; L = 5000 spans 3 kernel chunks): out_z, out, the states
    saved at chunk ends and, with `backward`, every gradient. The GPU tests bound them; scripts/build_mamba.sh runs
    this on a prebuilt wheel before trusting it (bf16 stays within 2e-2, fp32 within 1e-4)."""
    if _kernel is None or not torch.cuda.is_available():
        raise RuntimeError("kernel_errors needs a CUDA GPU and mamba-ssm's selective_scan_cuda extension")
    inputs = random_scan_inputs(*shape, dtype=dtype, seed=seed)
    outs, grads = {}, {}
    for dev in ("cuda", "cpu"):
        leaves = {k: v.detach().to(dev).clone().requires_grad_(backward) for k, v in inputs.items()}
        with torch.set_grad_enabled(backward):
            outs[dev] = torch.ops.uu.selective_scan_fwd(*leaves.values(), True)
            if backward:
                fused_selective_scan(*leaves.values(), delta_softplus=True).float().square().mean().backward()
                grads[dev] = {k: v.grad for k, v in leaves.items()}

    def rel(a, ref):
        return ((a.cpu().float() - ref.float()).norm() / ref.float().norm().clamp_min(1e-12)).item()

    (zc, xc, oc), (zr, xr, orf) = outs["cuda"], outs["cpu"]
    errs = {"out_z": rel(zc, zr), "out": rel(oc, orf), "x states": rel(xc[..., 1::2], xr[..., 1::2])}
    errs.update({f"d{k}": rel(grads["cuda"][k], grads["cpu"][k]) for k in grads.get("cuda", {})})
    return errs
