from __future__ import annotations

import numpy as np
import pytest
import torch

from ibsr_helpers.data import discover, load_subjects
from ibsr_helpers.datasets import (
    EpochSampler,
    PatchDataset,
    SliceDataset,
    slice_stack,
    slice_weights,
    weight_map,
)
from ibsr_helpers.errors import IBSRError
from ibsr_helpers.preprocessing import Preprocessing, prepare


@pytest.fixture(scope="module")
def cropped(any_root):
    vols = load_subjects(discover(any_root, splits=["train"])[:2], progress=False)
    spec = Preprocessing(roi=(192, 128, 192), divisor=32)
    return vols, [prepare(v, spec) for v in vols]


def test_slice_stack_context():
    vol = np.arange(4 * 3 * 2, dtype=np.float32).reshape(4, 3, 2)
    s = slice_stack(vol, "coronal", context=1)  # along axis 1
    assert s.shape == (3, 3, 4, 2)
    np.testing.assert_array_equal(s[1, 1], vol[:, 1, :])
    np.testing.assert_array_equal(s[0, 0], vol[:, 0, :])  # edge repeats
    np.testing.assert_array_equal(s[2, 2], vol[:, 2, :])
    np.testing.assert_array_equal(slice_stack(vol, "axial")[1, 0], vol[:, :, 1])


def test_slice_dataset_drops_empty_and_shapes(cropped):
    _, crops = cropped
    ds = SliceDataset(crops, "coronal", context=2, drop_empty=True)
    full = SliceDataset(crops, "coronal", context=2, drop_empty=False)
    assert len(ds) < len(full) == sum(c.image.shape[1] for c in crops)
    item = ds[0]
    assert item["image"].shape == (5, 192, 192) and item["label"].shape == (1, 192, 192)
    # kept: exactly the slices holding brain (the prepared brain mask, not image != 0)
    assert len(ds) == sum(int(c.brain.any(axis=(0, 2)).sum()) for c in crops)
    assert item["image"][2].abs().sum() > 0


def test_slice_crops_are_windows_of_their_slice_drawn_per_seed(cropped):
    _, crops = cropped
    whole = SliceDataset(crops, "coronal", context=1)
    ds = SliceDataset(crops, "coronal", context=1, crop=(128, 64))
    windows = []
    for seed in (0, 0, 1, 2):
        ds.set_seed(seed)
        item = ds[7]
        assert item["image"].shape == (3, 128, 64) and item["label"].shape == (1, 128, 64)
        full = whole[7]  # the crop is a window of the slice, image and label alike
        hits = [
            (r, c)
            for r in range(192 - 128 + 1)
            for c in range(192 - 64 + 1)
            if torch.equal(full["image"][:, r : r + 128, c : c + 64], item["image"])
            and torch.equal(full["label"][:, r : r + 128, c : c + 64], item["label"])
        ]
        assert hits
        windows.append(hits[0])
    assert windows[0] == windows[1] and len(set(windows)) > 2  # same seed, same window
    tall = SliceDataset(crops, "coronal", crop=(256, 64))  # longer than the slice: all of it
    assert tall[0]["image"].shape == (1, 192, 64)


def test_epoch_sampler_deterministic_and_disjoint_across_ranks():
    a = list(EpochSampler(1000, 50, seed=3))
    b = list(EpochSampler(1000, 50, seed=3))
    assert a == b
    s = EpochSampler(1000, 50, seed=3)
    s.set_epoch(1)
    assert list(s) != a
    r0 = EpochSampler(10**6, 20, seed=1, rank=0, world_size=2)
    r1 = EpochSampler(10**6, 20, seed=1, rank=1, world_size=2)
    assert not set(r0) & set(r1) and len(list(r0)) == 20


def test_slice_weights_draw_each_class_by_its_ratio():
    label = np.zeros((4, 5, 5), int)
    label[0, :2] = 1  # 10 CSF voxels
    label[2, 0, 0] = 1  # 1 CSF voxel
    label[1] = 2  # all the GM
    label[3, :, :1] = 3  # all the WM
    w = slice_weights(label, [0, 1, 1, 1])
    # a third per tissue; CSF split 10 : 1 between slices 0 and 2
    np.testing.assert_allclose(w, [10 / 33, 1 / 3, 1 / 33, 1 / 3])
    w = slice_weights(label, [0, 2, 1, 0])  # CSF drawn twice as often as GM, WM never
    np.testing.assert_allclose(w, [20 / 33, 1 / 3, 2 / 33, 0])
    with pytest.raises(IBSRError, match="no class present"):
        slice_weights(np.zeros((3, 2, 2), int), [0, 1, 1, 1])


def test_weighted_epoch_sampler_follows_weights_and_stays_deterministic():
    w = np.array([0.7, 0.0, 0.2, 0.1])
    draw = np.array(list(EpochSampler(4, 20000, seed=5, weights=w)))
    np.testing.assert_allclose(np.bincount(draw, minlength=4) / draw.size, w, atol=0.01)
    again = EpochSampler(4, 50, seed=5, weights=w)
    assert list(EpochSampler(4, 50, seed=5, weights=w)) == list(again)
    with pytest.raises(IBSRError, match="positive sum"):
        EpochSampler(4, 10, weights=np.zeros(4))


