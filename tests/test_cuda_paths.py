"""The fast GPU paths against their references, on a CUDA machine (skipped elsewhere): the channels-first
Mamba layer through mamba-ssm's kernel (the PyTorch scan where mamba-ssm is missing) against the token path, the
device-side skip of fused SGD, a compiled (CUDA graphs) SAM step against the eager one, and a checkpoint's random
streams restored on the GPU."""

import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def rel_err(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-30)).item()


@pytest.mark.parametrize("dtype, bound", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
def test_channels_first_layer_on_the_kernel_matches_the_token_path(dtype, bound):
    from uu.net.blocks import MambaLayer
    from uu.ssm.ops.selective_scan import last_kernel

    torch.manual_seed(0)
    layer = MambaLayer(32, fp32=False).cuda()
    x = torch.randn(4, 32, 64, 56, device="cuda", requires_grad=True)
    x_cl = x.detach().to(memory_format=torch.channels_last).requires_grad_()
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
        a, b = layer(x), layer(x_cl)
    ga = torch.autograd.grad(a.float().square().mean(), [x, layer.mamba.in_proj.weight, layer.mamba.A_log])
    gb = torch.autograd.grad(b.float().square().mean(), [x_cl, layer.mamba.in_proj.weight, layer.mamba.A_log])
    errs = [rel_err(a, b)] + [rel_err(p, q) for p, q in zip(ga, gb)]
    print(f"[cuda paths] channels-first vs token {dtype} on the {last_kernel()}: rel err {max(errs):.2e}")
    assert max(errs) < bound


def test_fused_sgd_skips_on_the_device():
    from uu.losses import build_loss
    from uu.step import train_step

    torch.manual_seed(0)
    model = torch.nn.Conv2d(1, 4, 3, padding=1).cuda()
    loss = build_loss("dice_ce").cuda()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.99, nesterov=True, fused=True)
    x, y = torch.randn(2, 1, 8, 8, device="cuda"), torch.randint(0, 4, (2, 8, 8), device="cuda")
    before = [p.detach().clone() for p in model.parameters()]
    bad = x.clone()
    bad[0, 0, 0, 0] = float("nan")
    assert bool(train_step(model, loss, opt, bad, y).skipped)
    assert all(torch.equal(a, p) for a, p in zip(before, model.parameters()))
    assert not bool(train_step(model, loss, opt, x, y).skipped)
    assert not all(torch.equal(a, p) for a, p in zip(before, model.parameters()))


@pytest.mark.parametrize(
    "channels_last, norm", [(False, "instance"), (True, "instance_in_layout")], ids=["nchw", "channels_last_in_layout"]
)
def test_compiled_sam_step_with_cuda_graphs_matches_eager(channels_last, norm):
    """The compiled run in this layout (the second: budget.yaml's) against the eager NCHW one."""
    import torch._inductor.config as inductor_config

    from uu.losses import build_loss
    from uu.net import NORMS, build_network
    from uu.sam import SAM
    from uu.step import compile_model, train_step

    results = []
    for mode in (None, "reduce-overhead"):
        torch.manual_seed(0)
        layout = dict(channels_last=channels_last, norm=NORMS[norm]) if mode else {}
        model = build_network("tiny2d", "umamba_enc", mamba_fp32=False, **layout).cuda().train()
        loss = build_loss("ua").cuda()
        opt = SAM(
            [{"params": list(model.parameters())}, {"params": list(loss.parameters()), "weight_decay": 0.0}],
            torch.optim.SGD,
            rho=0.05,
            lr=1e-2,
            momentum=0.99,
            nesterov=True,
            fused=True,
        )
        run = compile_model(model, mode) if mode else model
        g = torch.Generator(device="cuda").manual_seed(1)
        # torch 2.11's mix-order reduction fails to schedule this toy network's in-layout norms ("InductorError:
        # AssertionError: 8 v.s. 32"; the campaign's own 2D network compiles with it on); the rest of the
        # compiled step is what this test checks, so the toy runs without it (README, Troubleshooting)
        with inductor_config.patch({"triton.mix_order_reduction": not channels_last}):
            for _ in range(3):
                x = torch.randn(4, 1, 64, 64, device="cuda", generator=g)
                y = torch.randint(0, 4, (4, 64, 64), device="cuda", generator=g)
                out = train_step(run, loss, opt, x, y, autocast_dtype=torch.bfloat16)
        results.append((float(out.loss), torch.cat([p.detach().flatten() for p in model.parameters()])))
    (l_e, w_e), (l_c, w_c) = results
    print(
        f"[cuda paths] compiled SAM step ({norm}, channels_last={channels_last}): loss {l_c:.6f} vs eager "
        f"{l_e:.6f}, weights rel err {rel_err(w_c, w_e):.2e}"
    )
    assert abs(l_c - l_e) < 2e-2 * abs(l_e) and rel_err(w_c, w_e) < 2e-2


def test_a_checkpoint_loaded_onto_the_gpu_restores_every_random_stream(tmp_path):
    """load_checkpoint maps every tensor to the run's device, the random states included; a generator takes its
    state on the CPU only, so load_training_state must move them back before it sets them (a paused GPU run resumes)."""
    from uu.augment import Augmenter
    from uu.checkpoint import atomic_save, load_training_state, training_state
    from uu.runs import load_checkpoint

    model = torch.nn.Linear(2, 2).cuda()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    augmenter = Augmenter(2, seed=3, device="cuda")  # stands in for the batches: it has their state methods
    torch.manual_seed(0)
    atomic_save(training_state(model, model, opt, None, augmenter), tmp_path / "checkpoint.pt")

    def draws():  # the augmenter's stream, torch's CPU stream, torch's CUDA stream
        return [
            torch.rand(3, generator=augmenter.generator, device="cuda"),
            torch.rand(3),
            torch.rand(3, device="cuda"),
        ]

    expected = draws()
    ckpt = load_checkpoint(tmp_path / "checkpoint.pt", "cuda")
    assert ckpt["rng"]["torch"].is_cuda and ckpt["train_data"]["generator"].is_cuda  # what made resuming fail
    torch.manual_seed(1)
    load_training_state(ckpt, model, model, opt, None, augmenter)
    for a, b in zip(expected, draws()):
        assert torch.equal(a, b)
