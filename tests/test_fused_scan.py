"""uu::selective_scan_fwd / _bwd (the fused kernel as custom operators), checked on the CPU implementation.

The CUDA implementation (mamba-ssm's kernel) is compared with this one in tests/test_ssm_cuda.py."""

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import scan_inputs

from uu.net.blocks import MambaLayer
from uu.ssm import selective_scan, selective_scan_ref, selective_scan_torch
from uu.ssm.ops import fused_scan
from uu.ssm.ops.fused_scan import BF16_ONLY_BUILD, KERNEL_CHUNK, fused_scan_applies, fused_selective_scan

dispatch = importlib.import_module("uu.ssm.ops.selective_scan")  # the module: the package's name is the function

pytestmark = pytest.mark.skipif(not fused_scan.HAS_CUSTOM_OP, reason="torch.library.custom_op needs torch >= 2.4")
ARGS = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")


def x64(x):
    """The reference loop's inputs in float64 (None kept)."""
    return {k: None if v is None else v.double() for k, v in x.items()}


def op_args(x, softplus=True):
    return tuple(x[k] for k in ARGS) + (softplus,)


@pytest.mark.parametrize("L", [1, 37, KERNEL_CHUNK + 52])  # the last: two kernel chunks, the second short
def test_forward_outputs_match_the_loop(L):
    x = scan_inputs(2, 3, 4, L, seed=L)
    out_z, chunks, out = torch.ops.uu.selective_scan_fwd(*op_args(x))
    want_z = selective_scan_ref(**x64(x), delta_softplus=True)
    want_out = selective_scan_ref(**x64({**x, "z": None}), delta_softplus=True)
    assert out_z.shape == out.shape == (2, 3, L) and out_z.dtype == torch.float32
    torch.testing.assert_close(out_z.double(), want_z, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out.double(), want_out, rtol=1e-4, atol=1e-5)
    n_chunks = -(-L // KERNEL_CHUNK)
    assert chunks.shape == (2, 3, n_chunks, 8) and chunks.dtype == torch.float32
    dt = torch.nn.functional.softplus(x["delta"].double() + x["delta_bias"].double()[:, None])
    for c in range(n_chunks):  # at each chunk end: decay product since step 0 (even), state (odd)
        end = min((c + 1) * KERNEL_CHUNK, L)
        _, h = selective_scan_ref(
            **x64({k: v[..., :end] if v.dim() == 3 else v for k, v in x.items()}),
            delta_softplus=True,
            return_last_state=True,
        )
        torch.testing.assert_close(chunks[:, :, c, 1::2].double(), h, rtol=1e-4, atol=1e-5)
        decay = torch.exp(x["A"].double()[None] * dt[..., :end].sum(-1)[..., None])
        torch.testing.assert_close(chunks[:, :, c, 0::2].double(), decay, rtol=1e-4, atol=1e-30)


def test_gradients_through_the_operator_match_the_loop():
    x = scan_inputs(2, 3, 4, 45, seed=5)
    ours = {k: v.double().requires_grad_() for k, v in x.items()}
    ref = {k: v.double().requires_grad_() for k, v in x.items()}
    fused_selective_scan(*(ours[k] for k in ARGS), delta_softplus=True).pow(2).sum().backward()
    selective_scan_ref(**ref, delta_softplus=True).pow(2).sum().backward()
    for k in ARGS:
        torch.testing.assert_close(ours[k].grad, ref[k].grad, rtol=1e-6, atol=1e-8, msg=k)


@pytest.mark.parametrize("softplus", [True, False])
def test_opcheck(softplus):
    """Schema, fake (meta) shapes, autograd registration and AOT dispatch (torch.library.opcheck)."""
    x = scan_inputs(1, 3, 2, 29, seed=1)
    if not softplus:
        x["delta"] = x["delta"].abs() * 0.1
    leaves = {k: v.clone().requires_grad_() for k, v in x.items()}
    torch.library.opcheck(torch.ops.uu.selective_scan_fwd.default, op_args(leaves, softplus))
    out_z, chunks, out = torch.ops.uu.selective_scan_fwd(*op_args(x, softplus))
    dout = torch.randn_like(out_z)
    torch.library.opcheck(
        torch.ops.uu.selective_scan_bwd.default, tuple(x[k] for k in ARGS) + (dout, chunks, out, softplus)
    )


def test_compiles_without_graph_break():
    """fullgraph=True fails on any graph break: the operator is one node of the traced graph."""
    x = scan_inputs(2, 3, 4, 50, seed=3)

    def layer(u, delta, A, B, C, D, z, delta_bias):
        return fused_selective_scan(u * 2, delta, A, B, C, D, z, delta_bias, delta_softplus=True).sum(1)

    compiled = torch.compile(layer, fullgraph=True, backend="aot_eager")
    eager_in = {k: v.clone().requires_grad_() for k, v in x.items()}
    comp_in = {k: v.clone().requires_grad_() for k, v in x.items()}
    want, got = layer(**eager_in), compiled(**comp_in)
    torch.testing.assert_close(got, want)
    want.square().sum().backward()
    got.square().sum().backward()
    for k in ARGS:
        torch.testing.assert_close(comp_in[k].grad, eager_in[k].grad, msg=k)


def test_applies_only_to_the_mamba_block_call():
    x = scan_inputs(1, 2, 3, 8)
    assert fused_scan_applies(x["u"], x["B"], x["C"], x["D"], x["z"], x["delta_bias"], False)
    assert not fused_scan_applies(x["u"], x["B"], x["C"], x["D"], x["z"], x["delta_bias"], True)
    assert not fused_scan_applies(x["u"], x["B"], x["C"], None, x["z"], x["delta_bias"], False)
    assert not fused_scan_applies(x["u"], x["B"], x["C"], x["D"], None, x["delta_bias"], False)
    constant = scan_inputs(1, 2, 3, 8, constant_bc=True)
    assert not fused_scan_applies(x["u"], constant["B"], constant["C"], x["D"], x["z"], x["delta_bias"], False)


DISPATCH = [  # on a GPU: mamba-ssm imported, its extension module found, UU_FUSED_SCAN, last state asked -> called
    (True, True, "op", False, "operator"),  # the Mamba block's call on the H200
    (True, True, "autograd_function", False, "mamba_ssm"),
    (True, False, "op", False, "mamba_ssm"),  # a build whose extension module has another name
    (True, True, "op", True, "mamba_ssm"),  # the operators return no last state
    (False, False, "op", False, "torch"),  # no mamba-ssm: the chunked scan, on a GPU too
]


@pytest.mark.parametrize("mamba_ssm,kernel,fused_call,last_state,expected", DISPATCH)
def test_gpu_dispatch_picks_the_fused_operator_when_present(
    monkeypatch, mamba_ssm, kernel, fused_call, last_state, expected
):
    """CPU tensors, with the device check answering "cuda" and mamba-ssm's pieces replaced by recording
    stand-ins (the operator itself runs its CPU implementation): selective_scan calls exactly one of them."""
    calls = []

    def recording(name, fn):
        return lambda *args, **kwargs: calls.append(name) or fn(*args, **kwargs)

    real_backend = dispatch.scan_backend
    monkeypatch.setattr(dispatch, "scan_backend", lambda device, backend="auto": real_backend("cuda", backend))
    monkeypatch.setattr(
        dispatch, "_cuda_selective_scan_fn", recording("mamba_ssm", selective_scan_torch) if mamba_ssm else None
    )
    monkeypatch.setattr(dispatch, "has_kernel", lambda: kernel)
    monkeypatch.setattr(dispatch, "FUSED_CALL", fused_call)
    monkeypatch.setattr(dispatch, "fused_selective_scan", recording("operator", fused_selective_scan))
    monkeypatch.setattr(dispatch, "selective_scan_torch", recording("torch", selective_scan_torch))
    x = scan_inputs(1, 2, 3, 9)
    out = selective_scan(**x, delta_softplus=True, return_last_state=last_state)
    assert calls == [expected]
    assert dispatch.last_backend() == ("torch" if expected == "torch" else "cuda")
    want = selective_scan_ref(**x, delta_softplus=True)
    torch.testing.assert_close(out[0] if last_state else out, want, rtol=1e-5, atol=1e-5)


def test_unknown_fused_scan_choice_is_a_clear_error():
    env = {**os.environ, "UU_FUSED_SCAN": "fast"}
    result = subprocess.run([sys.executable, "-c", "import uu.ssm"], env=env, capture_output=True, text=True)
    assert result.returncode != 0
    assert "UU_FUSED_SCAN='fast'" in result.stderr and "autograd_function" in result.stderr


def test_kernel_errors_without_the_kernel_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(fused_scan, "_kernel", None)
    with pytest.raises(RuntimeError, match="needs a CUDA GPU and mamba-ssm's selective_scan_cuda"):
        fused_scan.kernel_errors(torch.bfloat16)


def test_mamba_layer_through_the_operator_matches_the_torch_scan(monkeypatch):
    """The Mamba block's call into the operator (argument order, dtypes, layouts) on the CPU: dispatch is
    forced to the "cuda" branch, whose operator then runs its CPU implementation. Same outputs and gradients
    as the plain PyTorch scan, and the layer compiles with fullgraph=True (no graph break)."""
    torch.manual_seed(0)
    layer = MambaLayer(8)
    x = torch.randn(2, 8, 6, 7)

    def run(fn):
        inp = x.clone().requires_grad_()
        y = fn(inp)
        grads = torch.autograd.grad(y.square().mean(), [inp, *layer.parameters()])
        return y.detach(), grads

    want, want_grads = run(layer)
    assert dispatch.last_backend() == "torch"
    monkeypatch.setattr(dispatch, "scan_backend", lambda device, backend="auto": "cuda")
    monkeypatch.setattr(dispatch, "has_kernel", lambda: True)
    for fn in (layer, torch.compile(layer, fullgraph=True, backend="aot_eager")):
        got, got_grads = run(fn)
        assert dispatch.last_backend() == "cuda"
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
        for g, w in zip(got_grads, want_grads):
            torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-6)


def test_gpu_tests_skip_only_what_a_bf16_only_build_lacks(pytester):
    """tests/conftest.py reports a test that meets the bf16-only build's error (raised directly, or wrapped as
    compiled code wraps it) as skipped with the reason; any other error stays a failure."""
    pytester.makeconftest((Path(__file__).parent / "conftest.py").read_text())
    pytester.makepyfile(
        f"""
        BF16_ONLY = "selective_scan_bwd: {BF16_ONLY_BUILD} (UU_MAMBA_KERNELS=bf16)"

        def test_fp32_backward():
            raise RuntimeError(BF16_ONLY)

        def test_fp32_backward_in_compiled_code():
            try:
                raise RuntimeError(BF16_ONLY)
            except RuntimeError as e:
                raise ValueError("backward failed") from e

        def test_another_error():
            raise RuntimeError("selective_scan_bwd: a wrong gradient")

        def test_passes():
            pass
        """
    )
    result = pytester.runpytest_subprocess("-rs", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, skipped=2, failed=1)
    result.stdout.fnmatch_lines(["*SKIPPED*bf16 backward only (UU_MAMBA_KERNELS=bf16); a full build runs this test*"])
