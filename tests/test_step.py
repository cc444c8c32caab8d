"""train_step: plain and SAM updates, mixed precision, skipping non-finite steps (uu/step.py)."""

import copy
import sys
from pathlib import Path

import pytest
import torch
from helpers import TinyNet

from uu.losses import build_loss
from uu.sam import SAM
from uu.step import StepResult, train_step


def make(seed=0, ds=False, loss="ua"):
    torch.manual_seed(seed)
    model = TinyNet(deep_supervision=ds).train()
    loss_fn = build_loss(loss)
    images = torch.randn(2, 1, 4, 4)
    target = torch.randint(0, 4, (2, 4, 4))
    return model, loss_fn, images, target


def groups(model, loss_fn):
    return [
        {"params": list(model.parameters()), "weight_decay": 3e-5},
        {"params": list(loss_fn.parameters()), "weight_decay": 0.0},
    ]


def snapshot(*modules):
    return [p.detach().clone() for m in modules for p in m.parameters()]


def unchanged(before, *modules):
    return all(torch.equal(a, p.detach()) for a, p in zip(before, [p for m in modules for p in m.parameters()]))


@pytest.mark.parametrize("use_sam", [False, True])
@pytest.mark.parametrize("ds", [False, True])
def test_step_updates_weights_and_sigma(use_sam, ds):
    model, loss_fn, images, target = make(ds=ds)
    opt = (
        SAM(groups(model, loss_fn), rho=0.05, lr=0.1, momentum=0.9)
        if use_sam
        else torch.optim.SGD(groups(model, loss_fn), lr=0.1, momentum=0.9)
    )
    with torch.no_grad():
        expected_loss = loss_fn(model(images), target).item()  # the reported loss is the one at w
    before = snapshot(model, loss_fn)
    result = train_step(model, loss_fn, opt, images, target)
    assert isinstance(result, StepResult) and not result.skipped
    assert float(result.loss) == pytest.approx(expected_loss, rel=1e-6)
    assert set(result.components) == {"dice", "ce", "focal"}
    assert loss_fn.last_components == pytest.approx({k: float(v) for k, v in result.components.items()})
    assert not torch.equal(before[0], model.conv.weight.detach())
    assert not torch.equal(before[-1], next(loss_fn.parameters()).detach())  # sigma moved
    assert all(p.grad is None for p in model.parameters())


def test_sam_step_matches_manual_first_second_step():
    model, loss_fn, images, target = make(seed=1)
    model2, loss_fn2 = copy.deepcopy(model), copy.deepcopy(loss_fn)
    opt = SAM(groups(model, loss_fn), rho=0.05, lr=0.1, momentum=0.99, nesterov=True)
    opt2 = SAM(groups(model2, loss_fn2), rho=0.05, lr=0.1, momentum=0.99, nesterov=True)
    train_step(model, loss_fn, opt, images, target, grad_clip=None)
    loss_fn2(model2(images), target).backward()
    opt2.first_step(zero_grad=True)
    loss_fn2(model2(images), target).backward()
    opt2.second_step(zero_grad=True)
    assert all(torch.equal(a, b) for a, b in zip(snapshot(model, loss_fn), snapshot(model2, loss_fn2)))


def test_grad_clip_limits_the_update():
    # plain SGD, lr 1, no momentum: the update is minus the clipped gradient, whose norm is grad_clip
    model, loss_fn, images, target = make(seed=2)
    opt = torch.optim.SGD(list(model.parameters()) + list(loss_fn.parameters()), lr=1.0)
    before = snapshot(model, loss_fn)
    result = train_step(model, loss_fn, opt, images, target, grad_clip=1e-3)
    assert float(result.grad_norm) > 1e-3  # reported before clipping
    delta = torch.cat([(p.detach() - b).flatten() for b, p in zip(before, snapshot(model, loss_fn))])
    assert delta.norm().item() == pytest.approx(1e-3, rel=1e-3)


