"""The training loop: ``fit(model, loss, optimizer, batches, profile)``.

The parts are arguments: any network, loss and optimizer, stepped by ``uu.step.train_step``; ``batches`` is anything
with ``sample() -> (images, labels)`` and ``state_dict()/load_state_dict()`` (uu.sampling.TrainBatches); the periodic
validation is a function ``validate(model) -> {"RV", "Myo", "LV", "mean"}`` given by the caller.

Schedule. Poly LR ``lr0 * (1 - progress)^0.9`` stepped every iteration (the authors' code steps it per epoch),
``progress = max(step / (epochs * iters_per_epoch), train_seconds / (60 * max_minutes))``. ``train_seconds`` counts
training steps only: validations and checkpoints never steal annealing, and a run limited by ``max_minutes`` trains
that long and then stops with lr -> 0. Nothing in a step waits for the GPU; the loop synchronises once per epoch,
when it reads the epoch's sums for the log.

Validation every ``val_minutes`` of training (else every ``val_every`` epochs) and after the last epoch. Checkpoints
every ``checkpoint_minutes`` of wall-clock (0: every epoch) and at the end, written on a background thread
(uu.checkpoint). ``resume=True`` continues bit-exactly from the last checkpoint on the same device type: every part,
every random stream, the step and the training seconds. ``clock`` lets a test drive the schedule with a fake one.

DDP. Under torchrun the model, and the loss when it has parameters (sigma), are wrapped in DistributedDataParallel.
Each rank samples its own patches; only rank 0 writes the log, checkpoints and validates. SAM under DDP synchronises
both passes: every rank perturbs with the same, globally averaged gradient. ``find_unused_parameters=True`` because
the deep-supervision loss skips the lowest head (weight 0). The training seconds driving the LR are rank 0's."""

from __future__ import annotations

import json
import resource
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from uu.checkpoint import CheckpointWriter, atomic_save, load_training_state, training_state
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
    it_per_s: float  # iterations per training second over the whole run (all sessions)
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
        values = [result.loss, result.grad_norm.to(self.device)] + [result.components[k] for k in names]
        row = torch.stack([ok, 1 - ok] + [torch.nan_to_num(v.float() * ok) for v in values])
        self.values = row if self.values is None else self.values + row
        self.names = names
        self.streak = (self.streak + 1) * (1 - ok)

    def read(self) -> tuple[dict, int, int]:
        """({loss, grad_norm, components}, skipped steps, current streak) and reset."""
        values, self.values = (self.values.tolist() if self.values is not None else [0, 0, 0, 0]), None
        n_ok, skipped = values[0], int(values[1])
        mean = lambda v: v / n_ok if n_ok else float("nan")
        out = {
            "loss": mean(values[2]),
            "grad_norm": mean(values[3]),
            "components": {k: mean(v) for k, v in zip(self.names or [], values[4:])},
        }
        return out, skipped, int(self.streak)


def fit(
    model,
    loss,
    optimizer,
    batches,
    profile: dict,
    *,
    run_dir=None,
    device="cpu",
    validate: Optional[Callable] = None,
    resume: bool = False,
    clock: Callable[[], float] = time.perf_counter,
    progress: Optional[bool] = None,
    stop_at: Optional[float] = None,
) -> FitResult:
    """Train ``model`` as the profile says (module docstring); writes RUN/log.jsonl, checkpoint.pt, init.pt and
    final.pt unless run_dir is None. ``stop_at`` (Unix seconds): pause before an epoch that would end after it,
    with a checkpoint to resume from (stopped_by "paused", no final.pt): a run can span machine leases."""
    run = _Run(model, loss, optimizer, batches, profile, run_dir, device, clock, progress)
    if resume and run.ckpt_path is not None and run.ckpt_path.is_file():
        run.restore()
    elif run.writer:
        atomic_save({"model": run.model.state_dict(), "loss": loss.state_dict(), "step": 0}, run.run_dir / "init.pt")
    train_model, train_loss = _wrap(model, loss, run.device, run.n_ranks, profile["compile"])
    run.begin()
    try:
        while run.epoch < run.epochs and run.stopped_by == "epochs":
            epoch_start, iters = run.train_epoch(train_model, train_loss)
            if iters == 0:  # max_minutes ran out before the epoch's first step: nothing to log
                break
            run.end_epoch(epoch_start, iters, validate, stop_at)
    finally:  # an interrupted run still finishes the checkpoint being written (atomic either way)
        run.bar.close()
        run.saver.wait()
    return run.finish()


