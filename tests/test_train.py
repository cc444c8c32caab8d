"""Training: patch sampler, batched augmentation, fit() (log, checkpoints, exact resume, pausing, skipping), the
optimizer's groups, and one end-to-end train_run on the phantom (smoke profile, tiny2d)."""

import json
import math
import types

import numpy as np
import pytest
import torch
import torch.nn as nn
from helpers import TinyNet, batches, make_parts, settings, tiny_cases, validator

from uu.augment import AugmentConfig, Augmenter
from uu.loop import TrainingDiverged, fit, poly_lr
from uu.runs import build_optimizer, load_run_model, read_log
from uu.sampling import PatchSampler, crop_start, forced_foreground

# --------------------------------------------------------------------------------------------- sampler


@pytest.mark.parametrize(
    "batch, fraction, expected",
    [
        (2, 0.33, [False, True]),  # round(2 * 0.67) = 1
        (3, 0.33, [False, False, True]),  # round(2.01) = 2
        (4, 0.33, [False, False, False, True]),  # round(2.68) = 3
        (6, 0.33, [False] * 4 + [True] * 2),  # round(4.02) = 4
        (4, 0.0, [False] * 4),
        (4, 1.0, [True] * 4),
    ],
)
def test_forced_foreground_rule(batch, fraction, expected):
    assert forced_foreground(batch, fraction).tolist() == expected


@pytest.mark.parametrize(
    "centre, dim, size, start",
    [
        (10, 20, 8, 6),  # centred
        (1, 20, 8, 0),  # clipped at the start
        (19, 20, 8, 12),  # clipped at the end: 20 - 8
        (2, 5, 8, -2),  # volume smaller than the patch: centred, within [-3, 0]
        (0, 5, 8, -3),  # ... and clipped to cover the whole volume
    ],
)
def test_crop_start(centre, dim, size, start):
    assert crop_start(centre, dim, size) == start


def test_foreground_samples_are_centred_on_the_only_foreground_voxel():
    label = np.zeros((3, 20, 20), np.uint8)
    label[1, 10, 12] = 2
    image = np.arange(3 * 20 * 20, dtype=np.float32).reshape(3, 20, 20)
    sampler = PatchSampler([image], [label], (8, 8), batch_size=3, foreground_fraction=0.33, seed=0)
    for _ in range(5):
        draws = sampler.draw()
        assert [forced for _, _, forced in draws] == [False, False, True]
        assert draws[2][1] == (1, 6, 8)  # slice 1, (10 - 4, 12 - 4)
    images, labels = sampler.sample()
    assert images.shape == (3, 1, 8, 8) and labels.shape == (3, 8, 8) and labels.dtype == torch.int64
    assert labels[2, 4, 4] == 2 and labels[2].sum() == 2
    assert images[2, 0, 4, 4] == image[1, 10, 12]


def test_foreground_fraction_over_many_batches():
    cases = tiny_cases(2)
    sampler = PatchSampler([c.image for c in cases], [c.label for c in cases], (4, 4), batch_size=6, seed=1)
    centre_fg = []
    for _ in range(50):
        _, labels = sampler.sample()
        centre_fg.append((labels[:, 2, 2] > 0).numpy())
    centre_fg = np.array(centre_fg)
    assert centre_fg[:, 4:].all()  # the forced third: always foreground at the centre
    # uniform samples hit the 10 x 10 foreground square of a 20 x 18 slice about 30% of the time (not always)
    assert 0.1 < centre_fg[:, :4].mean() < 0.6


def test_padding_when_the_volume_is_smaller_than_the_patch():
    image = np.ones((2, 5, 6), np.float32)
    label = np.full((2, 5, 6), 3, np.uint8)
    for patch in [(8, 8), (4, 8, 8)]:
        sampler = PatchSampler([image], [label], patch, batch_size=2, foreground_fraction=0.0, seed=0)
        images, labels = sampler.sample()
        per_sample = 30 if len(patch) == 2 else 60  # one 5 x 6 slice, or the whole 2 x 5 x 6 volume
        assert images.shape == (2, 1) + patch
        assert images.sum().item() == 2 * per_sample and (labels == 3).sum().item() == 2 * per_sample


