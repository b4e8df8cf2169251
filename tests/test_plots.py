"""Static figures and the plane/orientation convention they share with the viewer."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from ibsr_helpers import display, plots
from ibsr_helpers.data import Subject, Volume, tissue_volumes
from ibsr_helpers.errors import IBSRError

SHAPE = (20, 10, 16)


def make_volume(
    sid: str, split: str, image: np.ndarray, label: np.ndarray | None, spacing=(1.0, 1.5, 1.0)
) -> Volume:
    subject = Subject(
        sid,
        split,
        Path(f"{sid}.nii.gz"),
        None if label is None else Path("x"),
        tuple(spacing),
        image.shape,
    )
    return Volume(subject, image, label, nib.Nifti1Image(image, np.diag([*spacing, 1.0])))


@pytest.fixture
def volumes() -> list[Volume]:
    rng = np.random.default_rng(1)
    out = []
    for k, (sid, split) in enumerate(
        [("IBSR_01", "train"), ("IBSR_11", "val"), ("IBSR_03", "train"), ("IBSR_02", "test")]
    ):
        image = np.zeros(SHAPE, dtype=np.float32)
        image[3:17, 2:8, 2:14] = rng.integers(5, 80 * (k + 1), (14, 6, 12))
        label = None
        if split != "test":
            label = np.zeros(SHAPE, dtype=np.uint8)
            label[3:17, 2:8, 2:14] = rng.integers(1, 4, (14, 6, 12))
        out.append(make_volume(sid, split, image, label))
    return out


# ----------------------------------------------------------------- orientation


def marker_volume() -> np.ndarray:
    # One voxel near the right (+X), anterior (+Y), superior (+Z) corner of a RAS array.
    vol = np.zeros(SHAPE)
    vol[SHAPE[0] - 2, SHAPE[1] - 2, SHAPE[2] - 2] = 1
    return vol


@pytest.mark.parametrize(
    ("plane", "index", "expected_col"),
    [
        ("sagittal", SHAPE[0] - 2, SHAPE[1] - 2),  # anterior on the right, superior up
        ("coronal", SHAPE[1] - 2, SHAPE[0] - 2),  # right on the right, superior up
        ("axial", SHAPE[2] - 2, SHAPE[0] - 2),  # right on the right, anterior up
    ],
)
def test_slices_are_upright_and_neurological(plane, index, expected_col):
    two_d = display.slice_plane(marker_volume(), plane, index)
    rows, cols = np.nonzero(two_d)
    assert (rows.tolist(), cols.tolist()) == ([1], [expected_col])  # row 1: near the top
    left, right, bottom, top = display.plane_letters(plane)
    assert top in "SA" and right in "AR" and bottom in "IP" and left in "LP"


def test_slice_shapes_and_extent_in_mm():
    vol = np.zeros(SHAPE)
    spacing = (0.9375, 1.5, 0.9375)
    assert display.slice_plane(vol, "sagittal", 0).shape == (SHAPE[2], SHAPE[1])
    assert display.slice_plane(vol, "coronal", 0).shape == (SHAPE[2], SHAPE[0])
    assert display.slice_plane(vol, "axial", 0).shape == (SHAPE[1], SHAPE[0])
    assert display.plane_extent(SHAPE, spacing, "sagittal") == (0, 15.0, 0, 15.0)
    assert display.plane_extent(SHAPE, spacing, "axial") == (0, 18.75, 0, 15.0)
    assert [display.n_slices(SHAPE, p) for p in display.PLANES] == list(SHAPE)


def test_slice_errors():
    with pytest.raises(IBSRError, match="out of range"):
        display.slice_plane(np.zeros(SHAPE), "coronal", SHAPE[1])
    with pytest.raises(IBSRError, match="unknown plane"):
        display.slice_plane(np.zeros(SHAPE), "transverse", 0)


def test_a_volume_stored_las_is_shown_ras():
    vol = marker_volume().astype(np.float32)
    las = make_volume("IBSR_01", "train", np.ascontiguousarray(vol[::-1]), None)
    las.nifti = nib.Nifti1Image(las.image, np.diag([-1.0, 1.5, 1.0, 1.0]))
    image, _, spacing, title = display.unpack_volume(las, None, None)
    np.testing.assert_array_equal(image, vol)
    assert spacing == (1.0, 1.5, 1.0) and title == "IBSR_01"


# ----------------------------------------------------------------- colours


def test_label_colours_and_overlay():
    assert sorted(display.LABEL_COLORS) == [1, 2, 3]
    assert len({display.LABEL_COLORS[v] for v in (1, 2, 3)}) == 3
    lut = display.label_lut()
    assert lut[0, 3] == 0 and lut[4, 3] == 0 and (lut[1:4, 3] == 1).all()
    assert [h.get_label() for h in display.legend_handles()] == ["CSF", "GM", "WM"]
    image = np.array([[0.0, 50.0], [100.0, 100.0]])
    label = np.array([[0, 1], [2, 3]])
    grey = display.overlay(image, None, 0.5, (0.0, 100.0))
    np.testing.assert_allclose(grey[..., 0], [[0, 0.5], [1, 1]])
    np.testing.assert_array_equal(display.overlay(image, label, 0.0, (0.0, 100.0)), grey)
    full = display.overlay(image, label, 1.0, (0.0, 100.0))
    np.testing.assert_allclose(full[0, 1], to_rgb(display.LABEL_COLORS[1]), atol=1e-6)
    np.testing.assert_allclose(full[1, 1], to_rgb(display.LABEL_COLORS[3]), atol=1e-6)
    np.testing.assert_array_equal(full[0, 0], grey[0, 0])  # background untouched


# ----------------------------------------------------------------- figures


def test_triplanar_with_label(volumes):
    fig = plots.plot_triplanar(volumes[0], slices={"coronal": 3})
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 3
    assert [ax.get_title() for ax in fig.axes] == ["sagittal 10", "coronal 3", "axial 8"]
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["CSF", "GM", "WM"]
    assert fig.get_suptitle() == "IBSR_01"


def test_triplanar_plain_array(volumes):
    fig = plots.plot_triplanar(volumes[0].image, spacing=(1, 2, 1), slices=(1, 2, 3), title="t")
    assert len(fig.axes) == 3 and not fig.legends
    assert [ax.get_title() for ax in fig.axes] == ["sagittal 1", "coronal 2", "axial 3"]
    # true mm extents: the sagittal slice is 10 voxels x 2 mm wide
    assert fig.axes[0].images[0].get_extent() == [0, 20.0, 0, 16.0]


def test_triplanar_rejects_mismatched_label(volumes):
    with pytest.raises(IBSRError, match="does not match image shape"):
        plots.plot_triplanar(volumes[0].image, label=np.zeros((20, 10, 15)))


def test_histogram_bins_follow_integer_steps():
    values = np.repeat(np.arange(300.0), 7)  # uniform integers: a flat histogram
    centres, density = plots.data._histogram(values, bins=120)
    assert len(centres) == 100  # 3 intensity steps per bin
    np.testing.assert_allclose(density, 1 / 300, rtol=1e-9)
    naive, _ = np.histogram(values, bins=120, density=True)  # 2 or 3 steps per bin: a comb
    assert naive.max() / naive.min() > 1.1


@pytest.mark.parametrize("normalize", [None, "zscore", "minmax"])
def test_intensity_histograms(volumes, normalize):
    fig = plots.plot_intensity_histograms(volumes, normalize=normalize)
    ax = fig.axes[0]
    lines = ax.get_lines()
    assert len(lines) == len(volumes)
    assert [ln.get_label() for ln in lines][:2] == ["IBSR_01 (train)", "IBSR_11 (val)"]
    xmax = max(ln.get_xdata().max() for ln in lines)
    if normalize is None:
        assert xmax > 200  # IBSR_11-like subject reaches 319
    elif normalize == "minmax":  # bin centres lie within one bin of the data's [0, 1]
        assert all(ln.get_xdata().max() <= 1 + np.diff(ln.get_xdata()).max() for ln in lines)
        assert all(ln.get_xdata().min() >= 0 for ln in lines)
    else:
        assert xmax < 5
    # colours by split: the two train subjects share a hue family, unlike val
    train = [to_rgb(lines[i].get_color()) for i in (0, 2)]
    val = to_rgb(lines[1].get_color())
    assert all(c[2] > c[0] for c in train) and val[0] > val[2]


def test_intensity_histograms_into_given_axes_and_errors(volumes):
    fig = Figure()
    ax = fig.add_subplot()
    assert plots.plot_intensity_histograms(volumes[:2], ax=ax) is fig
    with pytest.raises(IBSRError):
        plots.plot_intensity_histograms([])
    with pytest.raises(IBSRError, match="unknown normalisation"):
        plots.plot_intensity_histograms(volumes, normalize="robust")


def test_plot_tissue_volumes(volumes):
    df = tissue_volumes(volumes)
    fig = plots.plot_tissue_volumes(df)
    ax = fig.axes[0]
    ticks = [t.get_text().split("\n")[0] for t in ax.get_xticklabels()]
    assert ticks == ["IBSR_01", "IBSR_03", "IBSR_11"]  # train before val, test skipped
    bars = [p for p in ax.patches if p.get_height() > 0]
    assert len(bars) == 3 * 3
    assert max(p.get_height() for p in bars) == pytest.approx(df["volume_ml"].max())
    with pytest.raises(IBSRError):
        plots.plot_tissue_volumes(pd.DataFrame())


# ----------------------------------------------------------------- model-input figures


def test_upright_matches_slice_plane(volumes):
    from ibsr_helpers.datasets import slice_stack

    image = volumes[0].image
    for plane in display.PLANES:
        stack = slice_stack(image, plane)
        i = stack.shape[0] // 2
        np.testing.assert_array_equal(
            display.upright(stack[i, 0]), display.slice_plane(image, plane, i)
        )


def test_plot_slices_in_pixels(volumes):
    image, label = volumes[0].image, volumes[0].label
    slices = [image[:, 4, :], image[10, :, :], image[:, :, 8]]  # coronal, sagittal, axial
    fig = plots.plot_slices(
        slices,
        [label[:, 4, :], None, None],
        ["c", "s", "a"],
        ["coronal", "sagittal", "axial"],
        title="t",
    )
    assert [ax.get_title() for ax in fig.axes] == ["c", "s", "a"]
    # one pixel per voxel whatever the spacing: extents are the slice sizes
    assert [ax.images[0].get_extent() for ax in fig.axes] == [
        [0, 20, 0, 16],
        [0, 10, 0, 16],
        [0, 20, 0, 10],
    ]
    assert fig.legends and fig.get_suptitle() == "t"
    grid = plots.plot_slices([image[:, 4, :]] * 5, ncols=2)
    assert len(grid.axes) == 6 and not grid.axes[-1].axison and not grid.legends
    with pytest.raises(IBSRError, match="one length"):
        plots.plot_slices(slices, titles=["only one"])
    with pytest.raises(IBSRError, match="2-D"):
        plots.plot_slices([image])


def test_plot_augmentations_is_reproducible(volumes):
    from ibsr_helpers.augmentation import train_transforms
    from ibsr_helpers.config import load_config
    from ibsr_helpers.plan import specs

    config = load_config({"data": {"plane": "coronal"}}, profile=None)
    transform = train_transforms(specs(config).input.augment, 2)
    image = volumes[0].image[:, 4, :][None]
    label = volumes[0].label[:, 4, :]
    fig = plots.plot_augmentations(image, label, transform, n=3, seed=5)
    assert len(fig.axes) == 2 * 4
    assert [ax.get_title() for ax in fig.axes[:4]] == [
        "original",
        "augmented 1",
        "augmented 2",
        "augmented 3",
    ]
    first = [ax.images[0].get_array() for ax in fig.axes]
    np.testing.assert_allclose(
        first[0],
        display.overlay(display.upright(image[0]), None, 0.0, display.intensity_window(image[0])),
    )
    again = plots.plot_augmentations(image, label, transform, n=3, seed=5)
    for a, b in zip(first, [ax.images[0].get_array() for ax in again.axes], strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(IBSRError, match="expected image"):
        plots.plot_augmentations(image[0], label, transform)


def test_plot_roi_box_draws_the_box_in_mm(volumes):
    from ibsr_helpers.preprocessing import Preprocessing, prepare

    vol = volumes[0]  # spacing (1, 1.5, 1), shape (20, 10, 16); brain [3:17, 2:8, 2:14]
    prepared = prepare(vol, Preprocessing(roi=(16, 12, 14)))
    assert prepared.box.start == (2, -1, 1) and prepared.box.size == (16, 12, 14)
    fig = plots.plot_roi_box(vol, prepared)
    assert [ax.get_title() for ax in fig.axes] == ["sagittal 10", "coronal 5", "axial 8"]
    rects = [[p for p in ax.patches if isinstance(p, Rectangle)][0] for ax in fig.axes]
    # sagittal: Y (1.5 mm) across, Z up; the box starts 1 voxel before the volume
    assert rects[0].get_xy() == (-1.5, 1.0) and rects[0].get_width() == 18.0
    assert rects[1].get_xy() == (2.0, 1.0) and rects[1].get_height() == 14.0
    assert rects[2].get_xy() == (2.0, -1.5) and rects[2].get_height() == 18.0
    assert fig.axes[0].get_xlim() == (-1.5, 16.5)  # widened to show the padding


def small_cropped_volume():
    from ibsr_helpers.preprocessing import Preprocessing, prepare

    rng = np.random.default_rng(0)
    shape = (24, 20, 24)
    label = np.zeros(shape, np.uint8)
    label[6:18, 4:16, 6:18] = 3
    label[8:16, 6:14, 8:16] = 2
    label[11:13, 9:11, 11:13] = 1  # a tiny CSF core, 8 voxels
    image = (label * 10 + rng.random(shape)).astype(np.float32) * (label > 0)
    image[0, 0, 0] = image[-1, -1, -1] = 1.0  # the brain box is the whole volume
    prepared = prepare(make_volume("IBSR_01", "train", image, label), Preprocessing(roi=shape))
    assert prepared.image.shape == shape
    return prepared


def test_patch_centres_are_the_patch_centres():
    from ibsr_helpers.datasets import PatchDataset

    vol = small_cropped_volume()
    ds = PatchDataset([vol], (8, 6, 8), "class_balanced", 30, class_ratios=(0, 1, 1, 1))
    centres = ds.centres(seed=3)
    assert centres.shape == (30, 3)
    np.testing.assert_array_equal(centres, ds.centres(seed=3))
    assert (vol.label[tuple(centres.T)] > 0).all()  # never a background centre
    ds.crop.set_random_state(seed=3)
    patch = ds.crop(ds.items[0])[0]["image"][0]
    c = centres[0]
    start = c - np.array([4, 3, 4])
    np.testing.assert_array_equal(
        np.asarray(patch),
        vol.image[start[0] : start[0] + 8, start[1] : start[1] + 6, start[2] : start[2] + 8],
    )


def test_plot_patch_centres():
    from ibsr_helpers.datasets import PatchDataset

    vol = small_cropped_volume()
    samplers = {
        s: PatchDataset([vol], (8, 8, 8), s, 40)
        for s in ("uniform", "foreground", "class_balanced", "weighted")
    }
    fig = plots.plot_patch_centres(samplers, slab=30)  # slab covers the volume: all drawn
    assert [ax.get_title().split("\n")[0] for ax in fig.axes] == list(samplers)
    balanced = fig.axes[2]
    assert "bg 0%" in balanced.get_title()
    drawn = sum(len(c.get_offsets()) for c in balanced.collections)
    assert drawn == 40
    with pytest.raises(IBSRError):
        plots.plot_patch_centres({})


# --------------------------------------------------------------------------- 3D inference


def test_plot_sliding_window_counts_windows():
    rng = np.random.default_rng(0)
    image = rng.normal(size=(96, 64, 96)).astype(np.float32)
    fig = plots.plot_sliding_window(image, (32, 32, 32), 0.5, label=(image > 0).astype(np.uint8))
    assert isinstance(fig, Figure) and len(fig.axes) == 4  # three panels and a colour bar
    assert fig.get_suptitle().startswith("75 windows")  # 5 x 3 x 5
    # windows cutting the coronal slice: 5 x 5 outlines, two of them again drawn solid
    assert sum(isinstance(p, Rectangle) for p in fig.axes[0].patches) == 25 + 2


def test_plot_dice_comparison_bars():
    table = pd.DataFrame(
        {"CSF": [0.6, 0.7], "GM": [0.9, 0.91], "WM": [0.88, 0.9]}, index=["a", "b"]
    )
    table["mean"] = table.mean(axis=1)
    fig = plots.plot_dice_comparison(table, title="x")
    ax = fig.axes[0]
    assert sum(len(c) for c in ax.containers) == 8  # 2 predictors x (3 tissues + mean)
    heights = sorted(round(b.get_height(), 3) for c in ax.containers for b in c)
    assert heights == sorted(round(v, 3) for v in table.to_numpy().ravel())
    with pytest.raises(IBSRError):
        plots.plot_dice_comparison(pd.DataFrame())


# --------------------------------------------------------------------------- evaluation figures


def _long_scores() -> pd.DataFrame:
    rows = []
    for name, base in (("a", 0.8), ("b", 0.9)):
        for k, sid in enumerate(("S_1", "S_2", "S_3")):
            for t in ("CSF", "GM", "WM"):
                rows.append(
                    {
                        "name": name,
                        "subject": sid,
                        "tissue": t,
                        "dice": base - 0.05 * k,
                        "hd95": 2.0 + k,
                    }
                )
    return pd.DataFrame(rows)


def test_metric_distributions_and_subject_heatmap():
    scores = _long_scores()
    fig = plots.plot_metric_distributions(scores, ("dice", "hd95"))
    assert len(fig.axes) == 2 and fig.axes[1].get_ylabel() == "HD95 (mm)"
    heat = plots.plot_subject_heatmap(scores)
    ax = heat.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["S_3", "S_2", "S_1"]  # hardest first
    with pytest.raises(IBSRError):
        plots.plot_metric_distributions(scores.iloc[:0])


def test_error_triplanar_counts_the_errors(volumes):
    vol = volumes[0]
    pred = vol.label.copy()
    pred[10, 4, :] = 0  # a row of errors through the middle slices
    fig = plots.plot_error_triplanar(vol, pred)
    assert len([ax for ax in fig.axes if ax.images]) == 9
    titles = [ax.get_title() for ax in fig.axes]
    wrong = int((pred[10, 4, :] != vol.label[10, 4, :]).sum())
    assert f"errors ({wrong} voxels)" in titles  # the sagittal slice x = 10 shows them all


def test_lr_schedule_and_dice_vs_minutes():
    from ibsr_helpers.config import load_config

    cfg = load_config(
        {"train": {"epochs": 4, "steps_per_epoch": 10}, "optim": {"warmup_epochs": 1}}, None
    )
    line = plots.plot_lr_schedule(cfg).axes[0].lines[0]
    y = line.get_ydata()
    assert len(y) == 40 and np.argmax(y) == 9 and y[-1] < y[9] / 100
    curve = pd.DataFrame(
        {
            "recipe": ["2D"] * 3,
            "minutes": [5, 15, 30],
            "mean_dice": [0.9, 0.92, 0.93],
            "hd95": [5, 4, 3],
        }
    )
    fig = plots.plot_dice_vs_minutes(curve, title="t")
    assert len(fig.axes) == 2 and fig.get_suptitle() == "t"
    recorded = curve.assign(date=["2026-11-30", "2026-11-25", "2026-11-30"], hardware="X, 2 cores")
    fig = plots.plot_dice_vs_minutes(recorded.assign(recipe=["2D", "3D", "3D"]))
    assert fig.get_suptitle() == "recorded 2026-11-25 to 2026-11-30 on X, 2 cores"
    assert fig.axes[0].get_legend() is None  # one legend, beside the last panel
    legend = [t.get_text() for t in fig.axes[1].get_legend().get_texts()]
    assert legend == ["2D (2026-11-30)", "3D (2026-11-25)", "3D (2026-11-30)"]
    assert plots.plot_dice_vs_minutes(curve).get_suptitle() == ""  # nothing to say


def test_plot_slice_sampling_draws_both_samplers(volumes):
    from ibsr_helpers.preprocessing import Preprocessing, prepare

    vol = volumes[0]  # brain in coronal slices 2..7 of 10
    vol.label[vol.label == 1] = 2
    vol.label[3:17, 3, 2:14] = 1  # coronal slice 3: all the CSF
    prepared = prepare(vol, Preprocessing(roi=(16, 12, 14)))
    fig = plots.plot_slice_sampling(prepared, "coronal", class_ratios=(0, 1, 0, 0))
    top, bottom = fig.axes[:2]
    assert [line.get_label() for line in top.lines] == ["CSF", "GM", "WM"]
    uniform, balanced = (line.get_ydata() for line in bottom.lines)
    assert uniform.sum() == pytest.approx(1) and (uniform > 0).sum() == 6
    csf_slice = 3 - prepared.box.start[1]
    assert balanced[csf_slice] == pytest.approx(1) and balanced.sum() == pytest.approx(1)
    with pytest.raises(IBSRError, match="plane"):
        plots.plot_slice_sampling(prepared, "oblique")
