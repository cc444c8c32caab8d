"""Losses against hand-computed values (uu/losses.py)."""

import math

import pytest
import torch

from uu.losses import (
    CrossEntropyLoss,
    DeepSupervisionLoss,
    DiceCELoss,
    FocalLoss,
    SoftDiceLoss,
    UncertaintyAwareLoss,
    build_loss,
    deep_supervision_weights,
    downsample_target,
)

LN3 = math.log(3.0)
S = 1e-5  # Dice smoothing

# One sample, 2 classes, a 1x3 map. Logits (0, z) give p1 = sigmoid(z): z = ln3, 0, -ln3 -> p1 = 0.75, 0.5, 0.25.
LOGITS_1x3 = torch.tensor([[[[0.0, 0.0, 0.0]], [[LN3, 0.0, -LN3]]]])  # (B=1, C=2, 1, 3)
TARGET_1x3 = torch.tensor([[[1, 1, 0]]])  # (1, 1, 3)
# p_t (probability of the true class) per voxel: 0.75, 0.5, 0.75
CE_1x3 = -(2 * math.log(0.75) + math.log(0.5)) / 3
FOCAL_1x3 = -(0.25**2 * math.log(0.75) + 0.5**2 * math.log(0.5) + 0.25**2 * math.log(0.75)) / 3
# foreground Dice: intersection 0.75 + 0.5 = 1.25, sum p = 1.5, sum g = 2
DICE_FG_1x3 = 1 - (2 * 1.25 + S) / (1.5 + 2 + S)
# background: p0 = 0.25, 0.5, 0.75, g0 = 0, 0, 1 -> intersection 0.75, sum p 1.5, sum g 1
DICE_ALL_1x3 = 1 - ((2 * 1.25 + S) / (3.5 + S) + (2 * 0.75 + S) / (2.5 + S)) / 2


@pytest.mark.parametrize(
    "loss, expected",
    [
        (SoftDiceLoss(), DICE_FG_1x3),
        (SoftDiceLoss(include_background=True), DICE_ALL_1x3),
        (CrossEntropyLoss(), CE_1x3),
        (FocalLoss(gamma=2.0), FOCAL_1x3),
        # alpha per class (0.25, 1): voxel weights alpha[target] = 1, 1, 0.25
        (
            FocalLoss(gamma=2.0, alpha=[0.25, 1.0]),
            -(0.25**2 * math.log(0.75) + 0.5**2 * math.log(0.5) + 0.25 * 0.25**2 * math.log(0.75)) / 3,
        ),
        (FocalLoss(gamma=2.0, alpha=0.5), 0.5 * FOCAL_1x3),
        (DiceCELoss(), DICE_FG_1x3 + CE_1x3),
    ],
)
@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_hand_computed_1x3(loss, expected, spatial_dims):
    logits, target = LOGITS_1x3, TARGET_1x3
    if spatial_dims == 3:
        logits, target = logits.unsqueeze(2), target.unsqueeze(1)
    assert loss(logits, target).item() == pytest.approx(expected, rel=1e-6)


def test_dice_per_sample_vs_batch():
    # sample 2: same probabilities, no foreground in the target -> its Dice is S / (1.5 + S), about 0
    logits = LOGITS_1x3.repeat(2, 1, 1, 1)
    target = torch.cat([TARGET_1x3, torch.zeros_like(TARGET_1x3)])
    per_sample = 1 - ((2.5 + S) / (3.5 + S) + S / (1.5 + S)) / 2
    batch = 1 - (2.5 + S) / (5.0 + S)
    assert SoftDiceLoss()(logits, target).item() == pytest.approx(per_sample, rel=1e-6)
    assert SoftDiceLoss(batch_dice=True)(logits, target).item() == pytest.approx(batch, rel=1e-6)


def test_dice_perfect_prediction_is_zero():
    target = torch.tensor([[[0, 1, 2], [2, 1, 0]]])
    logits = 50.0 * torch.nn.functional.one_hot(target, 3).permute(0, 3, 1, 2).float()
    assert SoftDiceLoss()(logits, target).item() == pytest.approx(0.0, abs=1e-6)


def test_focal_gamma0_equals_ce():
    torch.manual_seed(0)
    logits, target = torch.randn(2, 4, 3, 5, 6), torch.randint(0, 4, (2, 3, 5, 6))
    assert torch.allclose(FocalLoss(gamma=0.0)(logits, target), CrossEntropyLoss()(logits, target), atol=1e-6)


