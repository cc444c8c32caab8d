"""The training loop: ``fit(model, loss, optimizer, batches, profile)``.

The parts are arguments: any network, loss and optimizer, stepped by ``uu.step.train_step`` (plain or SAM,
autocast, GradScaler, non-finite steps skipped on the device); ``batches`` is anything with
``sample() -> (images, labels)`` and ``state_dict()/load_state_dict()`` (uu.sampling.TrainBatches); the
periodic validation is a function ``validate(model) -> {"RV", "Myo", "LV", "mean"}`` given by the caller.

Schedule. Poly LR ``lr0 * (1 - progress)^0.9`` stepped every iteration (the authors' code steps it per
epoch), ``progress = max(step / (epochs * iters_per_epoch), train_seconds / (60 * max_minutes))``.
``train_seconds`` counts training steps only (the first one includes torch.compile's warm-up): validations
and checkpoints never steal annealing, and a run limited by ``max_minutes`` trains that long and then stops
with lr -> 0. Nothing in a step waits for the GPU; the loop synchronises once per epoch, when it reads the
epoch's sums (loss, components, gradient norm, skipped steps) for the log.

Validation every ``val_minutes`` of training (else every ``val_every`` epochs) and after the last epoch.
Checkpoints every ``checkpoint_minutes`` of wall-clock (0: every epoch) and at the end, copied to host memory
at an epoch boundary and written on a background thread (uu.checkpoint). ``resume=True`` continues bit-exactly
from the last checkpoint on the same device type: weights, optimizer, scaler, sigma, the batches' and every
random stream, the step, the training seconds (so the time-driven LR goes on where it was).
``clock`` (default time.perf_counter) is an argument so that a test can drive the schedule with a fake one.

DDP. Under torchrun the model, and the loss when it has parameters (sigma), are wrapped in
DistributedDataParallel (sigma's gradient is averaged too). Each rank samples its own patches; only rank 0
writes the log, checkpoints and validates. SAM under DDP synchronises both passes, so every rank perturbs with
the same, globally averaged gradient (exactly single-process SAM on the global batch).
``find_unused_parameters=True`` because the deep-supervision loss skips the lowest head (weight 0). The
training seconds driving the LR are rank 0's, broadcast every step, so all ranks agree.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import torch
from tqdm.auto import tqdm

from uu.checkpoint import CheckpointWriter, atomic_save, rng_states, set_rng_states
from uu.device import resolve_amp, resolve_device, world
from uu.runs import load_checkpoint, read_log
from uu.step import compile_model, train_step, unwrap


class TrainingDiverged(RuntimeError):
    """Too many consecutive non-finite steps."""


def poly_lr(base_lr: float, progress: float, exponent: float = 0.9) -> float:
    """lr0 * (1 - progress)^exponent, progress clipped to [0, 1]."""
    return base_lr * (1.0 - min(max(progress, 0.0), 1.0)) ** exponent


@dataclass
class FitResult:
    steps: int
    epochs: int
    stopped_by: str  # "epochs" | "time" | "paused" (stop_at came first: resume to finish)
    train_seconds: float  # training steps only, all sessions (what max_minutes counts)
    wall_seconds: float  # fit's wall-clock, all sessions, validations and checkpoints included
    it_per_s: float  # this session's iterations per training second
    skipped_total: int
    sigma_first: dict
    sigma_last: dict
    peak_memory_mb: float
    peak_memory_kind: str  # "cuda_max_allocated" | "cpu_max_rss"
    last_val: Optional[dict] = None
    log: list = field(default_factory=list)  # the log.jsonl lines of this session


def _peak_memory(device: torch.device) -> tuple[float, str]:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "cuda_max_allocated"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, "cpu_max_rss"


class _EpochSums:
    """Per-epoch sums kept on the device: read once, at the end of the epoch (one synchronisation)."""

    def __init__(self, device):
        self.device, self.values, self.names = device, None, None
        self.streak = torch.zeros((), device=device)  # consecutive skipped steps, across epochs

    def add(self, result) -> None:
        ok = (~result.skipped).float()
        names = sorted(result.components)
        row = torch.stack([ok, 1 - ok, torch.nan_to_num(result.loss.float() * ok),
                           torch.nan_to_num(result.grad_norm.float().to(self.device) * ok)]
                          + [torch.nan_to_num(result.components[k].float() * ok) for k in names])
        self.values = row if self.values is None else self.values + row
        self.names = names
        self.streak = (self.streak + 1) * (1 - ok)

    def read(self) -> tuple[dict, int, int]:
        """({loss, grad_norm, components}, skipped steps, current streak) and reset."""
        values = self.values.tolist() if self.values is not None else [0, 0, 0, 0]
        streak = int(self.streak)
        n_ok, skipped = values[0], int(values[1])
        mean = (lambda v: v / n_ok if n_ok else float("nan"))
        out = {"loss": mean(values[2]), "grad_norm": mean(values[3]),
               "components": {k: mean(v) for k, v in zip(self.names or [], values[4:])}}
        self.values = None
        return out, skipped, streak


def fit(model, loss, optimizer, batches, profile: dict, *, run_dir=None, device="cpu",
        validate: Optional[Callable] = None, resume: bool = False, clock: Callable[[], float] = time.perf_counter,
        progress: Optional[bool] = None, stop_at: Optional[float] = None) -> FitResult:
    """Train ``model`` with ``loss`` and ``optimizer`` on ``batches`` as the profile says (see the module
    docstring). run_dir None writes nothing. Returns FitResult; writes RUN/log.jsonl, checkpoint.pt, init.pt,
    final.pt when run_dir is given. ``stop_at`` (Unix seconds): pause before an epoch that would end after it,
    with a checkpoint to resume from (stopped_by "paused", no final.pt): a run can span machine leases."""
    device = resolve_device(device)
    rank, n_ranks = world()
    autocast_dtype, use_scaler = resolve_amp(profile["amp"], device)
    scaler = torch.amp.GradScaler(device.type) if use_scaler else None
    run_dir = None if run_dir is None else Path(run_dir)
    writer = run_dir is not None and rank == 0
    if writer:
        run_dir.mkdir(parents=True, exist_ok=True)
    saver = CheckpointWriter(background=True)
    show = profile["progress"] if progress is None else progress

    base_model = unwrap(model)
    epochs, per_epoch = profile["epochs"], profile["iters_per_epoch"]
    total_steps = epochs * per_epoch
    budget = None if profile["max_minutes"] is None else 60.0 * profile["max_minutes"]
    state = {"epoch": 0, "step": 0, "train_seconds": 0.0, "wall": 0.0, "skipped_total": 0, "val_at": 0.0,
             "sigma_first": loss.sigmas()}
    ckpt_path = None if run_dir is None else run_dir / "checkpoint.pt"
    if resume and ckpt_path is not None and ckpt_path.is_file():
        ckpt = load_checkpoint(ckpt_path, device)
        base_model.load_state_dict(ckpt["model"])
        loss.load_state_dict(ckpt["loss"])
        optimizer.load_state_dict(ckpt["optimizer"])
        if scaler is not None and ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        if rank == 0:  # other ranks keep their fresh streams (seeded per rank)
            batches.load_state_dict(ckpt["train_data"])
            set_rng_states(ckpt["rng"])
        old = ckpt.get("elapsed", 0.0)  # checkpoints of uu before 0.2 kept one clock, "elapsed"
        state.update({k: ckpt.get(k, old if k in ("train_seconds", "wall") else state[k]) for k in state})
        if ckpt.get("finished"):
            state["epoch"] = epochs
        if writer:  # a kill after the last checkpoint would otherwise repeat epochs in the log
            kept = [line for line in read_log(run_dir) if line["epoch"] <= ckpt["epoch"]]
            (run_dir / "log.jsonl").write_text("".join(json.dumps(line) + "\n" for line in kept))
        if rank == 0 and show:
            print(f"resumed from {ckpt_path}: epoch {state['epoch']}, step {state['step']}", file=sys.stderr)
    elif writer:
        atomic_save({"model": base_model.state_dict(), "loss": loss.state_dict(), "step": 0}, run_dir / "init.pt")

    train_model, train_loss = model, loss
    if n_ranks > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP
        ids = [device.index] if device.type == "cuda" else None
        train_model = DDP(model, device_ids=ids, find_unused_parameters=True, broadcast_buffers=False)
        if any(p.requires_grad for p in loss.parameters()):
            train_loss = DDP(loss, device_ids=ids, broadcast_buffers=False)
    if profile["compile"] and device.type == "cuda":
        train_model = compile_model(train_model, profile["compile"])
    base_model.train()

    def agreed(seconds: float) -> float:
        if n_ranks > 1:  # rank 0's clock, so every rank computes the same LR and stops together
            t = torch.tensor([seconds], dtype=torch.float64, device=device)
            torch.distributed.broadcast(t, src=0)
            seconds = float(t.item())
        return seconds

    def synchronize():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def checkpoint(finished: bool) -> None:
        saver.save({"model": base_model.state_dict(), "loss": loss.state_dict(),
                    "optimizer": optimizer.state_dict(), "scaler": None if scaler is None else scaler.state_dict(),
                    "train_data": batches.state_dict(), "rng": rng_states(), "epoch": epoch, "step": step,
                    "train_seconds": train_seconds, "wall": wall(), "skipped_total": state["skipped_total"],
                    "val_at": last_val_at,
                    "sigma_first": state["sigma_first"], "finished": finished}, ckpt_path)

    bar = tqdm(total=total_steps, initial=state["step"], desc="train", unit="it", dynamic_ncols=True,
               disable=not (show and rank == 0 and sys.stderr.isatty()))
    print_epochs = show and rank == 0 and not sys.stderr.isatty()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = clock()
    wall = (lambda: state["wall"] + clock() - start)
    epoch, step, train_seconds = state["epoch"], state["step"], state["train_seconds"]
    session_steps, session_train, stopped_by, last_val, log_lines = 0, 0.0, "epochs", None, []
    last_val_at, last_ckpt_at = state["val_at"], clock()
    sums, lr = _EpochSums(device), profile["lr"]
    try:
        while epoch < epochs and stopped_by not in ("time", "paused"):
            epoch_start = clock()
            iters = 0
            for _ in range(per_epoch):
                seconds = agreed(train_seconds + clock() - epoch_start)
                done = max(step / total_steps, seconds / budget if budget else 0.0)
                if done >= 1.0:
                    stopped_by = "time"
                    break
                lr = poly_lr(profile["lr"], done, profile["poly_exponent"])
                for group in optimizer.param_groups:
                    group["lr"] = lr
                images, target = batches.sample()
                images, target = images.to(device, non_blocking=True), target.to(device, non_blocking=True)
                sums.add(train_step(train_model, train_loss, optimizer, images, target, autocast_dtype=autocast_dtype,
                                    scaler=scaler, grad_clip=profile["grad_clip"]))
                step, iters, session_steps = step + 1, iters + 1, session_steps + 1
                bar.update(1)
            if iters == 0:
                break
            synchronize()  # the epoch's GPU work is done: its time is training time
            epoch_seconds = clock() - epoch_start
            train_seconds, session_train = train_seconds + epoch_seconds, session_train + epoch_seconds
            epoch += 1
            means, skipped, streak = sums.read()
            state["skipped_total"] += skipped
            if streak >= profile["max_skipped"]:
                raise TrainingDiverged(
                    f"stopped at step {step}: {streak} consecutive non-finite steps; the last good checkpoint is "
                    f"{ckpt_path}. Try amp=bf16 or off, a lower lr or a smaller rho.")
            finished = epoch >= epochs or stopped_by == "time"
            if not finished and stop_at is not None and time.time() + (clock() - epoch_start) >= stop_at:
                stopped_by = "paused"
            if profile["val_minutes"]:
                due = train_seconds - last_val_at >= 60.0 * profile["val_minutes"]
            else:
                due = bool(profile["val_every"]) and epoch % max(profile["val_every"], 1) == 0
            val, val_seconds = None, 0.0
            periodic = bool(profile["val_every"] or profile["val_minutes"])
            if validate is not None and rank == 0 and (due or (finished and periodic)):
                t0 = clock()
                val = validate(base_model)
                base_model.train()
                last_val, last_val_at, val_seconds = val, train_seconds, clock() - t0
            ckpt_seconds = 0.0
            if writer and (finished or stopped_by == "paused"
                           or clock() - last_ckpt_at >= 60.0 * profile["checkpoint_minutes"]):
                t0 = clock()
                checkpoint(finished)
                last_ckpt_at, ckpt_seconds = clock(), clock() - t0
            line = {"epoch": epoch, "step": step, "lr": lr, **means, "sigma": loss.sigmas(), "iters": iters,
                    "skipped_steps": skipped, "skipped_total": state["skipped_total"], "seconds": clock() - epoch_start,
                    "train_seconds": train_seconds, "it_per_s": iters / max(epoch_seconds, 1e-9), "wall": wall(),
                    "val": val, "val_seconds": val_seconds, "checkpoint_seconds": ckpt_seconds,
                    "time": time.time()}  # epoch end, Unix seconds: lines up runs sharing a GPU
            log_lines.append(line)
            if writer:
                with open(run_dir / "log.jsonl", "a") as f:
                    f.write(json.dumps(line) + "\n")
            bar.set_postfix(loss=f"{line['loss']:.4f}", lr=f"{lr:.2e}", refresh=False)
            if print_epochs:
                val_text = "" if val is None else f"  val Dice {val['mean']:.4f}"
                print(f"epoch {epoch}/{epochs}  step {step}  loss {line['loss']:.4f}  lr {lr:.2e}  skipped {skipped}  "
                      f"{epoch_seconds:.1f}s ({line['it_per_s']:.2f} it/s){val_text}", file=sys.stderr)
    finally:  # an interrupted run still finishes the checkpoint being written (atomic either way)
        bar.close()
        saver.wait()
    if writer and stopped_by != "paused":
        atomic_save({"model": base_model.state_dict(), "loss": loss.state_dict(), "epoch": epoch, "step": step},
                    run_dir / "final.pt")
    peak, kind = _peak_memory(device)
    return FitResult(steps=step, epochs=epoch, stopped_by=stopped_by, train_seconds=train_seconds,
                     wall_seconds=wall(), it_per_s=session_steps / session_train if session_train else 0.0,
                     skipped_total=state["skipped_total"], sigma_first=state["sigma_first"], sigma_last=loss.sigmas(),
                     peak_memory_mb=peak, peak_memory_kind=kind, last_val=last_val, log=log_lines)