def _wrap(model, loss, device: torch.device, n_ranks: int, compile_mode):
    """(model, loss) as the steps call them: in DDP under torchrun (module docstring), compiled on CUDA if asked."""
    if n_ranks > 1:
        ids = [device.index] if device.type == "cuda" else None
        model = DistributedDataParallel(model, device_ids=ids, find_unused_parameters=True, broadcast_buffers=False)
        if any(p.requires_grad for p in loss.parameters()):
            loss = DistributedDataParallel(loss, device_ids=ids, broadcast_buffers=False)
    if compile_mode and device.type == "cuda":
        model = compile_model(model, compile_mode)
    return model, loss


class _Run:
    """One call of fit: the parts, the settings and where the run stands (epoch, step, train_seconds, the
    wall-clock, skipped_total, val_at, sigma_first: what a checkpoint keeps, so a resume goes on where it was)."""

    def __init__(self, model, loss, optimizer, batches, profile: dict, run_dir, device, clock, show: Optional[bool]):
        self.model, self.loss, self.optimizer, self.batches = unwrap(model), loss, optimizer, batches
        self.profile, self.clock, self.show = profile, clock, profile["progress"] if show is None else show
        self.device, (self.rank, self.n_ranks) = resolve_device(device), world()
        self.autocast_dtype, use_scaler = resolve_amp(profile["amp"], self.device)
        self.scaler = torch.amp.GradScaler(self.device.type) if use_scaler else None
        self.run_dir = None if run_dir is None else Path(run_dir)
        self.ckpt_path = None if run_dir is None else self.run_dir / "checkpoint.pt"
        self.writer = run_dir is not None and self.rank == 0
        if self.writer:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        self.saver, self.sums = CheckpointWriter(background=True), _EpochSums(self.device)
        self.epochs, self.total_steps = profile["epochs"], profile["epochs"] * profile["iters_per_epoch"]
        self.budget = None if profile["max_minutes"] is None else 60.0 * profile["max_minutes"]
        self.epoch = self.step = self.skipped_total = 0
        self.train_seconds = 0.0  # training steps only, all sessions
        self.val_at = self.wall_before = 0.0  # train_seconds at the last validation; earlier sessions' wall-clock
        self.sigma_first, self.lr, self.last_val = loss.sigmas(), profile["lr"], None
        self.stopped_by, self.log = "epochs", []

    def restore(self) -> None:
        """Continue from RUN/checkpoint.pt: the parts, rank 0's streams and where the run stood."""
        ckpt = load_checkpoint(self.ckpt_path, self.device)
        load_training_state(
            ckpt, self.model, self.loss, self.optimizer, self.scaler, self.batches, streams=self.rank == 0
        )
        old = ckpt.get("elapsed", 0.0)  # checkpoints of uu before 0.2 kept one clock, "elapsed"
        self.train_seconds, self.wall_before = ckpt.get("train_seconds", old), ckpt.get("wall", old)
        self.epoch = self.epochs if ckpt.get("finished") else ckpt.get("epoch", 0)
        self.step, self.skipped_total = ckpt.get("step", 0), ckpt.get("skipped_total", 0)
        self.val_at, self.sigma_first = ckpt.get("val_at", 0.0), ckpt.get("sigma_first", self.sigma_first)
        if self.writer:  # a kill after the last checkpoint would otherwise repeat epochs in the log
            kept = [line for line in read_log(self.run_dir) if line["epoch"] <= ckpt["epoch"]]
            (self.run_dir / "log.jsonl").write_text("".join(json.dumps(line) + "\n" for line in kept))
        if self.rank == 0 and self.show:
            print(f"resumed from {self.ckpt_path}: epoch {self.epoch}, step {self.step}", file=sys.stderr)

    def begin(self) -> None:
        """Training mode, the progress bar (else a printed line per epoch), peak memory, this session's clocks."""
        self.model.train()
        tty = sys.stderr.isatty()
        self.bar = tqdm(
            total=self.total_steps,
            initial=self.step,
            desc="train",
            unit="it",
            dynamic_ncols=True,
            disable=not (self.show and self.rank == 0 and tty),
        )
        self.print_epochs = self.show and self.rank == 0 and not tty
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        self.start = self.clock()
        self.last_ckpt_at = self.clock()

    def wall(self) -> float:
        return self.wall_before + self.clock() - self.start

    def train_epoch(self, train_model, train_loss) -> tuple[float, int]:
        """Up to iters_per_epoch steps at the poly LR, none waiting for the GPU; stopped_by "time" once max_minutes
        of training are spent. Returns (the epoch's start on the clock, steps taken)."""
        epoch_start, iters, p = self.clock(), 0, self.profile
        options = dict(scaler=self.scaler, autocast_dtype=self.autocast_dtype, grad_clip=p["grad_clip"])
        for _ in range(p["iters_per_epoch"]):
            seconds = self.train_seconds + self.clock() - epoch_start
            if self.n_ranks > 1:  # rank 0's clock, so every rank computes the same LR and stops together
                t = torch.tensor([seconds], dtype=torch.float64, device=self.device)
                torch.distributed.broadcast(t, src=0)
                seconds = float(t.item())
            done = max(self.step / self.total_steps, seconds / self.budget if self.budget else 0.0)
            if done >= 1.0:
                self.stopped_by = "time"
                break
            self.lr = poly_lr(p["lr"], done, p["poly_exponent"])
            for group in self.optimizer.param_groups:
                group["lr"] = self.lr
            images, target = self.batches.sample()
            images, target = images.to(self.device, non_blocking=True), target.to(self.device, non_blocking=True)
            self.sums.add(train_step(train_model, train_loss, self.optimizer, images, target, **options))
            self.step, iters = self.step + 1, iters + 1
            self.bar.update(1)
        return epoch_start, iters

    def end_epoch(self, epoch_start: float, iters: int, validate: Optional[Callable], stop_at: Optional[float]):
        """After the steps: training time, the divergence check, the stop_at pause, validation (rank 0, every
        val_minutes, else val_every epochs, and after the last epoch), checkpoint (rank 0, every checkpoint_minutes
        of wall-clock, at the end and when pausing), the log line."""
        p = self.profile
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)  # the epoch's GPU work is done: its time is training time
        epoch_seconds = self.clock() - epoch_start
        self.train_seconds += epoch_seconds
        self.epoch += 1
        means, skipped, streak = self.sums.read()
        self.skipped_total += skipped
        if streak >= p["max_skipped"]:
            raise TrainingDiverged(
                f"stopped at step {self.step}: {streak} consecutive non-finite steps; the last good checkpoint is "
                f"{self.ckpt_path}. Try amp=bf16 or off, a lower lr or a smaller rho."
            )
        finished = self.epoch >= self.epochs or self.stopped_by == "time"
        if not finished and stop_at is not None and time.time() + (self.clock() - epoch_start) >= stop_at:
            self.stopped_by = "paused"  # another epoch as long as this one would end after stop_at
        val, val_seconds, ckpt_seconds = None, 0.0, 0.0
        due = (
            self.train_seconds - self.val_at >= 60.0 * p["val_minutes"]
            if p["val_minutes"]
            else bool(p["val_every"]) and self.epoch % max(p["val_every"], 1) == 0
        )
        if validate is not None and self.rank == 0 and (due or (finished and (p["val_every"] or p["val_minutes"]))):
            t0 = self.clock()
            val = self.last_val = validate(self.model)
            self.val_at = self.train_seconds
            self.model.train()
            val_seconds = self.clock() - t0
        if self.writer and (
            finished
            or self.stopped_by == "paused"
            or self.clock() - self.last_ckpt_at >= 60.0 * p["checkpoint_minutes"]
        ):
            ckpt_seconds = self.save_checkpoint(finished)
        self.write_log_line(epoch_start, epoch_seconds, iters, means, skipped, val, val_seconds, ckpt_seconds)

    def save_checkpoint(self, finished: bool) -> float:
        """Write the resumable training state; returns the seconds it took."""
        t0 = self.clock()
        position = {
            k: getattr(self, k) for k in ("epoch", "step", "train_seconds", "skipped_total", "val_at", "sigma_first")
        }
        state = training_state(self.model, self.loss, self.optimizer, self.scaler, self.batches)
        self.saver.save({**state, **position, "wall": self.wall(), "finished": finished}, self.ckpt_path)
        self.last_ckpt_at = self.clock()
        return self.clock() - t0

    def write_log_line(self, epoch_start, epoch_seconds, iters, means, skipped, val, val_seconds, ckpt_seconds):
        """One line per epoch in log.jsonl, the progress bar's postfix and, if asked, a line on stderr."""
        line = {
            "epoch": self.epoch,
            "step": self.step,
            "lr": self.lr,
            **means,
            "sigma": self.loss.sigmas(),
            "iters": iters,
            "skipped_steps": skipped,
            "skipped_total": self.skipped_total,
            "seconds": self.clock() - epoch_start,
            "train_seconds": self.train_seconds,
            "it_per_s": iters / max(epoch_seconds, 1e-9),
            "wall": self.wall(),
            "val": val,
            "val_seconds": val_seconds,
            "checkpoint_seconds": ckpt_seconds,
            "time": time.time(),
        }  # epoch end, Unix seconds: lines up runs sharing a GPU
        self.log.append(line)
        if self.writer:
            with open(self.run_dir / "log.jsonl", "a") as f:
                f.write(json.dumps(line) + "\n")
        self.bar.set_postfix(loss=f"{line['loss']:.4f}", lr=f"{self.lr:.2e}", refresh=False)
        if self.print_epochs:
            val_text = "" if val is None else f"  val Dice {val['mean']:.4f}"
            print(
                f"epoch {self.epoch}/{self.epochs}  step {self.step}  loss {line['loss']:.4f}  lr {self.lr:.2e}  "
                f"skipped {skipped}  {epoch_seconds:.1f}s ({line['it_per_s']:.2f} it/s){val_text}",
                file=sys.stderr,
            )

    def finish(self) -> FitResult:
        """final.pt (not when paused: the checkpoint is what a resume needs) and the run's record."""
        if self.writer and self.stopped_by != "paused":
            state = {"model": self.model.state_dict(), "loss": self.loss.state_dict(), "epoch": self.epoch}
            atomic_save({**state, "step": self.step}, self.run_dir / "final.pt")
        peak, kind = _peak_memory(self.device)
        return FitResult(
            steps=self.step,
            epochs=self.epoch,
            stopped_by=self.stopped_by,
            train_seconds=self.train_seconds,
            wall_seconds=self.wall(),
            it_per_s=self.step / self.train_seconds if self.train_seconds else 0.0,
            skipped_total=self.skipped_total,
            sigma_first=self.sigma_first,
            sigma_last=self.loss.sigmas(),
            peak_memory_mb=peak,
            peak_memory_kind=kind,
            last_val=self.last_val,
            log=self.log,
        )
