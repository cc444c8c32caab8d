"""Devices, precision, seeds and the DDP process group: where every floor above the step runs."""

from __future__ import annotations

import os
import random
from typing import Optional

import numpy as np
import torch

from uu.data.errors import DataError


def resolve_device(name="auto") -> torch.device:
    """ "auto" -> cuda (this process's LOCAL_RANK under torchrun) when available, else cpu."""
    if isinstance(name, torch.device):
        return name
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and "LOCAL_RANK" in os.environ:
        name = f"cuda:{int(os.environ['LOCAL_RANK'])}"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise DataError(f"device {name!r} asked for but CUDA is not available; use device=cpu or auto")
    return torch.device(name)


def resolve_amp(amp: str, device: torch.device) -> tuple[Optional[torch.dtype], bool]:
    """(autocast dtype or None, use a GradScaler). auto = bf16 on CUDA when supported, else off."""
    if amp == "auto":
        amp = "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "off"
    return {"off": (None, False), "bf16": (torch.bfloat16, False), "fp16": (torch.float16, True)}[amp]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device


def world() -> tuple[int, int]:
    """(rank, world size) of the DDP process group, (0, 1) outside one."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def barrier() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()


def setup_distributed(device_name: str = "auto") -> tuple[torch.device, bool]:
    """Under torchrun, init the process group (nccl on CUDA, gloo on CPU) if needed: (device, initialised here)."""
    device = resolve_device(device_name)
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or torch.distributed.is_initialized():
        return device, False
    if device.type == "cuda":
        torch.cuda.set_device(device)
    torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device, True
