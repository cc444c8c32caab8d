"""Profiles: the shipped YAML files load, defaults fill in, bad keys/types/values are clear errors."""

import pytest

from uu.data import DataError
from uu.profiles import KEYS, PARAMS_DIR, ProfileError, dump_profile, load_profile


@pytest.mark.parametrize(
    "name, expected",
    [
        (
            "paper",
            {
                "plan": "3d",
                "lr": 5e-3,
                "epochs": 500,
                "iters_per_epoch": 250,
                "batch_size": 4,
                "loss": "ua",
                "optimizer": "sam",
                "rho": 0.05,
                "momentum": 0.99,
                "nesterov": True,
                "weight_decay": 3e-5,
                "poly_exponent": 0.9,
                "grad_clip": 12.0,
            },
        ),
        ("official_code", {"plan": "3d", "lr": 1e-2, "epochs": 250, "loss": "ua_fixed", "optimizer": "sam"}),
        (
            "budget",
            {
                "plan": "2d",
                "arch": "umamba_enc",
                "loss": "ua",
                "optimizer": "sam",
                "amp": "bf16",
                "max_minutes": 8.0,
                "data_on_gpu": True,
                "patch_size": [256, 224],
                "channels_last": True,
                "norm": "instance_in_layout",
            },
        ),  # 11 % faster: results/performance/h200/layouts
        ("smoke", {"plan": "tiny2d", "device": "cpu"}),
    ],
)
def test_shipped_profiles(name, expected):
    profile = load_profile(name)
    assert profile["name"] == name
    assert set(profile) == set(KEYS)
    for key, value in expected.items():
        assert profile[key] == value, key


def test_defaults_and_overrides(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("name: mine\nepochs: 3\n")
    profile = load_profile(path, overrides=["lr=1e-3", "patch_size=[32, 32]", "max_minutes=null", "amp=off"])
    assert profile["epochs"] == 3 and profile["lr"] == 1e-3 and profile["patch_size"] == [32, 32]
    assert profile["max_minutes"] is None and profile["amp"] == "off"
    assert profile["momentum"] == KEYS["momentum"][1]  # a default
    assert load_profile(path, overrides={"lr": 1})["lr"] == 1.0  # int accepted where a float is expected
    assert load_profile(path, overrides=["compile=reduce-overhead"])["compile"] == "reduce-overhead"
    assert load_profile(path, overrides=["compile=true"])["compile"] is True


@pytest.mark.parametrize(
    "text, overrides, match",
    [
        ("name: x\nepoch: 3\n", None, r"unknown key 'epoch'.*valid keys: name"),
        ("name: x\n", ["batchsize=2"], r"unknown key 'batchsize'"),
        ("name: x\nepochs: 2.5\n", None, r"'epochs' must be int"),
        ("name: x\nepochs: true\n", None, r"'epochs' must be int"),
        ("name: x\naugment: 1\n", None, r"'augment' must be bool"),
        ("name: x\nloss: focal\n", None, r"'loss' must be one of"),
        ("name: x\nepochs: 0\n", None, r"'epochs' = 0: must be at least 1"),
        ("name: x\nplan: 2d\npatch_size: [8, 8, 8]\n", None, r"needs 2 entries"),
        ("name: x\ndevice: gpu\n", None, r"'device'"),
        ("name: x\ncompile: fast\n", None, r"'compile' must be one of .*reduce-overhead"),
        ("epochs: 2\n", None, r"'name' is required"),
        ("- a\n- b\n", None, r"flat mapping"),
        ("name: x\n", ["epochs"], r"key=value"),
    ],
)
def test_bad_profiles_are_clear_errors(tmp_path, text, overrides, match):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ProfileError, match=match) as info:
        load_profile(path, overrides)
    assert isinstance(info.value, DataError)
    assert "bad.yaml" in str(info.value)


def test_unknown_profile_name_lists_known_ones():
    with pytest.raises(ProfileError, match=r"known profiles: \[.*'smoke'"):
        load_profile("smokey")


def test_run_profile_round_trip(tmp_path):
    profile = dict(load_profile("smoke"), data_dir="/data", world_size=1, uu_version="0.1.0")
    path = dump_profile(profile, tmp_path / "profile.yaml")
    back = load_profile(path)  # a run's profile.yaml accepts the run keys
    assert back == profile
    with pytest.raises(ProfileError, match="unknown key 'data_dir'"):
        load_profile(dict(profile))  # but a training profile does not


def test_every_key_is_documented():
    assert all(spec[3] for spec in KEYS.values())
    assert (PARAMS_DIR / "smoke.yaml").is_file()
