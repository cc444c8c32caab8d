"""Sliding-window prediction with Gaussian weighting and mirroring test-time augmentation.

``predict_volume``: a (Z, Y, X) volume -> class probabilities (C, Z, Y, X), 2D plans slice by slice, 3D plans in
3D windows (monai sliding_window_inference, Gaussian blending as nnU-Net); ``mirror=True`` averages the logits
over every flip of the in-plane axes (and Z in 3D) before the softmax. ``predict_cases`` writes ``NAME.nii.gz``
(uint8), ``NAME_probs.npz`` (``probs`` float16 (C, Z, Y, X)) and ``predictions.json``."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from uu.data import DataError, load_acdc, normalize_intensity
from uu.device import resolve_amp, resolve_device
from uu.runs import load_run_model, resolve_plan
from uu.step import unwrap


@torch.no_grad()
def predict_logits(
    model,
    image,
    patch_size: Sequence[int],
    mirror: bool = True,
    device="cpu",
    sw_batch_size: int = 8,
    overlap: float = 0.5,
    autocast_dtype=None,
) -> torch.Tensor:
    """Gaussian-blended sliding-window logits (C, Z, Y, X) float32 of a normalised (Z, Y, X) image."""
    from monai.inferers import sliding_window_inference

    device = torch.device(device)
    volume = torch.as_tensor(image if torch.is_tensor(image) else np.asarray(image, dtype=np.float32))
    volume = volume.to(device, torch.float32)
    if volume.ndim != 3:
        raise ValueError(f"predict: image must be (Z, Y, X), got shape {tuple(volume.shape)}")
    spatial_dims = len(patch_size)
    inputs = volume[:, None] if spatial_dims == 2 else volume[None, None]  # (Z,1,Y,X) or (1,1,Z,Y,X)

    def network(x):
        if autocast_dtype is None:
            return model(x).float()
        with torch.autocast(device_type=device.type, dtype=autocast_dtype):
            return model(x).float()

    flippable = (2, 3) if spatial_dims == 2 else (2, 3, 4)  # in-plane (Y, X), plus Z in 3D
    flips = [c for r in range(len(flippable) + 1) for c in itertools.combinations(flippable, r)] if mirror else [()]
    total, passes = None, 0
    for axes in flips:
        x = inputs.flip(axes) if axes else inputs
        logits = sliding_window_inference(
            x,
            roi_size=tuple(patch_size),
            sw_batch_size=sw_batch_size,
            predictor=network,
            overlap=overlap,
            mode="gaussian",
            padding_mode="constant",
            cval=0.0,
        )
        logits = logits.flip(axes) if axes else logits
        total, passes = (logits if total is None else total + logits), passes + 1
    total = total / passes
    return total.permute(1, 0, 2, 3) if spatial_dims == 2 else total[0]  # (C, Z, Y, X)


def predict_volume(
    model,
    image,
    plan,
    mirror: bool = True,
    device="cpu",
    sw_batch_size: int = 8,
    overlap: float = 0.5,
    autocast_dtype=None,
) -> np.ndarray:
    """Class probabilities (C, Z, Y, X) float32 for a raw (Z, Y, X) volume, normalised here as training does.
    plan: a uu.net Plan or a patch-size tuple; the model's train/eval mode is restored afterwards."""
    patch_size = tuple(plan.patch_size) if hasattr(plan, "patch_size") else tuple(plan)
    net = unwrap(model)
    was_training = net.training
    net.eval()
    try:
        image = normalize_intensity(np.asarray(image))
        options = dict(device=device, sw_batch_size=sw_batch_size, overlap=overlap, autocast_dtype=autocast_dtype)
        logits = predict_logits(net, image, patch_size, mirror=mirror, **options)
        return torch.softmax(logits, dim=0).cpu().numpy().astype(np.float32)
    finally:
        net.train(was_training)


def window_options(profile: dict, device) -> dict:
    """The sliding-window keywords of predict_volume / predict_cases a run's profile sets (its own precision)."""
    options = dict(device=device, sw_batch_size=profile["sw_batch_size"], overlap=profile["sw_overlap"])
    return {**options, "autocast_dtype": resolve_amp(profile["amp"], device)[0]}


