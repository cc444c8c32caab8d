"""SAM against the analytic two-step update on a quadratic (uu/sam.py)."""

import copy
import math
import warnings

import pytest
import torch

from uu.sam import SAM

H = torch.diag(torch.tensor([3.0, 4.0]))


def quadratic(w):
    return 0.5 * w @ H @ w


def sam_update(w, opt):
    quadratic(w).backward()
    opt.first_step(zero_grad=True)
    quadratic(w).backward()
    opt.second_step(zero_grad=True)


def test_quadratic_two_step_by_hand():
    # w = (1, 1): g = Hw = (3, 4), ||g|| = 5, e = 0.05 * (0.6, 0.8) = (0.03, 0.04),
    # gradient at w + e = H (1.03, 1.04) = (3.09, 4.16); SGD lr 0.1 -> w = (1 - 0.309, 1 - 0.416)
    w = torch.nn.Parameter(torch.tensor([1.0, 1.0]))
    opt = SAM([w], torch.optim.SGD, rho=0.05, lr=0.1)
    quadratic(w).backward()
    opt.first_step(zero_grad=True)
    assert torch.allclose(w.detach(), torch.tensor([1.03, 1.04]), atol=1e-7)
    assert w.grad is None
    quadratic(w).backward()
    assert torch.allclose(w.grad, torch.tensor([3.09, 4.16]), atol=1e-6)
    opt.second_step(zero_grad=True)
    assert torch.allclose(w.detach(), torch.tensor([0.691, 0.584]), atol=1e-6)


def test_adaptive_perturbation_by_hand():
    # w = (2, 1): g = (6, 4); ASAM: e = rho |w|^2 g / || |w| g || = 0.05 (24, 4) / ||(12, 4)||
    #   = 0.05 (24, 4) / sqrt(160)
    w = torch.nn.Parameter(torch.tensor([2.0, 1.0]))
    opt = SAM([w], rho=0.05, adaptive=True, lr=0.1)
    quadratic(w).backward()
    opt.first_step()
    e = 0.05 * torch.tensor([24.0, 4.0]) / math.sqrt(160.0)
    assert torch.allclose(w.detach(), torch.tensor([2.0, 1.0]) + e, atol=1e-7)


def test_norm_spans_all_groups_including_sigma():
    # two groups (model weight, sigma without weight decay): e uses the norm of ALL gradients
    a = torch.nn.Parameter(torch.tensor([1.0]))
    sigma = torch.nn.Parameter(torch.tensor([1.0]))
    frozen = torch.nn.Parameter(torch.tensor([5.0]))  # no gradient: untouched
    opt = SAM(
        [{"params": [a, frozen], "weight_decay": 3e-5}, {"params": [sigma], "weight_decay": 0.0}], rho=0.5, lr=0.1
    )
    (3 * a + 4 * sigma).sum().backward()  # g = (3, 4), ||g|| = 5
    opt.first_step()
    assert a.item() == pytest.approx(1 + 0.5 * 0.6) and sigma.item() == pytest.approx(1 + 0.5 * 0.8)
    opt.second_step()
    assert frozen.item() == 5.0 and frozen.grad is None


def test_second_step_restores_exact_weights_then_base_step():
    # SAM == the base optimizer (momentum, Nesterov, weight decay) fed the gradient at w + e
    torch.manual_seed(0)
    w0 = torch.randn(5)
    A = torch.randn(5, 5)
    Hs = A @ A.T + torch.eye(5)
    f = lambda w: 0.5 * w @ Hs @ w  # noqa: E731
    kw = dict(lr=0.01, momentum=0.99, nesterov=True, weight_decay=3e-5)
    w_sam = torch.nn.Parameter(w0.clone())
    w_ref = torch.nn.Parameter(w0.clone())
    sam, ref = SAM([w_sam], torch.optim.SGD, rho=0.05, **kw), torch.optim.SGD([w_ref], **kw)
    for _ in range(3):
        g = Hs @ w_ref.detach()
        w_ref.grad = Hs @ (w_ref.detach() + 0.05 * g / g.norm())
        ref.step()
        f(w_sam).backward()
        sam.first_step(zero_grad=True)
        f(w_sam).backward()
        sam.second_step(zero_grad=True)
    assert torch.allclose(w_sam.detach(), w_ref.detach(), atol=1e-6)


def test_restore_is_bit_exact():
    w0 = torch.tensor([0.1, 0.7, 1e-3])
    w = torch.nn.Parameter(w0.clone())
    opt = SAM([w], lr=0.1)
    (w**2).sum().backward()
    opt.first_step()
    assert not torch.equal(w.detach(), w0)
    opt.restore()
    assert torch.equal(w.detach(), w0)


def test_step_with_closure():
    w = torch.nn.Parameter(torch.tensor([1.0, 1.0]))
    opt = SAM([w], rho=0.05, lr=0.1)

    def closure():
        opt.zero_grad()
        loss = quadratic(w)
        loss.backward()
        return loss

    closure()
    opt.step(closure)
    assert torch.allclose(w.detach(), torch.tensor([0.691, 0.584]), atol=1e-6)
    with pytest.raises(RuntimeError, match="closure"):
        opt.step()


def test_lr_scheduler_drives_base_optimizer_without_warning():
    w = torch.nn.Parameter(torch.tensor([1.0, 1.0]))
    opt = SAM([w], lr=0.1, momentum=0.9)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda epoch: (1 - epoch / 10) ** 0.9)  # poly, nnU-Net style
    assert opt.param_groups is opt.base_optimizer.param_groups
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "lr_scheduler.step() before optimizer.step()" would fail here
        for _ in range(2):
            sam_update(w, opt)
            sched.step()
    assert opt.base_optimizer.param_groups[0]["lr"] == pytest.approx(0.1 * 0.8**0.9)


def test_state_dict_round_trip():
    torch.manual_seed(0)
    w1 = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    opt1 = SAM([w1], lr=0.05, momentum=0.99, nesterov=True)
    sam_update(w1, opt1)
    opt1.param_groups[0]["lr"] = 0.02
    state = copy.deepcopy(opt1.state_dict())  # as torch.save/torch.load would (no shared buffers)
    assert "momentum_buffer" in state["state"][0] and state["param_groups"][0]["rho"] == 0.05

    w2 = torch.nn.Parameter(w1.detach().clone())
    opt2 = SAM([w2], lr=0.05, momentum=0.99, nesterov=True)
    opt2.load_state_dict(state)
    assert opt2.param_groups is opt2.base_optimizer.param_groups
    assert opt2.param_groups[0]["lr"] == 0.02
    sam_update(w1, opt1)
    sam_update(w2, opt2)
    assert torch.equal(w1.detach(), w2.detach())


def test_bad_arguments():
    w = torch.nn.Parameter(torch.zeros(1))
    with pytest.raises(ValueError, match="rho"):
        SAM([w], rho=-1.0, lr=0.1)
    with pytest.raises(TypeError, match="optimizer class"):
        SAM([w], torch.optim.SGD([w], lr=0.1), lr=0.1)
    opt = SAM([w], lr=0.1)
    with pytest.raises(RuntimeError, match="without a first_step"):
        opt.second_step()