@pytest.mark.parametrize("use_sam", [False, True])
@pytest.mark.parametrize("fused", [False, True])
def test_nan_loss_is_skipped(use_sam, fused):
    model, loss_fn, images, target = make(seed=3)
    images[0, 0, 0, 0] = float("nan")
    opt = (SAM if use_sam else torch.optim.SGD)(groups(model, loss_fn), lr=0.1, momentum=0.9, fused=fused)
    before = snapshot(model, loss_fn)
    result = train_step(model, loss_fn, opt, images, target)
    assert result.skipped and result.loss != result.loss  # nan
    assert unchanged(before, model, loss_fn)
    assert all(p.grad is None for p in model.parameters())
    # non-fused: the step never ran; fused: it ran on the device with found_inf = 1 and left the zero buffers
    buffers = [s["momentum_buffer"] for s in opt.state_dict()["state"].values()]
    assert all(torch.count_nonzero(b) == 0 for b in buffers) and (len(buffers) > 0) == fused


def test_fused_step_equals_the_plain_one_and_a_skipped_first_step_changes_nothing():
    # fused SGD with the device-side skip: a skipped first step, then a clean one, gives the same weights and
    # momentum as the plain optimizer's single clean step (zero buffers = torch's first-step buffer = grad)
    runs = []
    for fused in (False, True):
        model, loss_fn, images, target = make(seed=8)
        opt = torch.optim.SGD(groups(model, loss_fn), lr=0.1, momentum=0.99, nesterov=True, fused=fused)
        if fused:
            bad = images.clone()
            bad[0, 0, 0, 0] = float("inf")
            assert train_step(model, loss_fn, opt, bad, target).skipped
        train_step(model, loss_fn, opt, images, target)
        train_step(model, loss_fn, opt, images.flip(-1), target.flip(-1))
        runs.append(snapshot(model, loss_fn))
    for a, b in zip(*runs):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


class InfOnCall:
    """Gradient hook that replaces the gradient by inf on the n-th backward pass (1-based)."""

    def __init__(self, n):
        self.n, self.calls = n, 0

    def __call__(self, grad):
        self.calls += 1
        return torch.full_like(grad, float("inf")) if self.calls == self.n else grad


@pytest.mark.parametrize("use_sam, bad_pass", [(False, 1), (True, 1), (True, 2)])
@pytest.mark.parametrize("fp16", [False, True])
def test_injected_inf_gradient_is_skipped(use_sam, bad_pass, fp16):
    model, loss_fn, images, target = make(seed=4)
    opt = (SAM if use_sam else torch.optim.SGD)(groups(model, loss_fn), lr=0.1, momentum=0.9, fused=fp16)
    model.conv.bias.register_hook(InfOnCall(bad_pass))
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0) if fp16 else None
    before = snapshot(model, loss_fn)
    result = train_step(
        model, loss_fn, opt, images, target, scaler=scaler, autocast_dtype=torch.float16 if fp16 else None
    )
    assert result.skipped and not torch.isfinite(result.grad_norm)  # inf, or nan at w + e (pass 1 bad)
    assert unchanged(before, model, loss_fn)  # bit-identical, SAM perturbation undone
    assert all(p.grad is None for p in model.parameters())
    if fp16:
        # backed off once per pass that saw the inf (a bad first pass also poisons w + e, the second pass)
        assert scaler.get_scale() == (256.0 if use_sam and bad_pass == 1 else 512.0)
        # the next step is clean and goes through
        result = train_step(model, loss_fn, opt, images, target, scaler=scaler, autocast_dtype=torch.float16)
        assert not result.skipped and not unchanged(before, model, loss_fn)
        assert all(torch.isfinite(p).all() for p in model.parameters())