def test_sampler_is_deterministic_and_resumable():
    cases = tiny_cases(3)
    args = ([c.image for c in cases], [c.label for c in cases], (2, 8, 8), 4)
    a, b = PatchSampler(*args, seed=5), PatchSampler(*args, seed=5)
    a.sample()
    b.load_state_dict(a.state_dict())
    assert torch.equal(a.sample()[0], b.sample()[0])


# --------------------------------------------------------------------------------------------- augmentation


def test_augmentation_off_is_the_identity():
    x, y = torch.randn(4, 1, 12, 10), torch.randint(0, 4, (4, 12, 10))
    ax, ay = Augmenter(2, AugmentConfig.off(), seed=0)(x, y)
    assert torch.equal(ax, x) and torch.equal(ay, y)


@pytest.mark.parametrize("shape", [(5, 1, 16, 12), (3, 1, 4, 16, 12)])
def test_every_transform_keeps_shapes_and_the_label_set(shape):
    everything = AugmentConfig(
        p_rotation=1, p_scale=1, p_noise=1, p_brightness=1, p_contrast=1, p_gamma=1, p_gamma_inverted=1, p_mirror=1
    )
    x = torch.randn(shape)
    y = torch.randint(0, 4, (shape[0],) + shape[2:])
    y[:, ...] = torch.where(y == 2, torch.tensor(3), y)  # label set {0, 1, 3}: 2 must not appear
    ax, ay = Augmenter(len(shape) - 2, everything, seed=0)(x, y)
    assert ax.shape == x.shape and ay.shape == y.shape and ay.dtype == y.dtype and ax.dtype == x.dtype
    assert set(ay.unique().tolist()) <= {0, 1, 3}
    assert torch.isfinite(ax).all() and not torch.equal(ax, x)


def test_rotation_geometry_by_hand():
    aug = Augmenter(2, seed=0)
    img = torch.arange(16.0).view(1, 1, 4, 4)
    theta = aug._affine(torch.tensor([math.pi / 2]), torch.tensor([1.0]), (4, 4))
    grid = torch.nn.functional.affine_grid(theta, (1, 1, 4, 4), align_corners=False)
    out = torch.nn.functional.grid_sample(img, grid, mode="nearest", align_corners=False)
    assert torch.equal(out, torch.rot90(img, 1, dims=(2, 3)))  # out[i, j] = in[j, 3 - i]
    # 180 degrees on a non-square patch is a flip of both axes (the aspect ratio is respected)
    img = torch.arange(24.0).view(1, 1, 4, 6)
    theta = aug._affine(torch.tensor([math.pi]), torch.tensor([1.0]), (4, 6))
    grid = torch.nn.functional.affine_grid(theta, (1, 1, 4, 6), align_corners=False)
    out = torch.nn.functional.grid_sample(img, grid, mode="nearest", align_corners=False)
    assert torch.equal(out, img.flip(2, 3))


def test_augmentation_is_deterministic_for_a_seed():
    x, y = torch.randn(6, 1, 16, 16), torch.randint(0, 4, (6, 16, 16))
    a, b = Augmenter(2, seed=3), Augmenter(2, seed=3)
    out_a, out_b = a(x, y), b(x, y)
    assert torch.equal(out_a[0], out_b[0]) and torch.equal(out_a[1], out_b[1])
    state = a.state_dict()
    again = a(x, y)
    a.load_state_dict(state)
    assert torch.equal(a(x, y)[0], again[0])


# --------------------------------------------------------------------------------------------- fit


class FakeClock:
    """time.perf_counter stand-in: every call advances `tick` seconds, so the time-driven schedule is exact."""

    def __init__(self, tick=0.25):
        self.now, self.tick = 0.0, tick

    def __call__(self):
        self.now += self.tick
        return self.now


def test_weight_decay_on_every_network_parameter_never_on_sigma():
    # the authors' code (nnU-Net): SGD(weight_decay=3e-5) over network.parameters(), Mamba's A_log and D included
    from uu.runs import build_model

    profile = settings(optimizer="sgd", arch="umamba_enc")
    model = build_model(profile)
    from uu.losses import build_loss

    loss = build_loss("ua")
    opt = build_optimizer(model, loss, profile)
    assert [g["weight_decay"] for g in opt.param_groups] == [3e-5, 0.0]
    decayed = {id(p) for p in opt.param_groups[0]["params"]}
    assert decayed == {id(p) for p in model.parameters()}  # A_log, D and the norms too
    assert any(name.endswith("A_log") for name, p in model.named_parameters() if id(p) in decayed)
    assert opt.param_groups[1]["params"] == [loss.base.sigma]
    assert opt.param_groups[0]["momentum"] == 0.99 and opt.param_groups[0]["nesterov"]


