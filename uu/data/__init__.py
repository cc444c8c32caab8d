"""ACDC data layer: cases, loading (official NIfTI, HDF5, compact cache), splits, phantom,
preprocessing. Imports numpy / nibabel / h5py only (never torch).

    cases = load_acdc("ACDC/training")          # or a folder in the HDF5 layout, or a *.uucache.npz
    split = split_patients(cases, "nnformer")   # {"train": [...], "val": [...], "test": [...]}
"""

from .cache import CACHE_SUFFIX, load_cache, write_cache
from .case import CLASS_NAMES, CLASSES, GROUPS, LABELS, NUM_CLASSES, PHASES, Case
from .errors import DataError
from .hdf5 import read_list
from .load import LAYOUTS, detect_layout, load_acdc
from .official import group_from_number, parse_info_cfg, read_nifti
from .phantom import ensure_phantom, make_phantom
from .preprocess import extract_patch, normalize_intensity, percentile_clip, resample, to_uint8
from .split import NNFORMER_TEST, NNFORMER_TRAIN, NNFORMER_VAL, SCHEMES, choose_split, split_patients
from .summary import case_table, class_voxels

__all__ = [
    "CACHE_SUFFIX",
    "CLASS_NAMES",
    "CLASSES",
    "LABELS",
    "NUM_CLASSES",
    "GROUPS",
    "LAYOUTS",
    "NNFORMER_TEST",
    "NNFORMER_TRAIN",
    "NNFORMER_VAL",
    "PHASES",
    "SCHEMES",
    "Case",
    "DataError",
    "case_table",
    "choose_split",
    "class_voxels",
    "detect_layout",
    "ensure_phantom",
    "extract_patch",
    "group_from_number",
    "load_acdc",
    "load_cache",
    "make_phantom",
    "normalize_intensity",
    "parse_info_cfg",
    "percentile_clip",
    "read_list",
    "read_nifti",
    "resample",
    "split_patients",
    "to_uint8",
    "write_cache",
]
