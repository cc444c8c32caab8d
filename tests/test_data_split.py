"""Patient splits: sizes, no leakage, the exact nnFormer lists, stratification, determinism."""

from __future__ import annotations

import pytest

from uu.data import NNFORMER_TEST, NNFORMER_TRAIN, NNFORMER_VAL, Case, DataError, choose_split, split_patients

ACDC_VAL = [89, 90, 91, 93, 94, 96, 97, 98, 99, 100]
ACDC_TEST = [2, 3, 8, 9, 12, 14, 17, 24, 42, 48, 49, 53, 55, 64, 67, 79, 81, 88, 92, 95]


def sides_disjoint(split):
    seen = [p for side in split.values() for p in side]
    return len(seen) == len(set(seen))


def test_nnformer_lists_are_the_readme_ones():
    assert list(NNFORMER_VAL) == ACDC_VAL and list(NNFORMER_TEST) == ACDC_TEST
    assert len(NNFORMER_TRAIN) == 70
    assert sorted(NNFORMER_TRAIN + NNFORMER_VAL + NNFORMER_TEST) == list(range(1, 101))


def test_nnformer_on_all_and_on_present_patients():
    full = split_patients(list(range(1, 101)) * 2, "nnformer")
    assert (len(full["train"]), len(full["val"]), len(full["test"])) == (70, 10, 20)
    assert full["val"] == ACDC_VAL and full["test"] == ACDC_TEST
    # a copy holding only the 80 patients outside the test split: 70 / 10 / 0
    present = [p for p in range(1, 101) if p not in ACDC_TEST]
    split = split_patients(present, "nnformer")
    assert (len(split["train"]), len(split["val"]), split["test"]) == (70, 10, [])
    assert split_patients([1, 2, 89], "nnformer") == {"train": [1], "val": [89], "test": [2]}
    with pytest.raises(DataError, match="1..100"):
        split_patients([1, 101], "nnformer")


def test_kfold_partitions_patients_and_stratifies():
    cases = [
        Case(p, ph, ["DCM", "HCM", "MINF", "NOR", "RV"][(p - 1) // 4], None, None, None, "x")
        for p in range(1, 21)
        for ph in ("ED", "ES")
    ]  # 4 patients per group
    vals = []
    for fold in range(4):
        split = split_patients(cases, "kfold", fold=fold, n_folds=4, seed=3)
        assert sides_disjoint(split) and split["test"] == []
        assert sorted(split["train"] + split["val"]) == list(range(1, 21))
        assert len(split["val"]) == 5
        # 4 patients per group dealt over 4 folds: each fold has exactly one patient of each group
        assert sorted((p - 1) // 4 for p in split["val"]) == [0, 1, 2, 3, 4]
        vals += split["val"]
    assert sorted(vals) == list(range(1, 21))  # folds cover everyone once
    assert split_patients(cases, "kfold", fold=1, n_folds=4, seed=3) == split_patients(
        cases, "kfold", fold=1, n_folds=4, seed=3
    )
    assert any(
        split_patients(cases, "kfold", fold=0, n_folds=4, seed=s)["val"]
        != split_patients(cases, "kfold", fold=0, n_folds=4, seed=0)["val"]
        for s in range(1, 5)
    )


def test_kfold_sizes_differ_by_at_most_one_and_fold_all():
    sizes = [len(split_patients(range(1, 24), "kfold", fold=f, n_folds=5)["val"]) for f in range(5)]
    assert sorted(sizes) == [4, 4, 5, 5, 5]
    assert split_patients([3, 1, 2], "kfold", fold="all") == {"train": [1, 2, 3], "val": [], "test": []}


def test_official_scheme():
    split = split_patients(list(range(1, 101)) + list(range(101, 151)), "official", fold=0, n_folds=5)
    assert split["test"] == list(range(101, 151))
    assert len(split["val"]) == 20 and len(split["train"]) == 80 and sides_disjoint(split)
    # groups from the numbering rule are not known for plain ids, but a groups mapping stratifies
    groups = {p: ["DCM", "HCM", "MINF", "NOR", "RV"][(p - 1) // 20] for p in range(1, 101)}
    split = split_patients(range(1, 101), "official", fold=2, groups=groups)
    assert sorted((p - 1) // 20 for p in split["val"]) == [g for g in range(5) for _ in range(4)]
    assert split_patients(range(1, 103), "official", fold="all")["val"] == []


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(scheme="random"), "unknown scheme"),
        (dict(scheme="kfold", fold=5, n_folds=5), "fold=5"),
        (dict(scheme="kfold", n_folds=1), "n_folds=1"),
        (dict(scheme="kfold", n_folds=11), "cannot fill"),
    ],
)
def test_bad_split_arguments(kwargs, message):
    with pytest.raises(DataError, match=message):
        split_patients(range(1, 11), **kwargs)


@pytest.mark.parametrize(
    "patients, scheme, fold, expected_scheme, expected_val",
    [
        (range(1, 101), "auto", 0, "nnformer", ACDC_VAL),  # nnFormer's validation patients present
        ([p for p in range(1, 101) if p != 89], "auto", 0, "kfold", None),  # one missing: k-fold
        ([1, 2, 89], "nnformer", 0, "nnformer", [89]),  # an explicit scheme is kept
    ],
)
def test_choose_split_auto_picks_nnformer_only_with_its_validation_patients(
    patients, scheme, fold, expected_scheme, expected_val
):
    used, split = choose_split(list(patients), scheme, fold=fold, n_folds=5, seed=0)
    assert used == expected_scheme
    if expected_val is None:  # the kfold split itself, same arguments
        assert split == split_patients(list(patients), "kfold", fold=fold, n_folds=5, seed=0)
    else:
        assert split["val"] == expected_val


@pytest.mark.parametrize(
    "patients, scheme, fold",
    [
        ([1, 2, 3], "nnformer", 0),  # none of nnFormer's validation patients: val empty
        (range(1, 11), "kfold", "all"),  # everyone in train: val empty
    ],
)
def test_choose_split_refuses_an_empty_side(patients, scheme, fold):
    with pytest.raises(DataError, match="both must be non-empty"):
        choose_split(list(patients), scheme, fold=fold)
