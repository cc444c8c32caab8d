"""What a benchmark's numbers were measured with: device, software versions and the code's commit.

Every script in benchmarks/ writes ``environment(device)`` into its JSON (key ``env``), so that a row read months
later says which card, which torch / CUDA / mamba-ssm and which code produced it. On a machine that holds a copy
of the working tree without its .git folder, set UU_COMMIT to the commit the copy was made from.
"""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("mamba-ssm", "causal-conv1d", "triton", "numpy")


def _version(dist: str):
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def commit() -> str | None:
    """UU_COMMIT, else the checkout's short commit with "+changes" when uu/ or benchmarks/ differ from it."""
    if os.environ.get("UU_COMMIT"):
        return os.environ["UU_COMMIT"]
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=10
        )
        if head.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "uu", "benchmarks"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        return head.stdout.strip() + ("+changes" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def environment(device=None) -> dict:
    """{device, device_type, cpu, threads, python, torch, cuda, cudnn, mamba-ssm, causal-conv1d, triton, numpy,
    commit, inductor_env (the TORCHINDUCTOR_* variables set)}; ``device``: a torch.device or string (default: cuda
    when available)."""
    import torch

    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    on_gpu = device.type == "cuda"
    env = {
        "device": torch.cuda.get_device_name(device) if on_gpu else cpu_name(),
        "device_type": device.type,
        "cpu": cpu_name(),
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
    }
    env.update({name: _version(name) for name in PACKAGES})
    env["commit"] = commit()
    # inductor settings given through the environment change what a compiled row measures
    env["inductor_env"] = {k: v for k, v in sorted(os.environ.items()) if k.startswith("TORCHINDUCTOR_")}
    return env


if __name__ == "__main__":
    import json

    print(json.dumps(environment(), indent=1))
