"""uu.ssm: the chunked PyTorch selective scan against the reference loop, gradients, dispatch, the Mamba block.

Every test here runs the PyTorch scan (UU_CPU_SCAN=torch): on a CPU the C kernel would otherwise take over,
and its own tests are in test_scan_cpu.py."""

import pytest
import torch
import torch.nn.functional as F
from helpers import scan_inputs

import uu.ssm as ssm
from uu.ssm import Mamba, scan_backend_override, selective_scan, selective_scan_ref, selective_scan_torch
from uu.ssm.ops import scan_chunked


@pytest.fixture(autouse=True)
def pytorch_scan(monkeypatch):
    monkeypatch.setenv("UU_CPU_SCAN", "torch")


def loop(x, **options):
    """The reference loop (selective_scan_ref) in float64: (y, last state)."""
    return selective_scan_ref(**{k: v.double() for k, v in x.items()}, return_last_state=True, **options)


CASES = [  # batch, d, n, L, chunk_size, sub_chunk, constant B/C
    (2, 5, 4, 203, 256, 16, False),  # one block, L not a multiple of the sub-chunk
    (2, 5, 4, 203, 64, 16, False),  # several blocks, last one short
    (1, 3, 16, 100, 48, 7, False),  # block not a multiple of the sub-chunk
    (3, 4, 2, 37, 5, 2, False),
    (1, 2, 3, 1, 256, 16, False),  # L = 1
    (2, 5, 4, 70, 32, 8, True),  # constant (d, n) B and C
]
OPTIONS = {  # selective_scan arguments left out (None), delta_softplus, B / C made constant (d, n)
    "all terms, softplus": ((), True, ""),
    "no D, z, delta_bias; no softplus": (("D", "z", "delta_bias"), False, ""),
    "no z": (("z",), True, ""),
    "constant B only": ((), True, "B"),
    "constant C only, no D": (("D",), True, "C"),
}