@pytest.mark.parametrize("use_sam", [False, True])
def test_fp16_scaler_updates_with_true_gradients(use_sam):
    # with a GradScaler the update must equal the fp32-gradient update (the scale is undone before SAM's e)
    model, loss_fn, images, target = make(seed=5)
    model2, loss_fn2 = copy.deepcopy(model), copy.deepcopy(loss_fn)
    make_opt = (lambda g: SAM(g, lr=0.1)) if use_sam else (lambda g: torch.optim.SGD(g, lr=0.1))
    opt, opt2 = make_opt(groups(model, loss_fn)), make_opt(groups(model2, loss_fn2))
    train_step(model, loss_fn, opt, images, target, scaler=torch.amp.GradScaler("cpu", init_scale=2.0**14))
    train_step(model2, loss_fn2, opt2, images, target)
    for a, b in zip(snapshot(model, loss_fn), snapshot(model2, loss_fn2)):
        assert torch.allclose(a, b, atol=1e-6)


def test_bf16_autocast_without_scaler():
    model, loss_fn, images, target = make(seed=6)
    opt = SAM(groups(model, loss_fn), lr=0.1)
    result = train_step(model, loss_fn, opt, images, target, autocast_dtype=torch.bfloat16)
    assert not result.skipped and result.loss == result.loss


def _ddp_worker(rank, world_size, port, results):
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    try:
        model, loss_fn, images, target = make(seed=7)  # same weights on both ranks
        if rank == 0:
            images[0, 0, 0, 0] = float("nan")  # only rank 0 sees a non-finite loss
        ddp, ddp_loss = DDP(model), DDP(loss_fn)  # the loss too, so that sigma's gradient is averaged
        opt = SAM(groups(model, loss_fn), lr=0.1)
        before = snapshot(model, loss_fn)
        skipped = bool(train_step(ddp, ddp_loss, opt, images, target).skipped)
        first = (skipped, unchanged(before, model, loss_fn))
        images[0, 0, 0, 0] = 0.0
        if rank == 1:
            images = images.flip(-1)  # different data per rank; the averaged gradients keep the weights equal
        result = train_step(ddp, ddp_loss, opt, images, target)
        results[rank] = first + (
            bool(result.skipped),
            sorted(result.components),
            [p.detach().tolist() for p in (*model.parameters(), *loss_fn.parameters())],
        )
    finally:
        dist.destroy_process_group()


def test_ddp_ranks_agree_to_skip():
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    results = mp.Manager().dict()
    sys.path.insert(0, str(Path(__file__).parent))  # the spawned workers import this module
    mp.spawn(_ddp_worker, args=(2, port, results), nprocs=2, join=True)  # not fork: OpenMP pools deadlock
    r0, r1 = results[0], results[1]
    assert r0[:2] == r1[:2] == (True, True)  # a non-finite loss on one rank: no rank steps, no rank hangs
    assert r0[2:4] == r1[2:4] == (False, ["ce", "dice", "focal"])  # then a clean step, components read through DDP
    assert r0[4] == r1[4]  # same weights and sigma on both ranks


@pytest.mark.parametrize("use_sam", [False, True])
def test_compiled_model_steps_like_the_eager_one(use_sam):
    """A torch.compile'd network (as compile_model gives) in train_step: same update as eager. aot_eager keeps
    the test free of a C++ compiler; the modes that generate kernels are measured on the GPU (bench_train)."""
    results = []
    for compiled in (False, True):
        model, loss_fn, images, target = make(seed=3, ds=True)
        opt_cls = (
            (lambda g: SAM(g, torch.optim.SGD, rho=0.05, lr=0.1, momentum=0.9))
            if use_sam
            else (lambda g: torch.optim.SGD(g, lr=0.1, momentum=0.9))
        )
        opt = opt_cls(groups(model, loss_fn))
        run = torch.compile(model, backend="aot_eager") if compiled else model
        for _ in range(2):
            result = train_step(run, loss_fn, opt, images, target)
        results.append((float(result.loss), snapshot(model, loss_fn)))
    (loss_e, w_e), (loss_c, w_c) = results
    assert loss_c == pytest.approx(loss_e, rel=1e-5)
    for a, b in zip(w_e, w_c):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
