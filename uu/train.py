"""Training: ``fit()`` (the loop), checkpoints and resume, DDP, and ``train_run()`` (one whole run).

The parts are arguments: ``fit(model, loss, optimizer, train_data, val_data, cfg)`` trains whatever
network, loss and optimizer it is given with ``uu.step.train_step`` (plain or SAM, autocast,
GradScaler, non-finite steps skipped). ``train_run(profile, data_dir, out_dir)`` builds those parts
from a profile (``params/*.yaml``, see uu/profiles.py), trains, and evaluates on the validation
split. It writes the run folder described in DEVELOPERS.md:

    RUN/profile.yaml  split.json  log.jsonl  checkpoint.pt  init.pt  final.pt  eval/

Schedule. Poly LR ``lr0 * (1 - progress)^0.9`` stepped every iteration (the authors' code steps it
per epoch) with ``progress = max(step / total_steps, elapsed / max_seconds)``, so a run limited by
wall-clock time still anneals to zero when the time is up. SGD momentum 0.99 Nesterov; weight
decay on the network's parameters only (never on the loss' sigma); gradient clipping at 12.

Resume. Every epoch ends with an atomic checkpoint (temp file + os.replace) holding the model, the
optimizer, the GradScaler, the loss (sigma), the sampler's and augmenter's random streams and the
python/numpy/torch/CUDA RNG states; ``resume=True`` continues bit-exactly on the same device type.

DDP. Under torchrun (WORLD_SIZE > 1) ``train_run`` initialises the process group (nccl on CUDA, gloo
on CPU) and ``fit`` wraps the model, and the loss when it has parameters (sigma), in
DistributedDataParallel so that sigma's gradient is averaged over ranks too. Each rank samples its
own patches (seed + 1000 * rank); ``batch_size`` is per process. Only rank 0 writes the log,
checkpoints and the evaluation; checkpoints hold the unwrapped model (they load in one process).
SAM under DDP: both passes run with gradient synchronisation (no ``no_sync`` on the first pass), so
every rank perturbs the weights with the same, globally averaged gradient: exactly single-process
SAM on the global batch, at the cost of one extra all-reduce per step. (``no_sync`` on the first
pass would save that all-reduce but give each rank its own perturbation, i.e. "m-sharpness" SAM.)
``find_unused_parameters=True`` because the deep-supervision loss skips the lowest-resolution head
(weight 0). The wall-clock used for the LR is rank 0's, broadcast every step, so all ranks agree.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import resource
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch

from uu.device import barrier as _barrier, resolve_amp, resolve_device, seed_everything, setup_distributed
from uu.device import world as _world
from uu.profiles import dump_profile, load_profile
from uu.runs import build_model, build_optimizer, load_checkpoint, load_run_model, read_log, resolve_plan  # noqa: F401
from uu.step import compile_model, train_step, unwrap


class TrainingDiverged(RuntimeError):
    """Too many consecutive non-finite steps."""


# ---------------------------------------------------------------------------------------------
# schedule

def poly_lr(base_lr: float, progress: float, exponent: float = 0.9) -> float:
    """lr0 * (1 - progress)^exponent, progress clipped to [0, 1]."""
    return base_lr * (1.0 - min(max(progress, 0.0), 1.0)) ** exponent


# ---------------------------------------------------------------------------------------------
# training data: resident volumes -> patches -> augmentation

class TrainBatches:
    """Batches for fit(): a PatchSampler (volumes in memory on ``device``) + an Augmenter on the same
    device. ``sample()`` -> images (B, 1, *patch) float32, labels (B, *patch) int64."""

    def __init__(self, sampler, augmenter=None):
        self.sampler, self.augmenter = sampler, augmenter

    @classmethod
    def from_cases(cls, cases, patch_size, batch_size: int, foreground_fraction: float = 0.33,
                   augment: bool = True, device="cpu", seed: int = 0):
        from uu.augment import Augmenter
        from uu.data import normalize_intensity
        from uu.sampling import PatchSampler

        images = [normalize_intensity(c.image) for c in cases]
        labels = [c.label for c in cases]
        sampler = PatchSampler(images, labels, patch_size, batch_size, foreground_fraction, device=device, seed=seed)
        augmenter = Augmenter(len(patch_size), seed=seed + 1, device=device) if augment else None
        return cls(sampler, augmenter)

    def sample(self):
        images, labels = self.sampler.sample()
        if self.augmenter is not None:
            images, labels = self.augmenter(images, labels)
        return images, labels

    def to(self, device):
        return self

    def state_dict(self) -> dict:
        return {"sampler": self.sampler.state_dict(),
                "augmenter": None if self.augmenter is None else self.augmenter.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.sampler.load_state_dict(state["sampler"])
        if self.augmenter is not None and state.get("augmenter") is not None:
            self.augmenter.load_state_dict(state["augmenter"])


# ---------------------------------------------------------------------------------------------
# checkpoints and RNG

def rng_states() -> dict:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def set_rng_states(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def atomic_save(obj: Any, path) -> Path:
    """torch.save to PATH.tmp, then os.replace: a kill never leaves a half-written file at PATH."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)
    return path