def test_class_balanced_slices_favour_csf_slices(cropped):
    _, crops = cropped
    uniform = SliceDataset(crops, "coronal")
    balanced = SliceDataset(crops, "coronal", sampler="class_balanced", class_ratios=[0, 1, 0, 0])
    assert uniform.weights is None and len(balanced) == len(uniform)
    csf = np.array([(balanced.labels[vi][s] == 1).sum() for vi, s in balanced.index])
    # only slices holding CSF are drawn, in proportion to their CSF (each volume a half)
    assert (balanced.weights[csf == 0] == 0).all() and balanced.weights.sum() == pytest.approx(2)
    first = [k for k, (vi, _) in enumerate(balanced.index) if vi == 0]
    np.testing.assert_allclose(balanced.weights[first], csf[first] / csf[first].sum())
    with pytest.raises(IBSRError, match="unknown slice sampler"):
        SliceDataset(crops, "coronal", sampler="weighted")


@pytest.mark.parametrize("sampler", ["uniform", "foreground", "class_balanced", "weighted"])
def test_patch_samplers_give_patches_and_reseed(cropped, sampler):
    _, crops = cropped
    ds = PatchDataset(crops, (32, 32, 32), sampler=sampler, patches_per_volume=3)
    ds.set_seed(0)
    item = ds[0]
    assert item["image"].shape == (3, 1, 32, 32, 32) and item["label"].shape == (3, 1, 32, 32, 32)
    ds.set_seed(0)
    again = ds[0]
    torch.testing.assert_close(item["image"], again["image"])  # re-seeding reproduces


N_CENTRES, PATCH = 900, 16


def _centre_classes(crops, sampler: str, **kw) -> tuple[np.ndarray, np.ndarray]:
    """Classes under many centres of one sampler, and the label they were drawn from."""
    ds = PatchDataset(crops[:1], (PATCH,) * 3, sampler=sampler, patches_per_volume=N_CENTRES, **kw)
    centres = ds.centres(seed=7)
    label = crops[0].label
    return label[tuple(centres.T)], label


def _share(classes: np.ndarray) -> np.ndarray:
    return np.bincount(classes, minlength=4) / len(classes)


# Each sampler's test checks what tells it from the other three; 900 centres give a
# binomial sd of at most 0.017, so +-0.06 is three and a half sd.


def test_uniform_sampler_draws_classes_as_often_as_they_fill_the_box(cropped):
    classes, label = _centre_classes(cropped[1], "uniform")
    h = PATCH // 2
    valid = label[
        h : -h + 1 or None, h : -h + 1 or None, h : -h + 1 or None
    ]  # centres keeping patches inside
    expected = np.bincount(valid.ravel(), minlength=4) / valid.size
    np.testing.assert_allclose(_share(classes), expected, atol=0.06)
    assert _share(classes)[0] > 0.2  # background is drawn, unlike class-balanced / weighted


def test_foreground_sampler_draws_brain_and_background_half_and_half(cropped):
    classes, _ = _centre_classes(cropped[1], "foreground", pos_ratio=1.0)
    assert abs(_share(classes)[0] - 0.5) < 0.06
    share = _share(classes)[1:] / _share(classes)[1:].sum()  # within brain: as common
    assert share[0] < 0.15  # CSF stays rare, unlike class-balanced


def test_class_balanced_sampler_draws_each_tissue_equally(cropped):
    classes, _ = _centre_classes(cropped[1], "class_balanced", class_ratios=(0, 1, 1, 1))
    np.testing.assert_allclose(_share(classes), [0, 1 / 3, 1 / 3, 1 / 3], atol=0.06)


def test_weighted_sampler_draws_tissue_boundaries(cropped):
    classes, label = _centre_classes(cropped[1], "weighted")
    ds = PatchDataset(cropped[1][:1], (PATCH,) * 3, "weighted", patches_per_volume=N_CENTRES)
    centres = ds.centres(seed=7)
    w = weight_map(label, "boundary")
    on_edge = float((w[tuple(centres.T)] == 10).mean())
    h = PATCH // 2
    inner = w[h : -h + 1, h : -h + 1, h : -h + 1]
    expected = float(inner[inner == 10].sum() / inner.sum())
    assert _share(classes)[0] == 0  # background weighs 0
    assert abs(on_edge - expected) < 0.06 and on_edge > 0.5, (on_edge, expected)


def test_weight_maps():
    lab = np.zeros((10, 10, 10), np.uint8)
    lab[2:8, 2:8, 2:8] = 3
    lab[4:6, 4:6, 4:6] = 1
    w = weight_map(lab, "boundary", boundary_weight=5)
    assert w[0, 0, 0] == 0 and w[4, 4, 4] == 5 and w[3, 3, 3] == 5 and w[2, 5, 5] == 5
    inv = weight_map(lab, "inverse_frequency")
    # each tissue's weights sum to the same total -> equal chance per tissue
    assert inv[lab == 1].sum() == pytest.approx(inv[lab == 3].sum())
