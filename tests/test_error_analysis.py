"""Tests for ibsr_helpers.error_analysis: boundary distances and where errors lie."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from ibsr_helpers import data, plots
from ibsr_helpers.error_analysis import (
    DISTANCES,
    boundary_distance,
    error_profile,
    error_profiles,
)
from ibsr_helpers.errors import IBSRError

CAP = len(DISTANCES) - 1


def _brute_force_distance(label: np.ndarray) -> np.ndarray:
    """Distances by definition: min L1 distance to a voxel with a differing face neighbour."""
    boundary = []
    for idx in np.ndindex(label.shape):
        for axis in range(label.ndim):
            for step in (-1, 1):
                j = list(idx)
                j[axis] += step
                if 0 <= j[axis] < label.shape[axis] and label[tuple(j)] != label[idx]:
                    boundary.append(idx)
    points = np.array(sorted(set(boundary)))
    grid = np.indices(label.shape).reshape(label.ndim, -1).T
    l1 = np.abs(grid[:, None, :] - points[None, :, :]).sum(-1).min(1)
    return np.minimum(l1, CAP).reshape(label.shape)


def _halves(shape=(12, 6, 5)) -> np.ndarray:
    """GM (2) in the lower half of axis 0, WM (3) in the upper half."""
    label = np.full(shape, 2, np.uint8)
    label[shape[0] // 2 :] = 3
    return label


def test_boundary_distance_matches_its_definition_on_random_labels():
    rng = np.random.default_rng(0)
    label = rng.integers(0, 4, size=(9, 7, 6)) * (rng.random((9, 7, 6)) < 0.08)
    label = np.where(rng.random(label.shape) < 0.9, 0, label).astype(np.uint8)
    label[2:6, 2:5, 1:5] = 3  # a block with an inside deeper than the cap
    np.testing.assert_array_equal(boundary_distance(label), _brute_force_distance(label))


def test_both_sides_of_an_interface_are_on_the_boundary_and_the_array_edge_is_not():
    d = boundary_distance(_halves())
    assert d[5].max() == 0 and d[6].max() == 0  # the two layers that touch
    assert d[4].min() == 1 and d[7].min() == 1
    assert d[0].min() == CAP and d[11].min() == CAP  # 5 steps away, at the array's edge
    assert (boundary_distance(np.zeros((4, 4, 4), np.uint8)) == 255).all()


def test_error_profile_bins_errors_by_distance_and_fixes_only_the_far_ones():
    label = _halves()
    seg = label.copy()
    seg[5, 0, 0] = 3  # on the interface
    seg[0, 0, 0] = 1  # deep inside GM: a blunder
    profile = error_profile(seg, label)
    assert profile["errors"] == 2
    assert profile["on boundary"] == 0.5 and profile["3+ voxels off"] == 0.5
    assert sum(profile[b] for b in DISTANCES) == pytest.approx(1.0)
    assert profile["mean Dice"] < profile["mean Dice, off-boundary errors fixed"] < 1.0
    assert "shared by every member" not in profile
    perfect = error_profile(label, label)
    assert perfect["errors"] == 0 and perfect["on boundary"] == 0.0
    assert perfect["mean Dice"] == 1.0


def test_shared_errors_are_those_every_member_also_gets_wrong():
    label = _halves()
    ensemble = label.copy()
    ensemble[[0, 1, 2, 3], 0, 0] = 3
    a, b = label.copy(), label.copy()
    a[[0, 1, 2], 0, 0] = 1  # any wrong label counts, not only the ensemble's
    b[[0, 1], 0, 0] = 3
    b[10, 0, 0] = 2  # the member's own error, not the ensemble's: irrelevant
    assert error_profile(ensemble, label, [a, b])["shared by every member"] == 0.5
    assert error_profile(ensemble, label, [a])["shared by every member"] == 0.75


def test_error_profile_names_a_shape_mismatch():
    with pytest.raises(IBSRError, match="member has shape"):
        error_profile(_halves(), _halves(), [np.zeros((2, 2, 2))])


def test_error_profiles_of_predictors_on_demo_volumes_and_their_figure(demo_root):
    volumes = data.load_split(demo_root, "val", limit=2)
    rng = np.random.default_rng(0)
    segs: dict[str, dict[str, np.ndarray]] = {"a": {}, "b": {}, "a + b": {}}
    for vol in volumes:
        noisy = vol.label.copy()
        flip = rng.random(noisy.shape) < 0.01
        noisy[flip] = rng.integers(0, 4, size=int(flip.sum()))
        segs["a"][vol.id], segs["b"][vol.id], segs["a + b"][vol.id] = noisy, vol.label, noisy
    df = error_profiles(segs, volumes, {"a + b": ["a", "b"]})
    assert list(df["name"]) == ["a", "b", "a + b"] * len(volumes)
    assert (df.loc[df["name"] == "a + b", "shared by every member"] == 0.0).all()
    assert df.loc[df["name"] == "a", "shared by every member"].isna().all()
    # uniform noise lands mostly inside tissue, so fixing off-boundary errors helps a lot
    a = df[df["name"] == "a"]
    assert (a["3+ voxels off"] > 0.3).all()
    assert (a["mean Dice, off-boundary errors fixed"] > a["mean Dice"]).all()
    assert isinstance(plots.plot_error_distances(df), Figure)
    only = error_profiles(segs, volumes, {"a + b": ["a", "b"]}, names=["a + b"])
    assert set(only["name"]) == {"a + b"}
    pd.testing.assert_frame_equal(
        only.reset_index(drop=True),
        df[df["name"] == "a + b"].reset_index(drop=True),
    )
    with pytest.raises(IBSRError, match="no segmentations for c"):
        error_profiles(segs, volumes, {"a + b": ["a", "c"]})
    with pytest.raises(IBSRError, match="no segmentations for d"):
        error_profiles(segs, volumes, names=["d"])
    with pytest.raises(IBSRError, match="no error profiles"):
        plots.plot_error_distances(pd.DataFrame())