@pytest.mark.parametrize("norm, kind", [("instance", torch.nn.InstanceNorm2d), ("instance_in_layout", None)])
def test_profile_norm_selects_the_norm_layer(norm, kind):
    from uu.net import InstanceNormInLayout
    from uu.runs import build_model

    model = build_model(settings(arch="unet", norm=norm, channels_last=True))
    kind = kind or InstanceNormInLayout
    norms = [m for m in model.modules() if isinstance(m, (torch.nn.InstanceNorm2d, InstanceNormInLayout))]
    assert norms and all(type(m) is kind for m in norms)


@pytest.mark.parametrize(
    "base, progress, exponent, expected",
    [
        (1.0, 0.0, 0.9, 1.0),
        (1.0, 1.0, 0.9, 0.0),
        (1.0, 0.5, 0.9, 0.5**0.9),
        (0.01, 0.75, 1.0, 0.0025),
        (2.0, 1.5, 0.9, 0.0),
    ],
)
def test_poly_lr(base, progress, exponent, expected):
    assert poly_lr(base, progress, exponent) == pytest.approx(expected)


def test_fit_writes_the_run_folder(tmp_path):
    model, loss, opt = make_parts()
    cases = tiny_cases(3)
    profile = settings()
    result = fit(
        model, loss, opt, batches(cases[:2]), profile, run_dir=tmp_path, validate=validator(cases[2:], profile)
    )
    for name in ("init.pt", "final.pt", "checkpoint.pt", "log.jsonl"):
        assert (tmp_path / name).is_file(), name
    log = read_log(tmp_path)
    assert [line["epoch"] for line in log] == [1, 2] and [line["step"] for line in log] == [2, 4]
    # lr at the last step of each epoch: progress 1/4 and 3/4
    assert log[0]["lr"] == pytest.approx(0.05 * 0.75**0.9) and log[1]["lr"] == pytest.approx(0.05 * 0.25**0.9)
    assert set(log[0]["components"]) == {"dice", "ce", "focal"} and set(log[0]["sigma"]) == {"dice", "ce", "focal"}
    assert set(log[1]["val"]) == {"RV", "Myo", "LV", "mean"}
    for key in ("loss", "skipped_steps", "seconds", "wall", "train_seconds", "checkpoint_seconds"):
        assert key in log[0]
    assert result.steps == 4 and result.stopped_by == "epochs" and result.skipped_total == 0
    assert result.sigma_first == {"dice": 1.0, "ce": 1.0, "focal": 1.0} and result.sigma_last != result.sigma_first
    init = torch.load(tmp_path / "init.pt", weights_only=False)["model"]
    final = torch.load(tmp_path / "final.pt", weights_only=False)["model"]
    assert not torch.equal(init["conv.weight"], final["conv.weight"])
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=False)["finished"]
    assert not (tmp_path / "checkpoint.pt.tmp").exists()


class Interrupt(Exception):
    pass


class StopAfter:
    """Wraps batches; raises Interrupt when asked for batch number n + 1 (a kill mid-run)."""

    def __init__(self, inner, n):
        self.inner, self.n, self.count = inner, n, 0

    def sample(self):
        if self.count == self.n:
            raise Interrupt
        self.count += 1
        return self.inner.sample()

    def state_dict(self):
        return self.inner.state_dict()

    def load_state_dict(self, state):
        self.inner.load_state_dict(state)


