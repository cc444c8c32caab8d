"""uu.ssm.ops.causal_conv1d: the shift-sum implementation against nn.Conv1d's (the reference), values and
gradients, and one hand-computed case."""

import pytest
import torch

from uu.ssm.modules.mamba import Mamba
from uu.ssm.ops.causal_conv1d import causal_conv1d, causal_conv1d_ref


def test_hand_computed_causal_conv():
    # one channel, kernel [1, 2, 3, 4] (weight[j] multiplies x[t - 3 + j]), bias 0.5, x = [1, 10, 100]:
    # y0 = 4*1, y1 = 3*1 + 4*10, y2 = 2*1 + 3*10 + 4*100, each + 0.5
    x = torch.tensor([[[1.0, 10.0, 100.0]]])
    w = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    b = torch.tensor([0.5])
    expected = torch.tensor([[[4.5, 43.5, 432.5]]])
    for impl in ("conv1d", "shift"):
        torch.testing.assert_close(causal_conv1d(x, w, b, impl=impl), expected)


@pytest.mark.parametrize("shape", [(2, 3, 7), (1, 5, 2), (3, 4, 1), (2, 6, 33)])
@pytest.mark.parametrize("activation", [None, "silu"])
@pytest.mark.parametrize("with_bias", [True, False])
def test_shift_equals_conv1d_values_and_gradients(shape, activation, with_bias):
    g = torch.Generator().manual_seed(sum(shape))
    x = torch.randn(*shape, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(shape[1], 4, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(shape[1], generator=g, dtype=torch.float64, requires_grad=True) if with_bias else None
    inputs = [t for t in (x, w, b) if t is not None]
    y = causal_conv1d(x, w, b, activation, impl="shift")
    y_ref = causal_conv1d_ref(x, w, b, activation)
    torch.testing.assert_close(y, y_ref, rtol=1e-12, atol=1e-12)
    dy = torch.randn(y.shape, generator=g, dtype=torch.float64)
    grads = torch.autograd.grad(y, inputs, dy)
    grads_ref = torch.autograd.grad(y_ref, inputs, dy)
    for got, want in zip(grads, grads_ref):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_shift_gradcheck_and_double_backward():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 6, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 4, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, generator=g, dtype=torch.float64, requires_grad=True)
    fn = lambda *t: causal_conv1d(*t, activation="silu", impl="shift")
    assert torch.autograd.gradcheck(fn, (x, w, b))
    assert torch.autograd.gradgradcheck(fn, (x, w, b))  # Hessian-vector products (uu.sharpness) need it


def test_bf16_input_stays_bf16():
    x = torch.randn(2, 4, 9).bfloat16()
    w, b = torch.randn(4, 4), torch.randn(4)
    y = causal_conv1d(x, w, b, "silu", impl="shift")
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), causal_conv1d_ref(x.float(), w, b, "silu"), rtol=0.05, atol=0.05)


def test_bad_arguments_are_named():
    x, w = torch.zeros(1, 2, 3), torch.zeros(2, 4)
    with pytest.raises(ValueError, match="impl"):
        causal_conv1d(x, w, impl="cudnn")
    with pytest.raises(ValueError, match="activation"):
        causal_conv1d(x, w, activation="relu")


@pytest.mark.parametrize("channels_first", [True, False])
def test_mamba_output_does_not_depend_on_conv_impl(channels_first):
    torch.manual_seed(0)
    layer = Mamba(d_model=8, d_state=4).double()
    x = torch.randn(2, 8, 20, dtype=torch.float64)
    outs = []
    for impl in ("conv1d", "shift"):
        layer.conv_impl = impl
        outs.append(layer.forward_channels_first(x) if channels_first else layer(x.transpose(1, 2)))
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-10, atol=1e-10)
