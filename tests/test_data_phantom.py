"""The phantom: layout, determinism, plausibility."""

from __future__ import annotations

import numpy as np
import pytest

from uu.data import DataError, ensure_phantom, load_acdc, make_phantom, parse_info_cfg
from uu.data.phantom import phantom_group


def test_layout_and_info_cfg(phantom_dir):
    folders = sorted(p.name for p in phantom_dir.iterdir())
    assert folders == [f"patient{i:03d}" for i in range(1, 7)]
    info = parse_info_cfg(phantom_dir / "patient003" / "Info.cfg")
    assert info["ED"] == 1 and 9 <= info["ES"] <= 15 and info["Group"] == "MINF"
    for stem in (f"patient003_frame{info['ED']:02d}", f"patient003_frame{info['ES']:02d}"):
        assert (phantom_dir / "patient003" / f"{stem}.nii.gz").is_file()
        assert (phantom_dir / "patient003" / f"{stem}_gt.nii.gz").is_file()


@pytest.mark.parametrize(
    "patient, n, group",
    [
        (1, 6, "DCM"),
        (5, 6, "RV"),
        (6, 6, "DCM"),  # cycling when n != 100
        (20, 100, "DCM"),
        (21, 100, "HCM"),
        (60, 100, "MINF"),
        (61, 100, "NOR"),
        (100, 100, "RV"),
    ],
)
def test_groups(patient, n, group):
    assert phantom_group(patient, n) == group


def test_plausible_volumes(phantom_dir):
    cases = load_acdc(phantom_dir)
    for ed, es in zip(cases[0::2], cases[1::2]):
        assert (ed.patient, ed.phase, es.phase) == (es.patient, "ED", "ES")
        assert 6 <= ed.image.shape[0] <= 10 and all(48 <= n <= 56 for n in ed.image.shape[1:])
        assert ed.image.shape == es.image.shape
        z, y, x = ed.spacing
        assert z in (8.0, 10.0) and 2.2 <= y == x <= 2.6
        assert set(np.unique(ed.label)) == {0, 1, 2, 3}
        assert (es.label == 3).sum() < (ed.label == 3).sum()  # LV smaller at ES
        # every slice has LV and myocardium; RV is missing at most in the apical slices
        for case in (ed, es):
            per_slice = [set(np.unique(s)) for s in case.label]
            assert all({2, 3} <= s for s in per_slice)
            has_rv = [1 in s for s in per_slice]
            assert has_rv[0] and has_rv == sorted(has_rv, reverse=True)
        # blood is brighter than myocardium on average (bright-blood cine)
        assert ed.image[ed.label == 3].mean() > 2 * ed.image[ed.label == 2].mean()


def test_group_shapes(tmp_path):
    cases = {(c.group, c.phase): c for c in load_acdc(make_phantom(tmp_path, 5, seed=1))}
    lv = {g: (cases[g, "ED"].label == 3).sum() * np.prod(cases[g, "ED"].spacing) for g in ("DCM", "HCM", "NOR")}
    assert lv["DCM"] > lv["NOR"] > lv["HCM"]  # dilated vs hypertrophic
    ef = {g: 1 - (cases[g, "ES"].label == 3).sum() / (cases[g, "ED"].label == 3).sum() for g in ("DCM", "NOR")}
    assert ef["DCM"] < ef["NOR"]


def test_deterministic_per_seed(tmp_path, phantom_dir):
    again = load_acdc(make_phantom(tmp_path / "a", n_patients=3, seed=0))
    first = load_acdc(phantom_dir)[:6]  # same patients 1-3
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a.image, b.image)
        np.testing.assert_array_equal(a.label, b.label)
        assert a.spacing == b.spacing and a.source.name == b.source.name
    other = load_acdc(make_phantom(tmp_path / "b", n_patients=1, seed=1))
    assert other[0].image.shape != first[0].image.shape or not np.array_equal(other[0].image, first[0].image)


def test_bad_n_patients(tmp_path):
    with pytest.raises(ValueError, match="n_patients"):
        make_phantom(tmp_path, n_patients=0)


def test_ensure_phantom_makes_once_then_reuses(tmp_path):
    root = ensure_phantom(tmp_path / "p", 2)
    assert sorted(p.name for p in root.iterdir()) == ["patient001", "patient002", "phantom.json"]
    again = load_acdc(make_phantom(tmp_path / "seed0", 2, seed=0))
    for a, b in zip(load_acdc(root), again):  # seed 0
        np.testing.assert_array_equal(a.image, b.image)
    (root / "patient001" / "note.txt").write_text("kept")
    ensure_phantom(root, 2)  # reused, not made again
    assert (root / "patient001" / "note.txt").is_file()
    ensure_phantom(root, 3)  # a bigger one is made in place
    assert (root / "patient003").is_dir() and len(load_acdc(root)) == 6


@pytest.mark.parametrize(
    "content, n",
    [
        (["patient001", "patient002", "patient003"], 2),  # a bigger phantom
        (["training"], 2),  # somebody's data
    ],
)
def test_ensure_phantom_refuses_a_folder_of_other_data(tmp_path, content, n):
    for name in content:
        (tmp_path / name).mkdir()
    with pytest.raises(DataError, match=f"holds .*not a {n}-patient phantom"):
        ensure_phantom(tmp_path, n)


def test_ensure_phantom_of_no_folder_is_the_shared_cache(tmp_path, monkeypatch):
    """root None (notebook 01 without data): one phantom per size under UU_CACHE_DIR, made once, nothing left
    beside it; a process that finds it made meanwhile by another keeps that one."""
    from uu.data import phantom

    cache = tmp_path / "cache"
    monkeypatch.setenv("UU_CACHE_DIR", str(cache))
    root = ensure_phantom(None, 1)
    assert root == cache / "phantom-1" and sorted(p.name for p in cache.iterdir()) == ["phantom-1"]
    stamp = (root / "phantom.json").stat().st_mtime_ns
    assert ensure_phantom(None, 1) == root and (root / "phantom.json").stat().st_mtime_ns == stamp  # reused
    make = phantom.make_phantom

    def racing(folder, n, seed):  # another process completes the shared folder while this one works
        monkeypatch.setattr(phantom, "make_phantom", make)
        ensure_phantom(folder.parent / "phantom-2", 2)
        return make(folder, n, seed)

    monkeypatch.setattr(phantom, "make_phantom", racing)
    assert ensure_phantom(None, 2) == cache / "phantom-2" and len(load_acdc(cache / "phantom-2")) == 4
    assert sorted(p.name for p in cache.iterdir()) == ["phantom-1", "phantom-2"]
