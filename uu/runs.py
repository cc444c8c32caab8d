"""Runs: the parts of a training run built from a profile, and what a run folder holds.

    plan = resolve_plan(profile);  model = build_model(profile, plan, device)
    loss = build_loss(profile["loss"]);  optimizer = build_optimizer(model, loss, profile)
    model, profile = load_run_model("runs/b", which="final")      # for prediction, no loss built
    read_log("runs/b")  ->  the log.jsonl lines;  log_table("runs/b")  ->  a flat DataFrame

Weight decay (the authors' code, nnU-Net's SGD over ``network.parameters()``): every network parameter decays,
Mamba's A_log and D included (nnU-Net never reads mamba-ssm's ``_no_weight_decay`` hint); the UA loss' sigma never."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch

from uu.data import NUM_CLASSES, DataError
from uu.device import resolve_device
from uu.losses import build_loss
from uu.net import NORMS, build_network, get_plan
from uu.profiles import load_profile
from uu.sam import SAM


def resolve_plan(profile: dict):
    """uu.net plan of the profile, with its patch_size / deep_supervision overrides applied."""
    plan = get_plan(profile["plan"])
    changes = {"deep_supervision": bool(profile["deep_supervision"])}
    if profile.get("patch_size"):
        changes["patch_size"] = tuple(int(s) for s in profile["patch_size"])
    return dataclasses.replace(plan, **changes)


def build_model(profile: dict, plan=None, device="cpu") -> torch.nn.Module:
    plan = resolve_plan(profile) if plan is None else plan
    options = {key: profile[key] for key in ("mamba_fp32", "checkpoint_mamba", "channels_last")}
    model = build_network(plan, profile["arch"], 1, NUM_CLASSES, norm=NORMS[profile["norm"]], **options)
    return model.to(device)


def build_optimizer(model: torch.nn.Module, loss: torch.nn.Module, profile: dict) -> torch.optim.Optimizer:
    """SGD (or SAM over SGD) over the network (with weight decay) and the loss' sigma (without). fused=True: one
    kernel per step, and a step that a non-finite gradient must skip is skipped on the device (uu.step)."""
    groups = [{"params": [p for p in model.parameters() if p.requires_grad], "weight_decay": profile["weight_decay"]}]
    loss_params = [p for p in loss.parameters() if p.requires_grad]
    if loss_params:
        groups.append({"params": loss_params, "weight_decay": 0.0})
    kwargs = dict(lr=profile["lr"], momentum=profile["momentum"], nesterov=profile["nesterov"], fused=True)
    if profile["optimizer"] == "sam":
        return SAM(groups, torch.optim.SGD, rho=profile["rho"], adaptive=profile["adaptive"], **kwargs)
    return torch.optim.SGD(groups, **kwargs)


def load_checkpoint(path, device="cpu") -> dict:
    return torch.load(path, map_location=device, weights_only=False)  # our own file: holds RNG states


def load_run_model(run_dir, which: str = "final", device="cpu"):
    """(model in eval mode, profile dict) of a run folder; ``which``: final | init | checkpoint."""
    run_dir = Path(run_dir)
    if which not in ("final", "init", "checkpoint"):
        raise ValueError(f"which must be final, init or checkpoint, got {which!r}")
    path = run_dir / f"{which}.pt"
    if not path.is_file():
        raise DataError(
            f"{path} does not exist: is {run_dir} a finished run folder (python -m uu train)? "
            f"Committed GPU results keep no weights: train the run again to get them."
        )
    profile = load_profile(run_dir / "profile.yaml")
    device = resolve_device(device)
    model = build_model(profile, resolve_plan(profile), device)
    state = load_checkpoint(path, device)
    try:
        model.load_state_dict(state["model"])
    except (KeyError, RuntimeError) as err:
        raise DataError(
            f"{path}: its weights do not fit the network of {run_dir / 'profile.yaml'} ({err}); "
            f"was the run made by another version of uu? Train it again."
        ) from None
    return model.eval(), profile


def read_log(run_dir) -> list[dict]:
    """RUN/log.jsonl as a list of dicts, one per epoch ([] when absent)."""
    path = Path(run_dir) / "log.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def log_table(run_dir):
    """RUN/log.jsonl flattened: columns epoch, step, lr, loss, comp_<name>, sigma_<name>, val_<class>, ..."""
    import pandas as pd

    rows = []
    for line in read_log(run_dir):
        row = {k: v for k, v in line.items() if not isinstance(v, dict) and v is not None}
        row.update({f"comp_{k}": v for k, v in (line.get("components") or {}).items()})
        row.update({f"sigma_{k}": v for k, v in (line.get("sigma") or {}).items()})
        row.update({f"val_{k}": v for k, v in (line.get("val") or {}).items()})
        rows.append(row)
    return pd.DataFrame(rows)


__all__ = ["resolve_plan", "build_model", "build_loss", "build_optimizer", "load_checkpoint", "load_run_model"]
__all__ += ["read_log", "log_table"]
