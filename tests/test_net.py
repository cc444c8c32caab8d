"""uu.net: plans, parameter counts (paper figures), output shapes, train/eval structure, options."""

import pytest
import torch
import torch.nn as nn

import uu.net as net
from uu.net import MambaLayer, Plan, ResidualBlock, build_network, count_parameters, get_plan

ARCHS = ["umamba_enc", "umamba_bot", "unet", "resunet"]


def outputs_and_grads(models, x):
    """Per model: its training outputs on x and the flat gradient of sum(mean(output^2)) over its parameters."""
    outs, grads = [], []
    for model in models:
        out = model.train()(x)
        sum(o.square().mean() for o in out).backward()
        outs.append(out)
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    return outs, grads


def test_paper_plan_3d_is_the_authors_plan():
    plan = net.paper_plan_3d()
    assert plan.patch_size == (20, 256, 224) and plan.features == [32, 64, 128, 256, 320, 320]
    # ANCHORS.md: [20,256,224] -> [20,128,112] -> [10,64,56] -> [5,32,28] -> [5,16,14] -> [5,8,7]
    assert plan.feature_map_sizes() == [
        (20, 256, 224),
        (20, 128, 112),
        (10, 64, 56),
        (5, 32, 28),
        (5, 16, 14),
        (5, 8, 7),
    ]
    assert plan.kernel_sizes[0] == [1, 3, 3] and all(k == [3, 3, 3] for k in plan.kernel_sizes[1:])
    assert plan.n_blocks_encoder == [2] * 6 and plan.n_blocks_decoder == [2] * 5


def test_paper_plan_2d():
    plan = get_plan("2d")
    assert plan.feature_map_sizes() == [(256, 224), (128, 112), (64, 56), (32, 28), (16, 14), (8, 7)]


# ANCHORS.md: umamba_enc ~58.8 M (six Mamba layers 1.95 M), plain nnU-Net ~30.4 M; within 2 %
@pytest.mark.parametrize("arch,expected", [("umamba_enc", 58.8e6), ("unet", 30.4e6)])
def test_paper_3d_parameter_counts(arch, expected):
    model = build_network(net.paper_plan_3d(), arch)
    assert abs(count_parameters(model) - expected) / expected < 0.02


def test_mamba_layer_parameters_by_hand():
    # dim 32: LayerNorm 2*32 = 64; Mamba: in_proj 32*128 = 4096, conv1d 64*4 + 64 = 320,
    # x_proj (2 + 32)*64 = 2176, dt_proj 64*2 + 64 = 192, A_log 64*16 = 1024, D 64, out_proj 64*32 = 2048
    assert count_parameters(MambaLayer(32)) == 64 + 4096 + 320 + 2176 + 192 + 1024 + 64 + 2048
    # the paper's six layers (32, 64, 128, 256, 320, 320 channels): ANCHORS says 1.95 M
    model = build_network(net.paper_plan_3d(), "umamba_enc")
    assert abs(sum(count_parameters(m) for m in model.mamba.values()) - 1.95e6) < 0.01e6


def test_arch_differences_are_only_the_mamba_layers():
    plan = net.paper_plan_3d()
    res = count_parameters(build_network(plan, "resunet"))
    enc = build_network(plan, "umamba_enc")
    bot = build_network(plan, "umamba_bot")
    assert count_parameters(enc) - res == sum(count_parameters(m) for m in enc.mamba.values())
    assert count_parameters(bot) - res == count_parameters(MambaLayer(320))
    assert list(bot.mamba) == ["5"] and list(enc.mamba) == [str(i) for i in range(6)]


def test_stage_table_counts_are_integers_and_its_total_sums_parameters_only():
    """Notebook 02's table: integer counts (never 8.0), a total row of the parameters and blanks, never NaN."""
    import pandas as pd

    plan = get_plan("tiny2d")
    rows = net.stage_table(plan, "umamba_enc", total=True)
    assert [r["stage"] for r in rows] == [0, 1, 2, 3, "total"]
    assert [r["channels"] for r in rows[:-1]] == list(plan.features) and rows[0]["mamba_tokens"] == 64 * 64
    assert rows[-1]["params_total"] == count_parameters(build_network(plan, "umamba_enc"))
    assert rows[-1]["params_mamba"] == sum(r["params_mamba"] for r in rows[:-1])
    assert {rows[-1][k] for k in ("feature_map", "channels", "stride", "mamba_tokens")} == {""}
    table = pd.DataFrame(rows).set_index("stage")  # as notebook 02 shows it
    shown = table.to_string()
    assert not table.isna().any().any() and "NaN" not in shown and ".0" not in shown
    assert (table.filter(like="params_").dtypes == "int64").all()
    assert net.stage_table(plan, "umamba_enc")[-1]["stage"] == 3  # the total row only when asked for


