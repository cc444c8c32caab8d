"""uu/ssm/ops/scan_cpu.c: the C selective scan on CPUs against the reference loop and the PyTorch scan, its
gradients, and the fallback when it cannot be built."""

import os
import shutil
from pathlib import Path

import pytest
import torch
from helpers import scan_inputs

from uu.ssm import Mamba, selective_scan, selective_scan_ref, selective_scan_torch
from uu.ssm.ops import scan_chunked, scan_cpu
from uu.ssm.ops.selective_scan import last_backend, last_kernel

T = scan_cpu.CHECKPOINT


@pytest.fixture(autouse=True)
def kernel_on(monkeypatch):
    monkeypatch.delenv("UU_CPU_SCAN", raising=False)
    if shutil.which(os.environ.get("CC") or "cc") is None:  # a compiler that is there must build it, though
        pytest.skip("no C compiler on this machine: the PyTorch scan runs instead")
    assert scan_cpu.load_kernel(required=True) is not None


def _inputs(b, d, n, L, dtype, seed=0, strong=False):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)
    x = dict(
        u=r(b, d, L),
        delta=torch.nn.functional.softplus(r(b, d, L) - 1),
        A=-torch.rand(d, n, generator=g, dtype=torch.float64) - 0.5,
        B=r(b, n, L),
        C=r(b, n, L),
    )
    if strong:  # decays exp(delta A) down to e^-400: states forget everything at each step
        x["delta"], x["A"] = x["delta"] * 0 + 25.0, -torch.arange(1, n + 1.0, dtype=torch.float64).repeat(d, 1)
    return {k: v.to(dtype).requires_grad_() for k, v in x.items()}


def _scan_and_grads(scan, x, seed=1):
    y, h = scan(**x, return_last_state=True)
    g = torch.Generator().manual_seed(seed)
    wy, wh = (torch.randn(t.shape, generator=g, dtype=torch.float64).to(t.dtype) for t in (y, h))
    grads = torch.autograd.grad((y * wy).sum() + (h * wh).sum(), list(x.values()))
    return y, h, grads