# ---------------------------------------------------------------------------------------------
# fit

@dataclass
class FitConfig:
    """What fit() needs besides the parts. ``FitConfig.from_profile(profile, run_dir)`` fills it."""
    run_dir: Optional[Path] = None  # None: nothing written (no log, no checkpoints)
    epochs: int = 1
    iters_per_epoch: int = 10
    lr: float = 1e-2
    poly_exponent: float = 0.9
    grad_clip: float = 12.0
    amp: str = "off"  # auto | bf16 | fp16 | off
    max_seconds: Optional[float] = None
    max_skipped: int = 20
    val_every: int = 1
    val_mirror: bool = False
    max_val_cases: int = 0
    sw_batch_size: int = 8
    sw_overlap: float = 0.5
    patch_size: Sequence[int] = (64, 64)  # for sliding-window validation
    # used only when fit() builds the batches from a list of cases
    batch_size: int = 2
    foreground_oversample: float = 0.33
    augment: bool = True
    data_on_gpu: bool = True
    compile: Any = False  # False, True / 'default', 'reduce-overhead', 'max-autotune-no-cudagraphs'
    seed: int = 0
    device: Any = "cpu"
    progress: bool = True
    resume: bool = False

    @classmethod
    def from_profile(cls, profile: dict, run_dir=None, patch_size=None, resume: bool = False, device=None):
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in profile.items() if k in names}
        values.update(run_dir=None if run_dir is None else Path(run_dir), resume=resume,
                      max_seconds=None if profile.get("max_minutes") is None else 60.0 * profile["max_minutes"])
        if patch_size is not None:
            values["patch_size"] = tuple(patch_size)
        if device is not None:
            values["device"] = device
        return cls(**values)


@dataclass
class FitResult:
    steps: int
    epochs: int
    stopped_by: str  # "epochs" | "time"
    train_seconds: float  # this session, training steps only
    wall_seconds: float  # total over sessions, validation included
    it_per_s: float
    skipped_total: int
    sigma_first: dict
    sigma_last: dict
    peak_memory_mb: float
    peak_memory_kind: str  # "cuda_max_allocated" | "cpu_max_rss"
    last_val: Optional[dict] = None
    log: list = field(default_factory=list)  # the log.jsonl lines of this session


def _val_cases(val_data, limit: int):
    """[(name, normalised image, label)] from Cases or from such tuples."""
    from uu.data import normalize_intensity

    items = list(val_data or [])
    if limit:
        items = items[:limit]
    out = []
    for item in items:
        if isinstance(item, tuple):
            out.append(item)
        else:
            out.append((item.name, normalize_intensity(item.image), np.asarray(item.label)))
    return out