def test_a_killed_budget_like_run_resumes_the_same_time_driven_schedule(tmp_path):
    # budget-like: the LR anneals on training seconds (max_minutes), validation every few training seconds,
    # checkpoints on a (wall-clock) interval; a fake clock makes the seconds exact. Killed mid-run, resumed from
    # the last checkpoint with fresh parts: the same LR, losses and final weights as the uninterrupted run.
    cases = tiny_cases(3)
    profile = settings(
        epochs=20,
        iters_per_epoch=3,
        max_minutes=8.0 / 60,
        val_every=0,
        val_minutes=2.0 / 60,
        checkpoint_minutes=0.9 / 60,
    )
    model, loss, opt = make_parts(seed=0)
    a = fit(
        model,
        loss,
        opt,
        batches(cases[:2]),
        profile,
        run_dir=tmp_path / "a",
        clock=FakeClock(),
        validate=validator(cases[2:], profile),
    )
    assert a.stopped_by == "time" and 3 < a.steps < 60  # the time budget, not the epochs, ended it

    model, loss, opt = make_parts(seed=0)
    with pytest.raises(Interrupt):  # killed in epoch 4, after a checkpoint
        fit(
            model,
            loss,
            opt,
            StopAfter(batches(cases[:2]), 10),
            profile,
            run_dir=tmp_path / "b",
            clock=FakeClock(),
            validate=validator(cases[2:], profile),
        )
    killed_at = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=False)["epoch"]
    assert 0 < killed_at < 4
    torch.rand(5)  # disturb the global RNG: resume must restore it
    model, loss, opt = make_parts(seed=123)  # fresh parts with other weights: everything comes from the checkpoint
    b = fit(
        model,
        loss,
        opt,
        batches(cases[:2], seed=99),
        profile,
        run_dir=tmp_path / "b",
        resume=True,
        clock=FakeClock(),
        validate=validator(cases[2:], profile),
    )
    assert b.steps == a.steps and b.train_seconds == a.train_seconds
    wa = torch.load(tmp_path / "a" / "final.pt", weights_only=False)
    wb = torch.load(tmp_path / "b" / "final.pt", weights_only=False)
    for key in wa["model"]:
        assert torch.equal(wa["model"][key], wb["model"][key]), key
    assert torch.equal(wa["loss"]["base.sigma"], wb["loss"]["base.sigma"])
    log_a, log_b = read_log(tmp_path / "a"), read_log(tmp_path / "b")
    assert [line["epoch"] for line in log_b] == list(range(1, len(log_a) + 1))
    for key in ("lr", "loss", "step", "train_seconds", "val"):
        assert [line[key] for line in log_b] == [line[key] for line in log_a], key
    assert sum(line["val"] is not None for line in log_a) >= 3  # validated on the training-time cadence


def test_a_run_paused_at_stop_at_resumes_to_the_uninterrupted_run(tmp_path, monkeypatch):
    # stop_at is compared with time.time(): a fake one that follows the fake clock makes the pause exact. The run
    # pauses before an epoch that would end after stop_at, with a checkpoint (checkpoint_minutes would never
    # write one) and no final.pt; resumed without a deadline it ends as the run that never paused.
    cases = tiny_cases(3)
    profile = settings(epochs=10, iters_per_epoch=3, val_every=2, checkpoint_minutes=100.0)

    def run(name, tick=0.25, **options):
        clock = FakeClock(tick)
        monkeypatch.setattr("uu.loop.time", types.SimpleNamespace(time=lambda: 1000.0 + clock.now))
        seed = 123 if options.get("resume") else 0  # a resume takes everything from the checkpoint
        model, loss, opt = make_parts(seed=seed)
        return fit(
            model,
            loss,
            opt,
            batches(cases[:2], seed=seed),
            profile,
            run_dir=tmp_path / name,
            clock=clock,
            validate=validator(cases[2:], profile),
            **options,
        )

    a = run("a")
    paused = run("b", stop_at=1012.0)
    assert paused.stopped_by == "paused" and 0 < paused.epochs < 10
    assert not (tmp_path / "b" / "final.pt").exists()
    ckpt = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=False)
    assert ckpt["epoch"] == paused.epochs and not ckpt["finished"]
    assert len(read_log(tmp_path / "b")) == paused.epochs and paused.log[-1]["checkpoint_seconds"] > 0
    b = run("b", resume=True)
    assert b.stopped_by == "epochs" and b.steps == a.steps == 30 and (tmp_path / "b" / "final.pt").is_file()
    wa = torch.load(tmp_path / "a" / "final.pt", weights_only=False)
    wb = torch.load(tmp_path / "b" / "final.pt", weights_only=False)
    for key in wa["model"]:
        assert torch.equal(wa["model"][key], wb["model"][key]), key
    assert torch.equal(wa["loss"]["base.sigma"], wb["loss"]["base.sigma"])
    log_a, log_b = read_log(tmp_path / "a"), read_log(tmp_path / "b")
    assert [line["epoch"] for line in log_b] == list(range(1, 11))
    for key in ("lr", "loss", "step", "train_seconds", "val"):
        assert [line[key] for line in log_b] == [line[key] for line in log_a], key
    # resumed on a slower machine: the rate reported is the whole run's, not the resumed part's
    run("c", stop_at=1012.0)
    c = run("c", tick=1.0, resume=True)
    assert c.train_seconds > a.train_seconds and c.it_per_s == pytest.approx(30 / c.train_seconds)


