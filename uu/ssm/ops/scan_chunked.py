"""The selective scan in pure PyTorch, chunked: the training path on CPUs and GPUs without mamba-ssm.

Same results as scan_ref.py (h_t = exp(delta_t A) h_{t-1} + delta_t B_t u_t, y_t = C_t . h_t + D u_t,
y *= silu(z)), in parallel: blocks of `chunk_size` steps run one after the other carrying the (b, d, n) state;
inside a block, sub-chunks of `sub_chunk` steps are scanned by Hillis-Steele doubling, which only multiplies
decays (<= 1) and never divides by a tiny cumulative decay (the failure of the "cumsum of exp(-S)" trick);
sub-chunk end states are combined by the same scan. fp32 inside; O(d n log2(sub_chunk)) work per token.
Under autograd the blocks are recomputed in the backward pass (`_BlockwiseRecompute`): memory ~ one block.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

DEFAULT_CHUNK_SIZE = 256  # steps per block (see benchmarks/bench_scan.py for the choice)
DEFAULT_SUB_CHUNK = 16  # steps per sub-chunk inside a block


def selective_scan_torch(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                         return_last_state=False, chunk_size=DEFAULT_CHUNK_SIZE, sub_chunk=DEFAULT_SUB_CHUNK):
    """Arguments and results as `selective_scan_ref` (shapes there); chunk_size and sub_chunk set the blocks."""
    if chunk_size < 1 or sub_chunk < 1:
        raise ValueError(f"selective_scan: chunk_size={chunk_size} and sub_chunk={sub_chunk} must be >= 1")
    dtype_in, L = u.dtype, u.shape[-1]
    work = torch.promote_types(u.dtype, torch.float32)  # fp32, or fp64 when given fp64 (gradcheck)
    u32, delta32, A32 = u.to(work), delta.to(work), A.to(work)
    if delta_bias is not None:
        delta32 = delta32 + delta_bias.to(work)[:, None]
    if delta_softplus:
        delta32 = F.softplus(delta32)
    B32, C32 = B.to(work), C.to(work)  # (b, n, L) input-dependent, or (d, n) constant

    sub = min(sub_chunk, chunk_size)
    block = math.ceil(chunk_size / sub) * sub  # a whole number of sub-chunks
    inputs = (u, delta, A, B, C, delta_bias)
    needs_grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in inputs)
    if needs_grad and L > block:  # recompute block by block in the backward pass: memory ~ one block
        y, state = _BlockwiseRecompute.apply(u32, delta32, A32, B32, C32, sub, block)
    else:
        y, state = _scan_blocks(u32, delta32, A32, B32, C32, sub, block)
    if D is not None:
        y = y + u32 * D.to(work)[:, None]
    if z is not None:
        y = y * F.silu(z.to(work))
    return (y.to(dtype_in), state) if return_last_state else y.to(dtype_in)


def _scan_blocks(u, delta, A, B, C, sub, block, states_in=None):
    """Loop over blocks of `block` steps carrying the state. Returns y (b, d, L) and the last state.
    If `states_in` is a list, the state entering each block is appended to it."""
    batch, d, L = u.shape
    state = u.new_zeros(batch, d, A.shape[1])
    ys = []
    for start in range(0, L, block):
        sl = slice(start, start + block)
        if states_in is not None:
            states_in.append(state)
        y, state = _scan_block(*(_steps(t, sl) for t in (u, delta, A, B, C)), state, sub)
        ys.append(y)
    return (torch.cat(ys, dim=-1) if len(ys) > 1 else ys[0]), state


def _steps(t, sl):
    """The steps `sl` of a sequence (..., L); a constant (A, or B / C given as (d, n)) as it is."""
    return t[..., sl] if t.dim() == 3 else t


class _BlockwiseRecompute(torch.autograd.Function):
    """Activation checkpointing by hand: keep the state entering each block, recompute the blocks in reverse."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, sub, block):
        states = []
        with torch.no_grad():
            y, last = _scan_blocks(u, delta, A, B, C, sub, block, states_in=states)
        ctx.save_for_backward(u, delta, A, B, C, torch.stack(states))
        ctx.sub, ctx.block = sub, block
        return y, last

    @staticmethod
    def backward(ctx, dy, dlast):
        u, delta, A, B, C, states = ctx.saved_tensors
        sub, block = ctx.sub, ctx.block
        if torch.is_grad_enabled():  # backward with create_graph=True (Hessian-vector products):
            return _BlockwiseRecompute._differentiable_backward(ctx, u, delta, A, B, C, dy, dlast)
        grads = [torch.zeros_like(t) for t in (u, delta, A, B, C)]
        g_state = dlast
        for i in reversed(range(states.shape[0])):
            sl = slice(i * block, (i + 1) * block)
            leaves = [t.detach().requires_grad_() for t in (*(_steps(t, sl) for t in (u, delta, A, B, C)), states[i])]
            with torch.enable_grad():
                y, state = _scan_block(*leaves, sub)
                g = torch.autograd.grad((y, state), leaves, (dy[..., sl], g_state), allow_unused=True)
            g = [torch.zeros_like(t) if gi is None else gi for gi, t in zip(g, leaves)]
            for total, gi in zip(grads, g[:5]):
                if total.dim() == 3:  # a sequence: this block's steps
                    total[..., sl] = gi
                else:  # a constant: summed over the blocks
                    total += gi
            g_state = g[5]
        return (*grads, None, None)

    @staticmethod
    def _differentiable_backward(ctx, u, delta, A, B, C, dy, dlast):
        """Plain autograd with create_graph=True: the block-wise path treats the saved states as constants and
        would give wrong second derivatives."""
        inputs = (u, delta, A, B, C)
        wanted = [i for i, t in enumerate(inputs) if ctx.needs_input_grad[i]]
        y, last = _scan_blocks(u, delta, A, B, C, ctx.sub, ctx.block)
        grads = torch.autograd.grad((y, last), [inputs[i] for i in wanted], (dy, dlast), create_graph=True,
                                    allow_unused=True)
        out = [None] * 5
        for i, g in zip(wanted, grads):
            out[i] = g
        return (*out, None, None)


