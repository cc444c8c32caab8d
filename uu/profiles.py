"""Training profiles: flat YAML files in ``uu/params/`` (package data) with defaults and validation.

``load_profile("smoke")`` reads ``uu/params/smoke.yaml``; a path to any YAML file works too. Every key but
``name`` is optional (defaults in ``KEYS``); unknown keys and wrong types raise ``ProfileError``, so a typo never
silently falls back to a default. Overrides (``--set key=value`` or a dict) are YAML-parsed and validated alike."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

import yaml

from uu.data.errors import DataError

PARAMS_DIR = Path(__file__).resolve().parent / "params"  # package data: works from an installed wheel


class ProfileError(DataError):
    """A profile file or override is malformed (unknown key, wrong type, bad value)."""


# key: (allowed types, default, allowed values or None, documentation)
# A default of None means "None is allowed" for that key. float keys accept ints.
KEYS: dict[str, tuple[tuple, Any, Optional[tuple], str]] = {
    "name": ((str,), None, None, "profile name (required)"),
    "notes": ((str,), "", None, "free text: what the profile is for"),
    # network
    "plan": ((str,), "2d", ("3d", "2d", "tiny2d", "tiny3d"), "uu.net.get_plan name"),
    "patch_size": ((list,), None, None, "override the plan's patch size, e.g. [256, 224] (2D) or [20, 256, 224]"),
    "arch": (
        (str,),
        "umamba_enc",
        ("umamba_enc", "umamba_bot", "unet", "resunet"),
        "network architecture (resunet: U-Mamba Enc without its Mamba layers)",
    ),
    "deep_supervision": (
        (bool,),
        True,
        None,
        "train on the deep-supervision outputs (else the full-resolution one only)",
    ),
    "mamba_fp32": ((bool,), True, None, "run the Mamba layers in fp32 with autocast off (the authors' setting)"),
    "checkpoint_mamba": ((bool,), False, None, "activation checkpointing of the Mamba layers (saves memory)"),
    "compile": (
        (bool, str),
        False,
        (False, True, "default", "reduce-overhead", "max-autotune-no-cudagraphs"),
        "torch.compile for training (CUDA only): true = mode 'default'; 'reduce-overhead' adds CUDA graphs",
    ),
    "channels_last": (
        (bool,),
        False,
        None,
        "NHWC / NDHWC memory layout (same results); the activations stay in it "
        "only with norm: instance_in_layout (nn.InstanceNorm returns NCHW)",
    ),
    "norm": (
        (str,),
        "instance",
        ("instance", "instance_in_layout"),
        "instance: nn.InstanceNorm (nnU-Net's); "
        "instance_in_layout: the same function, keeping the input's memory layout (uu.net.InstanceNormInLayout)",
    ),
    "cudnn_benchmark": ((bool,), True, None, "let cuDNN time its algorithms for the fixed patch size (CUDA only)"),
    # loss and optimizer
    "loss": ((str,), "ua", ("ce", "dice_ce", "ua", "ua_fixed"), "uu.losses.build_loss name"),
    "optimizer": ((str,), "sam", ("sgd", "sam"), "plain SGD or SAM over SGD"),
    "rho": ((float,), 0.05, None, "SAM neighbourhood radius (Eq. 9)"),
    "adaptive": ((bool,), False, None, "adaptive SAM (ASAM)"),
    "lr": ((float,), 1e-2, None, "initial learning rate"),
    "momentum": ((float,), 0.99, None, "SGD momentum"),
    "nesterov": ((bool,), True, None, "Nesterov momentum"),
    "weight_decay": ((float,), 3e-5, None, "weight decay on the network's parameters (never on the loss' sigma)"),
    "poly_exponent": ((float,), 0.9, None, "poly LR: lr * (1 - progress)^exponent, stepped every iteration"),
    "grad_clip": ((float,), 12.0, None, "gradient-norm clip (0 or less: off)"),
    "amp": (
        (str,),
        "auto",
        ("auto", "bf16", "fp16", "off"),
        "autocast: auto = bf16 on CUDA, off on CPU; fp16 uses a GradScaler",
    ),
    "max_skipped": ((int,), 20, None, "stop after this many consecutive non-finite (skipped) steps"),
    # schedule
    "epochs": ((int,), 250, None, "number of epochs"),
    "iters_per_epoch": ((int,), 250, None, "training iterations per epoch"),
    "max_minutes": ((float,), None, None, "minutes of training steps; the poly LR anneals to 0 by then (None: none)"),
    "val_every": ((int,), 10, None, "validation Dice every N epochs (and after the last); 0: never during training"),
    "val_minutes": ((float,), None, None, "validation every N minutes of training steps instead of val_every epochs"),
    "checkpoint_minutes": (
        (float,),
        10.0,
        None,
        "checkpoint every N minutes of wall-clock (and at the end); 0: every epoch. Written on a background thread",
    ),
    "val_mirror": ((bool,), False, None, "mirroring test-time augmentation during the periodic validation"),
    "max_val_cases": ((int,), 0, None, "use only the first N validation volumes for the periodic validation (0: all)"),
    "eval_mirror": ((bool,), True, None, "mirroring test-time augmentation in the final evaluation (RUN/eval)"),
    "sw_batch_size": ((int,), 8, None, "windows per forward pass in sliding-window inference"),
    "sw_overlap": ((float,), 0.5, None, "overlap of neighbouring sliding windows (nnU-Net: 0.5)"),
    # data
    "batch_size": ((int,), 4, None, "patches per step (per process under DDP)"),
    "foreground_oversample": ((float,), 0.33, None, "fraction of each batch centred on a foreground voxel"),
    "augment": (
        (bool,),
        True,
        None,
        "batched augmentation (rotation, scaling, mirroring, gamma, noise, brightness, contrast)",
    ),
    "data_on_gpu": ((bool,), True, None, "keep the normalised training volumes resident on the training device"),
    "split": (
        (str,),
        "auto",
        ("auto", "nnformer", "kfold", "official"),
        "patient split; auto = nnformer when its validation patients are present, else kfold",
    ),
    "fold": ((int,), 0, None, "fold for the kfold split"),
    "n_folds": ((int,), 5, None, "number of folds for the kfold split"),
    "split_seed": (
        (int,),
        None,
        None,
        "seed of the kfold split's shuffle; null: the run's seed. Cross-validation "
        "fixes it, so that runs of different seeds share one partition of the patients",
    ),
    "phantom_patients": ((int,), 10, None, "patients in the phantom made when no data folder is given"),
    # run
    "seed": ((int,), 0, None, "seed for everything (python, numpy, torch, sampling, augmentation)"),
    "device": ((str,), "auto", None, "auto (cuda when present), cpu, cuda, cuda:N"),
    "progress": ((bool,), True, None, "tqdm bar on a TTY, else one printed line per epoch; false: silent"),
}

# Keys that train_run writes into RUN/profile.yaml; accepted when reading a run's profile back.
RUN_KEYS: dict[str, tuple[tuple, Any, Optional[tuple], str]] = {
    "data_dir": ((str,), "", None, "written by train_run: the data folder the run used"),
    "world_size": ((int,), 1, None, "written by train_run: number of DDP processes"),
    "uu_version": ((str,), "", None, "written by train_run: uu.__version__"),
}

PathLike = Union[str, Path]


def defaults() -> dict:
    """All keys with their default values (``name`` None)."""
    return {key: list(spec[1]) if isinstance(spec[1], list) else spec[1] for key, spec in KEYS.items()}


def resolve_profile_path(name_or_path: PathLike) -> Path:
    """A bare name ("smoke") -> params/smoke.yaml in the repository; anything else is a path."""
    text = str(name_or_path)
    path = Path(text)
    if path.suffix not in (".yaml", ".yml") and "/" not in text and "\\" not in text:
        path = PARAMS_DIR / f"{text}.yaml"
        if not path.is_file():
            known = sorted(p.stem for p in PARAMS_DIR.glob("*.yaml")) if PARAMS_DIR.is_dir() else []
            raise ProfileError(
                f"profile {text!r}: no file {path}; known profiles: {known} (or pass a path to a YAML file)"
            )
        return path
    if not path.is_file():
        raise ProfileError(f"profile file {path} does not exist")
    return path


def parse_overrides(overrides: Union[None, Mapping, Sequence[str]], source: str = "--set") -> dict:
    """``["epochs=2", "lr=1e-3"]`` or a dict -> dict with YAML-parsed values."""
    if overrides is None:
        return {}
    if isinstance(overrides, Mapping):
        return dict(overrides)
    if isinstance(overrides, str):
        overrides = [overrides]
    parsed = {}
    for item in overrides:
        if "=" not in item:
            raise ProfileError(f"{source} {item!r}: expected key=value, e.g. epochs=2")
        key, value = item.split("=", 1)
        try:
            parsed[key.strip()] = yaml.safe_load(value) if value.strip() else ""
        except yaml.YAMLError as err:
            raise ProfileError(f"{source} {item!r}: the value is not valid YAML ({err})") from None
    return parsed


def load_profile(name_or_path: Union[PathLike, Mapping], overrides=None, allow_run_keys: bool = False) -> dict:
    """Read, complete and validate a profile ("smoke", a YAML path or a dict) -> every key of KEYS (+ run keys)."""
    if isinstance(name_or_path, Mapping):
        source, raw = "<dict>", dict(name_or_path)
    else:
        path = resolve_profile_path(name_or_path)
        source = str(path)
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ProfileError(f"profile {source}: not valid YAML ({err})") from None
        if not isinstance(raw, dict):
            raise ProfileError(f"profile {source}: expected a flat mapping of key: value, got {type(raw).__name__}")
        if path.name == "profile.yaml":
            allow_run_keys = True
    specs = {**KEYS, **RUN_KEYS} if allow_run_keys else KEYS
    profile = defaults()
    if allow_run_keys:
        profile.update({key: spec[1] for key, spec in RUN_KEYS.items()})
    profile.update(_validated(raw, specs, source))
    overrides = parse_overrides(overrides, f"profile {source}: override")
    profile.update(_validated(overrides, specs, f"{source} (overrides)"))
    if not profile["name"]:
        raise ProfileError(f"profile {source}: 'name' is required")
    _check_values(profile, source)
    return profile


def dump_profile(profile: Mapping, path: PathLike) -> Path:
    """Write a profile as flat YAML in key order of KEYS (run keys last)."""
    order = list(KEYS) + [k for k in RUN_KEYS if k in profile]
    path = Path(path)
    path.write_text(
        yaml.safe_dump({k: profile[k] for k in order if k in profile}, sort_keys=False, default_flow_style=False)
    )
    return path


def _validated(raw: Mapping, specs: Mapping, source: str) -> dict:
    out = {}
    for key, value in raw.items():
        if key not in specs:
            raise ProfileError(f"profile {source}: unknown key {key!r}; valid keys: {', '.join(specs)}")
        types, default, choices, _ = specs[key]
        if value is None and default is None:
            out[key] = None
            continue
        if isinstance(value, bool) and choices is not None and "off" in choices and value is False:
            value = "off"  # YAML 1.1 reads a bare `off` as false
        if float in types and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if float in types and isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            wanted = " or ".join(t.__name__ for t in types) + (" or null" if default is None else "")
            raise ProfileError(
                f"profile {source}: key {key!r} must be {wanted}, got {value!r} ({type(value).__name__})"
            )
        if choices is not None and value not in choices:
            raise ProfileError(f"profile {source}: key {key!r} must be one of {list(choices)}, got {value!r}")
        out[key] = value
    return out


def _check_values(p: dict, source: str) -> None:
    def bad(key, why):
        raise ProfileError(f"profile {source}: key {key!r} = {p[key]!r}: {why}")

    counts = ("epochs", "iters_per_epoch", "batch_size", "sw_batch_size", "n_folds", "max_skipped", "phantom_patients")
    rules = [
        (counts, lambda v: v < 1, "must be at least 1"),
        (("val_every", "max_val_cases", "fold"), lambda v: v < 0, "must be 0 or more"),
        (("lr", "rho"), lambda v: v <= 0, "must be positive"),
        (("sw_overlap",), lambda v: not 0.0 <= v < 1.0, "must be within [0, 1)"),
        (("foreground_oversample",), lambda v: not 0.0 <= v <= 1.0, "must be within [0, 1]"),
        (("max_minutes", "val_minutes"), lambda v: v is not None and v <= 0, "must be positive or null"),
        (("checkpoint_minutes",), lambda v: v < 0, "must be 0 (every epoch) or more"),
    ]
    for keys, wrong, why in rules:
        for key in keys:
            if wrong(p[key]):
                bad(key, why)
    if p["patch_size"] is not None:
        ps = p["patch_size"]
        if len(ps) not in (2, 3) or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in ps):
            bad("patch_size", "must be a list of 2 (2D) or 3 (3D) positive ints")
        dims = 3 if p["plan"] in ("3d", "tiny3d") else 2
        if len(ps) != dims:
            bad("patch_size", f"plan {p['plan']!r} is {dims}D, so patch_size needs {dims} entries")
    dev = p["device"]
    if not (dev in ("auto", "cpu", "cuda") or (dev.startswith("cuda:") and dev[5:].isdigit())):
        bad("device", "must be auto, cpu, cuda or cuda:N")
    if p["fold"] >= p["n_folds"]:
        bad("fold", f"must be below n_folds ({p['n_folds']})")
