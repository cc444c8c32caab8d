"""``python -m uu info DATA_DIR``: the layout found and one line per volume."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Optional

from .load import detect_layout, load_acdc
from .summary import case_rows


def info(data_dir, max_cases: Optional[int] = None) -> int:
    """Print the layout of ``data_dir`` and a per-volume table (DataError propagates). Returns 0."""
    start = time.perf_counter()
    root = Path(data_dir).expanduser()
    layout = detect_layout(root)
    cases = load_acdc(root, lazy=True)
    print(f"folder : {root.resolve()}")
    print(
        f"layout : {layout}"
        + ("   (no voxel spacing in this layout: mm metrics unavailable)" if layout == "hdf5" else "")
    )
    shown = cases if max_cases is None else cases[:max_cases]
    header = (
        f"{'patient':>7} {'phase':5} {'group':5} {'shape (Z,Y,X)':>15} {'spacing (z,y,x) mm':>20} "
        f"{'RV':>8} {'Myo':>8} {'LV':>8}"
    )
    print(header)
    print("-" * len(header))
    for row in case_rows(shown):
        spacing = row["spacing"] or "unknown"
        shape = f"{row['Z']}x{row['Y']}x{row['X']}"
        print(
            f"{row['patient']:>7} {row['phase']:5} {str(row['group'] or '-'):5} {shape:>15} "
            f"{spacing:>20} {_n(row['vox_RV']):>8} {_n(row['vox_Myo']):>8} {_n(row['vox_LV']):>8}"
        )
    patients = sorted({c.patient for c in cases})
    groups = Counter(c.group or "unknown" for c in cases if c.phase == "ED")
    print("-" * len(header))
    print(
        f"{len(patients)} patients, {len(cases)} volumes"
        + (f" (table shows the first {len(shown)})" if len(shown) < len(cases) else "")
        + "; groups: "
        + ", ".join(f"{g} {n}" for g, n in sorted(groups.items()))
        + f"; read in {time.perf_counter() - start:.1f} s"
    )
    return 0


def _n(value) -> str:
    return "-" if value is None else str(value)