def validate(model, val_cases, patch_size, device, mirror=False, sw_batch_size=8, autocast_dtype=None,
             overlap: float = 0.5) -> dict:
    """Mean Dice per class over volumes (sliding window): {"RV", "Myo", "LV", "mean"}."""
    from uu.infer import predict_volume
    from uu.metrics import dice_per_class

    per_class = defaultdict(list)
    for _, image, label in val_cases:
        probs = predict_volume(model, image, patch_size, mirror=mirror, device=device, sw_batch_size=sw_batch_size,
                               overlap=overlap, autocast_dtype=autocast_dtype)
        for label_id, d in dice_per_class(probs.argmax(0), label).items():
            per_class[{1: "RV", 2: "Myo", 3: "LV"}[label_id]].append(d)
    out = {name: float(np.mean(v)) for name, v in per_class.items()}
    out["mean"] = float(np.mean([out[n] for n in ("RV", "Myo", "LV")]))
    return out


def _peak_memory(device: torch.device) -> tuple[float, str]:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "cuda_max_allocated"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, "cpu_max_rss"


def fit(model, loss, optimizer, train_data, val_data, cfg) -> FitResult:
    """Train ``model`` with ``loss`` and ``optimizer``; see the module docstring for the rules.

    train_data: an object with ``sample() -> (images (B,1,*patch), labels (B,*patch))`` and
    ``state_dict()/load_state_dict()`` (e.g. TrainBatches), or a list of uu.data.Case (TrainBatches
    is then built from cfg). val_data: list of Case (or (name, normalised image, label) tuples) for
    the periodic validation Dice, or None. cfg: FitConfig (or a profile dict)."""
    from tqdm.auto import tqdm

    if isinstance(cfg, dict):
        cfg = FitConfig.from_profile(cfg)
    device = resolve_device(cfg.device)
    rank, world = _world()
    autocast_dtype, use_scaler = resolve_amp(cfg.amp, device)
    scaler = torch.amp.GradScaler(device.type) if use_scaler else None
    run_dir = None if cfg.run_dir is None else Path(cfg.run_dir)
    writer = run_dir is not None and rank == 0
    if writer:
        run_dir.mkdir(parents=True, exist_ok=True)

    if isinstance(train_data, (list, tuple)):
        data_device = device if cfg.data_on_gpu else torch.device("cpu")
        train_data = TrainBatches.from_cases(train_data, cfg.patch_size, cfg.batch_size, cfg.foreground_oversample,
                                             cfg.augment, device=data_device, seed=cfg.seed + 1000 * rank)
    val_cases = _val_cases(val_data, cfg.max_val_cases) if cfg.val_every else []

    base_model = unwrap(model)
    total_steps = cfg.epochs * cfg.iters_per_epoch
    state = {"epoch": 0, "step": 0, "elapsed": 0.0, "skipped_total": 0, "sigma_first": loss.sigmas()}
    ckpt_path = None if run_dir is None else run_dir / "checkpoint.pt"
    if cfg.resume and ckpt_path is not None and ckpt_path.is_file():
        ckpt = load_checkpoint(ckpt_path, device)
        base_model.load_state_dict(ckpt["model"])
        loss.load_state_dict(ckpt["loss"])
        optimizer.load_state_dict(ckpt["optimizer"])
        if scaler is not None and ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        if rank == 0:  # other ranks keep their fresh streams (seeded per rank)
            train_data.load_state_dict(ckpt["train_data"])
            set_rng_states(ckpt["rng"])
        state.update({k: ckpt[k] for k in state})
        if ckpt.get("finished"):
            state["epoch"] = cfg.epochs
        if writer:  # a kill between the log line and the checkpoint would otherwise repeat an epoch
            kept = [line for line in read_log(run_dir) if line["epoch"] <= ckpt["epoch"]]
            (run_dir / "log.jsonl").write_text("".join(json.dumps(line) + "\n" for line in kept))
        if rank == 0 and cfg.progress:
            print(f"resumed from {ckpt_path}: epoch {state['epoch']}, step {state['step']}", file=sys.stderr)
    elif writer:
        atomic_save({"model": base_model.state_dict(), "loss": loss.state_dict(), "step": 0}, run_dir / "init.pt")

    train_model, train_loss = model, loss
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP
        ids = [device.index] if device.type == "cuda" else None
        train_model = DDP(model, device_ids=ids, find_unused_parameters=True, broadcast_buffers=False)
        if any(p.requires_grad for p in loss.parameters()):
            train_loss = DDP(loss, device_ids=ids, broadcast_buffers=False)
    if cfg.compile and device.type == "cuda":
        train_model = compile_model(train_model, cfg.compile)
    base_model.train()

    def elapsed_now(start):
        value = time.perf_counter() - start
        if world > 1:  # rank 0's clock, so every rank computes the same LR and stops together
            t = torch.tensor([value], dtype=torch.float64, device=device)
            torch.distributed.broadcast(t, src=0)
            value = float(t.item())
        return value

    bar = tqdm(total=total_steps, initial=state["step"], desc="train", unit="it", dynamic_ncols=True,
               disable=not (cfg.progress and rank == 0 and sys.stderr.isatty()))
    print_epochs = cfg.progress and rank == 0 and not sys.stderr.isatty()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    session_start = time.perf_counter()
    start = session_start - state["elapsed"]
    train_seconds, session_steps = 0.0, 0
    consecutive_skips, stopped_by, last_val, log_lines = 0, "epochs", None, []
    step, lr = state["step"], cfg.lr
    epoch = state["epoch"]
    while epoch < cfg.epochs and stopped_by != "time":
        epoch_start = time.perf_counter()
        sums, n_ok, skipped_epoch, iters = defaultdict(float), 0, 0, 0
        for _ in range(cfg.iters_per_epoch):
            progress = step / total_steps
            if cfg.max_seconds:
                progress = max(progress, elapsed_now(start) / cfg.max_seconds)
            if progress >= 1.0:
                stopped_by = "time"
                break
            lr = poly_lr(cfg.lr, progress, cfg.poly_exponent)
            for group in optimizer.param_groups:
                group["lr"] = lr
            t0 = time.perf_counter()
            images, target = train_data.sample()
            images, target = images.to(device, non_blocking=True), target.to(device, non_blocking=True)
            result = train_step(train_model, train_loss, optimizer, images, target, autocast_dtype=autocast_dtype,
                                scaler=scaler, grad_clip=cfg.grad_clip)
            train_seconds += time.perf_counter() - t0
            step, iters, session_steps = step + 1, iters + 1, session_steps + 1
            if result.skipped:
                skipped_epoch += 1
                state["skipped_total"] += 1
                consecutive_skips += 1
                if consecutive_skips >= cfg.max_skipped:
                    bar.close()
                    raise TrainingDiverged(
                        f"stopped at step {step}: {consecutive_skips} consecutive non-finite steps (last loss "
                        f"{result.loss}); the last good checkpoint is {ckpt_path}. Try amp=bf16 or off, a lower "
                        f"lr or a smaller rho.")
            else:
                consecutive_skips = 0
                n_ok += 1
                sums["loss"] += result.loss
                sums["grad_norm"] += result.grad_norm
                for k, v in result.components.items():
                    sums["c:" + k] += v
            bar.update(1)
            bar.set_postfix(loss=f"{result.loss:.4f}", lr=f"{lr:.2e}", refresh=False)
        if iters == 0:
            break
        epoch += 1
        train_end = time.perf_counter()
        val, val_seconds = None, 0.0
        due = cfg.val_every and (epoch % cfg.val_every == 0 or epoch == cfg.epochs or stopped_by == "time")
        if due and val_cases and rank == 0:
            val = validate(base_model, val_cases, cfg.patch_size, device, mirror=cfg.val_mirror,
                           sw_batch_size=cfg.sw_batch_size, autocast_dtype=autocast_dtype, overlap=cfg.sw_overlap)
            base_model.train()
            val_seconds = time.perf_counter() - train_end
            last_val = val
        mean = (lambda key: sums[key] / n_ok if n_ok else float("nan"))
        line = {"epoch": epoch, "step": step, "lr": lr, "loss": mean("loss"),
                "components": {k[2:]: mean(k) for k in sums if k.startswith("c:")},
                "sigma": loss.sigmas(), "grad_norm": mean("grad_norm"), "iters": iters,
                "skipped_steps": skipped_epoch, "skipped_total": state["skipped_total"],
                "seconds": time.perf_counter() - epoch_start, "it_per_s": iters / max(train_end - epoch_start, 1e-9),
                "wall": time.perf_counter() - start, "val": val, "val_seconds": val_seconds}
        log_lines.append(line)
        if writer:
            with open(run_dir / "log.jsonl", "a") as f:
                f.write(json.dumps(line) + "\n")
            finished = epoch >= cfg.epochs or stopped_by == "time"
            atomic_save({"model": base_model.state_dict(), "loss": loss.state_dict(),
                         "optimizer": optimizer.state_dict(), "scaler": None if scaler is None else scaler.state_dict(),
                         "train_data": train_data.state_dict(), "rng": rng_states(), "epoch": epoch, "step": step,
                         "elapsed": time.perf_counter() - start, "skipped_total": state["skipped_total"],
                         "sigma_first": state["sigma_first"], "finished": finished}, ckpt_path)
        if print_epochs:
            val_text = "" if val is None else f"  val Dice {val['mean']:.4f}"
            print(f"epoch {epoch}/{cfg.epochs}  step {step}  loss {line['loss']:.4f}  lr {lr:.2e}  "
                  f"skipped {skipped_epoch}  {line['seconds']:.1f}s{val_text}", file=sys.stderr)
    bar.close()
    if writer:
        atomic_save({"model": base_model.state_dict(), "loss": loss.state_dict(), "epoch": epoch, "step": step},
                    run_dir / "final.pt")
    peak, kind = _peak_memory(device)
    return FitResult(steps=step, epochs=epoch, stopped_by=stopped_by, train_seconds=train_seconds,
                     wall_seconds=time.perf_counter() - start,
                     it_per_s=session_steps / train_seconds if train_seconds else 0.0,
                     skipped_total=state["skipped_total"], sigma_first=state["sigma_first"], sigma_last=loss.sigmas(),
                     peak_memory_mb=peak, peak_memory_kind=kind, last_val=last_val, log=log_lines)