SHAPES = {  # b, d, n, L
    "L = 1": (2, 3, 4, 1),
    "L a multiple of the checkpoint interval": (2, 3, 4, 2 * T),
    "L not a multiple of it": (2, 3, 4, 2 * T + 7),
    "L shorter than it": (3, 2, 5, T // 2 + 1),
    "n = 1": (2, 3, 1, 70),
    "b = 1": (1, 4, 16, 90),
    "d = 1": (3, 1, 16, 90),
    "n = 16 (the unrolled case)": (2, 3, 16, 150),
    "tiny2d layer": (8, 16, 16, 1024),
}


@pytest.mark.parametrize("case", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_kernel_matches_the_loop(case, dtype):
    """y, the last state and the five gradients (weighted y and last state) against the float64 loop."""
    x = _inputs(*SHAPES[case], dtype)
    y, h, got = _scan_and_grads(selective_scan_torch, x)
    assert scan_cpu.last_cpu_path == "c"
    assert type(h.grad_fn).__name__ == "_ScanBackward"
    ref = {k: v.detach().double().requires_grad_() for k, v in x.items()}
    want_y, want_h, want = _scan_and_grads(selective_scan_ref, ref)
    tol = dict(rtol=1e-9, atol=1e-10) if dtype == torch.float64 else dict(rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(y.double(), want_y, **tol)
    torch.testing.assert_close(h.double(), want_h, **tol)
    for k, a, e in zip(x, got, want):
        scale = max(e.abs().max().item(), 1.0)
        torch.testing.assert_close(a.double(), e, rtol=tol["rtol"], atol=tol["atol"] * scale, msg=f"d/d{k}")


def test_kernel_with_strong_decay_in_fp32():
    x = _inputs(1, 4, 16, 300, torch.float32, seed=3, strong=True)
    y, h, got = _scan_and_grads(selective_scan_torch, x)
    ref = {k: v.detach().double().requires_grad_() for k, v in x.items()}
    want_y, want_h, want = _scan_and_grads(selective_scan_ref, ref)
    torch.testing.assert_close(y.double(), want_y, rtol=1e-4, atol=1e-3)
    for k, a, e in zip(x, got, want):
        assert torch.isfinite(a).all(), k
        torch.testing.assert_close(a.double(), e, rtol=1e-4, atol=1e-5 * e.abs().max().item(), msg=f"d/d{k}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_public_scan_equals_the_torch_path(dtype, monkeypatch):
    """selective_scan with D, z, delta_bias and softplus: the kernel and UU_CPU_SCAN=torch agree."""
    x = {k: v.to(dtype).requires_grad_() for k, v in scan_inputs(2, 6, 16, 200, seed=4).items()}
    results = {}
    for mode in ("auto", "torch"):
        monkeypatch.setenv("UU_CPU_SCAN", mode)
        y = selective_scan(**x, delta_softplus=True)
        results[mode] = (y, *torch.autograd.grad(y.square().sum(), list(x.values())))
        assert scan_cpu.last_cpu_path == ("c" if mode == "auto" else "torch")
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == torch.float32 else dict(rtol=1e-9, atol=1e-10)
    for name, a, e in zip(["y", *x], *results.values()):
        torch.testing.assert_close(a, e, **tol, msg=name)


@pytest.mark.parametrize("mode, kernel", [("auto", "C CPU kernel (scan_cpu.c)"), ("torch", "PyTorch chunked scan")])
def test_the_report_names_the_kernel_that_ran(mode, kernel, monkeypatch):
    """What notebook 02 prints after a Mamba layer ran on the CPU, training and inference: the C kernel unless
    UU_CPU_SCAN=torch, checked against the kernel's own calls."""
    monkeypatch.setenv("UU_CPU_SCAN", mode)
    calls, forward = [], scan_cpu.forward
    monkeypatch.setattr(scan_cpu, "forward", lambda *a, **k: calls.append(1) or forward(*a, **k))
    torch.manual_seed(0)
    layer, x = Mamba(8), torch.randn(2, 30, 8)
    layer(x).sum().backward()
    assert (last_backend(), last_kernel()) == ("torch", kernel)
    with torch.no_grad():
        layer(x)
    assert last_kernel() == kernel and len(calls) == (2 if mode == "auto" else 0)


def test_no_grad_forward_uses_the_kernel():
    x = {k: v.detach() for k, v in _inputs(2, 3, 4, 100, torch.float64).items()}
    with torch.no_grad():
        y = selective_scan_torch(**x)
    assert scan_cpu.last_cpu_path == "c"
    torch.testing.assert_close(y, selective_scan_ref(**x), rtol=1e-9, atol=1e-10)


def test_gradcheck():
    x = _inputs(2, 2, 3, 2 * T + 3, torch.float64, seed=5)
    fn = lambda *t: selective_scan_torch(*t, return_last_state=True)
    assert torch.autograd.gradcheck(fn, tuple(x.values()), eps=1e-6, atol=1e-6)
    assert scan_cpu.last_cpu_path == "c"


def test_double_backward_equals_the_torch_path(monkeypatch):
    """create_graph=True (Hessian-vector products) goes through the differentiable PyTorch graph."""
    x = _inputs(1, 3, 4, 40, torch.float64, seed=6)
    vs = [torch.randn_like(t) for t in x.values()]

    def hvp():
        y = selective_scan_torch(**x)
        grads = torch.autograd.grad(y.square().sum(), list(x.values()), create_graph=True)
        return torch.autograd.grad(sum((g * v).sum() for g, v in zip(grads, vs)), list(x.values()))

    got = hvp()
    assert scan_cpu.last_cpu_path == "c"
    monkeypatch.setenv("UU_CPU_SCAN", "torch")
    for a, e in zip(got, hvp()):
        torch.testing.assert_close(a, e, rtol=1e-9, atol=1e-12)


def test_nan_propagates():
    x = {k: v.detach() for k, v in _inputs(2, 3, 16, 100, torch.float32).items()}
    x["u"][1, 2, 10] = float("nan")
    y, h = selective_scan_torch(**x, return_last_state=True)
    assert scan_cpu.last_cpu_path == "c"
    assert torch.isnan(y[1, 2, 10:]).all() and torch.isnan(h[1, 2]).all()
    assert torch.isfinite(y[0]).all() and torch.isfinite(y[1, :2]).all() and torch.isfinite(y[1, 2, :10]).all()


def test_one_and_two_threads_agree_exactly():
    x = _inputs(4, 8, 16, 3 * T + 5, torch.float32, seed=7)
    before = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            results.append(_scan_and_grads(selective_scan_torch, x))
    finally:
        torch.set_num_threads(before)
    for a, e in zip(results[0][:2] + results[0][2], results[1][:2] + results[1][2]):
        assert torch.equal(a, e)


@pytest.fixture
def broken_compiler(monkeypatch, tmp_path):
    monkeypatch.setenv("CC", "false")
    monkeypatch.setenv("UU_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(scan_cpu, "_kernel", scan_cpu._UNTRIED)


def test_failed_build_warns_and_falls_back(broken_compiler):
    x = {k: v.detach() for k, v in _inputs(2, 3, 4, 50, torch.float64).items()}
    with pytest.warns(RuntimeWarning, match="(?s)CC='false'.*PyTorch selective scan instead"):
        y = selective_scan_torch(**x)
    assert scan_cpu.last_cpu_path == "torch"
    torch.testing.assert_close(y, selective_scan_ref(**x), rtol=1e-9, atol=1e-10)


def test_failed_build_is_an_error_when_the_kernel_is_required(broken_compiler, monkeypatch):
    monkeypatch.setenv("UU_CPU_SCAN", "c")
    x = {k: v.detach() for k, v in _inputs(2, 3, 4, 50, torch.float64).items()}
    with pytest.raises(RuntimeError, match="CC='false'"):
        selective_scan_torch(**x)


def test_the_source_ships_next_to_the_module():
    assert scan_cpu.SOURCE.is_file()
    assert scan_cpu.SOURCE.parent.samefile(Path(scan_chunked.__file__).parent)
