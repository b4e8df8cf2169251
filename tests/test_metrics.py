"""Tests for ibsr_helpers.metrics.

Real IBSR18 labels are used when IBSR18_DIR is set, a synthetic 3-class volume otherwise.
Distances are checked to 0.01 mm against SimpleITK (ITK's Maurer distance transform and
contour filter), an implementation independent of the scipy code the module calls, and
exactly against MONAI's boundary distances, whose definition the module follows.
"""

from __future__ import annotations

import math
import os
import time
import warnings

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from scipy import ndimage as ndi

from ibsr_helpers import data
from ibsr_helpers import metrics as M
from ibsr_helpers.errors import IBSRError
from ibsr_helpers.io import read_volume

TOL_MM = 0.01  # distances are exact voxel-centre distances; 0.01 mm leaves float32 slack only
SPACING = (0.9375, 1.5, 0.9375)


def _synthetic_labels(shape=(80, 56, 80), seed=0) -> np.ndarray:
    """Nested irregular shells: WM inside GM inside CSF, with a background margin."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij"))
    radius = np.sqrt((grid**2).sum(0))
    bumps = ndi.gaussian_filter(rng.standard_normal(shape), sigma=4)
    radius = radius + 2.0 * bumps
    labels = np.zeros(shape, np.uint8)
    labels[radius < 0.8] = 1
    labels[radius < 0.7] = 2
    labels[radius < 0.45] = 3
    return labels


@pytest.fixture(scope="module")
def labels() -> tuple[np.ndarray, tuple[float, float, float], str]:
    """One subject's label volume, its spacing and its name."""
    root = os.environ.get("IBSR18_DIR")
    if root:
        subject = data.discover(root, splits=["val"])[0]
        label, _ = read_volume(subject.label, np.uint8)
        return label, subject.spacing, subject.id
    return _synthetic_labels(), SPACING, "synthetic"


def _perturb(gt: np.ndarray, kind: str) -> np.ndarray:
    rng = np.random.default_rng(1)
    pred = gt.copy()
    if kind == "dilate":  # grow WM into GM by one voxel, CSF into background by two
        pred[ndi.binary_dilation(gt == 3)] = 3
        pred[ndi.binary_dilation(gt == 1, iterations=2) & (gt == 0)] = 1
    elif kind == "shift":  # 2 voxels along the 1.5 mm axis, 1 along the first
        pred = np.roll(gt, (1, 2, 0), axis=(0, 1, 2))
    elif kind == "erode":  # random holes, a stray CSF blob far out, a mislabelled patch
        pred[(rng.random(gt.shape) < 0.05) & (gt > 0)] = 0
        pred[2:5, 2:5, 2:5] = 1  # background in IBSR and in the synthetic volume
        centre = np.argwhere(gt > 0).mean(0).astype(int)
        pred[tuple(slice(c, c + 6) for c in centre)] = 2
    return pred


def _to_sitk(mask: np.ndarray, spacing) -> sitk.Image:
    image = sitk.GetImageFromArray(np.ascontiguousarray(mask.astype(np.uint8).transpose(2, 1, 0)))
    image.SetSpacing(tuple(float(s) for s in spacing))
    return image


def _contour(mask: np.ndarray, spacing) -> sitk.Image:
    """Boundary voxels: mask voxels with a face neighbour outside the mask (ITK's filter)."""
    return sitk.BinaryContour(
        _to_sitk(mask, spacing), fullyConnected=False, backgroundValue=0, foregroundValue=1
    )


def _reference_hd(pred: np.ndarray, gt: np.ndarray, spacing) -> tuple[float, float]:
    """HD from SimpleITK's Hausdorff filter on the boundaries; HD95 from Maurer distance maps.

    Both masks are first cropped to their union's bounding box plus a 3-voxel margin: the
    distances between boundary voxels do not change, and ITK has 4x fewer voxels to visit.
    """
    found = np.argwhere(pred | gt)
    lo, hi = np.maximum(found.min(0) - 3, 0), found.max(0) + 4
    crop = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    cp, cg = _contour(pred[crop], spacing), _contour(gt[crop], spacing)
    hd_filter = sitk.HausdorffDistanceImageFilter()
    hd_filter.Execute(cp, cg)
    hd95 = 0.0
    for source, target in ((cp, cg), (cg, cp)):
        dist = sitk.SignedMaurerDistanceMap(
            target, insideIsPositive=False, squaredDistance=False, useImageSpacing=True
        )
        on_source = sitk.GetArrayFromImage(source).astype(bool)
        d = np.maximum(sitk.GetArrayFromImage(dist)[on_source], 0.0).astype(np.float64)
        hd95 = max(hd95, float(np.percentile(d, 95)))
    return hd_filter.GetHausdorffDistance(), hd95


