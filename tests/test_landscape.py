"""Loss landscape (uu.landscape) and sharpness (uu.sharpness) on models whose loss is a known quadratic
0.5 w^T H w; the report over runs on a hand-made run folder. TinyNet: a local copy for now."""

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from uu import landscape as ls
from uu import sharpness as sh
from uu import tables
from uu.data import normalize_intensity
from uu.weights import get_weights


class Quadratic(nn.Module):
    """One weight vector w; loss 0.5 w^T H w (gradient H w, Hessian H)."""

    def __init__(self, w):
        super().__init__()
        self.w = nn.Parameter(torch.as_tensor(w, dtype=torch.float64).clone())


def quadratic_closure(model, H):
    H = torch.as_tensor(H, dtype=torch.float64)
    return lambda: 0.5 * model.w @ H @ model.w


def rotated(eigenvalues, seed=0):
    """Q diag(eigenvalues) Q^T with a seeded random orthogonal Q; returns (H, Q)."""
    n = len(eigenvalues)
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(n, n)))
    return q @ np.diag(eigenvalues) @ q.T, q


# ----------------------------------------------------------------------------- Hessian eigenvalue


@pytest.mark.parametrize("method", ["double_backprop", "finite_difference"])
@pytest.mark.parametrize(
    "eigenvalues, expected",
    [
        ([5.0, 2.0, -1.0, 0.5], 5.0),
        ([3.0, 1.0], 3.0),
        ([-6.0, 2.0, 1.0], 2.0),  # dominant (largest magnitude) -6, then the shifted run finds 2
        ([0.25] * 3, 0.25),  # every vector is an eigenvector: exact after one product
    ],
)
def test_top_hessian_eigenvalue_of_a_quadratic(eigenvalues, expected, method):
    H, _ = rotated(eigenvalues)
    model = Quadratic(np.ones(len(eigenvalues)))
    out = sh.top_hessian_eigenvalue(model, quadratic_closure(model, H), iters=200, tol=1e-12, method=method)
    assert out["eigenvalue"] == pytest.approx(expected, rel=1e-8)  # central differences: exact for a quadratic
    assert out["dominant"] == pytest.approx(max(eigenvalues, key=abs), rel=1e-8)
    assert model.w.tolist() == [1.0] * len(eigenvalues)


def test_top_hessian_eigenvalue_stops_at_iters():
    H, _ = rotated([1.0, 0.99, 0.5])  # slow: ratio 0.99
    model = Quadratic(np.ones(3))
    out = sh.top_hessian_eigenvalue(model, quadratic_closure(model, H), iters=3, tol=0.0)
    assert out["iterations"] == 3 and not out["converged"]
    assert 0.5 <= out["eigenvalue"] <= 1.0 + 1e-12  # a Rayleigh quotient lies within the spectrum


# ----------------------------------------------------------------------------- SAM sharpness


def test_sam_sharpness_exact_when_w_is_the_top_eigenvector():
    # w = c q1: the best e is rho q1, and max e^T H w + 0.5 e^T H e = rho*lambda1*c + 0.5 rho^2 lambda1.
    H, Q = rotated([4.0, 1.0, 0.5], seed=3)
    c, rho = 2.0, 0.1
    model = Quadratic(c * Q[:, 0])
    out = sh.sam_sharpness(model, quadratic_closure(model, H), rho=rho, steps=1)
    assert out["loss"] == pytest.approx(0.5 * 4.0 * c * c)  # 8
    assert out["sharpness"] == pytest.approx(rho * 4.0 * c + 0.5 * rho**2 * 4.0)  # 0.82


def test_sam_sharpness_one_step_is_sams_perturbation():
    # H = diag(2, 1), w = (1, 2): Hw = (2, 2), e = rho (1, 1)/sqrt(2);
    # e^T H w = 2 sqrt(2) rho, 0.5 e^T H e = 0.5 rho^2 (2 + 1)/2 = 0.75 rho^2.
    rho = 0.1
    model = Quadratic([1.0, 2.0])
    out = sh.sam_sharpness(model, quadratic_closure(model, np.diag([2.0, 1.0])), rho=rho, steps=1)
    assert out["loss"] == pytest.approx(0.5 * (2 * 1 + 1 * 4))
    assert out["sharpness"] == pytest.approx(2 * math.sqrt(2) * rho + 0.75 * rho**2)


