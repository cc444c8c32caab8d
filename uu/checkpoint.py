"""Checkpoints: atomic files, the training parts and random streams, and a writer that saves off the training thread.

``CheckpointWriter.save(state, path)`` copies ``state`` to host memory at once (so training can go on and change the
weights) and writes it on a background thread; ``wait()`` joins the write in flight and re-raises its error."""

from __future__ import annotations

import os
import random
import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch


def training_state(model, loss, optimizer, scaler, batches) -> dict:
    """Every part's state and the random streams: with the loop's progress, enough to resume bit-exactly."""
    return {
        "model": model.state_dict(),
        "loss": loss.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scaler": None if scaler is None else scaler.state_dict(),
        "train_data": batches.state_dict(),
        "rng": {
            "python": random.getstate(),
            "numpy": np.random.get_state(),
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        },
    }


def load_training_state(ckpt: dict, model, loss, optimizer, scaler, batches, streams: bool = True) -> None:
    """training_state's parts back into place. streams=False keeps the batches' and the random streams as they
    are (DDP ranks other than 0: each samples its own patches, seeded per rank)."""
    model.load_state_dict(ckpt["model"])
    loss.load_state_dict(ckpt["loss"])
    optimizer.load_state_dict(ckpt["optimizer"])
    if scaler is not None and ckpt.get("scaler"):
        scaler.load_state_dict(ckpt["scaler"])
    if streams:
        batches.load_state_dict(ckpt["train_data"])
        rng = ckpt["rng"]
        random.setstate(rng["python"])
        np.random.set_state(rng["numpy"])
        # load_checkpoint maps every tensor to the run's device, and a generator takes its state on the CPU only
        torch.set_rng_state(rng["torch"].cpu())
        if rng.get("cuda") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([state.cpu() for state in rng["cuda"]])


def atomic_save(obj: Any, path) -> Path:
    """torch.save to PATH.tmp, then os.replace: a kill never leaves a half-written file at PATH."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)
    return path


def host_copy(obj):
    """obj with every tensor copied to the CPU (cloned there too: CPU training must not change the copy)."""
    if torch.is_tensor(obj):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: host_copy(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(host_copy(v) for v in obj)
    return obj


class CheckpointWriter:
    """One background thread writing checkpoints; at most one write in flight (the next save waits for it)."""

    def __init__(self, background: bool = True):
        self.background = background
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def save(self, state: dict, path) -> None:
        self.wait()
        snapshot = host_copy(state)
        if not self.background:
            atomic_save(snapshot, path)
            return

        def write():
            try:
                atomic_save(snapshot, path)
            except BaseException as err:  # re-raised on the training thread by wait()
                self._error = err

        self._thread = threading.Thread(target=write, name="uu-checkpoint", daemon=False)
        self._thread.start()

    def wait(self) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            err, self._error = self._error, None
            raise RuntimeError(f"writing a checkpoint failed: {err}") from err
