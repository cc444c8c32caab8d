"""On a CUDA GPU with mamba-ssm: our PyTorch scan vs the fused kernel, uu.ssm.Mamba vs mamba_ssm.Mamba.

Skips without CUDA or without mamba-ssm. Prints the measured errors (run with `pytest -s`).
Shapes: the paper's stage shapes by default, scaled by UU_CUDA_TEST_SCALE (tokens divided by it,
default 4 so the file finishes in well under a minute on an H200; set 1 for the full shapes).
"""

import importlib
import os

import pytest
import torch

import uu.net as net
import uu.ssm as ssm
from uu.net.blocks import MambaLayer
from uu.ssm import selective_scan
from uu.ssm.ops import fused_scan
from uu.ssm.ops.fused_scan import fused_selective_scan

pytestmark = pytest.mark.cuda
if not torch.cuda.is_available():
    pytest.skip("needs a CUDA GPU", allow_module_level=True)
if not ssm.has_mamba_ssm():
    pytest.skip("needs mamba-ssm (pip install mamba-ssm on the CUDA machine)", allow_module_level=True)

SCALE = int(os.environ.get("UU_CUDA_TEST_SCALE", "4"))
# (batch, d_inner, tokens) of the 3D paper plan's six Mamba layers (batch 4, d_inner = 2 * channels)
PAPER_STAGES = [
    (4, 64, 1_146_880),
    (4, 128, 286_720),
    (4, 256, 35_840),
    (4, 512, 4_480),
    (4, 640, 1_120),
    (4, 640, 280),
]
SHAPES = [(b, d, max(64, L // SCALE)) for b, d, L in PAPER_STAGES]


def rel_err(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-12)).item()


NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")  # selective_scan's tensor arguments, in order


make_inputs = fused_scan.random_scan_inputs  # (b, d, L, n=16, dtype, seed) on the GPU


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-4), (torch.bfloat16, 1e-2)])
@pytest.mark.parametrize("shape", SHAPES, ids=[f"b{b}_d{d}_L{L}" for b, d, L in SHAPES])
def test_torch_scan_matches_fused_kernel(shape, dtype, tol):
    x = make_inputs(*shape, dtype=dtype)
    results = {}
    for backend in ("cuda", "torch"):
        leaves = {k: v.clone().requires_grad_() for k, v in x.items()}
        y, last = selective_scan(**leaves, delta_softplus=True, return_last_state=True, backend=backend)
        assert ssm.last_backend() == backend
        y.float().square().mean().backward()  # a loss whose gradient depends on y
        results[backend] = (y, last, {k: v.grad for k, v in leaves.items()})
    (y_c, h_c, g_c), (y_t, h_t, g_t) = results["cuda"], results["torch"]
    errs = {"y": rel_err(y_t, y_c), "last_state": rel_err(h_t, h_c)}
    errs.update({f"d{k}": rel_err(g_t[k], g_c[k]) for k in g_c})
    print(f"\n[scan {tuple(shape)} {dtype}] " + ", ".join(f"{k} {v:.2e}" for k, v in errs.items()))
    assert max(errs.values()) < tol, errs


def test_mamba_block_matches_mamba_ssm():
    from mamba_ssm import Mamba as RefMamba  # late: optional, and only this test needs mamba-ssm's own block

    torch.manual_seed(0)
    for d_model, L in [(32, 4096), (320, 280)]:
        ref = RefMamba(d_model=d_model, d_state=16, d_conv=4, expand=2).cuda()
        ours = ssm.Mamba(d_model).cuda()
        ours.load_state_dict(ref.state_dict())  # same names and shapes, so this must work strictly
        x = torch.randn(2, L, d_model, device="cuda")
        y_ref, y_ours = ref(x), ours(x)
        err = rel_err(y_ours, y_ref)
        y_ref.square().mean().backward()
        y_ours.square().mean().backward()
        ref_params = dict(ref.named_parameters())
        gerr = max(rel_err(p.grad, ref_params[k].grad) for k, p in ours.named_parameters())
        print(f"\n[Mamba d_model={d_model} L={L}] output rel err {err:.2e}, max param-grad rel err {gerr:.2e}")
        assert err < 1e-4 and gerr < 1e-3