# ---------------------------------------------------------------------------------------------
# DDP set-up

# ---------------------------------------------------------------------------------------------
# one run

def choose_split(cases, profile: dict) -> tuple[str, dict]:
    """(scheme used, {"train", "val", "test"}) for the profile's ``split`` key."""
    from uu.data import NNFORMER_VAL, DataError, split_patients

    scheme = profile["split"]
    patients = sorted({c.patient for c in cases})
    if scheme == "auto":
        scheme = "nnformer" if set(NNFORMER_VAL) <= set(patients) else "kfold"
    split = split_patients(cases, scheme, fold=profile["fold"], n_folds=profile["n_folds"], seed=profile["seed"])
    if not split["train"] or not split["val"]:
        raise DataError(f"split {scheme!r} of {len(patients)} patients gives {len(split['train'])} training and "
                        f"{len(split['val'])} validation patients; both must be non-empty")
    return scheme, split


def train_run(profile, data_dir="", out_dir="runs/run", overrides=None, resume: bool = False) -> Path:
    """Everything for one run: data (a phantom in OUT/phantom when data_dir is ""), split, network,
    loss, optimizer, fit, and evaluation of the final model on the validation split into RUN/eval/.
    ``profile``: a name ("smoke"), a YAML path or a dict; ``overrides``: dict or ["key=value", ...].
    Returns the run folder."""
    import uu
    from uu.data import DataError, load_acdc, make_phantom
    from uu.losses import build_loss

    profile = load_profile(profile, overrides)
    run_dir = Path(out_dir)
    device, initialised_here = setup_distributed(profile["device"])
    rank, world = _world()
    try:
        if not resume and (run_dir / "checkpoint.pt").exists():
            raise DataError(f"{run_dir} already holds a run (checkpoint.pt); pass resume=True (--resume) to "
                            f"continue it, or choose another output folder")
        if rank == 0:
            run_dir.mkdir(parents=True, exist_ok=True)
        if not data_dir:
            data_dir = run_dir / "phantom"
            if rank == 0 and not data_dir.exists():
                make_phantom(data_dir, n_patients=profile["phantom_patients"], seed=profile["seed"])
            _barrier()
        cases = load_acdc(data_dir, lazy=True)
        scheme, split = choose_split(cases, profile)
        seed_everything(profile["seed"])
        resolved = dict(profile, split=scheme, data_dir=str(Path(data_dir).resolve()), world_size=world,
                        uu_version=uu.__version__)
        if rank == 0:
            dump_profile(resolved, run_dir / "profile.yaml")
            (run_dir / "split.json").write_text(json.dumps(split, indent=1))

        plan = resolve_plan(profile)
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = profile["cudnn_benchmark"]
        model = build_model(profile, plan, device)
        loss = build_loss(profile["loss"], num_classes=4).to(device)
        optimizer = build_optimizer(model, loss, profile)
        train_cases = [c for c in cases if c.patient in set(split["train"])]
        val_cases = [c for c in cases if c.patient in set(split["val"])]
        cfg = FitConfig.from_profile(profile, run_dir, patch_size=plan.patch_size, resume=resume, device=device)
        cfg.seed = profile["seed"]
        result = fit(model, loss, optimizer, train_cases, val_cases, cfg)

        if rank == 0:
            evaluate_run(run_dir, model, plan, val_cases, profile, device, result, scheme)
        _barrier()
    finally:
        if initialised_here:
            torch.distributed.destroy_process_group()
    return run_dir


