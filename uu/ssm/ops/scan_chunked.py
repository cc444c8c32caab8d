"""The selective scan in pure PyTorch, chunked: the training path on CPUs and GPUs without mamba-ssm.

Same results as scan_ref.py (h_t = exp(delta_t A) h_{t-1} + delta_t B_t u_t, y_t = C_t . h_t + D u_t, y *= silu(z)).
Time-major inside ((L, b, d, n): one step is a contiguous slice). Blocks of `chunk_size` steps run one after the
other carrying the (b, d, n) state; inside a block, the recurrence runs step by step over the sub-chunks of
`sub_chunk` steps all at once, then over the sub-chunk end states, then once more from the right incoming states:
2 sub_chunk + chunk_size / sub_chunk small ops, only products of decays (<= 1), never a division by a tiny
cumulative decay. fp32 inside (fp64 when given fp64). Gradients (`_Scan`): the adjoint by hand, dL/dh_t = C_t dy_t
+ decay_{t+1} dL/dh_{t+1}, the same scan run from the end; a sequence of one block keeps its states from the forward
pass, longer ones keep the state entering each block and recompute the blocks in reverse: memory ~ one block."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from . import scan_cpu

# benchmarks/bench_scan.py: sub-chunks of 16 and 32 tie; 1024-step blocks keep every tiny2d layer's forward states
DEFAULT_CHUNK_SIZE = 1024  # steps per block
DEFAULT_SUB_CHUNK = 16  # steps per sub-chunk inside a block


def selective_scan_torch(
    u,
    delta,
    A,
    B,
    C,
    D=None,
    z=None,
    delta_bias=None,
    delta_softplus=False,
    return_last_state=False,
    chunk_size=DEFAULT_CHUNK_SIZE,
    sub_chunk=DEFAULT_SUB_CHUNK,
):
    """Arguments and results as `selective_scan_ref` (shapes there); chunk_size and sub_chunk set the blocks."""
    if chunk_size < 1 or sub_chunk < 1:
        raise ValueError(f"selective_scan: chunk_size={chunk_size} and sub_chunk={sub_chunk} must be >= 1")
    dtype_in = u.dtype
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
    with torch.autocast(u.device.type, enabled=False):  # fp32 inside: under autocast, bmm would return bf16
        if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in inputs):
            y, state = _Scan.apply(u32, delta32, A32, B32, C32, sub, block)
        elif (kernel := scan_cpu.kernel_for(u32, delta32, A32, B32, C32)) is not None:  # the C kernel on CPUs
            y, state, _ = scan_cpu.forward(kernel, u32, delta32, A32, B32, C32)
        else:
            y, state = _scan_blocks(u32, delta32, A32, B32, C32, sub, block)
    if D is not None:
        y = y + u32 * D.to(work)[:, None]
    if z is not None:
        y = y * F.silu(z.to(work))
    return (y.to(dtype_in), state) if return_last_state else y.to(dtype_in)


def _time_major(t):
    """(b, c, L) -> (L, b, c) contiguous; a constant (d, n) as it is."""
    return t.permute(2, 0, 1).contiguous() if t.dim() == 3 else t


def _scan_blocks(u, delta, A, B, C, sub, block, keep=None):
    """u, delta (b, d, L), A (d, n), B/C (b, n, L) or (d, n) -> y (b, d, L) without the D and z terms, and the
    last state (b, d, n). Plain autograd ops. `keep` (a list) receives per block (state in, decay, h) when L fits
    in one block, else (state in,) only: memory ~ one block."""
    u, delta, B, C = map(_time_major, (u, delta, B, C))
    L, batch, d = u.shape
    state = u.new_zeros(batch, d, A.shape[1])
    ys = []
    for start in range(0, L, block):
        sl = slice(start, start + block)
        decay, x, h = _states(u[sl], delta[sl], A, _steps(B, sl), state, sub)
        if keep is not None:
            keep.append((state, decay, h) if L <= block else (state,))
        Ci = _steps(C, sl)
        ys.append(_contract(h, Ci, 3) if Ci.dim() == 3 else (h * Ci).sum(-1))
        state = h[-1]
    y = torch.cat(ys) if len(ys) > 1 else ys[0]
    return y.permute(1, 2, 0).contiguous(), state


def _steps(t, sl):
    """The steps `sl` of a time-major sequence (L, ...); a constant (B / C given as (d, n)) as it is."""
    return t[sl] if t.dim() == 3 else t


def _states(u, delta, A, B, state, sub):
    """One block, time-major: u, delta (K, b, d), B (K, b, n) or (d, n), state (b, d, n) -> the decays, the
    inputs x = delta B u and the states h, each (K, b, d, n)."""
    decay = torch.exp(delta[..., None] * A)  # in (0, 1]
    du = (delta * u)[..., None]
    x = du * (B[:, :, None] if B.dim() == 3 else B)
    return decay, x, _scan(decay, x, state, sub)


def _contract(big, small, dim):
    """The sum over `dim` of big (K, b, d, n) times small, by batched matmuls: dim 3 (n), small (K, b, n)
    -> (K, b, d); dim 2 (d), small (K, b, d) -> (K, b, n)."""
    K, b, d, n = big.shape
    flat = big.reshape(K * b, d, n)
    if dim == 3:
        return torch.bmm(flat, small.reshape(K * b, n, 1)).view(K, b, d)
    return torch.bmm(small.reshape(K * b, 1, d), flat).view(K, b, n)


def _scan(a, x, h0, sub, reverse=False):
    """h_t = a_t h_{t-1} + x_t along dim 0 of (T, ...) from h_{-1} = h0 (reverse: h_t = a_t h_{t+1} + x_t from
    h_T = h0). Returns h (T, ...)."""
    T, rest = x.shape[0], x.shape[1:]
    # Without autograd (the forward and backward passes of _Scan, inference) the sweeps write each step into
    # the result with out=, instead of a torch.stack copy of all the steps; with it, plain differentiable ops.
    direct = not (torch.is_grad_enabled() and any(t.requires_grad for t in (a, x, h0)))
    if T <= sub:
        return _sweep(a, x, h0, reverse, x.new_empty(T, *rest)) if direct else torch.stack(_sweep(a, x, h0, reverse))
    pad = (-T) % sub
    if pad:  # padded steps have decay 1 and no input: the state passes through unchanged
        a, x = torch.cat([a, a.new_ones(pad, *rest)]), torch.cat([x, x.new_zeros(pad, *rest)])
    nc = (T + pad) // sub
    a5, x5 = a.view(nc, sub, *rest).transpose(0, 1), x.view(nc, sub, *rest).transpose(0, 1)  # (sub, nc, ...)
    # 1) each sub-chunk from a zero state: its end state and its total decay
    ends = _sweep(a5, x5, None, reverse)[0 if reverse else -1]
    totals = a5.prod(0)
    # 2) across sub-chunks, from h0: the state entering each
    carried = _sweep(totals, ends, h0, reverse)
    h0 = h0.expand_as(ends[0])
    entering = torch.stack([*carried[1:], h0] if reverse else [h0, *carried[:-1]])
    # 3) each sub-chunk again from its entering state
    if direct:
        h = x.new_empty(nc, sub, *rest)
        _sweep(a5, x5, entering, reverse, h.transpose(0, 1))
    else:
        h = torch.stack(_sweep(a5, x5, entering, reverse), dim=1)  # (nc, sub, ...)
    return h.view(nc * sub, *rest)[:T]


def _sweep(a, x, h, reverse, out=None):
    """The states h <- a[i] h + x[i] for i along dim 0 (from the end if `reverse`; h None: zero), in order of i.
    One small op per step. `out` (shape of x): written step by step and returned instead of the list."""
    hs = []
    for i in range(x.shape[0] - 1, -1, -1) if reverse else range(x.shape[0]):
        if out is not None:
            h = out[i].copy_(x[i]) if h is None else torch.addcmul(x[i], a[i], h, out=out[i])
            continue
        h = x[i] if h is None else torch.addcmul(x[i], a[i], h)
        hs.append(h)
    if out is not None:
        return out
    return hs[::-1] if reverse else hs


def _linear_scan(a, x):
    """Inclusive scan along the last axis, h[t] = a[t] * h[t-1] + x[t] (h[-1] = 0). Returns h and the
    cumulative products P[t] = a[0] * ... * a[t]."""
    a_t, x_t = a.movedim(-1, 0).contiguous(), x.movedim(-1, 0).contiguous()
    h = _scan(a_t, x_t, torch.zeros_like(x_t[0]), DEFAULT_SUB_CHUNK)
    return h.movedim(0, -1), torch.cumprod(a, dim=-1)


class _Scan(torch.autograd.Function):
    """The scan with its adjoint by hand (no autograd graph); on CPUs by scan_cpu.py's C kernel where it applies."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, sub, block):
        ctx.sub, ctx.block = sub, block
        ctx.kernel = scan_cpu.kernel_for(u, delta, A, B, C)
        if ctx.kernel is not None:
            y, last, kept = scan_cpu.forward(ctx.kernel, u, delta, A, B, C)
            ctx.save_for_backward(u, delta, A, B, C, *kept)
            return y, last
        keep = []
        y, last = _scan_blocks(u, delta, A, B, C, sub, block, keep=keep)
        if len(keep) == 1:  # one block: keep its states
            ctx.save_for_backward(u, delta, A, B, C, *keep[0])
        else:  # several: keep the state entering each, recompute the blocks in the backward pass
            ctx.save_for_backward(u, delta, A, B, C, torch.stack([k[0] for k in keep]))
        return y, last

    @staticmethod
    def backward(ctx, dy, dlast):
        with torch.autocast(dy.device.type, enabled=False):  # a backward pass run under autocast stays fp32
            return _Scan._backward(ctx, dy, dlast)

    @staticmethod
    def _backward(ctx, dy, dlast):
        u, delta, A, B, C, *kept = ctx.saved_tensors
        if torch.is_grad_enabled():  # backward with create_graph=True (Hessian-vector products):
            return _Scan._differentiable_backward(ctx, u, delta, A, B, C, dy, dlast)
        if ctx.kernel is not None:
            return (*scan_cpu.backward(ctx.kernel, u, delta, A, kept, dy, dlast), None, None)
        sub, block = ctx.sub, ctx.block
        u, delta, B, C, dy = map(_time_major, (u, delta, B, C, dy))
        L = u.shape[0]
        g_state = dlast  # zeros when the last state is unused (autograd materialises it)
        grads = [
            torch.empty_like(u),
            torch.empty_like(delta),
            torch.zeros_like(A),
            torch.empty_like(B) if B.dim() == 3 else torch.zeros_like(B),
            torch.empty_like(C) if C.dim() == 3 else torch.zeros_like(C),
        ]
        for i in reversed(range(math.ceil(L / block))):
            sl = slice(i * block, (i + 1) * block)
            Bi, Ci = _steps(B, sl), _steps(C, sl)
            if len(kept) == 1:  # the states entering the blocks: recompute
                h0 = kept[0][i]
                decay, _, h = _states(u[sl], delta[sl], A, Bi, h0, sub)
            else:  # one block, as the forward pass left it
                h0, decay, h = kept
            g, g_state = _block_grads(u[sl], delta[sl], A, Bi, Ci, h0, decay, h, dy[sl], g_state, sub)
            for total, gi in zip(grads, g):
                if total.dim() == 3:  # a sequence: this block's steps
                    total[sl] = gi
                else:  # a constant: summed over the blocks
                    total += gi
        gu, gdelta, gA, gB, gC = grads
        back = lambda t: t.permute(1, 2, 0) if t.dim() == 3 else t
        return back(gu), back(gdelta), gA, back(gB), back(gC), None, None

    @staticmethod
    def _differentiable_backward(ctx, u, delta, A, B, C, dy, dlast):
        """Plain autograd with create_graph=True: the analytic path is not itself differentiable."""
        inputs = (u, delta, A, B, C)
        wanted = [i for i, t in enumerate(inputs) if ctx.needs_input_grad[i]]
        y, last = _scan_blocks(u, delta, A, B, C, ctx.sub, ctx.block)
        grads = torch.autograd.grad(
            (y, last), [inputs[i] for i in wanted], (dy, dlast), create_graph=True, allow_unused=True
        )
        out = [None] * 5
        for i, g in zip(wanted, grads):
            out[i] = g
        return (*out, None, None)