def trust_region_max(H, w, rho):
    """max_{||e|| <= rho} e^T H w + 0.5 e^T H e for H positive definite: e = (mu I - H)^-1 H w with
    mu > lambda_max chosen by bisection so that ||e|| = rho."""
    lam_max, g = np.linalg.eigvalsh(H).max(), H @ w
    lo, hi = lam_max + 1e-12, lam_max + np.linalg.norm(g) / rho + 1.0
    for _ in range(200):
        mu = 0.5 * (lo + hi)
        e = np.linalg.solve(mu * np.eye(len(w)) - H, g)
        lo, hi = (mu, hi) if np.linalg.norm(e) > rho else (lo, mu)
    return e @ g + 0.5 * e @ H @ e


@pytest.mark.parametrize("rho", [0.05, 0.5, 3.0])
def test_sam_sharpness_converges_to_the_ball_maximum(rho):
    H, _ = rotated([3.0, 1.0, 0.2], seed=1)
    w = np.array([0.3, -1.0, 0.7])
    model = Quadratic(w)
    out = sh.sam_sharpness(model, quadratic_closure(model, H), rho=rho, steps=60)
    assert out["sharpness"] == pytest.approx(trust_region_max(H, w, rho), rel=1e-6)
    assert np.all(np.diff(out["trace"]) >= -1e-12)  # convex loss: ascent never goes down


# ----------------------------------------------------------------------------- 1D and 2D landscapes


def test_loss_along_line_of_a_quadratic():
    # H = diag(2, 1), from (1, 1) to (0, 0): L(a) = 0.5 (1 - a)^2 (2 + 1) = 1.5 (1 - a)^2
    model = Quadratic([5.0, 5.0])
    losses = ls.loss_along_line(
        model,
        quadratic_closure(model, np.diag([2.0, 1.0])),
        [torch.tensor([1.0, 1.0], dtype=torch.float64)],
        [torch.tensor([0.0, 0.0], dtype=torch.float64)],
        [0.0, 0.5, 1.0, 1.5],
    )
    np.testing.assert_allclose(losses, [1.5, 0.375, 0.0, 0.375])
    assert model.w.tolist() == [5.0, 5.0]


def test_loss_surface_2d_of_a_quadratic():
    # centre 0, d1 = e1, d2 = e2, H = diag(2, 1): L(a, b) = a^2 + 0.5 b^2
    model = Quadratic([0.0, 0.0])
    d1 = [torch.tensor([1.0, 0.0], dtype=torch.float64)]
    d2 = [torch.tensor([0.0, 1.0], dtype=torch.float64)]
    surface = ls.loss_surface_2d(
        model, quadratic_closure(model, np.diag([2.0, 1.0])), d1, d2, alphas=[-1.0, 0.0, 2.0], betas=[0.0, 2.0]
    )
    np.testing.assert_allclose(surface, [[1.0, 3.0], [0.0, 2.0], [4.0, 6.0]])


# ----------------------------------------------------------------------------- directions and restoring


class TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3, padding=1)
        self.norm = nn.InstanceNorm2d(3, affine=True)
        self.head = nn.Conv2d(3, 4, 1)

    def forward(self, x):
        return self.head(torch.relu(self.norm(self.conv(x))))


def test_random_direction_is_filter_normalised_and_seeded():
    torch.manual_seed(0)
    net = TinyNet()
    d = ls.random_direction(net, filter_normalize=True, seed=7)
    params = list(net.parameters())
    for p, di in zip(params, d):
        assert di.shape == p.shape
        if p.dim() <= 1:
            assert torch.count_nonzero(di) == 0  # biases and norm scales: zero direction
        else:
            torch.testing.assert_close(di.flatten(1).norm(dim=1), p.detach().flatten(1).norm(dim=1))
    again = ls.random_direction(net, seed=7)
    assert all(torch.equal(a, b) for a, b in zip(d, again))
    other = ls.random_direction(net, seed=8)
    assert not torch.equal(d[0], other[0])
    keep = ls.random_direction(net, seed=7, ignore_bias_and_norm=False)
    assert torch.equal(keep[1], params[1].detach())  # conv bias: the weights themselves


def test_every_function_restores_the_weights_bit_identically():
    torch.manual_seed(0)
    net = TinyNet().train()
    images, target = torch.randn(2, 1, 8, 8), torch.randint(0, 4, (2, 8, 8))
    closure = ls.batch_loss_closure(net, nn.CrossEntropyLoss(), images, target)
    before = [p.detach().clone() for p in net.parameters()]
    d1, d2 = ls.random_direction(net, seed=1), ls.random_direction(net, seed=2)
    w_init = [w + 0.1 * d for w, d in zip(before, d1)]

    ls.loss_along_line(net, closure, w_init, get_weights(net), [0.0, 0.3, 1.0])
    ls.loss_surface_2d(net, closure, d1, d2, [-0.5, 0.5], [-0.5, 0.5])
    out = sh.sam_sharpness(net, closure, rho=0.05, steps=3)
    sh.top_hessian_eigenvalue(net, closure, iters=3)
    sh.top_hessian_eigenvalue(net, closure, iters=2, method="finite_difference")

    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters()))
    assert net.training  # mode restored too
    assert all(p.grad is None for p in net.parameters())
    assert out["sharpness"] >= 0.0 and len(out["trace"]) == 3


