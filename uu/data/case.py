"""`Case`: one cine-MRI volume (one patient, one phase) with its label map.

A lazy case (``image=None, label=None, loader=fn``) reads ``fn() -> (image, label)`` on first access and keeps
them until ``case.release()``; listing cases reads no voxel data."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np

PHASES = ("ED", "ES")
GROUPS = ("DCM", "HCM", "MINF", "NOR", "RV")  # ACDC pathology groups, in patient-number order
# The ACDC vocabulary, defined once: label value -> structure. Everything else imports these.
CLASS_NAMES = {0: "background", 1: "RV", 2: "Myo", 3: "LV"}
LABELS = {"RV": 1, "Myo": 2, "LV": 3}  # foreground structure -> label value
CLASSES = tuple(LABELS)  # ("RV", "Myo", "LV"), the order of every table
NUM_CLASSES = len(CLASS_NAMES)  # 4, background included

_LAZY_FIELDS = ("image", "label")


@dataclass
class Case:
    """One volume. ``image`` float32 (Z, Y, X); ``label`` uint8 (Z, Y, X) in 0..3 or None;
    ``spacing`` (z, y, x) in mm or None (unknown, e.g. the HDF5 layout)."""

    patient: int
    phase: str
    group: Optional[str]
    image: Optional[np.ndarray] = field(repr=False, compare=False)
    label: Optional[np.ndarray] = field(repr=False, compare=False)
    spacing: Optional[tuple[float, float, float]]
    source: Path
    loader: Optional[Callable[[], tuple[np.ndarray, Optional[np.ndarray]]]] = field(
        default=None, repr=False, compare=False
    )

    def __post_init__(self):
        if self.phase not in PHASES:
            raise ValueError(f"Case.phase must be one of {PHASES}, got {self.phase!r}")
        self.source = Path(self.source)
        if self.spacing is not None:
            self.spacing = tuple(float(s) for s in self.spacing)
        if self.loader is not None and self.image is None:
            self.release()

    # Only called when normal lookup fails, i.e. for a lazy case whose arrays are not loaded yet.
    def __getattr__(self, name):
        loader = self.__dict__.get("loader")
        if name not in _LAZY_FIELDS or loader is None:
            raise AttributeError(f"{type(self).__name__!s} has no attribute {name!r}")
        image, label = loader()
        self.__dict__["image"], self.__dict__["label"] = image, label
        return self.__dict__[name]

    @classmethod
    def lazy(cls, patient: int, phase: str, group, spacing, source, loader, load_now: bool = False) -> Case:
        """A case whose arrays ``loader()`` reads on first access; load_now: read (and validate) them at once."""
        case = cls(patient, phase, group, None, None, spacing, source, loader=loader)
        if load_now:
            case.image
            case.loader = None
        return case

    @property
    def is_loaded(self) -> bool:
        return "image" in self.__dict__

    def release(self) -> None:
        """Forget the arrays of a lazy case (they are read again on next access)."""
        if self.loader is None:
            raise ValueError("release() needs a lazy case (one made with a loader)")
        for name in _LAZY_FIELDS:
            self.__dict__.pop(name, None)

    @property
    def name(self) -> str:
        return f"patient{self.patient:03d}_{self.phase}"