# --- per-mask metrics -------------------------------------------------------------------


def test_identical_labels_score_perfectly(labels):
    gt, spacing, _ = labels
    scores = M.evaluate_segmentation(gt.copy(), gt, spacing)
    for tissue in data.TISSUES:
        assert scores[tissue] == {"dice": 1.0, "hd": 0.0, "hd95": 0.0, "avd": 0.0}
    assert M.mean_dice(scores) == 1.0


@pytest.mark.parametrize("k", [1, 2, 3])
def test_cube_shifted_along_anisotropic_axis(k):
    spacing, n = (1.0, 1.5, 1.0), 10
    gt = np.zeros((30, 30, 30), bool)
    gt[10:20, 10:20, 10:20] = True
    pred = np.roll(gt, k, axis=1)
    assert M.hausdorff(pred, gt, spacing) == pytest.approx(1.5 * k, abs=1e-6)
    assert M.hausdorff(np.roll(gt, k, axis=0), gt, spacing) == pytest.approx(1.0 * k, abs=1e-6)
    assert M.dice(pred, gt) == pytest.approx((n - k) / n)
    assert M.avd(pred, gt) == 0.0
    hd95 = M.hausdorff(pred, gt, spacing, percentile=95)
    assert 0 < hd95 <= 1.5 * k + 1e-6


def test_boundary_distance_counts_holes():
    """A hole is boundary: HD is its distance to the outer face, not the set distance 1."""
    gt = np.zeros((21, 21, 21), bool)
    gt[3:18, 3:18, 3:18] = True  # centre (10, 10, 10), faces at 3 and 17
    pred = gt.copy()
    pred[10, 10, 10] = False
    spacing = (1.0, 1.5, 1.0)
    # the hole's face neighbours lie 6 voxels from the nearest outer face; for (10, 9, 10)
    # that face is along y (6 * 1.5 mm = 9 mm), so the x and z faces, 7 mm away, are nearer
    assert M.hausdorff(pred, gt, spacing) == pytest.approx(7.0, abs=1e-6)
    set_hd = sitk.HausdorffDistanceImageFilter()
    set_hd.Execute(_to_sitk(pred, spacing), _to_sitk(gt, spacing))
    assert set_hd.GetHausdorffDistance() == pytest.approx(1.0)  # the definition we do not use


@pytest.mark.parametrize("kind", ["dilate", "shift", "erode"])
def test_hausdorff_matches_simpleitk_on_perturbed_labels(labels, kind):
    gt, spacing, _ = labels
    pred = _perturb(gt, kind)
    scores = M.evaluate_segmentation(pred, gt, spacing)
    for volume in (gt, pred):  # so that ITK and MONAI need not agree on the volume's edge
        inner = volume[1:-1, 1:-1, 1:-1]
        assert np.count_nonzero(volume) == np.count_nonzero(inner)
    for tissue, value in (("CSF", 1), ("GM", 2), ("WM", 3)):
        p, g = pred == value, gt == value
        assert scores[tissue]["hd"] > 0  # the perturbation moved this tissue's boundary
        ref_hd, ref_hd95 = _reference_hd(p, g, spacing)
        assert scores[tissue]["hd"] == pytest.approx(ref_hd, abs=TOL_MM), tissue
        assert scores[tissue]["hd95"] == pytest.approx(ref_hd95, abs=TOL_MM), tissue
        assert scores[tissue]["dice"] == pytest.approx(
            2 * (p & g).sum() / (p.sum() + g.sum()), abs=1e-12
        )
        assert scores[tissue]["avd"] == pytest.approx(abs(p.sum() - g.sum()) / g.sum() * 100)
    assert M.hausdorff(pred == 2, gt == 2, spacing, 95) == pytest.approx(scores["GM"]["hd95"])


def test_evaluate_segmentation_timing_on_one_subject(labels, record_property):
    gt, spacing, name = labels
    pred = _perturb(gt, "shift")
    M.hausdorff(gt == 1, gt == 1, spacing)  # imports outside the timed part
    start = time.perf_counter()
    scores = M.evaluate_segmentation(pred, gt, spacing)
    seconds = time.perf_counter() - start
    start = time.perf_counter()
    fast = M.evaluate_segmentation(pred, gt, spacing, hd=False)
    fast_seconds = time.perf_counter() - start
    record_property("evaluate_segmentation_s", seconds)
    print(f"\n{name} {gt.shape}: with HD {seconds:.2f} s, Dice/AVD only {fast_seconds:.3f} s")
    assert set(fast["GM"]) == {"dice", "avd"}
    assert all(fast[t]["dice"] == scores[t]["dice"] for t in data.TISSUES)
    assert all(math.isfinite(v) for row in scores.values() for v in row.values())