@pytest.mark.parametrize("batch,d,n,L,chunk,sub,constant_bc", CASES)
def test_chunked_scan_matches_the_loop(batch, d, n, L, chunk, sub, constant_bc):
    x = scan_inputs(batch, d, n, L, constant_bc=constant_bc)
    want_y, want_h = loop(x, delta_softplus=True)
    y, h = selective_scan_torch(**x, delta_softplus=True, return_last_state=True, chunk_size=chunk, sub_chunk=sub)
    assert y.shape == (batch, d, L) and y.dtype == torch.float32
    assert h.shape == (batch, d, n)
    assert torch.allclose(y.double(), want_y, rtol=1e-4, atol=1e-4)
    assert torch.allclose(h.double(), want_h, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("option", OPTIONS)
def test_chunked_scan_matches_the_loop_for_every_option(option):
    left_out, softplus, constant = OPTIONS[option]
    x = scan_inputs(2, 3, 4, 50, seed=4)
    if constant:
        x[constant] = scan_inputs(2, 3, 4, 50, seed=5, constant_bc=True)[constant]
    for key in left_out:
        x[key] = None
    if not softplus:
        x["delta"] = x["delta"].abs()  # without softplus, delta must already be positive
    given = {k: v for k, v in x.items() if v is not None}
    want_y, want_h = loop(given, delta_softplus=softplus)
    y, h = selective_scan(**given, delta_softplus=softplus, return_last_state=True, chunk_size=16)
    assert torch.allclose(y.double(), want_y, rtol=1e-4, atol=1e-4)
    assert torch.allclose(h.double(), want_h, rtol=1e-4, atol=1e-4)


def test_loop_by_hand():
    # d = n = 1, A = -ln 2, delta = 1 (no softplus): decay exp(-ln 2) = 1/2, h_t = h_{t-1} / 2 + B_t u_t
    u, B, C = torch.tensor([[[2.0, 4.0, 0.0]]]), torch.tensor([[[1.0, 0.5, 3.0]]]), torch.tensor([[[1.0, 2.0, 1.0]]])
    A, delta = torch.tensor([[-0.6931471805599453]]), torch.ones(1, 1, 3)
    # h = 2, 2/2 + 2 = 3, 3/2 + 0 = 1.5;  y = C h + D u with D = 0.5: 2 + 1, 6 + 2, 1.5 + 0
    y, h = selective_scan_ref(u, delta, A, B, C, D=torch.tensor([0.5]), return_last_state=True)
    torch.testing.assert_close(y, torch.tensor([[[3.0, 8.0, 1.5]]]))
    torch.testing.assert_close(h, torch.tensor([[[1.5]]]))
    gated = selective_scan_ref(u, delta, A, B, C, z=torch.zeros(1, 1, 3))  # silu(0) = 0
    assert torch.equal(gated, torch.zeros(1, 1, 3))


def test_scan_is_stable_with_strong_decay():
    # delta * A down to about -400 per step: exp(-cumsum) would overflow in any division-based form
    x = scan_inputs(1, 4, 16, 300, seed=3)
    x["delta"] = x["delta"] * 0 + 25.0
    x["A"] = -torch.arange(1, 17.0).repeat(4, 1)
    del x["delta_bias"]
    y, h = selective_scan_torch(**x, return_last_state=True)
    want_y, want_h = loop(x)
    assert torch.isfinite(y).all() and torch.isfinite(h).all()
    assert torch.allclose(y.double(), want_y, rtol=1e-4, atol=1e-3)


def test_scan_keeps_input_dtype_and_computes_in_fp32():
    x = scan_inputs(1, 3, 4, 40, dtype=torch.bfloat16)
    y = selective_scan(**x, delta_softplus=True)
    assert y.dtype == torch.bfloat16
    want, _ = loop(x, delta_softplus=True)  # from the same bf16-rounded inputs
    assert torch.allclose(y.double(), want, rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("chunk_size", [1024, 8])  # one block (states kept), several (recomputed)
def test_scan_under_autocast_runs_in_fp32_forward_and_backward(monkeypatch, chunk_size):
    """Autocast must not reach inside the PyTorch scan: its batched matmuls would return bf16 and meet fp32."""
    monkeypatch.setenv("UU_CPU_SCAN", "torch")  # the PyTorch path, as on a GPU without mamba-ssm
    x = scan_inputs(1, 3, 4, 40, seed=2)

    def grads(autocast):
        leaves = {k: v.clone().requires_grad_() for k, v in x.items()}
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            y = selective_scan_torch(**leaves, delta_softplus=True, chunk_size=chunk_size, sub_chunk=4)
        return [y, *torch.autograd.grad(y.square().sum(), list(leaves.values()))]

    for with_autocast, without in zip(grads(True), grads(False)):
        assert with_autocast.dtype == torch.float32
        assert torch.allclose(with_autocast, without, rtol=1e-5, atol=1e-6)


def test_scan_gradcheck_float64():
    x = scan_inputs(1, 2, 3, 11, seed=1)
    x = {k: v.double().requires_grad_() for k, v in x.items()}
    fn = lambda u, delta, A, B, C, D, z, delta_bias: selective_scan_torch(
        u, delta, A, B, C, D, z, delta_bias, True, chunk_size=4, sub_chunk=2
    )
    assert torch.autograd.gradcheck(fn, tuple(x.values()), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("constant_bc", [False, True])
def test_scan_gradients_match_the_loop(constant_bc):
    x = scan_inputs(2, 3, 4, 45, seed=2, constant_bc=constant_bc)  # 3 blocks: recomputed block by block
    ours = {k: v.double().requires_grad_() for k, v in x.items()}
    ref = {k: v.double().requires_grad_() for k, v in x.items()}
    selective_scan_torch(**ours, delta_softplus=True, chunk_size=16, sub_chunk=4).sum().backward()
    selective_scan_ref(**ref, delta_softplus=True).sum().backward()
    for k in x:
        assert torch.allclose(ours[k].grad, ref[k].grad, rtol=1e-6, atol=1e-8), k


GRAD_CASES = {  # L, chunk_size, sub_chunk, constant B / C, left out, softplus
    "one block, kept from the forward pass": (45, 1024, 8, "", (), True),
    "one block shorter than a sub-chunk": (5, 1024, 8, "", (), True),
    "L = 1": (1, 16, 4, "", (), True),
    "several blocks, last one short": (45, 16, 4, "", (), True),
    "several blocks, L not a multiple of the sub-chunk": (50, 21, 7, "", (), True),
    "block not a multiple of the sub-chunk": (37, 10, 4, "", (), True),
    "constant B and C, several blocks": (45, 16, 4, "BC", (), True),
    "constant B only, one block": (30, 64, 8, "B", (), True),
    "constant C only, several blocks": (30, 8, 4, "C", (), True),
    "no D, z, delta_bias, no softplus": (45, 16, 4, "", ("D", "z", "delta_bias"), False),
    "no z, one block": (23, 64, 4, "", ("z",), True),
}


def _grad_inputs(L, constant, left_out, softplus, seed=6):
    x = scan_inputs(2, 3, 4, L, seed=seed)
    for key in constant:
        x[key] = scan_inputs(2, 3, 4, L, seed=seed + 1, constant_bc=True)[key]
    for key in left_out:
        del x[key]
    if not softplus:
        x["delta"] = x["delta"].abs()  # without softplus, delta must already be positive
    return {k: v.double().requires_grad_() for k, v in x.items()}


@pytest.mark.parametrize("case", GRAD_CASES)
def test_scan_backward_matches_the_loop(case):
    """The adjoint by hand (`_Scan`) against autograd through the loop, with a gradient on y and on the last
    state, in float64."""
    L, chunk, sub, constant, left_out, softplus = GRAD_CASES[case]
    x = _grad_inputs(L, constant, left_out, softplus)
    y, h = selective_scan_torch(**x, delta_softplus=softplus, return_last_state=True, chunk_size=chunk, sub_chunk=sub)
    assert type(h.grad_fn).__name__ == "_ScanBackward"  # the hand-written backward, not a plain graph
    want_y, want_h = selective_scan_ref(**x, delta_softplus=softplus, return_last_state=True)
    g = torch.Generator().manual_seed(1)
    wy, wh = torch.randn(y.shape, generator=g, dtype=y.dtype), torch.randn(h.shape, generator=g, dtype=h.dtype)
    got = torch.autograd.grad((y * wy).sum() + (h * wh).sum(), list(x.values()))
    want = torch.autograd.grad((want_y * wy).sum() + (want_h * wh).sum(), list(x.values()))
    for k, a, e in zip(x, got, want):
        assert a.shape == e.shape, k
        torch.testing.assert_close(a, e, rtol=1e-9, atol=1e-11, msg=f"d/d{k}")


@pytest.mark.parametrize(
    "case",
    [
        "one block, kept from the forward pass",
        "several blocks, last one short",
        "constant B and C, several blocks",
        "no D, z, delta_bias, no softplus",
    ],
)
def test_scan_gradcheck_with_last_state(case):
    L, chunk, sub, constant, left_out, softplus = GRAD_CASES[case]
    x = _grad_inputs(min(L, 13), constant, left_out, softplus)
    names = list(x)
    fn = lambda *t: selective_scan_torch(
        **dict(zip(names, t)),
        delta_softplus=softplus,
        return_last_state=True,
        chunk_size=min(chunk, 6),
        sub_chunk=min(sub, 4),
    )
    assert torch.autograd.gradcheck(fn, tuple(x.values()), eps=1e-6, atol=1e-6)


def test_scan_gradients_with_strong_decay_in_fp32():
    """decay_t h_{t-1} = h_t - x_t in the backward pass: where decays vanish, only rounding is left of it."""
    x = scan_inputs(1, 4, 16, 300, seed=3)
    x["delta"] = x["delta"] * 0 + 25.0
    x["A"] = -torch.arange(1, 17.0).repeat(4, 1)
    del x["delta_bias"]
    ours = {k: v.clone().requires_grad_() for k, v in x.items()}
    ref = {k: v.double().requires_grad_() for k, v in x.items()}
    selective_scan_torch(**ours, chunk_size=128, sub_chunk=16).square().sum().backward()
    selective_scan_ref(**ref).square().sum().backward()
    for k in x:
        scale = ref[k].grad.abs().max()
        assert torch.isfinite(ours[k].grad).all(), k
        torch.testing.assert_close(ours[k].grad.double(), ref[k].grad, rtol=1e-4, atol=1e-5 * scale, msg=k)


def test_linear_scan_matches_a_loop():
    g = torch.Generator().manual_seed(0)
    a, x = (
        torch.rand(2, 3, 70, generator=g, dtype=torch.float64),
        torch.randn(2, 3, 70, generator=g, dtype=torch.float64),
    )
    h, P = scan_chunked._linear_scan(a, x)
    want, state = [], torch.zeros(2, 3, dtype=torch.float64)
    for t in range(70):
        state = a[..., t] * state + x[..., t]
        want.append(state)
    torch.testing.assert_close(h, torch.stack(want, -1))
    torch.testing.assert_close(P, torch.cumprod(a, -1))


def test_dispatch_on_cpu():
    assert ssm.scan_backend("cpu") == "torch"
    selective_scan(**scan_inputs(1, 2, 2, 5))
    assert ssm.last_backend() == "torch"
    with pytest.raises(RuntimeError, match="backend='cuda'"):
        ssm.scan_backend("cpu", backend="cuda")
    with pytest.raises(ValueError, match="backend"):
        ssm.scan_backend("cpu", backend="fast")


@pytest.mark.parametrize(
    "key,bad",
    [
        ("delta", torch.zeros(2, 3, 6)),
        ("A", torch.zeros(4, 4)),
        ("B", torch.zeros(2, 4, 6)),
        ("D", torch.zeros(5)),
        ("z", torch.zeros(2, 3, 4)),
    ],
)
def test_scan_rejects_bad_shapes(key, bad):
    x = scan_inputs(2, 3, 4, 5)
    x[key] = bad
    with pytest.raises(ValueError, match=key):
        selective_scan(**x)


# ---- the Mamba block --------------------------------------------------------------------------


def test_mamba_state_dict_matches_mamba_ssm():
    # d_model 20: d_inner = 2 * 20 = 40, dt_rank = ceil(20 / 16) = 2, x_proj out = 2 + 2 * 16 = 34
    expected = {
        "A_log": (40, 16),
        "D": (40,),
        "in_proj.weight": (80, 20),
        "conv1d.weight": (40, 1, 4),
        "conv1d.bias": (40,),
        "x_proj.weight": (34, 40),
        "dt_proj.weight": (40, 2),
        "dt_proj.bias": (40,),
        "out_proj.weight": (20, 40),
    }
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
    assert m.dt_proj.weight.abs().max() <= 2**-0.5
    assert m.dt_proj.bias._no_reinit  # weight decay of A_log and D is uu.runs' business, not an attribute
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
    conv = m.conv1d.bias[:, None] + sum(w[:, k, None] * padded[..., k : k + 30] for k in range(4))
    xc = F.silu(conv)
    dbl = xc.transpose(1, 2) @ m.x_proj.weight.t()
    dt = (dbl[..., :1] @ m.dt_proj.weight.t()).transpose(1, 2)
    B, C = dbl[..., 1:5].transpose(1, 2), dbl[..., 5:9].transpose(1, 2)
    y = selective_scan_ref(xc, dt, -torch.exp(m.A_log), B, C, m.D, z.transpose(1, 2), m.dt_proj.bias, True)
    want = y.transpose(1, 2) @ m.out_proj.weight.t()
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


@pytest.mark.parametrize("chunk", [8, 64])  # several blocks (recomputed), one block (kept)
def test_double_backward_matches_unchunked_graph(chunk):
    """Hessian-vector products through the scan's Function equal those of the plain graph."""
    torch.manual_seed(0)
    b, d, n, L = 1, 3, 4, 40
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

    chunked = hvp(lambda: selective_scan_torch(u, delta, A, B, C, delta_softplus=True, chunk_size=chunk, sub_chunk=4))
    plain = hvp(lambda: scan_chunked._scan_blocks(u, torch.nn.functional.softplus(delta), A, B, C, 4, 8)[0])
    for a, e in zip(chunked, plain):
        torch.testing.assert_close(a, e, rtol=1e-9, atol=1e-12)


def test_scan_backend_override_sets_and_restores_even_on_error():
    model = torch.nn.Sequential(Mamba(8, backend="auto"), Mamba(8, backend="cuda"))
    with scan_backend_override(model, "torch"):
        assert [m.backend for m in model] == ["torch", "torch"]
    assert [m.backend for m in model] == ["auto", "cuda"]
    with pytest.raises(RuntimeError):
        with scan_backend_override(model, "torch"):
            raise RuntimeError("boom")
    assert [m.backend for m in model] == ["auto", "cuda"]