@pytest.mark.parametrize("channels_last", [False, True])
def test_network_cpu_vs_cuda(channels_last):
    torch.manual_seed(0)
    plan = net.get_plan("tiny3d")
    model = net.build_network(plan, "umamba_enc", channels_last=channels_last).eval()
    x = torch.randn(1, 1, *plan.patch_size)
    # cuDNN convolutions default to TF32 (10-bit mantissa) on Hopper, which alone gives ~1e-3 differences
    tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        with torch.no_grad():
            y_cpu = model(x)
            y_gpu = model.cuda()(x.cuda())
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32
    err = rel_err(y_gpu.cpu(), y_cpu)
    print(
        f"\n[umamba_enc tiny3d, channels_last={channels_last}] CPU (torch scan) vs CUDA ({ssm.last_backend()} scan) "
        f"rel err {err:.2e}"
    )
    assert err < 1e-3


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-4), (torch.bfloat16, 2e-2)])
def test_fused_operator_matches_its_cpu_implementation(dtype, tol):
    """uu::selective_scan_fwd/_bwd: mamba-ssm's kernel (CUDA) against the operator's PyTorch reference
    (CPU): out_z, out, the states saved at chunk ends and every gradient; L spans 3 kernel chunks."""
    errs = fused_scan.kernel_errors(dtype)
    assert set(errs) == {"out_z", "out", "x states", *(f"d{k}" for k in NAMES)}  # every gradient was compared
    print(f"\n[uu::selective_scan {dtype}] " + ", ".join(f"{k} {v:.2e}" for k, v in errs.items()))
    assert max(errs.values()) < tol, errs


def test_fused_operator_chunk_decays_match():
    """The even entries of x (the decay product since step 0 at each chunk end): only the kernel's own
    backward reads them, so this documents the CPU implementation's reading of the kernel's layout."""
    x = make_inputs(2, 8, 5000, seed=4)
    x["delta"] = x["delta"] - 6  # small steps: the products stay well above underflow
    got = torch.ops.uu.selective_scan_fwd(*(x[k] for k in NAMES), True)[1][..., 0::2]
    want = torch.ops.uu.selective_scan_fwd(*(x[k].cpu() for k in NAMES), True)[1][..., 0::2]
    print(f"\n[uu::selective_scan x decays] rel err {rel_err(got.cpu(), want):.2e}, min {want.min():.2e}")
    assert rel_err(got.cpu(), want) < 1e-4


def test_compiled_mamba_layer_has_no_graph_break():
    """torch.compile(fullgraph=True) raises on a graph break; the compiled layer matches eager (fp32)."""
    torch.manual_seed(0)
    layer = MambaLayer(32).cuda()
    x = torch.randn(2, 32, 24, 40, device="cuda", requires_grad=True)
    compiled = torch.compile(layer, fullgraph=True)
    y_eager = layer(x)
    g_eager = torch.autograd.grad(y_eager.square().mean(), [x, *layer.parameters()])
    y_comp = compiled(x)
    g_comp = torch.autograd.grad(y_comp.square().mean(), [x, *layer.parameters()])
    err = max([rel_err(y_comp, y_eager)] + [rel_err(a, b) for a, b in zip(g_comp, g_eager)])
    print(f"\n[compiled MambaLayer fullgraph] max rel err (output, grads) {err:.2e}")
    assert err < 1e-3


@pytest.mark.skipif(not fused_scan.has_kernel(), reason="mamba-ssm's selective_scan_cuda extension did not import")
def test_mamba_layer_on_the_gpu_calls_the_fused_operator(monkeypatch):
    """The dispatch on real CUDA tensors: a Mamba layer's scan goes through uu::selective_scan_fwd."""
    dispatch = importlib.import_module("uu.ssm.ops.selective_scan")  # the module: the package's name is the function
    calls = []
    monkeypatch.setattr(dispatch, "FUSED_CALL", "op")
    monkeypatch.setattr(
        dispatch,
        "fused_selective_scan",
        lambda *args, **kwargs: calls.append(args[0].device.type) or fused_selective_scan(*args, **kwargs),
    )
    MambaLayer(16).cuda()(torch.randn(1, 16, 8, 8, device="cuda"))
    assert calls == ["cuda"] and ssm.last_backend() == "cuda"