@pytest.mark.parametrize("fill", [0.05, 0.5])
def test_boundary_distances_equal_monais_on_scattered_masks(fill):
    # scattered masks, as a barely trained model predicts, touching the volume's edges
    from monai.metrics.utils import get_edge_surface_distance

    rng = np.random.default_rng(1)
    spacing = (0.9375, 1.5, 0.9375)
    gt = np.zeros((24, 16, 20), bool)
    gt[4:20, 0:12, 5:20] = True
    pred = rng.random(gt.shape) < fill
    ours = M._surface_distances(pred, gt, spacing)
    _, theirs, _ = get_edge_surface_distance(
        torch.from_numpy(pred), torch.from_numpy(gt), spacing=spacing, symmetric=True
    )
    for a, b in zip(ours, theirs, strict=True):
        np.testing.assert_allclose(np.sort(a), np.sort(np.asarray(b)), rtol=1e-6)
    assert M.hausdorff(pred, gt, spacing) == pytest.approx(
        max(float(np.asarray(b).max()) for b in theirs), rel=1e-6
    )


def test_empty_mask_policy():
    shape, spacing = (8, 6, 10), (1.0, 1.5, 2.0)
    diagonal = math.sqrt(8**2 + 9**2 + 20**2)
    empty = np.zeros(shape, bool)
    some = empty.copy()
    some[2:4, 2:4, 2:4] = True
    assert (M.dice(empty, empty), M.avd(empty, empty)) == (1.0, 0.0)
    assert M.hausdorff(empty, empty, spacing) == 0.0
    assert M.hausdorff(empty, empty, spacing, 95) == 0.0
    for pred, gt in ((empty, some), (some, empty)):
        assert M.dice(pred, gt) == 0.0
        assert M.avd(pred, gt) == 100.0
        assert M.hausdorff(pred, gt, spacing) == pytest.approx(diagonal)
        assert M.hausdorff(pred, gt, spacing, 95) == pytest.approx(diagonal)


def test_missing_tissues_never_give_nan():
    gt = np.zeros((12, 10, 12), np.uint8)
    gt[3:9, 3:7, 3:9] = 3  # WM only
    pred = np.zeros_like(gt)
    pred[3:9, 3:7, 3:9] = 2  # GM only
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        scores = M.evaluate_segmentation(pred, gt, (1.0, 1.0, 1.0))
    assert not [w for w in caught if "all 0" in str(w.message)]  # no MONAI empty-mask warning
    assert scores["CSF"] == {"dice": 1.0, "hd": 0.0, "hd95": 0.0, "avd": 0.0}
    assert scores["GM"]["dice"] == 0.0 and scores["GM"]["avd"] == 100.0
    assert scores["WM"]["hd"] == pytest.approx(math.sqrt(12**2 + 10**2 + 12**2))
    assert not np.isnan([v for row in scores.values() for v in row.values()]).any()


def test_dice_avd_values_and_bad_arguments():
    gt = np.zeros(200, bool)
    gt[:100] = True
    pred = np.zeros(200, bool)
    pred[50:160] = True
    assert M.dice(pred, gt) == pytest.approx(2 * 50 / 210)
    assert M.avd(pred, gt) == pytest.approx(10.0)
    with pytest.raises(ValueError, match="shapes"):
        M.dice(pred, gt[:100])
    cube = np.ones((4, 4, 4), bool)
    with pytest.raises(IBSRError, match="spacing"):
        M.hausdorff(cube, cube, (1.0, 1.0))
    with pytest.raises(ValueError, match="percentile"):
        M.hausdorff(cube, cube, (1.0, 1.0, 1.0), percentile=150)
    assert M.mean_dice({"CSF": {"dice": 0.5}, "GM": {"dice": 0.7}, "WM": {"dice": 0.9}}) == (
        pytest.approx(0.7)
    )


def test_distance_to_is_anisotropic_and_ignores_the_volume_edge():
    mask = np.zeros((5, 4, 6), bool)
    mask[0, 0, 0] = True
    d = M.distance_to(mask, (1.0, 1.5, 2.0))
    assert d[0, 0, 0] == 0.0
    assert d[4, 3, 5] == pytest.approx(math.sqrt(4**2 + 4.5**2 + 10**2), rel=1e-6)
    np.testing.assert_allclose(d, M.distance_to(mask, (1.0, 1.5, 2.0), threads=1))