def _block_grads(u, delta, A, B, C, h0, decay, h, dy, g_state, sub):
    """The adjoint of one block (time-major, shapes of `_states`; h0 the state entering it, dy (K, b, d), g_state
    = dL/d(state after the block) (b, d, n)) -> the gradients of (u, delta, A, B, C) and dL/d h0."""
    dyC = dy[..., None] * (C[:, :, None] if C.dim() == 3 else C)
    # The adjoint gh_t = dyC_t + decay_{t+1} gh_{t+1} reads the next step's decay; scanning r_t = decay_t gh_t
    # instead (r_t = decay_t r_{t+1} + decay_t dyC_t, r_K = g_state) reads the same step's, so no shifted
    # copy of decay is built, and r is directly the factor of g_dA (no gh * decay product either).
    r = _scan(decay, decay * dyC, g_state, sub, reverse=True)
    gh = dyC  # dL/dh_t = dyC_t + r_{t+1}, in place: dyC is not needed any more
    gh[:-1] += r[1:]
    gh[-1] += g_state
    g_dA = torch.empty_like(r)  # dL/d(delta_t A) = r_t h_{t-1}; not (h_t - x_t): it cancels
    torch.mul(r[1:], h[:-1], out=g_dA[1:])  # slices, not a concatenated copy of the previous states
    torch.mul(r[0], h0, out=g_dA[0])
    g_du = _contract(gh, B, 3) if B.dim() == 3 else (gh * B).sum(-1)  # dL/d(delta u) (K, b, d)
    gu = g_du * delta
    gdelta = g_du * u + (g_dA * A).sum(-1)
    gA = (g_dA * delta[..., None]).sum((0, 1))
    gB = _contract(gh, delta * u, 2) if B.dim() == 3 else (gh * (delta * u)[..., None]).sum((0, 1))
    gC = _contract(h, dy, 2) if C.dim() == 3 else (h * dy[..., None]).sum((0, 1))
    return (gu, gdelta, gA, gB, gC), r[0]
