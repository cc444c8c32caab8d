"""uu.ssm: the pure-PyTorch selective scan against a naive loop, gradients, dispatch, the Mamba block."""
import pytest
import torch
import torch.nn.functional as F

import uu.ssm as ssm
from uu.ssm import Mamba, selective_scan, selective_scan_torch


def naive_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """One step at a time, float64: h_t = exp(delta_t A) h_{t-1} + delta_t B_t u_t, y_t = C_t h_t + D u_t."""
    u, delta, A, B, C = (t.double() for t in (u, delta, A, B, C))
    if delta_bias is not None:
        delta = delta + delta_bias.double()[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    batch, d, L = u.shape
    h = torch.zeros(batch, d, A.shape[1], dtype=torch.float64)
    ys = []
    for t in range(L):
        b_t = B[:, None, :, t] if B.dim() == 3 else B[None]
        c_t = C[:, None, :, t] if C.dim() == 3 else C[None]
        h = torch.exp(delta[:, :, t, None] * A) * h + delta[:, :, t, None] * b_t * u[:, :, t, None]
        ys.append((h * c_t).sum(-1))
    y = torch.stack(ys, dim=-1)
    if D is not None:
        y = y + u * D.double()[:, None]
    if z is not None:
        y = y * F.silu(z.double())
    return y, h


def random_inputs(batch, d, n, L, seed=0, constant_bc=False, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g)
    B = r(d, n) if constant_bc else r(batch, n, L)
    C = r(d, n) if constant_bc else r(batch, n, L)
    return dict(u=r(batch, d, L).to(dtype), delta=(0.5 * r(batch, d, L) - 1).to(dtype),
                A=-torch.rand(d, n, generator=g) * 4 - 0.1, B=B.to(dtype), C=C.to(dtype),
                D=r(d), z=r(batch, d, L).to(dtype), delta_bias=0.3 * r(d))


CASES = [  # batch, d, n, L, chunk_size, sub_chunk, constant B/C
    (2, 5, 4, 203, 256, 16, False),  # one block, L not a multiple of the sub-chunk
    (2, 5, 4, 203, 64, 16, False),  # several blocks, last one short
    (1, 3, 16, 100, 48, 7, False),  # block not a multiple of the sub-chunk
    (3, 4, 2, 37, 5, 2, False),
    (1, 2, 3, 1, 256, 16, False),  # L = 1
    (2, 5, 4, 70, 32, 8, True),  # constant (d, n) B and C
]


@pytest.mark.parametrize("batch,d,n,L,chunk,sub,constant_bc", CASES)
def test_scan_matches_naive_loop(batch, d, n, L, chunk, sub, constant_bc):
    x = random_inputs(batch, d, n, L, constant_bc=constant_bc)
    want_y, want_h = naive_scan(**x, delta_softplus=True)
    y, h = selective_scan_torch(**x, delta_softplus=True, return_last_state=True, chunk_size=chunk,
                                sub_chunk=sub)
    assert y.shape == (batch, d, L) and y.dtype == torch.float32
    assert h.shape == (batch, d, n)
    assert torch.allclose(y.double(), want_y, rtol=1e-4, atol=1e-4)
    assert torch.allclose(h.double(), want_h, rtol=1e-4, atol=1e-4)


def test_scan_without_optional_terms():
    x = random_inputs(2, 3, 4, 50)
    for key in ("D", "z", "delta_bias"):
        x.pop(key)
    x["delta"] = x["delta"].abs()  # no softplus: delta must already be positive
    want, _ = naive_scan(**x)
    assert torch.allclose(selective_scan(**x, chunk_size=16).double(), want, rtol=1e-4, atol=1e-4)


def test_scan_is_stable_with_strong_decay():
    # delta * A down to about -400 per step: exp(-cumsum) would overflow in any division-based form
    x = random_inputs(1, 4, 16, 300, seed=3)
    x["delta"] = x["delta"] * 0 + 25.0
    x["A"] = -torch.arange(1, 17.0).repeat(4, 1)
    y, h = selective_scan_torch(**{k: v for k, v in x.items() if k != "delta_bias"}, return_last_state=True)
    want_y, want_h = naive_scan(**{k: v for k, v in x.items() if k != "delta_bias"})
    assert torch.isfinite(y).all() and torch.isfinite(h).all()
    assert torch.allclose(y.double(), want_y, rtol=1e-4, atol=1e-3)


def test_scan_keeps_input_dtype_and_computes_in_fp32():
    x = random_inputs(1, 3, 4, 40, dtype=torch.bfloat16)
    y = selective_scan(**x, delta_softplus=True)
    assert y.dtype == torch.bfloat16
    want, _ = naive_scan(**x, delta_softplus=True)  # from the same bf16-rounded inputs
    assert torch.allclose(y.double(), want, rtol=2e-2, atol=2e-2)


def test_scan_gradcheck_float64():
    x = random_inputs(1, 2, 3, 11, seed=1)
    x = {k: v.double().requires_grad_() for k, v in x.items()}
    fn = lambda u, delta, A, B, C, D, z, delta_bias: selective_scan_torch(
        u, delta, A, B, C, D, z, delta_bias, True, chunk_size=4, sub_chunk=2)
    assert torch.autograd.gradcheck(fn, tuple(x.values()), eps=1e-6, atol=1e-5)


def test_scan_gradients_match_naive_loop():
    x = random_inputs(2, 3, 4, 45, seed=2)
    ours = {k: v.double().requires_grad_() for k, v in x.items()}
    ref = {k: v.double().requires_grad_() for k, v in x.items()}
    selective_scan_torch(**ours, delta_softplus=True, chunk_size=16, sub_chunk=4).sum().backward()
    naive_scan(**ref, delta_softplus=True)[0].sum().backward()
    for k in x:
        assert torch.allclose(ours[k].grad, ref[k].grad, rtol=1e-6, atol=1e-8), k


def test_dispatch_on_cpu():
    assert ssm.scan_backend("cpu") == "torch"
    selective_scan(**random_inputs(1, 2, 2, 5))
    assert ssm.last_backend() == "torch"
    with pytest.raises(RuntimeError, match="backend='cuda'"):
        ssm.scan_backend("cpu", backend="cuda")
    with pytest.raises(ValueError, match="backend"):
        ssm.scan_backend("cpu", backend="fast")


@pytest.mark.parametrize("key,bad", [("delta", torch.zeros(2, 3, 6)), ("A", torch.zeros(4, 4)),
                                     ("B", torch.zeros(2, 4, 6)), ("D", torch.zeros(5)),
                                     ("z", torch.zeros(2, 3, 4))])
def test_scan_rejects_bad_shapes(key, bad):
    x = random_inputs(2, 3, 4, 5)
    x[key] = bad
    with pytest.raises(ValueError, match=key):
        selective_scan(**x)


# ---- the Mamba block --------------------------------------------------------------------------

def test_mamba_state_dict_matches_mamba_ssm():
    # d_model 20: d_inner = 2 * 20 = 40, dt_rank = ceil(20 / 16) = 2, x_proj out = 2 + 2 * 16 = 34
    expected = {"A_log": (40, 16), "D": (40,), "in_proj.weight": (80, 20), "conv1d.weight": (40, 1, 4),
                "conv1d.bias": (40,), "x_proj.weight": (34, 40), "dt_proj.weight": (40, 2),
                "dt_proj.bias": (40,), "out_proj.weight": (20, 40)}
    got = {k: tuple(v.shape) for k, v in Mamba(20).state_dict().items()}
    assert got == expected
    # 80*20 + 40*4 + 40 + 34*40 + 40*2 + 40 + 40*16 + 40 + 20*40 = 4760
    assert sum(p.numel() for p in Mamba(20).parameters()) == 4760


def test_mamba_initialisation():
    torch.manual_seed(0)
    m = Mamba(32, dt_min=0.001, dt_max=0.1)  # d_inner 64, dt_rank 2
    assert torch.equal(m.A_log, torch.log(torch.arange(1, 17.0)).repeat(64, 1))
    assert torch.equal(m.D, torch.ones(64))
    dt = F.softplus(m.dt_proj.bias)
    assert dt.min() >= 0.001 * (1 - 1e-4) and dt.max() <= 0.1 * (1 + 1e-4)
    assert m.dt_proj.weight.abs().max() <= 2 ** -0.5
    assert m.dt_proj.bias._no_reinit and m.A_log._no_weight_decay and m.D._no_weight_decay
    assert m.in_proj.bias is None and m.out_proj.bias is None and m.conv1d.bias is not None


def test_mamba_forward_is_the_composition_of_its_parts():
    torch.manual_seed(0)
    m = Mamba(8, d_state=4)  # d_inner 16, dt_rank 1
    x = torch.randn(2, 30, 8)
    xz = x @ m.in_proj.weight.t()
    xi, z = xz[..., :16], xz[..., 16:]
    # causal depthwise conv by hand: out_t = bias + sum_k w[k] * x_{t - 3 + k}
    padded = F.pad(xi.transpose(1, 2), (3, 0))
    w = m.conv1d.weight[:, 0]
    conv = m.conv1d.bias[:, None] + sum(w[:, k, None] * padded[..., k:k + 30] for k in range(4))
    xc = F.silu(conv)
    dbl = xc.transpose(1, 2) @ m.x_proj.weight.t()
    dt = (dbl[..., :1] @ m.dt_proj.weight.t()).transpose(1, 2)
    B, C = dbl[..., 1:5].transpose(1, 2), dbl[..., 5:9].transpose(1, 2)
    y, _ = naive_scan(xc, dt, -torch.exp(m.A_log), B, C, m.D, z.transpose(1, 2), m.dt_proj.bias, True)
    want = y.float().transpose(1, 2) @ m.out_proj.weight.t()
    with torch.no_grad():
        got = m(x)
    assert got.shape == (2, 30, 8)
    assert torch.allclose(got, want, rtol=1e-4, atol=1e-5)


def test_mamba_is_causal():
    torch.manual_seed(0)
    m = Mamba(8).eval()
    x = torch.randn(1, 20, 8)
    x2 = x.clone()
    x2[:, 12] += 1.0
    with torch.no_grad():
        a, b = m(x), m(x2)
    assert torch.equal(a[:, :12], b[:, :12])
    assert not torch.allclose(a[:, 12:], b[:, 12:])


def test_double_backward_matches_unchunked_graph():
    """Hessian-vector products through the block-recompute path equal those of the plain graph."""
    import importlib
    ops = importlib.import_module("uu.ssm.ops.selective_scan")  # the module (the package exports the function)
    torch.manual_seed(0)
    b, d, n, L = 1, 3, 4, 40  # L > block, so the recompute Function is used
    u = torch.randn(b, d, L, dtype=torch.float64, requires_grad=True)
    delta = (0.5 * torch.randn(b, d, L, dtype=torch.float64)).requires_grad_()
    A = -torch.rand(d, n, dtype=torch.float64).add(0.5).requires_grad_()
    B = torch.randn(b, n, L, dtype=torch.float64, requires_grad=True)
    C = torch.randn(b, n, L, dtype=torch.float64, requires_grad=True)
    leaves = (u, delta, A, B, C)
    vs = [torch.randn_like(t) for t in leaves]

    def hvp(fn):
        y = fn()
        grads = torch.autograd.grad(y.square().sum(), leaves, create_graph=True)
        dot = sum((g * v).sum() for g, v in zip(grads, vs))
        return torch.autograd.grad(dot, leaves)

    chunked = hvp(lambda: ops.selective_scan_torch(u, delta, A, B, C, delta_softplus=True,
                                                   chunk_size=8, sub_chunk=4))
    plain = hvp(lambda: ops._scan_blocks(u, torch.nn.functional.softplus(delta), A, B, C, 4, 8)[0])
    for a, e in zip(chunked, plain):
        torch.testing.assert_close(a, e, rtol=1e-9, atol=1e-12)


def test_scan_backend_override_sets_and_restores_even_on_error():
    from uu.ssm import Mamba, scan_backend_override

    model = torch.nn.Sequential(Mamba(8, backend="auto"), Mamba(8, backend="cuda"))
    with scan_backend_override(model, "torch"):
        assert [m.backend for m in model] == ["torch", "torch"]
    assert [m.backend for m in model] == ["auto", "cuda"]
    with pytest.raises(RuntimeError):
        with scan_backend_override(model, "torch"):
            raise RuntimeError("boom")
    assert [m.backend for m in model] == ["auto", "cuda"]
