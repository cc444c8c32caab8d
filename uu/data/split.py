"""Patient-level splits. A patient never lands on two sides of a split."""

from __future__ import annotations

from typing import Iterable, Mapping, Optional, Union

import numpy as np

from .errors import DataError

# The ACDC split of nnFormer / TransUNet / Swin-Unet (their published val/test lists); train = the other 70 of 1-100.
NNFORMER_VAL = (89, 90, 91, 93, 94, 96, 97, 98, 99, 100)
NNFORMER_TEST = (2, 3, 8, 9, 12, 14, 17, 24, 42, 48, 49, 53, 55, 64, 67, 79, 81, 88, 92, 95)
NNFORMER_TRAIN = tuple(p for p in range(1, 101) if p not in NNFORMER_VAL + NNFORMER_TEST)
SCHEMES = ("nnformer", "kfold", "official")


def _patients_and_groups(patients, groups: Optional[Mapping[int, str]]):
    """Unique sorted patient ids and {patient: group or None}; accepts ints or Case objects."""
    known: dict[int, Optional[str]] = {}
    for item in patients:
        if hasattr(item, "patient"):
            known.setdefault(int(item.patient), getattr(item, "group", None))
        else:
            known.setdefault(int(item), None)
    if groups:
        for p in known:
            known[p] = groups.get(p, known[p])
    return sorted(known), known


def _kfold(ids: list[int], group_of: Mapping[int, Optional[str]], fold, n_folds: int, seed: int):
    """(train, val): fold ``fold`` of ``n_folds`` is val; patients shuffled within each group and dealt round-robin
    across groups (stratified, fold sizes differ by at most one). ``fold="all"``: everything is train."""
    if fold == "all":
        return list(ids), []
    if not isinstance(n_folds, (int, np.integer)) or n_folds < 2:
        raise DataError(f"split_patients: n_folds={n_folds!r} must be an integer >= 2.")
    if not isinstance(fold, (int, np.integer)) or not 0 <= fold < n_folds:
        raise DataError(f"split_patients: fold={fold!r} must be in 0..{n_folds - 1} or 'all'.")
    if len(ids) < n_folds:
        raise DataError(
            f"split_patients: {len(ids)} patients cannot fill {n_folds} folds; lower n_folds or add patients."
        )
    rng = np.random.default_rng(seed)
    by_group: dict[str, list[int]] = {}
    for p in ids:
        by_group.setdefault(str(group_of.get(p)), []).append(p)
    fold_of, position = {}, 0
    for name in sorted(by_group):
        for p in rng.permutation(by_group[name]):
            fold_of[int(p)] = position % n_folds
            position += 1
    return sorted(p for p in ids if fold_of[p] != fold), sorted(p for p in ids if fold_of[p] == fold)


def split_patients(
    patients: Iterable,
    scheme: str,
    fold: Union[int, str] = 0,
    n_folds: int = 5,
    seed: int = 0,
    groups: Optional[Mapping[int, str]] = None,
) -> dict[str, list[int]]:
    """{"train": [...], "val": [...], "test": [...]} of sorted patient ids.
    ``patients``: patient ids or `Case` objects (repeats are fine; Cases bring their group). Schemes:
      - "nnformer": the fixed 70/10/20 split of nnFormer/TransUNet (``NNFORMER_*``), restricted to ``patients``;
      - "kfold": stratified ``n_folds``-fold cross-validation, val = fold ``fold``, test = [];
      - "official": test = the testing-folder patients (id > 100), train/val = "kfold" of patients 1..100.
    """
    ids, group_of = _patients_and_groups(patients, groups)
    if not ids:
        raise DataError("split_patients: no patients given.")
    if scheme == "nnformer":
        outside = [p for p in ids if not 1 <= p <= 100]
        if outside:
            raise DataError(
                f"split_patients: the nnformer split covers the ACDC training patients 1..100 only; "
                f"got {outside[:5]}{'...' if len(outside) > 5 else ''}. "
                "Load only the training folder, or use scheme 'official'."
            )
        present = set(ids)
        return {
            "train": [p for p in NNFORMER_TRAIN if p in present],
            "val": [p for p in NNFORMER_VAL if p in present],
            "test": [p for p in NNFORMER_TEST if p in present],
        }
    if scheme == "kfold":
        train, val = _kfold(ids, group_of, fold, n_folds, seed)
        return {"train": train, "val": val, "test": []}
    if scheme == "official":
        training = [p for p in ids if p <= 100]
        if not training:
            raise DataError(
                f"split_patients: scheme 'official' needs training patients (ids 1..100); got only {ids[:5]}..."
            )
        train, val = _kfold(training, group_of, fold, n_folds, seed)
        return {"train": train, "val": val, "test": [p for p in ids if p > 100]}
    raise DataError(f"split_patients: unknown scheme {scheme!r}; choose one of {SCHEMES}.")


def choose_split(
    cases: Iterable, scheme: str = "auto", fold: Union[int, str] = 0, n_folds: int = 5, seed: int = 0
) -> tuple[str, dict[str, list[int]]]:
    """(scheme used, {"train", "val", "test"}): the split training uses; "auto": "nnformer" when all of its
    validation patients are present, else "kfold". DataError when train or val would be empty."""
    cases = list(cases)
    patients = sorted({int(getattr(c, "patient", c)) for c in cases})
    if scheme == "auto":
        scheme = "nnformer" if set(NNFORMER_VAL) <= set(patients) else "kfold"
    split = split_patients(cases, scheme, fold=fold, n_folds=n_folds, seed=seed)
    if not split["train"] or not split["val"]:
        raise DataError(
            f"split {scheme!r} of {len(patients)} patients gives {len(split['train'])} training and "
            f"{len(split['val'])} validation patients; both must be non-empty"
        )
    return scheme, split