def test_a_deadline_already_past_still_trains_one_epoch(tmp_path):
    # the pause is decided at an epoch's end, so a run never stops without progress to checkpoint
    model, loss, opt = make_parts()
    result = fit(
        model, loss, opt, batches(tiny_cases(2)), settings(epochs=5, val_every=0), run_dir=tmp_path, stop_at=0.0
    )
    assert result.stopped_by == "paused" and result.epochs == 1 and result.steps == 2
    assert (tmp_path / "checkpoint.pt").is_file() and not (tmp_path / "final.pt").exists()


class NanLoss(nn.Module):
    components = {}

    def forward(self, outputs, target):
        return outputs[0].sum() * float("nan")

    def sigmas(self):
        return {}


def test_a_run_of_non_finite_steps_stops_with_a_clear_message(tmp_path):
    torch.manual_seed(0)
    model = TinyNet()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.SGD(model.parameters(), lr=0.1, fused=True)
    with pytest.raises(TrainingDiverged, match="4 consecutive non-finite steps"):  # checked once per epoch
        fit(model, NanLoss(), opt, batches(tiny_cases(2)), settings(max_skipped=3, val_every=0), run_dir=tmp_path)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])


def test_time_limit_stops_the_run(tmp_path):
    model, loss, opt = make_parts(optimizer="sgd", loss_name="dice_ce")
    result = fit(model, loss, opt, batches(tiny_cases(2)), settings(max_minutes=1e-9, val_every=0), run_dir=tmp_path)
    assert result.stopped_by == "time" and result.steps == 0
    assert (tmp_path / "final.pt").is_file()


# --------------------------------------------------------------------------------------------- train_run


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    from uu.train import train_run

    out = tmp_path_factory.mktemp("smoke") / "run"
    return train_run("smoke", "", out, overrides={"epochs": 2, "iters_per_epoch": 2, "progress": False})


@pytest.mark.slow
def test_train_run_on_the_phantom_writes_everything(smoke_run):
    run = smoke_run
    for name in (
        "profile.yaml",
        "split.json",
        "log.jsonl",
        "checkpoint.pt",
        "init.pt",
        "final.pt",
        "eval/per_case.csv",
        "eval/summary.json",
        "eval/pred/predictions.json",
    ):
        assert (run / name).is_file(), name
    split = json.loads((run / "split.json").read_text())
    assert not set(split["train"]) & set(split["val"])
    summary = json.loads((run / "eval" / "summary.json").read_text())
    assert 0.0 <= summary["dice_mean"] <= 1.0 and summary["hd95_unit"] == "mm"
    assert summary["skipped_steps"] == 0 and summary["training"]["it_per_s"] > 0
    assert 0 < summary["training"]["train_fraction"] <= 1
    assert set(summary["sigma_first"]) == {"dice", "ce", "focal"}
    assert len(read_log(run)) == 2


@pytest.mark.slow
def test_a_finished_run_refuses_a_fresh_start_and_loads(smoke_run):
    from uu.data import DataError
    from uu.train import train_run

    with pytest.raises(DataError, match="resume"):
        train_run("smoke", "", smoke_run)
    model, profile = load_run_model(smoke_run, "final")
    assert profile["name"] == "smoke" and not model.training


@pytest.mark.slow
def test_cli_predict_and_evaluate(smoke_run, tmp_path):
    import pandas as pd

    from uu.__main__ import main

    data = smoke_run / "phantom"
    assert (
        main(["predict", "--run", str(smoke_run), "--data", str(data), "--out", str(tmp_path / "pred"), "--no-mirror"])
        == 0
    )
    assert (
        main(["evaluate", "--pred", str(tmp_path / "pred"), "--data", str(data), "--out", str(tmp_path / "rep")]) == 0
    )
    table = pd.read_csv(tmp_path / "rep" / "per_case.csv")
    split = json.loads((smoke_run / "split.json").read_text())
    assert sorted(set(table["patient"])) == split["val"]