def _linear_scan(a, x):
    """Inclusive scan along the last axis, h[t] = a[t] * h[t-1] + x[t] (h[-1] = 0), by Hillis-Steele doubling.
    Returns h and the cumulative products P[t] = a[0] * ... * a[t]."""
    T, s = x.shape[-1], 1
    while s < T:
        x = torch.cat([x[..., :s], torch.addcmul(x[..., s:], a[..., s:], x[..., :-s])], dim=-1)
        a = torch.cat([a[..., :s], a[..., s:] * a[..., :-s]], dim=-1)
        s *= 2
    return x, a


def _scan_block(u, delta, A, B, C, state, sub):
    """One block: u, delta (b, d, K) fp32, A (d, n), B/C (b, n, K) or (d, n), state (b, d, n) -> y (b, d, K)
    without the D and z terms, and the state after the block."""
    (b, d, K), n = u.shape, A.shape[1]
    pad = (-K) % sub
    if pad:  # padded steps have delta = 0: decay 1 and no input, so the state passes through unchanged
        u, delta, B, C = (F.pad(t, (0, pad)) if t.dim() == 3 else t for t in (u, delta, B, C))
    nc = (K + pad) // sub
    decay = torch.exp(delta[:, :, None, :] * A[None, :, :, None]).view(b, d, n, nc, sub)  # in (0, 1]
    du = delta * u
    if B.dim() == 3:
        x = (du[:, :, None, :] * B[:, None, :, :]).view(b, d, n, nc, sub)  # delta * B * u
    else:
        x = (du[:, :, None, :] * B[None, :, :, None]).view(b, d, n, nc, sub)

    # 1) inside each sub-chunk, from a zero state
    h_local, decay_cum = _linear_scan(decay, x)  # (b, d, n, nc, sub)
    # 2) across sub-chunks: the state at the end of each, the block's incoming state folded in
    chunk_decay, chunk_x = decay_cum[..., -1], h_local[..., -1]  # (b, d, n, nc)
    chunk_x = torch.cat([chunk_x[..., :1] + chunk_decay[..., :1] * state[..., None], chunk_x[..., 1:]], dim=-1)
    chunk_state, _ = _linear_scan(chunk_decay, chunk_x)
    state_in = torch.cat([state[..., None], chunk_state[..., :-1]], dim=-1)  # entering each sub-chunk
    # 3) full states and the read-out y_t = C_t . h_t
    h = torch.addcmul(h_local, decay_cum, state_in[..., None])
    if C.dim() == 3:
        y = (h * C.view(b, 1, n, nc, sub)).sum(dim=2)
    else:
        y = (h * C[None, :, :, None, None]).sum(dim=2)
    return y.reshape(b, d, nc * sub)[..., :K], chunk_state[..., -1]