def test_focal_single_softmax():
    # a confident correct voxel has p_t near 1 and a focal loss near 0 (a double softmax would cap p_t at 0.475)
    logits = torch.tensor([[[[20.0]], [[0.0]], [[0.0]], [[0.0]]]])
    assert FocalLoss()(logits, torch.zeros(1, 1, 1, dtype=torch.long)).item() < 1e-12


# Eq. 8 with components (0.3, 1.2, 0.6) and sigma (1, 2, 0.5):
# 0.3/2 + ln 2 + 1.2/8 + ln 5 + 0.6/0.5 + ln 1.25 = 1.5 + ln 12.5
@pytest.mark.parametrize(
    "values, sigma, expected",
    [
        ([0.3, 1.2, 0.6], [1.0, 2.0, 0.5], 1.5 + math.log(12.5)),
        ([1.0, 1.0, 1.0], [1.0, 1.0, 1.0], 1.5 + 3 * math.log(2.0)),
        ([2.0], [1.0], 1.0 + math.log(2.0)),
    ],
)
def test_eq8_combine(values, sigma, expected):
    terms = {f"t{i}": CrossEntropyLoss() for i in range(len(values))}
    ua = UncertaintyAwareLoss(terms)
    with torch.no_grad():
        ua.sigma.copy_(torch.tensor(sigma))
    assert ua.combine(torch.tensor(values)).item() == pytest.approx(expected, rel=1e-6)


def test_eq8_sigma_gradient():
    # dL/dsigma_m = -L_m / sigma_m^3 + 2 sigma_m / (1 + sigma_m^2)
    ua = UncertaintyAwareLoss({"a": CrossEntropyLoss(), "b": CrossEntropyLoss(), "c": CrossEntropyLoss()})
    with torch.no_grad():
        ua.sigma.copy_(torch.tensor([1.0, 2.0, 0.5]))
    ua.combine(torch.tensor([0.3, 1.2, 0.6])).backward()
    expected = [-0.3 + 1.0, -1.2 / 8 + 4 / 5, -0.6 / 0.125 + 1 / 1.25]  # 0.7, 0.65, -4.0
    assert torch.allclose(ua.sigma.grad, torch.tensor(expected), atol=1e-6)


@pytest.mark.parametrize("name, moves", [("ua", True), ("ua_fixed", False)])
def test_sigma_trained_or_frozen(name, moves):
    torch.manual_seed(0)
    loss_fn = build_loss(name)
    sigma = next(loss_fn.parameters())
    assert sigma.shape == (3,) and torch.equal(sigma.detach(), torch.ones(3))
    assert sigma.requires_grad == moves
    logits = torch.randn(2, 4, 5, 5, requires_grad=True)
    opt = torch.optim.SGD([logits] + list(loss_fn.parameters()), lr=0.1)
    loss_fn(logits, torch.randint(0, 4, (2, 5, 5))).backward()
    opt.step()
    assert (sigma.grad is not None) == moves
    assert (not torch.equal(sigma.detach(), torch.ones(3))) == moves
    assert set(loss_fn.sigmas()) == {"dice", "ce", "focal"}


def test_ua_forward_components_and_total():
    torch.manual_seed(1)
    logits, target = torch.randn(2, 4, 6, 6), torch.randint(0, 4, (2, 6, 6))
    ua = UncertaintyAwareLoss()  # dice, ce, focal; sigma = 1
    total = ua(logits, target)
    c = ua.last_components
    parts = {
        "dice": SoftDiceLoss()(logits, target),
        "ce": CrossEntropyLoss()(logits, target),
        "focal": FocalLoss()(logits, target),
    }
    for k, v in parts.items():
        assert c[k] == pytest.approx(v.item(), rel=1e-6)
    assert total.item() == pytest.approx(0.5 * sum(c.values()) + 3 * math.log(2), rel=1e-6)
    assert ua.sigmas() == {"dice": 1.0, "ce": 1.0, "focal": 1.0}


@pytest.mark.parametrize(
    "n, expected",
    [
        (5, [8 / 15, 4 / 15, 2 / 15, 1 / 15, 0.0]),  # 0.533, 0.267, 0.133, 0.067, 0
        (3, [2 / 3, 1 / 3, 0.0]),
        (1, [1.0]),
    ],
)
def test_deep_supervision_weights(n, expected):
    assert deep_supervision_weights(n) == pytest.approx(expected)


def test_downsample_target_nearest():
    target = torch.arange(16).reshape(1, 4, 4)
    assert downsample_target(target, (2, 2)).tolist() == [[[0, 2], [8, 10]]]
    target3d = torch.arange(2 * 4 * 4).reshape(1, 2, 4, 4)
    assert downsample_target(target3d, (2, 2, 2)).tolist() == [[[[0, 2], [8, 10]], [[16, 18], [24, 26]]]]