def case_affine(case) -> np.ndarray:
    """The case's NIfTI affine when its source is a NIfTI file, else diag(spacing (x, y, z)) or identity."""
    source = Path(getattr(case, "source", ""))
    if source.name.endswith((".nii", ".nii.gz")) and source.is_file():
        import nibabel as nib

        return np.asarray(nib.load(str(source)).affine, dtype=np.float64)
    affine = np.eye(4)
    if getattr(case, "spacing", None) is not None:
        affine[0, 0], affine[1, 1], affine[2, 2] = case.spacing[2], case.spacing[1], case.spacing[0]
    return affine


def save_label_map(label_zyx: np.ndarray, path, affine: np.ndarray) -> Path:
    """uint8 (Z, Y, X) -> NIfTI in the official (X, Y, Z) axis order."""
    import nibabel as nib

    img = nib.Nifti1Image(np.ascontiguousarray(np.asarray(label_zyx, np.uint8).transpose(2, 1, 0)), affine)
    img.set_data_dtype(np.uint8)
    nib.save(img, str(path))
    return Path(path)


def load_label_map(path) -> np.ndarray:
    """A label map written by save_label_map, back as uint8 (Z, Y, X)."""
    import nibabel as nib

    return np.asarray(nib.load(str(path)).dataobj).transpose(2, 1, 0).astype(np.uint8)


def predict_cases(
    model,
    cases,
    plan,
    out_dir,
    mirror: bool = True,
    device="cpu",
    sw_batch_size: int = 8,
    autocast_dtype=None,
    progress: bool = True,
    overlap: float = 0.5,
) -> Path:
    """Predict every case (raw images as loaded) into ``out_dir`` (returned)."""
    from tqdm.auto import tqdm

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    index = []
    for case in tqdm(list(cases), desc="predict", disable=not progress, leave=False):
        options = dict(device=device, sw_batch_size=sw_batch_size, overlap=overlap, autocast_dtype=autocast_dtype)
        probs = predict_volume(model, case.image, plan, mirror=mirror, **options)
        if getattr(case, "loader", None) is not None:
            case.release()  # lazy cases: do not keep every volume in memory
        label = probs.argmax(0).astype(np.uint8)
        label_path = save_label_map(label, out_dir / f"{case.name}.nii.gz", case_affine(case))
        probs_path = out_dir / f"{case.name}_probs.npz"
        np.savez_compressed(probs_path, probs=probs.astype(np.float16))
        index.append(
            {
                "name": case.name,
                "patient": int(case.patient),
                "phase": case.phase,
                "label": label_path.name,
                "probs": probs_path.name,
                "source": str(case.source),
            }
        )
    (out_dir / "predictions.json").write_text(json.dumps({"mirror": bool(mirror), "cases": index}, indent=1))
    return out_dir


def select_cases(cases, split: str, split_json: Optional[Path]):
    """The cases of ``split`` ("train" | "val" | "test" | "all") using a run's split.json."""
    if split == "all":
        return list(cases)
    if split_json is None or not Path(split_json).is_file():
        raise DataError(f"--split {split}: the run has no split.json; use --split all")
    patients = set(json.loads(Path(split_json).read_text())[split])
    chosen = [c for c in cases if c.patient in patients]
    if not chosen:
        raise DataError(
            f"--split {split}: none of the run's {split} patients ({sorted(patients)[:10]}...) are in "
            f"this data folder; use --split all to predict every case of the folder"
        )
    return chosen


def cli_predict(args) -> int:
    """``python -m uu predict --run RUN --data D [--split val] --out PRED [--no-mirror]``."""
    device = resolve_device("auto")
    model, profile = load_run_model(args.run, which="final", device=device)
    plan = resolve_plan(profile)
    cases = load_acdc(args.data, lazy=True, require_labels=False)
    cases = select_cases(cases, args.split, Path(args.run) / "split.json")
    out = predict_cases(model, cases, plan, args.out, mirror=not args.no_mirror, **window_options(profile, device))
    print(f"predicted {len(cases)} volumes into {out}")
    return 0
