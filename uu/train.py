"""One whole training run: ``train_run(profile, data_dir, out_dir)`` and ``python -m uu train``.

The data (a phantom in OUT/phantom when data_dir is ""), the split, the parts built from the profile (uu.runs),
``uu.loop.fit`` with the periodic validation Dice, then the final model's predictions on the validation split scored
into RUN/eval/ (the run folder: DEVELOPERS.md). Under torchrun rank 0 writes, validates and evaluates."""

from __future__ import annotations

import json
import os
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

import uu
from uu.data import CLASSES, LABELS, DataError, choose_split, ensure_phantom, load_acdc
from uu.device import barrier, seed_everything, setup_distributed, world
from uu.evaluate import evaluate_predictions
from uu.infer import predict_cases, predict_volume, window_options
from uu.loop import FitResult, fit
from uu.metrics import dice_per_class
from uu.profiles import dump_profile, load_profile
from uu.runs import build_loss, build_model, build_optimizer, resolve_plan
from uu.sampling import TrainBatches
from uu.step import unwrap


def validation_dice(model, cases, plan, device, profile: dict) -> dict:
    """Mean Dice per class over the volumes (sliding window, the profile's val_mirror): {RV, Myo, LV, mean}.
    cuDNN's autotuning is off meanwhile: the windows' batch shapes vary per volume, and tuning each is slow."""
    per_class, options = defaultdict(list), window_options(profile, device)
    tuning, torch.backends.cudnn.benchmark = torch.backends.cudnn.benchmark, False
    try:
        for case in cases:
            probs = predict_volume(model, case.image, plan, profile["val_mirror"], **options)
            for name, d in zip(CLASSES, dice_per_class(probs.argmax(0), case.label, tuple(LABELS.values())).values()):
                per_class[name].append(d)
    finally:
        torch.backends.cudnn.benchmark = tuning
    out = {name: float(np.mean(per_class[name])) for name in CLASSES}
    out["mean"] = float(np.mean([out[n] for n in CLASSES]))
    return out


def train_run(
    profile, data_dir="", out_dir="runs/run", overrides=None, resume: bool = False, stop_at: float | None = None
) -> Path:
    """Everything for one run (see the module docstring). ``profile``: a name ("smoke"), a YAML path or a dict;
    ``overrides``: dict or ["key=value", ...]; ``stop_at`` (Unix seconds): pause with a checkpoint before an
    epoch that would end after it (no evaluation then; ``resume=True`` finishes the run). Returns the run folder."""
    profile = load_profile(profile, overrides)
    run_dir = Path(out_dir)
    device, initialised_here = setup_distributed(profile["device"])
    rank, n_ranks = world()
    try:
        if not resume and (run_dir / "checkpoint.pt").exists():
            raise DataError(
                f"{run_dir} already holds a run (checkpoint.pt); pass resume=True (--resume) to "
                f"continue it, or choose another output folder"
            )
        if rank == 0:
            run_dir.mkdir(parents=True, exist_ok=True)
        if not data_dir:
            data_dir = run_dir / "phantom"
            if rank == 0:
                ensure_phantom(data_dir, profile["phantom_patients"])
            barrier()
        cases = load_acdc(data_dir, lazy=True)
        split_seed = profile["seed"] if profile["split_seed"] is None else profile["split_seed"]
        scheme, split = choose_split(cases, profile["split"], profile["fold"], profile["n_folds"], split_seed)
        seed_everything(profile["seed"])
        resolved = dict(
            profile, split=scheme, data_dir=str(Path(data_dir).resolve()), world_size=n_ranks, uu_version=uu.__version__
        )
        if rank == 0:
            dump_profile(resolved, run_dir / "profile.yaml")
            (run_dir / "split.json").write_text(json.dumps(split, indent=1))
        plan = resolve_plan(profile)
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = profile["cudnn_benchmark"]
        model = build_model(profile, plan, device)
        loss = build_loss(profile["loss"]).to(device)
        optimizer = build_optimizer(model, loss, profile)
        train_cases = [c for c in cases if c.patient in set(split["train"])]
        val_cases = [c for c in cases if c.patient in set(split["val"])]
        data_device = device if profile["data_on_gpu"] else torch.device("cpu")
        batches = TrainBatches.from_cases(
            train_cases,
            plan.patch_size,
            profile["batch_size"],
            profile["foreground_oversample"],
            profile["augment"],
            device=data_device,
            seed=profile["seed"] + 1000 * rank,
        )
        shown = val_cases[: profile["max_val_cases"]] if profile["max_val_cases"] else val_cases
        validate = lambda m: validation_dice(m, shown, plan, device, profile)
        options = dict(run_dir=run_dir, device=device, resume=resume, validate=validate, stop_at=stop_at)
        result = fit(model, loss, optimizer, batches, profile, **options)
        if rank == 0 and result.stopped_by != "paused":
            evaluate_run(run_dir, model, plan, val_cases, profile, device, result, scheme)
        barrier()
    finally:
        if initialised_here:
            torch.distributed.destroy_process_group()
    return run_dir


def evaluate_run(run_dir, model, plan, val_cases, profile, device, result: FitResult, scheme: str) -> dict:
    """Predict the validation cases with the final model into RUN/eval/pred and score them into RUN/eval/
    (per_case.csv, summary.json with the training record, the clinical tables). Returns the summary."""
    eval_dir = Path(run_dir) / "eval"
    progress = profile["progress"] and sys.stderr.isatty()
    options = dict(mirror=profile["eval_mirror"], progress=progress, **window_options(profile, device))
    pred_dir = predict_cases(unwrap(model), val_cases, plan, eval_dir / "pred", **options)
    training = {k: getattr(result, k) for k in ("steps", "epochs", "stopped_by", "it_per_s", "train_seconds")}
    training["wall_seconds"] = result.wall_seconds
    training["train_fraction"] = result.train_seconds / max(result.wall_seconds, 1e-9)
    training |= {"peak_memory_mb": result.peak_memory_mb, "peak_memory_kind": result.peak_memory_kind}
    training["device"] = str(device)
    context = {"profile": profile["name"], "split": scheme, "eval_mirror": profile["eval_mirror"], "training": training}
    context |= dict(skipped_steps=result.skipped_total, sigma_first=result.sigma_first, sigma_last=result.sigma_last)
    return evaluate_predictions(pred_dir, val_cases, eval_dir, progress=False, context=context)[1]


def cli_train(args) -> int:
    """``python -m uu train --params P [--data D] --out RUN [--resume] [--set key=value ...]``."""
    run_dir = train_run(
        args.params, data_dir=args.data, out_dir=args.out, overrides=args.set, resume=args.resume, stop_at=args.stop_at
    )
    if not (run_dir / "eval" / "summary.json").is_file():
        print(f"run folder: {run_dir}: paused before --stop-at with a checkpoint; add --resume to finish it")
        return 0
    if int(os.environ.get("RANK", "0")) == 0:  # the process group is gone by now
        summary = json.loads((run_dir / "eval" / "summary.json").read_text())
        t = summary["training"]
        print(f"run folder: {run_dir}")
        print(
            f"validation Dice RV {summary['dice']['RV']:.4f}  Myo {summary['dice']['Myo']:.4f}  "
            f"LV {summary['dice']['LV']:.4f}  mean {summary['dice_mean']:.4f}  MSE {summary['mse']:.5f}"
        )
        print(
            f"{t['steps']} iterations, {t['train_seconds']:.0f} s in training steps of {t['wall_seconds']:.0f} s "
            f"({100 * t['train_fraction']:.1f} %), {t['it_per_s']:.2f} it/s"
        )
    return 0
