"""Compact cache: all cases in ONE ``*.uucache.npz`` (uint8 images and labels, compressed), so the 160 real volumes
fit what travels to a GPU machine. Images are clipped per volume at the 0.5/99.5 percentiles and scaled to 0..255;
they come back as float32 in 0..1 (training normalises them again). Arrays are flattened and concatenated, with
``offsets`` and ``shapes`` to cut them apart."""

from __future__ import annotations

import functools
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Iterable

import numpy as np

from .case import Case
from .errors import DataError
from .preprocess import to_uint8

CACHE_SUFFIX = ".uucache.npz"
CACHE_VERSION = 1


def is_cache_path(path) -> bool:
    return str(path).endswith(CACHE_SUFFIX)


def write_cache(cases: Iterable[Case], path, compression: str = "deflate") -> Path:
    """Write ``cases`` to ``path`` (ending in ``.uucache.npz``) atomically, lazy cases one at a time;
    ``compression``: "deflate" or "lzma" (smaller, much slower)."""
    path = Path(path)
    methods = {"deflate": (zipfile.ZIP_DEFLATED, 9), "lzma": (zipfile.ZIP_LZMA, None)}
    if compression not in methods:
        raise ValueError(f"write_cache: compression={compression!r}, choose one of {sorted(methods)}")
    if not is_cache_path(path):
        raise DataError(f"{path}: a cache file name must end in '{CACHE_SUFFIX}' (how load_acdc recognises it).")
    images, labels, has_label, shapes, meta = [], [], [], [], []
    for case in cases:
        was_loaded = case.is_loaded
        image, label = case.image, case.label
        images.append(to_uint8(image).ravel())
        labels.append((label if label is not None else np.zeros(image.shape, np.uint8)).ravel())
        has_label.append(label is not None)
        shapes.append(image.shape)
        meta.append(case)
        if case.loader is not None and not was_loaded:
            case.release()
    if not meta:
        raise DataError(f"{path}: no cases to write.")
    sizes = [a.size for a in images]
    arrays = {
        "version": np.array(CACHE_VERSION),
        "image": np.concatenate(images),
        "label": np.concatenate(labels).astype(np.uint8),
        "offsets": np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64),
        "shapes": np.array(shapes, dtype=np.int64),
        "patient": np.array([c.patient for c in meta], dtype=np.int64),
        "phase": np.array([c.phase for c in meta], dtype="U2"),
        "group": np.array([c.group or "" for c in meta], dtype="U8"),
        "spacing": np.array([c.spacing if c.spacing is not None else (np.nan,) * 3 for c in meta], dtype=np.float64),
        "has_label": np.array(has_label, dtype=bool),
        "source": np.array([Path(c.source).name for c in meta]),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp_", suffix=CACHE_SUFFIX)
    os.close(fd)
    try:
        method, level = methods[compression]
        with zipfile.ZipFile(tmp, "w", compression=method, compresslevel=level) as zf:
            for name, value in arrays.items():
                with zf.open(name + ".npy", "w", force_zip64=True) as f:
                    np.lib.format.write_array(f, np.asanyarray(value), allow_pickle=False)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


class _CacheStore:
    """The arrays of one cache file, kept as uint8; cases cut their volume out on access."""

    def __init__(self, path: Path):
        self.path = path
        try:
            with np.load(path, allow_pickle=False) as npz:
                self.arrays = {name: npz[name] for name in npz.files}
        except Exception as err:
            raise DataError(
                f"{path}: unreadable cache file ({type(err).__name__}: {err}). Write it again with uu.data.write_cache."
            ) from err
        missing = {
            "version",
            "image",
            "label",
            "offsets",
            "shapes",
            "patient",
            "phase",
            "group",
            "spacing",
            "has_label",
            "source",
        } - set(self.arrays)
        if missing:
            raise DataError(f"{path}: not a uu cache file (missing {sorted(missing)}).")
        if int(self.arrays["version"]) != CACHE_VERSION:
            raise DataError(
                f"{path}: cache version {int(self.arrays['version'])}, this code reads "
                f"version {CACHE_VERSION}. Write it again with uu.data.write_cache."
            )

    def volume(self, index: int):
        a = self.arrays
        lo, hi = a["offsets"][index], a["offsets"][index + 1]
        shape = tuple(int(n) for n in a["shapes"][index])
        image = a["image"][lo:hi].reshape(shape).astype(np.float32) / np.float32(255.0)
        label = a["label"][lo:hi].reshape(shape).copy() if a["has_label"][index] else None
        return image, label


def load_cache(path, lazy: bool = False, require_labels: bool = True) -> list[Case]:
    """Cases of a ``*.uucache.npz``; images float32 in 0..1 (``lazy`` defers only the float32 conversion)."""
    path = Path(path)
    store = _CacheStore(path)
    a = store.arrays
    if require_labels and not a["has_label"].all():
        first = int(np.flatnonzero(~a["has_label"])[0])
        raise DataError(
            f"{path}: case {a['source'][first]} has no ground truth. Pass require_labels=False to load images only."
        )
    cases = []
    for i in range(len(a["patient"])):
        spacing = None if np.isnan(a["spacing"][i]).any() else tuple(float(s) for s in a["spacing"][i])
        patient, phase, group = int(a["patient"][i]), str(a["phase"][i]), str(a["group"][i]) or None
        loader = functools.partial(store.volume, i)
        cases.append(Case.lazy(patient, phase, group, spacing, path, loader, load_now=not lazy))
    return cases