@pytest.mark.parametrize("plan_name", ["tiny2d", "tiny3d"])
@pytest.mark.parametrize("arch", ARCHS)
def test_output_shapes(plan_name, arch):
    torch.manual_seed(0)
    plan = get_plan(plan_name)
    small = {"tiny2d": (32, 48), "tiny3d": (8, 16, 24)}[plan_name]  # smaller than the plan's patch: fast
    plan = plan.with_(patch_size=small)
    model = build_network(plan, arch, in_channels=2, num_classes=3)
    x = torch.randn(2, 2, *plan.patch_size)
    model.train()
    outs = model(x)
    assert isinstance(outs, list) and len(outs) == plan.n_stages - 1
    # deep supervision: full resolution first, then each decoder resolution above the bottleneck
    assert [tuple(o.shape) for o in outs] == [(2, 3, *s) for s in plan.feature_map_sizes()[:-1]]
    model.eval()
    with torch.no_grad():
        out = model(x)
    assert torch.is_tensor(out) and out.shape == (2, 3, *plan.patch_size)


def test_deep_supervision_off_gives_one_element_list():
    plan = get_plan("tiny2d").with_(deep_supervision=False)
    outs = build_network(plan, "unet").train()(torch.randn(1, 1, 64, 64))
    assert isinstance(outs, list) and len(outs) == 1 and outs[0].shape == (1, 4, 64, 64)


def test_train_and_eval_full_resolution_outputs_agree():
    torch.manual_seed(0)
    model = build_network("tiny2d", "umamba_bot")
    x = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        full_train = model.train()(x)[0]
        full_eval = model.eval()(x)
    assert torch.allclose(full_train, full_eval)  # instance norm: no running stats, no dropout


def test_checkpointed_mamba_gives_same_output_and_gradients():
    torch.manual_seed(0)
    plan = get_plan("tiny2d").with_(patch_size=(16, 16))
    plain = build_network(plan, "umamba_enc")
    ckpt = build_network(plan, "umamba_enc", checkpoint_mamba=True)
    ckpt.load_state_dict(plain.state_dict())
    assert ckpt.mamba["0"].use_checkpoint and not ckpt.mamba["1"].use_checkpoint
    x = torch.randn(1, 1, 16, 16)
    _, grads = outputs_and_grads((plain, ckpt), x)
    assert torch.allclose(grads[0], grads[1], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(
    "plan_name,arch,fmt",
    [
        ("tiny2d", "umamba_enc", torch.channels_last),
        ("tiny3d", "umamba_enc", torch.channels_last_3d),
        ("tiny2d", "unet", torch.channels_last),
    ],
)
def test_channels_last_is_the_same_network(plan_name, arch, fmt):
    """channels_last changes the memory layout only: same state_dict, same outputs and gradients."""
    torch.manual_seed(0)
    plain = build_network(plan_name, arch)
    fast = build_network(plan_name, arch, channels_last=True)
    fast.load_state_dict(plain.state_dict())
    conv_weight = next(p for p in fast.parameters() if p.dim() == fmt_dims(fmt) and p.shape[1] > 1)
    assert conv_weight.is_contiguous(memory_format=fmt) and not conv_weight.is_contiguous()
    x = torch.randn(2, 1, *plain.plan.patch_size)
    outs, grads = outputs_and_grads((plain, fast), x)
    assert outs[1][0].is_contiguous(memory_format=fmt)
    for a, b in zip(*outs):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-4)
    assert torch.allclose(grads[0], grads[1], rtol=1e-3, atol=1e-5)
    assert "channels_last=True" in fast.extra_repr()