def test_weights_restored_when_the_closure_fails():
    net = Quadratic([1.0, 2.0])
    calls = []

    def closure():
        calls.append(1)
        if len(calls) > 1:
            raise RuntimeError("boom")
        return (net.w**2).sum()

    with pytest.raises(RuntimeError, match="boom"):
        sh.sam_sharpness(net, closure, rho=0.5, steps=2)
    assert net.w.tolist() == [1.0, 2.0]


def test_sam_sharpness_rejects_bad_arguments():
    net = Quadratic([1.0])
    with pytest.raises(ValueError, match="rho"):
        sh.sam_sharpness(net, lambda: (net.w**2).sum(), rho=0.0)


# ----------------------------------------------------------------------------- fixed patches


def test_fixed_patches_shapes_padding_and_foreground():
    label = np.zeros((3, 6, 6), np.uint8)
    label[1, 0, 0] = 2  # the only foreground voxel, in a corner: the patch around it needs padding
    image = np.arange(label.size, dtype=np.float32).reshape(label.shape) + 1.0
    case = SimpleNamespace(image=image, label=label)

    images, target = ls.fixed_patches([case], (4, 4), n=2, seed=0)
    assert images.shape == (2, 1, 4, 4) and target.shape == (2, 4, 4) and target.dtype == torch.int64
    # centre (0, 0) -> window rows/cols -2..1: two padded rows and columns, then the slice's corner of the
    # volume normalised as training normalises it
    expected = np.zeros((4, 4), np.float32)
    expected[2:, 2:] = normalize_intensity(image)[1, :2, :2]
    np.testing.assert_array_equal(images[0, 0].numpy(), expected)
    rescaled = SimpleNamespace(image=3.0 * image + 7.0, label=label)  # raw intensities: any scale and offset
    torch.testing.assert_close(ls.fixed_patches([rescaled], (4, 4), n=2, seed=0)[0], images)
    assert target[0, 2, 2] == 2 and int(target.sum()) == 4

    images3, target3 = ls.fixed_patches([case], (2, 4, 4), n=1, seed=0)
    assert images3.shape == (1, 1, 2, 4, 4) and target3.shape == (1, 2, 4, 4)
    assert target3[0, 1, 2, 2] == 2  # centre voxel at index size//2 in each axis


def test_unused_parameters_count_as_zero_curvature():
    # a deep-supervision head unused in eval mode must not break the double backprop
    H, _ = rotated([2.0, 0.5])
    model = Quadratic([1.0, -1.0])
    model.unused_head = nn.Parameter(torch.ones(3, dtype=torch.float64))
    closure = quadratic_closure(model, H)
    out = sh.top_hessian_eigenvalue(model, closure, iters=100, tol=1e-12)
    assert out["eigenvalue"] == pytest.approx(2.0, rel=1e-8)
    v = [torch.tensor([1.0, 2.0], dtype=torch.float64), torch.ones(3, dtype=torch.float64)]
    for method in ("double_backprop", "finite_difference"):
        hv = sh.hessian_vector_product(model, closure, v, method=method)
        np.testing.assert_allclose(hv[0].numpy(), H @ np.array([1.0, 2.0]))
        assert torch.count_nonzero(hv[1]) == 0


def test_double_backprop_and_finite_differences_agree_on_a_network():
    torch.manual_seed(0)
    net = TinyNet().double()
    images, target = torch.randn(2, 1, 6, 6, dtype=torch.float64), torch.randint(0, 4, (2, 6, 6))
    closure = ls.batch_loss_closure(net, nn.CrossEntropyLoss(), images, target)
    v = ls.random_direction(net, filter_normalize=False, seed=3)
    exact = sh.hessian_vector_product(net, closure, v, method="double_backprop")
    approx = sh.hessian_vector_product(net, closure, v, method="finite_difference", epsilon=1e-5)
    for a, b in zip(exact, approx):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6)