def evaluate_run(run_dir, model, plan, val_cases, profile, device, result: FitResult, scheme: str) -> dict:
    """Predict the validation cases with the final model into RUN/eval/pred, score them into
    RUN/eval/per_case.csv and summary.json (plus the training figures). Returns the summary."""
    from uu.evaluate import evaluate_predictions
    from uu.infer import predict_cases

    eval_dir = Path(run_dir) / "eval"
    autocast_dtype, _ = resolve_amp(profile["amp"], device)
    pred_dir = predict_cases(unwrap(model), val_cases, plan, eval_dir / "pred", mirror=profile["eval_mirror"],
                             device=device, sw_batch_size=profile["sw_batch_size"], overlap=profile["sw_overlap"],
                             autocast_dtype=autocast_dtype,
                             progress=profile["progress"] and sys.stderr.isatty())
    _, summary = evaluate_predictions(pred_dir, val_cases, eval_dir, progress=False)  # per_case.csv
    overall = summary["overall"]
    out = {"profile": profile["name"], "split": scheme, "eval_mirror": profile["eval_mirror"],
           "dice": overall["dice"], "dice_mean": overall["dice_mean"], "mse": overall["mse"],
           "mse_pct": overall["mse_pct"], "hd95": overall["hd95"], "hd95_unit": overall["hd95_unit"],
           "n_cases": overall["n_cases"], "per_phase": summary,
           "training": {"steps": result.steps, "epochs": result.epochs, "stopped_by": result.stopped_by,
                        "it_per_s": result.it_per_s, "train_seconds": result.train_seconds,
                        "wall_seconds": result.wall_seconds, "peak_memory_mb": result.peak_memory_mb,
                        "peak_memory_kind": result.peak_memory_kind, "device": str(device)},
           "it_per_s": result.it_per_s, "peak_memory_mb": result.peak_memory_mb,
           "skipped_steps": result.skipped_total, "sigma_first": result.sigma_first, "sigma_last": result.sigma_last}
    (eval_dir / "summary.json").write_text(json.dumps(out, indent=1))
    return out


def cli_train(args) -> int:
    """``python -m uu train --params P [--data D] --out RUN [--resume] [--set key=value ...]``."""
    run_dir = train_run(args.params, data_dir=args.data, out_dir=args.out, overrides=args.set, resume=args.resume)
    if int(os.environ.get("RANK", "0")) == 0:  # the process group is gone by now
        summary = json.loads((run_dir / "eval" / "summary.json").read_text())
        print(f"run folder: {run_dir}")
        print(f"validation Dice RV {summary['dice']['RV']:.4f}  Myo {summary['dice']['Myo']:.4f}  "
              f"LV {summary['dice']['LV']:.4f}  mean {summary['dice_mean']:.4f}  MSE {summary['mse']:.5f}")
    return 0