def fmt_dims(fmt):
    return 4 if fmt == torch.channels_last else 5


def test_mamba_layer_fp32_under_autocast():
    layer = MambaLayer(8, fp32=True)
    x = torch.randn(1, 8, 4, 4).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert layer(x).dtype == torch.float32
        out = build_network("tiny2d", "umamba_enc").eval()(torch.randn(1, 1, 64, 64))
    assert out.shape == (1, 4, 64, 64)


def test_mamba_layer_token_order_is_c_order():
    # Mamba is causal along the token sequence: changing the voxel at (z, y, x) = (1, 0, 2), token
    # 1*3*4 + 0*4 + 2 = 14 in C order (x fastest; 13 in x-slowest order), changes no output before token 14
    # and token 14 itself. One channel only: the LayerNorm in front of Mamba would remove a shift of all
    # channels exactly, leaving rounding noise (~1e-7) where this needs a real change (~1e-2).
    torch.manual_seed(0)
    layer = MambaLayer(4).eval()
    x = torch.randn(1, 4, 2, 3, 4)
    x2 = x.clone()
    x2[0, 0, 1, 0, 2] += 1.0
    with torch.no_grad():
        a = layer(x).reshape(1, 4, -1)
        b = layer(x2).reshape(1, 4, -1)
    change = (a - b).abs().amax(dim=1)[0]
    assert torch.equal(change[:14], torch.zeros(14)) and change[14] > 1e-3


def test_residual_block_layout():
    model = build_network("tiny3d", "umamba_enc")
    first = model.encoder[1][0]  # stage 1: 8 -> 16 channels, stride (1, 2, 2)
    assert first.conv1.conv.stride == (1, 2, 2) and first.conv2.conv.stride == (1, 1, 1)
    assert isinstance(first.skip[0], torch.nn.AvgPool3d) and first.skip[1].conv.bias is None
    assert "8 -> 16" in repr(first)
    assert model.upsample[0].kernel_size == (2, 2, 2) and model.upsample[-1].kernel_size == (1, 2, 2)


def test_default_layers_and_state_dict_keys():
    block = ResidualBlock(2, 4, 8, 3, stride=2)  # strided and widening: avgpool + 1x1 conv-norm skip
    assert list(block.state_dict()) == [
        "conv1.conv.weight",
        "conv1.conv.bias",
        "conv1.norm.weight",
        "conv1.norm.bias",
        "conv2.conv.weight",
        "conv2.conv.bias",
        "conv2.norm.weight",
        "conv2.norm.bias",
        "skip.1.conv.weight",
        "skip.1.norm.weight",
        "skip.1.norm.bias",
    ]
    norm, act = block.conv1.norm, block.conv1.act
    assert type(norm) is nn.InstanceNorm2d and norm.eps == 1e-5 and norm.affine and not norm.track_running_stats
    assert type(act) is nn.LeakyReLU and act.negative_slope == 0.01 and act.inplace
    assert type(block.conv2.act) is nn.Identity and type(block.act) is nn.LeakyReLU


@pytest.mark.parametrize("arch", ["umamba_enc", "unet"])
def test_norm_and_activation_are_arguments(arch):
    """Another norm and activation, passed as factories, replace every default one (stem, blocks, skips)."""
    plan = get_plan("tiny2d").with_(patch_size=(16, 16))
    default = build_network(plan, arch)
    other = build_network(plan, arch, norm=lambda dims, channels: nn.BatchNorm2d(channels), act=nn.GELU)
    kinds = lambda model: [type(m) for m in model.modules()]
    n_norms, n_acts = kinds(default).count(nn.InstanceNorm2d), kinds(default).count(nn.LeakyReLU)
    assert n_norms > 0 and n_acts > 0
    assert kinds(other).count(nn.BatchNorm2d) == n_norms and kinds(other).count(nn.GELU) == n_acts
    assert nn.InstanceNorm2d not in kinds(other) and nn.LeakyReLU not in kinds(other)
    assert any(k.endswith("norm.running_mean") for k in other.state_dict())
    outs = other.train()(torch.randn(2, 1, 16, 16))
    assert outs[0].shape == (2, 4, 16, 16)


