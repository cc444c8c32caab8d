"""The selective scan as a small C kernel on CPUs (scan_cpu.c), compiled on first use, called through ctypes.

The contract of scan_chunked.py's `_Scan` for input-dependent B and C (b, n, L) in float32 / float64: y (without
the D and z terms) and the last state forward, the five gradients backward. Where `kernel_for` returns None (no
compiler, a failed build, CUDA tensors, constant B / C) the PyTorch scan runs, which stays the reference.
Built once per (source, flags, compiler) into ${UU_CACHE_DIR:-~/.cache/uu}/scan_cpu-<hash>.so; env CC picks the
compiler (default cc). UU_CPU_SCAN=torch disables the kernel, UU_CPU_SCAN=c makes a failed build an error (default
"auto": warn once and use the PyTorch scan)."""

from __future__ import annotations

import ctypes
import hashlib
import math
import os
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path

import torch

SOURCE = Path(__file__).with_name("scan_cpu.c")
# No -ffast-math (NaN / inf must propagate to the skip check), no -march=native (a cached library may move to
# another machine); -fno-trapping-math lets the compiler vectorise exp_vec's selects (results do not change).
FLAGS = ["-O3", "-std=c99", "-fPIC", "-shared", "-fno-trapping-math"]
CHECKPOINT = 64  # steps between the states the forward pass keeps for the backward pass

_UNTRIED = object()
_kernel = _UNTRIED  # the loaded library, None after a failed build, _UNTRIED before the first try
_error = ""  # why the build failed
last_cpu_path: str | None = None  # "c" or "torch": which scan the last call of `kernel_for` chose


def _cache_dir() -> Path:
    return Path(os.environ.get("UU_CACHE_DIR") or Path.home() / ".cache" / "uu")


def _compile(cc: str) -> Path:
    """Builds (or finds) the library for compiler `cc`; raises RuntimeError with the compiler's message."""
    path = shutil.which(cc)
    if path is None:
        raise RuntimeError(f"C compiler {cc!r} not found")
    version = subprocess.run([path, "--version"], capture_output=True, text=True).stdout
    key = hashlib.sha256(SOURCE.read_bytes() + repr((FLAGS, path, version)).encode()).hexdigest()[:16]
    out = _cache_dir() / f"scan_cpu-{key}.so"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=out.stem + ".", suffix=".tmp")
    os.close(fd)
    try:
        errors = []
        for openmp in (["-fopenmp"], []):  # without OpenMP: single-threaded
            run = subprocess.run([path, *FLAGS, *openmp, str(SOURCE), "-o", tmp, "-lm"], capture_output=True, text=True)
            if run.returncode == 0:
                os.replace(tmp, out)  # atomic: processes building side by side never load a partial file
                return out
            errors.append(f"{path} {' '.join(FLAGS + openmp)}: exit {run.returncode}: {run.stderr.strip()}")
        raise RuntimeError("C compiler failed:\n" + "\n".join(errors))
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def load_kernel(required: bool = False):
    """The ctypes library, compiled on the first call; None (with one warning) when it cannot be built, or a
    RuntimeError naming the compiler when `required`."""
    global _kernel, _error
    if _kernel is _UNTRIED:
        cc = os.environ.get("CC") or "cc"
        try:
            lib = ctypes.CDLL(str(_compile(cc)))
        except (RuntimeError, OSError) as e:
            _kernel, _error = None, f"the C scan kernel could not be built with CC={cc!r}: {e}"
            if not required:
                warnings.warn(f"{_error}\nUsing the PyTorch selective scan instead.", RuntimeWarning, stacklevel=2)
        else:
            ptr, i64, i32 = ctypes.c_void_p, ctypes.c_long, ctypes.c_int
            for sfx in ("f32", "f64"):
                fwd, bwd = getattr(lib, f"scan_fwd_{sfx}"), getattr(lib, f"scan_bwd_{sfx}")
                fwd.argtypes, fwd.restype = [i64] * 4 + [ptr] * 8 + [i64, i32], None
                bwd.argtypes, bwd.restype = [i64] * 4 + [ptr] * 6 + [i64] + [ptr] * 7 + [i32], ctypes.c_int
            _kernel = lib
    if _kernel is None and required:
        raise RuntimeError(_error)
    return _kernel


def kernel_for(u, delta, A, B, C):
    """The library when the kernel applies to these `_Scan` inputs (CPU, B and C (b, n, L), one dtype among
    float32 / float64, UU_CPU_SCAN not "torch"), else None."""
    global last_cpu_path
    tensors = (u, delta, A, B, C)
    if any(t.device.type != "cpu" for t in tensors):
        last_cpu_path = "torch"
        return None
    mode = os.environ.get("UU_CPU_SCAN", "auto")
    if mode not in ("auto", "c", "torch"):
        raise ValueError(f"UU_CPU_SCAN={mode!r}: expected auto, c or torch")
    one_dtype = u.dtype in (torch.float32, torch.float64) and all(t.dtype == u.dtype for t in tensors)
    fits = mode != "torch" and B.dim() == 3 and C.dim() == 3 and one_dtype
    kernel = load_kernel(required=mode == "c") if fits else None
    last_cpu_path = "torch" if kernel is None else "c"
    return kernel


def _sfx(t):
    return "f32" if t.dtype == torch.float32 else "f64"


def _ptrs(*tensors):
    return [t.data_ptr() for t in tensors]


def forward(kernel, u, delta, A, B, C, T=CHECKPOINT):
    """u, delta (b, d, L), A (d, n), B, C (b, n, L) -> y (b, d, L), last state (b, d, n), and for `backward`:
    Bt, Ct (b, L, n) and the checkpoints (b, d, ceil(L / T), n)."""
    (b, d, L), n = u.shape, A.shape[1]
    u, delta, A = u.contiguous(), delta.contiguous(), A.contiguous()
    Bt, Ct = B.transpose(1, 2).contiguous(), C.transpose(1, 2).contiguous()
    y, last, ckpt = u.new_empty(b, d, L), u.new_empty(b, d, n), u.new_empty(b, d, math.ceil(L / T), n)
    getattr(kernel, f"scan_fwd_{_sfx(u)}")(
        b, d, n, L, *_ptrs(u, delta, A, Bt, Ct, y, last, ckpt), T, torch.get_num_threads()
    )
    return y, last, (Bt, Ct, ckpt)


def backward(kernel, u, delta, A, kept, dy, dlast, T=CHECKPOINT):
    """`kept` from `forward`, dy (b, d, L), dlast (b, d, n) -> the gradients of u, delta, A, B, C."""
    Bt, Ct, ckpt = kept
    (b, d, L), n = u.shape, A.shape[1]
    u, delta, A, dy, dlast = (t.contiguous() for t in (u, delta, A, dy, dlast))
    du, ddelta, dA_b, dBt, dCt = (u.new_empty(s) for s in ((b, d, L), (b, d, L), (b, d, n), (b, L, n), (b, L, n)))
    args = (*_ptrs(u, delta, A, Bt, Ct, ckpt), T, *_ptrs(dy, dlast, du, ddelta, dA_b, dBt, dCt))
    rc = getattr(kernel, f"scan_bwd_{_sfx(u)}")(b, d, n, L, *args, torch.get_num_threads())
    if rc != 0:
        raise MemoryError("scan_cpu.c: out of memory in the backward pass")
    return du, ddelta, dA_b.sum(0), dBt.transpose(1, 2), dCt.transpose(1, 2)
