"""MambaLayer's two layouts: the channels-first path (NCHW / NCDHW input, no transpose copied) computes the same
function as the token path (channels-last input, LayerNorm + Mamba on (B, N, C), mamba-ssm's formulation)."""

import pytest
import torch

from uu.net.blocks import MambaLayer


@pytest.mark.parametrize("shape", [(2, 8, 5, 6), (1, 8, 2, 3, 4)])
@pytest.mark.parametrize("fp32", [True, False])
def test_channels_first_path_equals_the_token_path(shape, fp32):
    torch.manual_seed(0)
    dtype = torch.float32 if fp32 else torch.float64  # fp32=True computes in float32 whatever the input
    layer = MambaLayer(8, fp32=fp32).to(dtype)
    x = torch.randn(*shape, dtype=dtype, requires_grad=True)
    fmt = torch.channels_last if len(shape) == 4 else torch.channels_last_3d
    x_cl = x.detach().to(memory_format=fmt).requires_grad_()
    assert x.is_contiguous() and not x_cl.is_contiguous()  # the two paths are really taken
    a, b = layer(x), layer(x_cl)
    tol = 1e-5 if fp32 else 1e-10
    torch.testing.assert_close(a, b, rtol=tol, atol=tol)
    grads_a = torch.autograd.grad(a.square().sum(), [x, *layer.parameters()])
    grads_b = torch.autograd.grad(b.square().sum(), [x_cl, *layer.parameters()])
    for ga, gb in zip(grads_a, grads_b):
        torch.testing.assert_close(ga, gb, rtol=10 * tol, atol=10 * tol)


def test_channels_first_path_under_bf16_autocast_returns_bf16():
    torch.manual_seed(0)
    layer = MambaLayer(8, fp32=False)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert layer(torch.randn(2, 8, 4, 4)).dtype == torch.bfloat16
    assert MambaLayer(8, fp32=True)(torch.randn(2, 8, 4, 4)).dtype == torch.float32