@pytest.mark.parametrize("dims,fmt", [(2, torch.channels_last), (3, torch.channels_last_3d), (2, None)])
def test_instance_norm_in_layout_is_nn_instance_norm(dims, fmt):
    """Same function and state_dict as nn.InstanceNorm{2,3}d (affine, no running statistics), forward and
    backward, and the output keeps the input's memory layout (nn.InstanceNorm's comes back NCHW)."""
    torch.manual_seed(0)
    ref = net.instance_norm(dims, 6)
    ours = net.instance_norm_in_layout(dims, 6)
    with torch.no_grad():
        ref.weight.uniform_(0.5, 1.5), ref.bias.uniform_(-0.5, 0.5)
    ours.load_state_dict(ref.state_dict())
    x = (3 * torch.randn(2, 6, *(5, 7, 4)[:dims]) + 2).to(memory_format=fmt or torch.contiguous_format)
    xs = [x.clone().requires_grad_(), x.clone().requires_grad_()]
    g = torch.randn(x.shape)
    outs = [m(xi) for m, xi in zip((ref, ours), xs)]
    for out in outs:
        out.backward(g)
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(xs[1].grad, xs[0].grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ours.weight.grad, ref.weight.grad, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(ours.bias.grad, ref.bias.grad, rtol=1e-4, atol=1e-4)
    if fmt is not None:
        assert outs[1].is_contiguous(memory_format=fmt) and not outs[1].is_contiguous()


def test_instance_norm_in_layout_by_hand_and_dtype():
    """One channel of (-1, 1, -1, 1): mean 0, biased variance 1, so the output is the input scaled by
    1 / sqrt(1 + eps), times weight 2 plus bias 1; bf16 in, bf16 out; a wrong channel count is reported."""
    norm = net.InstanceNormInLayout(2, 1)
    with torch.no_grad():
        norm.weight.fill_(2.0), norm.bias.fill_(1.0)
    x = torch.tensor([-1.0, 1.0, -1.0, 1.0]).reshape(1, 1, 2, 2)
    expected = 2 * x / (1 + 1e-5) ** 0.5 + 1
    torch.testing.assert_close(norm(x), expected, rtol=0, atol=1e-6)
    assert norm(x.bfloat16()).dtype == torch.bfloat16
    with pytest.raises(ValueError, match="expected \\(B, 1"):
        norm(torch.randn(1, 3, 2, 2))


def test_channels_last_network_with_the_in_layout_norm():
    """U-Mamba Enc, tiny2d, channels-last with instance_norm_in_layout: the same outputs and gradients as the
    default network from the same state_dict, and every norm's output and every convolution's input stays
    channels-last (so no convolution has to convert its input)."""
    torch.manual_seed(0)
    plain = build_network("tiny2d", "umamba_enc")
    fast = build_network("tiny2d", "umamba_enc", channels_last=True, norm=net.instance_norm_in_layout)
    fast.load_state_dict(plain.state_dict())
    layouts = []
    channels_last = lambda t: t.is_contiguous(memory_format=torch.channels_last)  # noqa: E731
    for m in fast.modules():
        if isinstance(m, net.InstanceNormInLayout):
            m.register_forward_hook(lambda mod, inp, out: layouts.append(channels_last(out)))
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            m.register_forward_pre_hook(lambda mod, inp: layouts.append(channels_last(inp[0])))
    x = torch.randn(2, 1, *plain.plan.patch_size)
    outs, grads = outputs_and_grads((plain, fast), x)
    assert layouts and all(layouts)
    for a, b in zip(*outs):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-3, atol=1e-5)


def test_bad_arguments_are_reported():
    with pytest.raises(ValueError, match="unknown arch"):
        build_network("tiny2d", "transformer")
    with pytest.raises(ValueError, match="unknown plan"):
        get_plan("4d")
    with pytest.raises(ValueError, match="divisible"):
        get_plan("tiny2d").with_(patch_size=(60, 64))
    with pytest.raises(ValueError, match="kernel_sizes has 3 entries"):
        Plan(2, (64, 64), [8, 16, 32, 64], [[1, 1]] + [[2, 2]] * 3, [[3, 3]] * 3)
    with pytest.raises(ValueError, match="expected a"):
        build_network("tiny3d", "unet")(torch.randn(1, 1, 64, 64))