def test_deep_supervision_loss_sums_weighted_resolutions():
    torch.manual_seed(2)
    target = torch.randint(0, 4, (2, 8, 8))
    outputs = [torch.randn(2, 4, 8, 8), torch.randn(2, 4, 4, 4), torch.randn(2, 4, 2, 2)]
    ds = DeepSupervisionLoss(DiceCELoss())
    total = ds(outputs, target)
    ref = DiceCELoss()
    full = ref(outputs[0], target)
    full_c = ref.last_components
    half = ref(outputs[1], target[:, ::2, ::2])
    half_c = ref.last_components
    assert total.item() == pytest.approx((2 / 3 * full + 1 / 3 * half).item(), rel=1e-6)
    for k in ("dice", "ce"):
        assert ds.last_components[k] == pytest.approx(2 / 3 * full_c[k] + 1 / 3 * half_c[k], rel=1e-6)
        assert ds.full_resolution_components[k] == pytest.approx(full_c[k], rel=1e-6)
    # a plain tensor is the base loss as is
    assert ds(outputs[0], target).item() == pytest.approx(full.item(), rel=1e-6)


def test_deep_supervision_ua_components_reproduce_total():
    torch.manual_seed(3)
    target = torch.randint(0, 4, (1, 4, 8, 8))
    outputs = [torch.randn(1, 4, 4, 8, 8), torch.randn(1, 4, 2, 4, 4), torch.randn(1, 4, 1, 2, 2)]
    loss_fn = build_loss("ua", deep_supervision_outputs=3)
    with torch.no_grad():
        next(loss_fn.parameters()).copy_(torch.tensor([0.8, 1.3, 2.0]))
    total = loss_fn(outputs, target)
    values = torch.tensor([loss_fn.last_components[k] for k in ("dice", "ce", "focal")])
    assert total.item() == pytest.approx(loss_fn.base.combine(values).item(), rel=1e-6)
    assert [n for n, _ in loss_fn.named_parameters()] == ["base.sigma"]


@pytest.mark.parametrize(
    "name, components",
    [
        ("ce", {"ce"}),
        ("dice_ce", {"dice", "ce"}),
        ("ua", {"dice", "ce", "focal"}),
        ("ua_fixed", {"dice", "ce", "focal"}),
    ],
)
def test_build_loss(name, components):
    torch.manual_seed(4)
    loss_fn = build_loss(name)
    logits, target = torch.randn(2, 4, 4, 4, requires_grad=True), torch.randint(0, 4, (2, 4, 4))
    for outputs in (logits, [logits]):  # a tensor or model.train()'s one-element list
        value = loss_fn(outputs, target)
        assert value.ndim == 0 and torch.isfinite(value)
    value.backward()
    assert logits.grad is not None
    assert set(loss_fn.last_components) == components
    assert bool(loss_fn.sigmas()) == name.startswith("ua")


def test_bad_input_errors():
    with pytest.raises(ValueError, match="unknown loss"):
        build_loss("dice_focal")
    with pytest.raises(ValueError, match="num_classes=4"):
        build_loss("ce")(torch.randn(1, 3, 4, 4), torch.zeros(1, 4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="target shape"):
        CrossEntropyLoss()(torch.randn(1, 4, 4, 4), torch.zeros(1, 4, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="integer"):
        SoftDiceLoss()(torch.randn(1, 4, 4, 4), torch.zeros(1, 4, 4))
    with pytest.raises(ValueError, match="5 outputs"):
        build_loss("ce", deep_supervision_outputs=3)(
            [torch.randn(1, 4, 4, 4)] * 5, torch.zeros(1, 4, 4, dtype=torch.long)
        )
    with pytest.raises(ValueError, match="DeepSupervisionLoss"):
        CrossEntropyLoss()([torch.randn(1, 4, 4, 4)] * 2, torch.zeros(1, 4, 4, dtype=torch.long))


def test_deep_supervision_tensor_input_ignores_fixed_weights():
    # eval-mode logits (a tensor) through a loss built for 5 outputs: the base loss as is
    torch.manual_seed(5)
    logits, target = torch.randn(1, 4, 4, 4), torch.randint(0, 4, (1, 4, 4))
    loss_fn = build_loss("dice_ce", deep_supervision_outputs=5)
    assert loss_fn(logits, target).item() == pytest.approx(DiceCELoss()(logits, target).item(), rel=1e-6)
