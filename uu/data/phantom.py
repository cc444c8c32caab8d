"""`make_phantom`: a small synthetic cine-MRI dataset in the official ACDC layout.

Each patient gets an LV blood pool, a myocardial ring and an RV crescent whose sizes depend on the pathology group
(dilated LV in DCM, thick wall in HCM, large RV in RV, ...), an ES frame with a smaller LV than ED, anisotropic
spacing (~2.4 x 2.4 x 8-10 mm), 6-10 slices, a smooth bias field and Rician noise; the field of view (48-56 pixels)
is cropped around the heart, so that a CPU trains on it in minutes. Deterministic for a seed (each patient has its
own generator). ``ensure_phantom`` makes one once and reuses it (root None: in the user's cache folder)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from .case import GROUPS
from .errors import DataError
from .official import group_from_number

# (LV cavity radius at ED in mm, wall thickness mm, ES/ED LV radius ratio, RV size factor)
GROUP_SHAPES = {
    "NOR": (24.0, 8.0, 0.65, 1.00),
    "DCM": (32.0, 6.0, 0.88, 1.00),
    "HCM": (19.0, 13.0, 0.55, 0.90),
    "MINF": (28.0, 7.0, 0.80, 1.00),
    "RV": (23.0, 8.0, 0.66, 1.45),
}
INTENSITY = {"air": 0.03, "lung": 0.08, "tissue": 0.40, "myo": 0.22, "blood": 0.90}
SCALE = 600.0  # stored as int16 like the scanner images
IN_PLANE_PX = (48, 56)  # Y and X sizes, inclusive range
IN_PLANE_MM = (2.2, 2.6)  # in-plane spacing
SLICES = (6, 10)  # slices per volume, inclusive range
MARKER = "phantom.json"  # written by ensure_phantom once the phantom is complete


def phantom_group(patient: int, n_patients: int) -> str:
    """ACDC numbering rule when there are exactly 100 patients, else the five groups in turn."""
    if n_patients == 100:
        return group_from_number(patient)
    return GROUPS[(patient - 1) % len(GROUPS)]


def _label_map(shape, spacing, centre, lv_radius, wall, rv_radius, lv_drift):
    """uint8 (Z, Y, X) label map; slice 0 is the base, the last slice the apex."""
    nz, ny, nx = shape
    _, sy, sx = spacing
    z = np.arange(nz)[:, None, None]
    taper = np.sqrt(np.clip(1.0 - (z / nz) ** 2, 0.0, 1.0))  # ellipsoidal long axis
    y = np.arange(ny)[None, :, None] * sy - centre[0] - lv_drift * z
    x = np.arange(nx)[None, None, :] * sx - centre[1]
    r_lv = lv_radius * taper
    r_epi = r_lv + wall * (0.75 + 0.25 * taper)
    dist = np.sqrt(y**2 + x**2)
    label = np.zeros(shape, np.uint8)
    # RV: an ellipse left of the LV centred inside its wall, minus the LV + wall (a crescent); shorter than the LV
    rv_r = rv_radius * taper
    rv_centre = 0.6 * r_epi + 0.3 * rv_r
    rv_dist = np.sqrt(((y + 0.1 * rv_centre) / 1.3) ** 2 + ((x + rv_centre) / 0.85) ** 2)
    rv_present = z < max(1, int(round(0.8 * nz)))
    label[(rv_dist < rv_r) & (dist > r_epi + 1.5) & rv_present] = 1
    label[(dist >= r_lv) & (dist < r_epi)] = 2
    label[dist < r_lv] = 3
    return label


def _image(label, spacing, rng):
    """float32 image for a label map: tissue classes, texture, bias field, Rician noise."""
    from scipy import ndimage

    nz, ny, nx = label.shape
    yy, xx = np.meshgrid(np.linspace(-1, 1, ny), np.linspace(-1, 1, nx), indexing="ij")
    body = (yy / 0.85) ** 2 + (xx / 0.95) ** 2 < 1.0
    lungs = (((yy + 0.05) / 0.45) ** 2 + ((np.abs(xx) - 0.5) / 0.3) ** 2) < 1.0
    base = np.where(body, INTENSITY["tissue"], INTENSITY["air"]).astype(np.float32)
    base[body & lungs] = INTENSITY["lung"]
    image = np.broadcast_to(base, label.shape).copy()
    texture = ndimage.gaussian_filter(rng.standard_normal(label.shape).astype(np.float32), (0, 3, 3))
    image += 0.6 * texture * body
    image[label == 2] = INTENSITY["myo"]
    image[(label == 1) | (label == 3)] = INTENSITY["blood"]
    image = ndimage.gaussian_filter(image, (0, 0.8, 0.8))  # partial volume at the edges
    a, b, c = rng.uniform(-0.25, 0.25, 3)
    image *= (1.0 + a * yy + b * xx + c * xx * yy)[None]
    sigma = 0.04
    noisy = np.sqrt(
        (image + sigma * rng.standard_normal(image.shape)) ** 2 + (sigma * rng.standard_normal(image.shape)) ** 2
    )
    return noisy.astype(np.float32)


def _save_nifti(array_zyx, spacing_zyx, path):
    import nibabel as nib

    affine = np.diag([spacing_zyx[2], spacing_zyx[1], spacing_zyx[0], 1.0])
    img = nib.Nifti1Image(np.ascontiguousarray(array_zyx.transpose(2, 1, 0)), affine)
    img.header.set_xyzt_units("mm", "sec")
    nib.save(img, str(path))


def make_phantom(root, n_patients: int = 10, seed: int = 0) -> Path:
    """Write ``n_patients`` synthetic patients (numbers 1..n) into ``root`` (returned) in the official layout."""
    if not isinstance(n_patients, (int, np.integer)) or not 1 <= n_patients <= 150:
        raise ValueError(f"make_phantom: n_patients={n_patients!r} must be an integer in 1..150")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for patient in range(1, n_patients + 1):
        rng = np.random.default_rng([seed, patient])
        group = phantom_group(patient, n_patients)
        lv_radius, wall, es_ratio, rv_factor = GROUP_SHAPES[group]
        jitter = rng.uniform(0.92, 1.08, 3)
        lv_radius, wall, rv_radius = lv_radius * jitter[0], wall * jitter[1], 1.0 * lv_radius * rv_factor * jitter[2]
        ny, nx = (int(n) for n in rng.integers(IN_PLANE_PX[0], IN_PLANE_PX[1] + 1, 2))
        nz = int(rng.integers(SLICES[0], SLICES[1] + 1))
        in_plane = float(np.round(rng.uniform(*IN_PLANE_MM), 4))
        spacing = (float(rng.choice([8.0, 10.0])), in_plane, in_plane)
        centre = (ny * in_plane * rng.uniform(0.45, 0.55), nx * in_plane * rng.uniform(0.5, 0.6))
        drift = rng.uniform(-1.5, 1.5)
        n_frames = int(rng.integers(20, 31))
        frames = {"ED": 1, "ES": int(rng.integers(9, 16))}
        # ES: smaller LV cavity; the myocardium keeps its area, so the wall thickens
        es_lv = lv_radius * es_ratio
        es_wall = np.sqrt(es_lv**2 + (lv_radius + wall) ** 2 - lv_radius**2) - es_lv
        geometry = {"ED": (lv_radius, wall, rv_radius), "ES": (es_lv, es_wall, rv_radius * (0.6 + 0.3 * es_ratio))}
        folder = root / f"patient{patient:03d}"
        folder.mkdir(exist_ok=True)
        height, weight = rng.uniform(150, 195), rng.uniform(50, 110)
        (folder / "Info.cfg").write_text(
            f"ED: {frames['ED']}\nES: {frames['ES']}\nGroup: {group}\nHeight: {height:.1f}\n"
            f"NbFrame: {n_frames}\nWeight: {weight:.1f}\n"
        )
        for phase in ("ED", "ES"):
            label = _label_map((nz, ny, nx), spacing, centre, *geometry[phase], lv_drift=drift)
            image = np.round(_image(label, spacing, rng) * SCALE).astype(np.int16)
            stem = folder / f"patient{patient:03d}_frame{frames[phase]:02d}"
            _save_nifti(image, spacing, f"{stem}.nii.gz")
            _save_nifti(label, spacing, f"{stem}_gt.nii.gz")
    return root


def ensure_phantom(root, n_patients: int) -> Path:
    """The phantom of ``n_patients`` (seed 0) in ``root`` (None: ${UU_CACHE_DIR:-~/.cache/uu}/phantom-<n>), reused
    when ``root/phantom.json`` records that size, else made. Raises DataError when ``root`` holds other data."""
    if root is None:
        root = Path(os.environ.get("UU_CACHE_DIR") or Path.home() / ".cache" / "uu") / f"phantom-{int(n_patients)}"
    root = Path(root)
    marker = root / MARKER
    wanted = {"n_patients": int(n_patients), "seed": 0}
    if marker.is_file() and json.loads(marker.read_text()) == wanted:
        return root
    ours = {f"patient{p:03d}" for p in range(1, n_patients + 1)}
    others = sorted(p.name for p in root.iterdir() if p.name not in ours | {MARKER}) if root.is_dir() else []
    if others:
        raise DataError(
            f"ensure_phantom: {root} holds {others[:3]}{' ...' if len(others) > 3 else ''}, not a "
            f"{n_patients}-patient phantom; give an empty or new folder (or delete this one)"
        )
    if root.exists():
        make_phantom(root, n_patients, seed=0)
        marker.write_text(json.dumps(wanted))
        return root
    # a new folder appears whole (made beside it, then renamed): side-by-side processes never read half a phantom
    root.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=root.parent, prefix=f".{root.name}."))
    try:
        make_phantom(work, n_patients, seed=0)
        (work / MARKER).write_text(json.dumps(wanted))
        try:
            work.rename(root)
        except OSError:  # made by another process meanwhile
            if not marker.is_file():
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return root