def test_report_saved_as_json_reads_back_and_tabulates(tmp_path):
    H, _ = rotated([3.0, 1.0])
    report = {
        "a": {
            "line": (np.linspace(-0.25, 1.25, 3), [1.0, 0.5, 0.25]),
            "surface": (np.array([-1.0, 1.0]), np.array([-1.0, 1.0]), np.array([[1.0, 2.0], [3.0, 4.0]])),
            "sam": {"loss": 0.5, "max_loss": 0.75, "sharpness": 0.25, "rho": 0.05, "steps": 2, "trace": [0.7]},
            "hessian": {
                "eigenvalue": 3.0,
                "dominant": 3.0,
                "iterations": 4,
                "converged": True,
                "trace": [2.0, 3.0],
                "method": "double_backprop",
            },
        }
    }
    report["b"] = dict(report["a"], hessian=None)  # not computed (hessian_iters 0)
    path = ls.save_report(report, tmp_path / "r" / "landscape.json", loss="dice_ce", n_patches=4)
    back = ls.load_report(path)
    np.testing.assert_array_equal(back["a"]["surface"][2], report["a"]["surface"][2])
    np.testing.assert_array_equal(back["a"]["line"][0], report["a"]["line"][0])
    assert back["a"]["line"][1] == [1.0, 0.5, 0.25] and back["b"]["hessian"] is None
    table = tables.sharpness_table(back, "dice_ce").set_index("method")
    assert table.loc["a", "top Hessian eigenvalue (dice_ce loss / weight^2)"] == 3.0
    assert table.loc["a", "SAM sharpness (dice_ce loss rise)"] == 0.25 and table.loc["a", "dice_ce loss at w"] == 0.5
    assert math.isnan(table.loc["b", "top Hessian eigenvalue (dice_ce loss / weight^2)"])
    assert table.loc["b", "Hessian method"] == "not computed"


def test_hessian_goes_through_the_pytorch_scan_and_restores_the_backend():
    from uu.net import build_network
    from uu.ssm import Mamba

    torch.manual_seed(0)
    net = build_network("tiny2d", "umamba_bot")
    layers = [m for m in net.modules() if isinstance(m, Mamba)]
    for m in layers:
        m.backend = "cuda"  # as on a GPU with mamba-ssm: must be switched for double backprop
    seen = []
    original = Mamba.forward_channels_first  # what MambaLayer calls on an NCHW feature map

    def spy(self, x):
        seen.append(self.backend)
        return original(self, x)

    images, target = torch.randn(1, 1, 16, 16), torch.randint(0, 4, (1, 16, 16))
    closure = ls.batch_loss_closure(net, nn.CrossEntropyLoss(), images, target)
    try:
        Mamba.forward_channels_first = spy
        sh.top_hessian_eigenvalue(net, closure, iters=1)
    finally:
        Mamba.forward_channels_first = original
    assert seen and set(seen) == {"torch"}
    assert [m.backend for m in layers] == ["cuda"] * len(layers)


def hand_made_run(folder, data_dir):
    """A run folder holding what landscape_report reads: profile.yaml, split.json, init.pt, final.pt
    (the smoke profile with a plain U-Net: cheap, and the Mamba path has its own test above)."""
    from uu.profiles import dump_profile, load_profile
    from uu.runs import build_model

    folder.mkdir(parents=True)
    profile = dict(load_profile("smoke"), arch="unet", patch_size=[32, 32], data_dir=str(data_dir))
    dump_profile(profile, folder / "profile.yaml")
    (folder / "split.json").write_text('{"train": [1, 2], "val": [3], "test": []}')
    torch.manual_seed(0)
    model = build_model(profile)
    torch.save({"model": model.state_dict()}, folder / "init.pt")
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01)
    torch.save({"model": model.state_dict()}, folder / "final.pt")
    return folder


def test_landscape_report_of_runs_saves_as_it_goes_and_keeps_to_the_hessian_budget(tmp_path, phantom_dir):
    run = hand_made_run(tmp_path / "run", phantom_dir)
    common = dict(n_patches=1, line_points=3, grid_points=2, sam_steps=1, hessian_iters=1)
    path = tmp_path / "landscape.json"
    report = ls.landscape_report({"a": run}, save_to=path, **common)
    line, surface = report["a"]["line"], report["a"]["surface"]
    np.testing.assert_allclose(line[0], [-0.25, 0.5, 1.25])
    np.testing.assert_allclose(surface[0], [-1.0, 1.0])
    assert surface[2].shape == (2, 2) and np.isfinite(surface[2]).all()
    assert report["a"]["hessian"]["iterations"] == 1
    saved = json.loads(path.read_text())
    assert saved["meta"]["loss"] == "dice_ce" and saved["meta"]["runs"] == {"a": str(run)}
    assert ls.load_report(path)["a"]["hessian"] == report["a"]["hessian"]  # saved after the Hessian too

    again = ls.landscape_report({"a": run}, hessian_budget_s=0.0, **common)  # no time left for a Hessian
    assert again["a"]["hessian"] is None
    assert again["a"]["sam"] == report["a"]["sam"]  # the same fixed patches and loss: the same numbers
