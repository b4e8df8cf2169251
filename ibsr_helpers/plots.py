"""Figures of the course: data, model inputs, training curves, predictions, comparisons.

Every function returns a :class:`matplotlib.figure.Figure` made without pyplot, so nothing
piles up in pyplot's state; in a notebook end the cell with the figure to show it. The
drawing primitives (planes, colours, overlays) are :mod:`ibsr_helpers.display`'s, shared
with the interactive viewer; statistical charts are seaborn's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from ibsr_helpers.data import Volume
from ibsr_helpers.display import (
    LABEL_COLORS,
    PLANE_DISPLAY,
    PLANES,
    TISSUE_COLORS,
    check_image,
    check_plane,
    check_same_shape,
    draw_slice,
    intensity_window,
    legend_handles,
    n_slices,
    overlay,
    plane_extent,
    slice_plane,
    unpack_volume,
    upright,
)
from ibsr_helpers.errors import IBSRError
from ibsr_helpers.layout import LABELS, SPLITS, TISSUES
from ibsr_helpers.preprocessing import PLANE_AXIS, brain_mask
from ibsr_helpers.preprocessing import normalize as normalize_image

if TYPE_CHECKING:
    from ibsr_helpers.datasets import PatchDataset
    from ibsr_helpers.preprocessing import Prepared

__all__ = [
    "SPLIT_COLORS",
    "plot_triplanar",
    "plot_intensity_histograms",
    "plot_tissue_volumes",
    "plot_learning_curves",
    "plot_prediction_overlay",
    "plot_slices",
    "plot_augmentations",
    "plot_roi_box",
    "plot_patch_centres",
    "plot_sliding_window",
    "plot_dice_comparison",
    "plot_metric_distributions",
    "plot_subject_heatmap",
    "plot_error_triplanar",
    "draw_error_grid",
    "plot_lr_schedule",
    "plot_dice_vs_minutes",
    "plot_error_distances",
    "plot_slice_sampling",
]

#: Split -> colour map name; each subject gets its own shade of its split's colour.
SPLIT_COLORS: dict[str, str] = {"train": "Blues", "val": "Oranges", "test": "Greens"}


def plot_triplanar(
    image: np.ndarray | Volume,
    label: np.ndarray | None = None,
    spacing: Sequence[float] | None = None,
    slices: Sequence[int] | Mapping[str, int] | None = None,
    alpha: float = 0.4,
    title: str | None = None,
) -> Figure:
    """Sagittal, coronal and axial slices side by side, with the labels over them.

    Args:
        image: ``(X, Y, Z)`` array (RAS voxel order) or a loaded Volume (its label,
            spacing and id are used unless given).
        label: ``(X, Y, Z)`` labels to overlay, or None.
        spacing: Voxel size in mm (default: the Volume's, else ``(1, 1, 1)``).
        slices: ``(x, y, z)`` indices or ``{"sagittal": i, ...}``; default mid-volume.
        alpha: Label opacity.
        title: Figure title (default: the Volume's id).

    Returns:
        The figure (three axes, plus a legend when there is a label).

    Raises:
        IBSRError: If shapes differ, the spacing is invalid or a slice is out of range.

    """
    img, lab, sp, vol_title = unpack_volume(image, label, spacing)
    img = check_image(img)
    lab = check_same_shape(img, lab, "label")
    if slices is None:
        idx = {p: img.shape[PLANE_AXIS[p]] // 2 for p in PLANES}
    elif isinstance(slices, Mapping):
        idx = {p: int(slices.get(p, img.shape[PLANE_AXIS[p]] // 2)) for p in PLANES}
    else:
        idx = {p: int(i) for p, i in zip(PLANES, slices, strict=True)}
    window = intensity_window(img)
    widths = [plane_extent(img.shape, sp, p)[1] for p in PLANES]
    fig = Figure(figsize=(11, 4.3), layout="constrained")
    axes = fig.subplots(1, 3, width_ratios=widths)
    for ax, plane in zip(axes, PLANES, strict=True):
        i = idx[plane]
        two_d = slice_plane(img, plane, i)
        lab2d = None if lab is None else slice_plane(lab, plane, i)
        draw_slice(ax, overlay(two_d, lab2d, alpha, window), img.shape, sp, plane, f"{plane} {i}")
    if lab is not None:
        fig.legend(handles=legend_handles(), loc="outside lower center", ncol=3, frameon=False)
    if title or vol_title:
        fig.suptitle(title or vol_title)
    return fig


# --------------------------------------------------------------------------- data summaries


def _split_shades(volumes: Sequence[Volume]) -> list[tuple[float, float, float, float]]:
    from matplotlib import colormaps

    by_split: dict[str, list[int]] = {}
    for i, vol in enumerate(volumes):
        by_split.setdefault(vol.subject.split, []).append(i)
    colours: list = [None] * len(volumes)
    for split, members in by_split.items():
        cmap = colormaps[SPLIT_COLORS.get(split, "Greys")]
        for rank, i in enumerate(members):
            colours[i] = cmap(0.45 + 0.5 * rank / max(len(members) - 1, 1))
    return colours


def _histogram(values: np.ndarray, bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Density histogram whose bins hold whole numbers of the data's intensity steps.

    Integer intensities (even after a linear normalisation) take evenly spaced values; bins
    not aligned with that step hold alternately n and n+1 values and draw a comb.
    """
    distinct = np.unique(values)
    if distinct.size < 2:
        return distinct.astype(np.float64), np.ones(distinct.size)
    step = float(np.median(np.diff(distinct)))
    span = float(distinct[-1] - distinct[0])
    width = step * max(1, int(np.ceil(span / bins / step - 1e-3)))
    edges = np.arange(distinct[0] - step / 2, distinct[-1] + width, width)
    density, edges = np.histogram(values, bins=edges, density=True)
    return (edges[:-1] + edges[1:]) / 2, density


def plot_intensity_histograms(
    volumes: Sequence[Volume],
    normalize: str | None = None,
    ax: Axes | None = None,
    bins: int = 100,
) -> Figure:
    """Brain-voxel intensity histograms, one line per subject, coloured by split.

    The brain is the non-zero voxels (IBSR18 is skull-stripped). With ``normalize``
    each image is first normalised as the models will see it.

    Args:
        volumes: Loaded, un-normalised volumes (:func:`ibsr_helpers.data.load_subjects`).
        normalize: ``None``, ``"zscore"`` or ``"minmax"``.
        ax: Axes to draw in; a new figure if None.
        bins: Histogram bins per subject, over its own range (fewer when the image has
            fewer distinct values).

    Returns:
        The figure holding the axes.

    Raises:
        IBSRError: If ``volumes`` is empty or ``normalize`` unknown.

    """
    if not volumes:
        raise IBSRError("no volumes to plot")
    values = []
    for vol in volumes:
        brain = brain_mask(vol.image)
        image = vol.image if normalize is None else normalize_image(vol.image, normalize, brain)
        values.append(image[brain])
    if ax is None:
        fig = Figure(figsize=(10, 4.2), layout="constrained")
        ax = fig.add_subplot()
    for vol, vals, colour in zip(volumes, values, _split_shades(volumes), strict=True):
        centres, density = _histogram(vals, bins)
        ax.plot(centres, density, color=colour, lw=1.3, label=f"{vol.id} ({vol.subject.split})")
    ax.set_xlabel("intensity" if normalize is None else f"intensity after {normalize}")
    ax.set_ylabel("density (brain voxels)")
    ax.set_title(f"Brain intensity histograms ({normalize or 'raw'})")
    ax.legend(
        fontsize=7,
        ncol=1 + len(volumes) // 10,
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        frameon=False,
    )
    ax.margins(x=0.01)
    return ax.figure  # type: ignore[return-value]


def plot_tissue_volumes(df: pd.DataFrame, ax: Axes | None = None) -> Figure:
    """Plot tissue volumes (ml) as grouped bars per subject, subjects grouped by split.

    Args:
        df: From :func:`ibsr_helpers.data.tissue_volumes`.
        ax: Axes to draw in; a new figure if None.

    Returns:
        The figure holding the axes.

    Raises:
        IBSRError: If ``df`` is empty or lacks the expected columns.

    """
    import seaborn as sns

    needed = {"subject", "split", "tissue", "volume_ml"}
    if df.empty or not needed <= set(df.columns):
        raise IBSRError(f"expected a non-empty table with columns {sorted(needed)}")
    order = (
        df.drop_duplicates("subject")
        .assign(rank=lambda d: d["split"].map({s: i for i, s in enumerate(SPLITS)}))
        .sort_values(["rank", "subject"])["subject"]
        .tolist()
    )
    if ax is None:
        fig = Figure(figsize=(10, 4), layout="constrained")
        ax = fig.add_subplot()
    sns.barplot(
        data=df,
        x="subject",
        y="volume_ml",
        hue="tissue",
        order=order,
        hue_order=list(TISSUES),
        palette=TISSUE_COLORS,
        saturation=1.0,
        ax=ax,
    )
    split_of = dict(zip(df["subject"], df["split"], strict=False))
    ax.set_xticks(range(len(order)), [f"{s}\n{split_of[s]}" for s in order], fontsize=8)
    for i in range(1, len(order)):
        if split_of[order[i]] != split_of[order[i - 1]]:
            ax.axvline(i - 0.5, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("")
    ax.set_ylabel("volume (ml)")
    ax.set_title("Tissue volumes per subject")
    ax.legend(title=None, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return ax.figure  # type: ignore[return-value]


# --------------------------------------------------------------------------- training results


def plot_learning_curves(
    history: Mapping[str, Sequence[float]], title: str | None = None
) -> Figure:
    """Training loss and validation Dice per tissue against the epoch.

    Args:
        history: The engine's history (``epoch``, ``train_loss``, ``val_epoch``,
            ``val_dice_<tissue>``, ``val_mean_dice``), e.g. a run's ``history.json``.
        title: Figure title.

    Returns:
        A figure with two axes: loss (left), validation Dice (right).
    """
    fig = Figure(figsize=(10, 3.6), layout="constrained")
    ax_loss, ax_dice = fig.subplots(1, 2)
    epochs = np.asarray(history.get("epoch", []), dtype=float) + 1
    ax_loss.plot(epochs, history.get("train_loss", []), marker=".", color="0.2")
    ax_loss.set(xlabel="epoch", ylabel="training loss", title="loss")
    val_epochs = np.asarray(history.get("val_epoch", []), dtype=float) + 1
    for value, tissue in enumerate(TISSUES, start=1):
        key = f"val_dice_{tissue}"
        if history.get(key):
            ax_dice.plot(
                val_epochs, history[key], marker="o", color=LABEL_COLORS[value], label=tissue
            )
    if history.get("val_mean_dice"):
        ax_dice.plot(
            val_epochs, history["val_mean_dice"], marker="s", color="k", lw=2, label="mean"
        )
        ax_dice.legend(loc="lower right")
    ax_dice.set(xlabel="epoch", ylabel="Dice", title="validation Dice (whole volumes)")
    ax_dice.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    return fig


def plot_prediction_overlay(
    volume: Volume,
    prediction: np.ndarray,
    plane: str = "coronal",
    index: int | None = None,
    alpha: float = 0.45,
) -> Figure:
    """Ground truth, prediction and their disagreement on one slice.

    Args:
        volume: The subject (its image and, if present, label).
        prediction: ``(X, Y, Z)`` predicted labels.
        plane: Slicing plane.
        index: Slice index (default: the middle).
        alpha: Label opacity.

    Returns:
        A figure with two or three panels (ground truth, prediction, errors in red).
    """
    img, lab, sp, _ = unpack_volume(volume, None, None)
    pred = check_same_shape(img, np.asarray(prediction), "prediction")
    i = n_slices(img.shape, plane) // 2 if index is None else int(index)
    window = intensity_window(img)
    image2d = slice_plane(img, plane, i)
    panels = [("prediction", slice_plane(pred, plane, i))]
    if lab is not None:
        gt2d = slice_plane(lab, plane, i)
        panels.insert(0, ("ground truth", gt2d))
    fig = Figure(figsize=(4 * (len(panels) + (lab is not None)), 4.3), layout="constrained")
    axes = fig.subplots(1, len(panels) + (lab is not None))
    for ax, (name, lab2d) in zip(axes, panels, strict=False):
        draw_slice(ax, overlay(image2d, lab2d, alpha, window), img.shape, sp, plane, name)
    if lab is not None:
        wrong = (panels[0][1] != panels[1][1]).astype(np.uint8)
        rgb = overlay(image2d, None, 0.0, window).copy()
        rgb[wrong.astype(bool)] = (1.0, 0.0, 0.0)
        draw_slice(axes[-1], rgb, img.shape, sp, plane, f"errors ({int(wrong.sum())} px)")
    fig.legend(handles=legend_handles(), loc="outside lower center", ncol=3, frameon=False)
    fig.suptitle(f"{volume.id} · {plane} {i}")
    return fig


def plot_slices(
    images: Sequence[np.ndarray],
    labels: Sequence[np.ndarray | None] | None = None,
    titles: Sequence[str] | None = None,
    planes: str | Sequence[str] = "coronal",
    ncols: int | None = None,
    alpha: float = 0.4,
    window: tuple[float, float] | None = None,
    title: str | None = None,
) -> Figure:
    """2D slices as a network sees them: one pixel per voxel, no millimetre scaling.

    Args:
        images: ``(A, B)`` slices in voxel-axis order (as the datasets give them).
        labels: One ``(A, B)`` label slice or None per image, drawn over it.
        titles: One panel title per image.
        planes: The plane of every slice, or one per slice (for the orientation letters).
        ncols: Panels per row (default: all in one row).
        alpha: Label opacity.
        window: Grey-level window shared by all panels (default: from all the images),
            so intensity changes between panels stay visible.
        title: Figure title.

    Returns:
        The figure, one axes per slice (plus a legend when labels are drawn).

    Raises:
        IBSRError: If the lists differ in length, a slice is not 2-D or a plane unknown.
    """
    images = [np.asarray(im) for im in images]
    n = len(images)
    labels = [None] * n if labels is None else list(labels)
    titles = [""] * n if titles is None else list(titles)
    planes = [planes] * n if isinstance(planes, str) else list(planes)
    if n == 0 or not len(labels) == len(titles) == len(planes) == n:
        raise IBSRError("images, labels, titles and planes must be non-empty lists of one length")
    if any(im.ndim != 2 for im in images):
        raise IBSRError(f"expected 2-D slices, got shapes {[im.shape for im in images]}")
    if window is None:
        window = intensity_window(np.concatenate([im.ravel() for im in images]))
    ncols = n if ncols is None else int(ncols)
    nrows = -(-n // ncols)
    fig = Figure(figsize=(2.6 * ncols, 2.8 * nrows + 0.4), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    for ax, im, lab, name, plane in zip(axes, images, labels, titles, planes, strict=False):
        rgb = overlay(upright(im), None if lab is None else upright(lab), alpha, window)
        draw_slice(ax, rgb, _pixel_shape(plane, im.shape), (1.0, 1.0, 1.0), plane, name)
    for ax in axes[n:]:
        ax.set_axis_off()
    if any(lab is not None for lab in labels):
        fig.legend(handles=legend_handles(), loc="outside lower center", ncol=3, frameon=False)
    if title:
        fig.suptitle(title)
    return fig


def _pixel_shape(plane: str, slice_shape: Sequence[int]) -> tuple[int, int, int]:
    """A 3-D shape whose ``plane`` slices have ``slice_shape`` (voxel-axis order)."""
    shape = [1, 1, 1]
    a, b = (i for i in range(3) if i != PLANE_AXIS[check_plane(plane)])
    shape[a], shape[b] = slice_shape
    return tuple(shape)  # type: ignore[return-value]


def plot_augmentations(
    image: np.ndarray,
    label: np.ndarray,
    transform: Callable[[dict], dict],
    n: int = 7,
    seed: int = 0,
    plane: str = "coronal",
    alpha: float = 0.4,
) -> Figure:
    """A sample and ``n`` random augmentations of it: images on top, labels below.

    2D samples are drawn whole; 3D samples (a volume or a patch, augmented in 3D by the
    transform) are drawn by their middle slice along ``plane``, so a 3D rotation shows as
    anatomy moving in and out of the slice and a bias field as a smooth shading.

    Args:
        image: ``(C, A, B)`` slice input (``C`` = 1, or ``2k+1`` for 2.5D; the centre
            channel is drawn), as a :class:`~ibsr_helpers.datasets.SliceDataset` gives it,
            or ``(1, X, Y, Z)`` volume input.
        label: ``(1, …)`` labels of the same spatial shape (or without the channel axis).
        transform: A MONAI transform on ``{"image", "label"}`` dicts, e.g.
            ``train_transforms(config, 2)`` or ``train_transforms(config, 3)``.
        n: Augmented copies to draw.
        seed: Seed of the transform's random state (same seed, same figure).
        plane: The plane drawn (and, for slices, the orientation letters).
        alpha: Label opacity in the bottom row.

    Returns:
        A figure of two rows of ``n + 1`` panels (the original first).
    """
    image = np.asarray(image, dtype=np.float32)
    label = np.asarray(label)
    label = label[None] if label.ndim == image.ndim - 1 else label
    if image.ndim not in (3, 4) or label.shape[1:] != image.shape[1:]:
        raise IBSRError(
            "expected image (C, A, B) or (1, X, Y, Z) and labels of the same shape, "
            f"got {image.shape}, {label.shape}"
        )
    centre = image.shape[0] // 2

    def shown(array: np.ndarray) -> np.ndarray:
        array = np.asarray(array)[centre if array.shape[0] == image.shape[0] else 0]
        if array.ndim == 3:  # a volume: its middle slice along the plane
            axis = PLANE_AXIS[check_plane(plane)]
            array = np.take(array, array.shape[axis] // 2, axis=axis)
        return array

    if hasattr(transform, "set_random_state"):
        transform.set_random_state(seed=seed)
    pairs = [(shown(image), shown(label))]
    for _ in range(n):
        out = transform({"image": image.copy(), "label": label.copy()})
        pairs.append((shown(out["image"]), shown(out["label"])))
    titles = ["original"] + [f"augmented {i}" for i in range(1, n + 1)]
    images = [p[0] for p in pairs] * 2
    labels = [None] * len(pairs) + [p[1] for p in pairs]
    return plot_slices(
        images,
        labels,
        titles * 2,
        plane,
        ncols=len(pairs),
        alpha=alpha,
        window=intensity_window(pairs[0][0]),
    )


def plot_roi_box(volume: Volume, prepared: Prepared, slices: Sequence[int] | None = None) -> Figure:
    """Tri-planar view of a subject with its brain box drawn in each plane.

    Args:
        volume: The raw subject.
        prepared: ``prepare(volume, spec)``; its :attr:`~ibsr_helpers.preprocessing.Prepared.box`
            is drawn (parts outside the scan are zero padding).
        slices: ``(x, y, z)`` slice indices (default: the box centre, clipped to the volume).

    Returns:
        The :func:`plot_triplanar` figure with a dashed box in each panel.

    Raises:
        IBSRError: If the scan was resampled (its box lies on another grid).
    """
    if any("resampled" in step for step in prepared.applied):
        raise IBSRError(f"{prepared.id} was resampled: its box lies on another grid than the scan")
    img, _, sp, _ = unpack_volume(volume, None, None)
    start, size = np.asarray(prepared.box.start), np.asarray(prepared.box.size)
    shape = np.asarray(img.shape)
    if slices is None:
        slices = tuple(int(i) for i in np.clip(start + size // 2, 0, shape - 1))
    fig = plot_triplanar(volume, slices=slices)
    for ax, plane in zip(fig.axes, PLANES, strict=True):
        h, v = PLANE_DISPLAY[plane]
        x0, y0 = start[h] * sp[h], start[v] * sp[v]
        w, hgt = size[h] * sp[h], size[v] * sp[v]
        ax.add_patch(Rectangle((x0, y0), w, hgt, fill=False, ec="#00E5FF", lw=1.5, ls="--"))
        ax.set_xlim(min(0.0, x0), max(shape[h] * sp[h], x0 + w))
        ax.set_ylim(min(0.0, y0), max(shape[v] * sp[v], y0 + hgt))
    return fig


def plot_patch_centres(
    samplers: Mapping[str, PatchDataset],
    plane: str = "coronal",
    index: int | None = None,
    slab: int | None = None,
    seed: int = 0,
) -> Figure:
    """Where each patch sampler puts its patch centres, over one slice.

    Each sampler (a :class:`~ibsr_helpers.datasets.PatchDataset`, whose
    ``patches_per_volume`` sets how many centres are drawn) samples its first volume
    once; the centres are the ones the MONAI sampler itself chose. Centres within
    ``slab`` slices of the shown slice are drawn as dots coloured by the tissue under
    them (white: background); the title gives the share of *all* centres per class. The
    first drawn patch is outlined for scale.

    Args:
        samplers: Name (e.g. ``"uniform"``) to PatchDataset, all on the same volume.
        plane: Slicing plane.
        index: Slice index in the cropped volume (default: the middle).
        slab: Half-thickness, in slices, of the slab whose centres are drawn
            (default: a quarter of the patch size along the plane's axis).
        seed: Seed of every sampler (same seed, same figure).

    Returns:
        A figure with one panel per sampler.
    """
    if not samplers:
        raise IBSRError("no sampler to plot")
    axis = PLANE_AXIS[check_plane(plane)]
    h_axis, v_axis = PLANE_DISPLAY[plane]
    fig = Figure(figsize=(3.2 * len(samplers), 3.9), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(samplers)))
    colours = {0: "white", **LABEL_COLORS}
    for ax, (name, ds) in zip(axes, samplers.items(), strict=True):
        vol = ds.volumes[0]
        centres = ds.centres(0, seed)
        i = vol.image.shape[axis] // 2 if index is None else int(index)
        half = ds.patch_size[axis] // 4 if slab is None else int(slab)
        tissue = vol.label[tuple(centres.T)]
        rgb = overlay(
            slice_plane(vol.image, plane, i),
            slice_plane(vol.label, plane, i),
            0.25,
            intensity_window(vol.image),
        )
        draw_slice(ax, rgb, vol.image.shape, (1.0, 1.0, 1.0), plane)
        near = np.abs(centres[:, axis] - i) <= half
        for value, colour in colours.items():
            pick = near & (tissue == value)
            ax.scatter(
                centres[pick, h_axis] + 0.5,
                centres[pick, v_axis] + 0.5,
                s=9,
                c=colour,
                edgecolors="k",
                linewidths=0.3,
            )
        c, size = centres[0], ds.patch_size
        ax.add_patch(
            Rectangle(
                (c[h_axis] - size[h_axis] // 2, c[v_axis] - size[v_axis] // 2),
                size[h_axis],
                size[v_axis],
                fill=False,
                ec="#00E5FF",
                ls="--",
            )
        )
        share = np.bincount(tissue, minlength=4) / len(tissue)
        ax.set_title(
            f"{name}\n" + " ".join(f"{LABELS[v] if v else 'bg'} {share[v]:.0%}" for v in range(4)),
            fontsize=9,
        )
    fig.suptitle(f"Patch centres within ±{half} slices of {plane} slice {i}")
    return fig


# --------------------------------------------------------------------------- 3D inference


def plot_sliding_window(
    image: np.ndarray,
    patch_size: Sequence[int],
    overlap: float = 0.5,
    plane: str = "coronal",
    index: int | None = None,
    label: np.ndarray | None = None,
) -> Figure:
    """How sliding-window inference covers a volume, and how it blends the windows.

    Three panels: the windows that cut one slice (dashed outlines, one drawn solid), the
    Gaussian importance map that weighs each window's prediction (highest at its centre,
    where the network saw the most context; MONAI's ``sigma_scale=0.125``), and the sum
    of the weights over all windows on the slice, which the blended prediction is
    divided by. Drawn one pixel per voxel, for a cropped model input.

    Args:
        image: ``(X, Y, Z)`` volume, e.g. a :class:`~ibsr_helpers.datasets.CroppedVolume`'s.
        patch_size: Window size ``(x, y, z)``.
        overlap: Window overlap, as ``inference.overlap``.
        plane: Slicing plane.
        index: Slice index (default: the middle).
        label: Optional labels drawn over the image.

    Returns:
        The figure; its title gives the number of windows in the whole volume.
    """
    from monai.data.utils import compute_importance_map

    from ibsr_helpers.inference import window_slices

    image = check_image(image)
    axis = PLANE_AXIS[check_plane(plane)]
    h_axis, v_axis = PLANE_DISPLAY[plane]
    patch = tuple(int(p) for p in patch_size)
    windows = window_slices(image.shape, patch, overlap)
    starts = [sorted({w[k].start for w in windows}) for k in range(3)]
    i = image.shape[axis] // 2 if index is None else int(index)
    weight = compute_importance_map(patch, mode="gaussian", sigma_scale=0.125).numpy()
    coverage = np.zeros(image.shape, np.float32)
    coverage = np.take(coverage, i, axis=axis)  # (A, B): the slice only
    a_axis, b_axis = (k for k in range(3) if k != axis)
    for s in starts[axis]:
        if not s <= i < s + patch[axis]:
            continue
        w = np.take(weight, i - s, axis=axis)
        for sa in starts[a_axis]:
            for sb in starts[b_axis]:
                coverage[sa : sa + patch[a_axis], sb : sb + patch[b_axis]] += w
    fig = Figure(figsize=(12, 4.2), layout="constrained")
    ax_img, ax_w, ax_cov = fig.subplots(1, 3)
    unit = (1.0, 1.0, 1.0)
    lab2d = None if label is None else slice_plane(np.asarray(label), plane, i)
    rgb = overlay(slice_plane(image, plane, i), lab2d, 0.3, intensity_window(image))
    draw_slice(ax_img, rgb, image.shape, unit, plane, f"windows on {plane} slice {i}")
    for sh in starts[h_axis]:
        for sv in starts[v_axis]:
            ax_img.add_patch(
                Rectangle(
                    (sh, sv),
                    patch[h_axis],
                    patch[v_axis],
                    fill=False,
                    ec="#00E5FF",
                    lw=0.6,
                    ls="--",
                    alpha=0.6,
                )
            )
    # Two neighbours drawn solid, so the overlap shows.
    for sh, colour in zip(starts[h_axis][:2], ("#00E5FF", "#FF00FF"), strict=False):
        ax_img.add_patch(
            Rectangle(
                (sh, starts[v_axis][0]), patch[h_axis], patch[v_axis], fill=False, ec=colour, lw=2.0
            )
        )
    mid = np.take(weight, patch[axis] // 2, axis=axis)
    ax_w.imshow(np.flipud(mid.T), cmap="magma", extent=(0, patch[h_axis], 0, patch[v_axis]))
    ax_w.set(title=f"importance map ({'x'.join(map(str, patch))} window)", xticks=[], yticks=[])
    shown = ax_cov.imshow(
        np.flipud(coverage.T), cmap="viridis", extent=plane_extent(image.shape, unit, plane)
    )
    ax_cov.set(title="sum of weights (divides the blend)", xticks=[], yticks=[])
    fig.colorbar(shown, ax=ax_cov, shrink=0.8)
    n_windows = len(windows)
    fig.suptitle(
        f"{n_windows} windows of {'x'.join(map(str, patch))} voxels cover "
        f"{'x'.join(map(str, image.shape))} at overlap {overlap:g}"
    )
    return fig


def plot_dice_comparison(
    table: pd.DataFrame, title: str | None = None, ax: Axes | None = None
) -> Figure:
    """Grouped bars of Dice per tissue, one group per predictor (seaborn).

    Args:
        table: One row per predictor (index: its name), columns ``CSF, GM, WM`` and
            optionally ``mean``, e.g. :func:`ibsr_helpers.evaluation.dice_table`.
        title: Axes title.
        ax: Axes to draw in (default: a new figure).

    Returns:
        The figure; each bar is labelled with its value.
    """
    import seaborn as sns

    cols = [c for c in (*TISSUES, "mean") if c in table.columns]
    if not cols or table.empty:
        raise IBSRError("the table needs rows and CSF / GM / WM / mean columns")
    long = (
        table[cols]
        .rename_axis("predictor")
        .reset_index()
        .melt(id_vars="predictor", var_name="tissue", value_name="Dice")
    )
    long["predictor"] = long["predictor"].astype(str)
    if ax is None:
        fig = Figure(figsize=(max(5.0, 1.6 * len(table) + 2), 3.6), layout="constrained")
        ax = fig.subplots()
    palette = TISSUE_COLORS | {"mean": "0.3"}
    sns.barplot(
        data=long,
        x="predictor",
        y="Dice",
        hue="tissue",
        hue_order=cols,
        palette=palette,
        edgecolor="k",
        linewidth=0.5,
        saturation=1.0,
        ax=ax,
    )
    for container in ax.containers:
        ax.bar_label(container, fmt="%.2f", fontsize=7, padding=1)
    low = float(np.nanmin(table[cols].to_numpy()))
    ax.set_ylim(max(0.0, low - 0.1), 1.0)
    ax.set_xlabel("")
    ax.legend(loc="lower right", fontsize=8, ncol=len(cols))
    ax.grid(axis="y", alpha=0.3)
    if title:
        ax.set_title(title)
    return ax.figure  # type: ignore[return-value]


# --------------------------------------------------------------------------- evaluation


def plot_metric_distributions(
    scores: pd.DataFrame, metrics: Sequence[str] = ("dice", "hd95"), by: str = "name"
) -> Figure:
    """Per-subject scores of every predictor, per tissue: boxes with the subjects as dots.

    Args:
        scores: Rows ``by, subject, tissue`` and the metric columns, e.g. from
            :func:`ibsr_helpers.evaluation.evaluate_runs` with ``hd=True``.
        metrics: Columns to draw, one panel each (``dice``, ``hd``, ``hd95``, ``avd``).
        by: The column naming the predictors.

    Returns:
        A figure with one panel per metric; predictors on the x axis, tissues as hues.
    """
    import seaborn as sns

    metrics = [m for m in metrics if m in scores.columns]
    if scores.empty or not metrics:
        raise IBSRError("no scores to plot (need per-subject rows with metric columns)")
    units = {"dice": "Dice", "hd": "HD (mm)", "hd95": "HD95 (mm)", "avd": "AVD (%)"}
    order = list(dict.fromkeys(scores[by]))
    width = max(6.0, 0.9 * len(order) + 2)
    fig = Figure(figsize=(width, 3.4 * len(metrics)), layout="constrained")
    axes = np.atleast_1d(fig.subplots(len(metrics), 1, sharex=True))
    for ax, metric in zip(axes, metrics, strict=True):
        common = {"data": scores, "x": by, "y": metric, "hue": "tissue", "order": order}
        common |= {"hue_order": list(TISSUES), "palette": TISSUE_COLORS, "ax": ax}
        sns.boxplot(**common, fliersize=0, linewidth=0.8, saturation=1.0)
        sns.stripplot(**common, dodge=True, size=3, color="k", legend=False)
        ax.set_ylabel(units.get(metric, metric))
        ax.set_xlabel("")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(loc="best", fontsize=8, ncol=3)
    axes[-1].tick_params(axis="x", labelrotation=20)
    return fig


def plot_subject_heatmap(scores: pd.DataFrame, by: str = "name") -> Figure:
    """Mean Dice per validation subject and predictor: which brains are hard for everyone.

    Args:
        scores: Rows ``by, subject, tissue, dice``.
        by: The column naming the predictors.

    Returns:
        A seaborn heatmap, subjects as rows (hardest first), predictors as columns.
    """
    import seaborn as sns

    table = scores.groupby(["subject", by], sort=False)["dice"].mean().unstack(by)
    table = table[list(dict.fromkeys(scores[by]))]
    table = table.loc[table.mean(axis=1).sort_values().index]
    fig = Figure(
        figsize=(max(5.0, 0.9 * table.shape[1] + 2.5), 0.45 * len(table) + 1.8),
        layout="constrained",
    )
    ax = fig.subplots()
    sns.heatmap(
        table, annot=True, fmt=".3f", cmap="viridis", cbar_kws={"label": "mean Dice"}, ax=ax
    )
    ax.set_xlabel("")
    ax.set_ylabel("validation subject (hardest first)")
    ax.tick_params(axis="x", labelrotation=20)
    return fig


def plot_error_triplanar(
    volume: Volume, prediction: np.ndarray, slices: Sequence[int] | None = None, alpha: float = 0.45
) -> Figure:
    """Ground truth, prediction and errors, in three planes: a 3 x 3 grid.

    Args:
        volume: The labelled raw subject (any orientation; shown in RAS).
        prediction: ``(X, Y, Z)`` labels on the volume's own grid.
        slices: ``(x, y, z)`` slice indices in RAS order (default: the middle).
        alpha: Label opacity.

    Returns:
        Rows: sagittal, coronal, axial; columns: ground truth, prediction, errors
        (misclassified voxels in red, with their count on the slice).
    """
    if volume.label is None:
        raise IBSRError(f"{volume.id} has no ground truth to compare with")
    img, lab, sp, _ = unpack_volume(volume, None, None)
    pred = check_same_shape(img, unpack_volume(volume, prediction, None)[1], "prediction")
    fig = Figure(figsize=(10.5, 10.5), layout="constrained")
    draw_error_grid(fig, img, lab, pred, sp, slices, alpha)
    fig.suptitle(volume.id)
    return fig


def draw_error_grid(
    fig: Figure,
    image: np.ndarray,
    label: np.ndarray,
    prediction: np.ndarray,
    spacing: Sequence[float],
    slices: Sequence[int] | None = None,
    alpha: float = 0.45,
) -> None:
    """Fill ``fig`` with the 3 x 3 grid of :func:`plot_error_triplanar` (RAS arrays).

    Shared with :class:`ibsr_helpers.viewer.CompareViewer`, which redraws it on every
    widget change.
    """
    idx = [n // 2 for n in image.shape] if slices is None else [int(i) for i in slices]
    window = intensity_window(image)
    axes = fig.subplots(3, 3)
    for row, plane in zip(axes, PLANES, strict=True):
        i = idx[PLANE_AXIS[plane]]
        grey = slice_plane(image, plane, i)
        truth, pred = slice_plane(label, plane, i), slice_plane(prediction, plane, i)
        title = f"ground truth · {plane} {i}"
        draw_slice(row[0], overlay(grey, truth, alpha, window), image.shape, spacing, plane, title)
        draw_slice(
            row[1], overlay(grey, pred, alpha, window), image.shape, spacing, plane, "prediction"
        )
        wrong = truth != pred
        rgb = overlay(grey, None, 0.0, window).copy()
        rgb[wrong] = (1.0, 0.0, 0.0)
        draw_slice(row[2], rgb, image.shape, spacing, plane, f"errors ({int(wrong.sum())} voxels)")
    fig.legend(handles=legend_handles(), loc="outside lower center", ncol=3, frameon=False)


def plot_lr_schedule(config: Mapping, ax: Axes | None = None) -> Figure:
    """The learning rate over a run's steps: linear warm-up, then cosine decay.

    Args:
        config: A training config (``optim`` and ``train`` sections).
        ax: Axes to draw in (default: a new figure).

    Returns:
        The figure; epochs are marked on the top axis.
    """
    from ibsr_helpers.step import schedule_factor

    steps, epochs = int(config["train"]["steps_per_epoch"]), int(config["train"]["epochs"])
    o = config["optim"]
    factor = schedule_factor(config)  # the engine's own schedule
    x = np.arange(epochs * steps)
    if ax is None:
        fig = Figure(figsize=(7, 3), layout="constrained")
        ax = fig.subplots()
    ax.plot(x, [float(o["lr"]) * factor(int(s)) for s in x], color="k")
    ax.set(
        xlabel="training step",
        ylabel="learning rate",
        title=f"{config.get('name', '')}: warm-up then cosine",
    )
    top = ax.secondary_xaxis("top", functions=(lambda s: s / steps, lambda e: e * steps))
    top.set_xlabel("epoch")
    ax.grid(alpha=0.3)
    return ax.figure  # type: ignore[return-value]


def plot_dice_vs_minutes(curve: pd.DataFrame, title: str | None = None) -> Figure:
    """What CPU time buys: validation Dice (and HD95) against training minutes, per recipe.

    Args:
        curve: Rows ``recipe, minutes, mean_dice`` and optionally ``hd95`` (mm), ``date``
            and ``hardware``, e.g. ``benchmarks/results/dice_vs_minutes.csv``.
        title: Figure title; by default the recording dates and hardware from the
            ``date`` and ``hardware`` columns, when the frame has them.

    Returns:
        One panel (two with ``hd95``), the legend beside the last one. When the recipes
        were recorded on different dates, each one's legend entry says its date.
    """
    import seaborn as sns

    if "date" in curve.columns:
        date = curve["date"].astype(str)
        dates = sorted(date.unique())
        if len(dates) > 1:
            curve = curve.assign(recipe=curve["recipe"] + " (" + date + ")")
        if title is None and "hardware" in curve.columns:
            when = dates[0] if len(dates) == 1 else f"{dates[0]} to {dates[-1]}"
            title = f"recorded {when} on {', '.join(curve['hardware'].astype(str).unique())}"
    panels = ["mean_dice"] + (["hd95"] if "hd95" in curve.columns else [])
    fig = Figure(figsize=(5.5 * len(panels) + 2.5, 3.8), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(panels)))
    for ax, column in zip(axes, panels, strict=True):
        sns.lineplot(data=curve, x="minutes", y=column, hue="recipe", marker="o", ax=ax)
        ax.set(
            xlabel="training time (CPU minutes)",
            ylabel="validation mean Dice"
            if column == "mean_dice"
            else "HD95, mean of tissues (mm)",
        )
        ax.grid(alpha=0.3)
    for ax in axes[:-1]:  # one legend, beside the last panel, clear of the curves
        ax.get_legend().remove()
    sns.move_legend(axes[-1], "upper left", bbox_to_anchor=(1.02, 1), frameon=False)
    if title:
        fig.suptitle(title)
    return fig


def plot_error_distances(profiles: pd.DataFrame, by: str = "name") -> Figure:
    """Where each predictor's errors lie: their shares by distance to the reference boundary.

    Args:
        profiles: Rows from :func:`ibsr_helpers.error_analysis.error_profiles`.
        by: The column naming the predictors.

    Returns:
        Stacked horizontal bars, one per predictor (shares averaged over subjects), each
        labelled with its mean Dice and the mean Dice with its off-boundary errors fixed.
    """
    from ibsr_helpers.error_analysis import DISTANCES, FIXED

    if profiles.empty:
        raise IBSRError("no error profiles to plot")
    table = profiles.groupby(by, sort=False)[[*DISTANCES, *FIXED]].mean()
    fig = Figure(figsize=(9.0, 0.5 * len(table) + 1.6), layout="constrained")
    ax = fig.subplots()
    left = np.zeros(len(table))
    colours = ["#4c72b0", "#8fb0d9", "#dd8452", "#c44e52"]
    for bin_, colour in zip(DISTANCES, colours, strict=True):
        ax.barh(table.index, table[bin_], left=left, color=colour, label=bin_)
        left += table[bin_].to_numpy()
    for y, (now, fixed) in enumerate(table[list(FIXED)].itertuples(index=False)):
        ax.text(1.02, y, f"Dice {now:.3f} → {fixed:.3f}", va="center", fontsize=8)
    ax.text(1.02, -0.65, "mean Dice → with every error\nmore than a voxel off fixed", fontsize=8)
    ax.set(
        xlim=(0, 1),
        xlabel="share of the wrong voxels, by distance to the reference's "
        "nearest tissue boundary (face steps)",
    )
    ax.invert_yaxis()
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.3), ncol=len(DISTANCES), frameon=False)
    return fig


def plot_slice_sampling(
    prepared: Prepared, plane: str = "coronal", class_ratios: Sequence[float] = (0, 1, 1, 1)
) -> Figure:
    """Which slices a 2D run trains on: each slice's chance under the two slice samplers.

    Top: the tissue voxels of each slice. Bottom: the probability of drawing each slice,
    ``uniform`` (every slice with brain alike) against ``class_balanced`` (a class drawn
    with ``class_ratios``, then one of its voxels: :func:`ibsr_helpers.datasets.slice_weights`).

    Args:
        prepared: A prepared, labelled volume.
        plane: Slicing plane.
        class_ratios: Background, CSF, GM, WM ratios of the class-balanced sampler.

    Returns:
        The figure.
    """
    from ibsr_helpers.datasets import slice_weights

    check_plane(plane)
    if prepared.label is None:
        raise IBSRError(f"{prepared.id}: slice sampling needs labels")
    axis = PLANE_AXIS[plane]
    label = np.moveaxis(prepared.label, axis, 0)
    brain = np.moveaxis(prepared.brain, axis, 0).any(axis=(1, 2))
    x = np.arange(len(label))
    fig = Figure(figsize=(8, 4.5), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True)
    for value, colour in LABEL_COLORS.items():
        top.plot(x, (label == value).sum(axis=(1, 2)), color=colour, label=LABELS[value])
    top.set(ylabel="voxels", title=f"{prepared.id}, {plane} slices")
    top.legend(frameon=False)
    bottom.plot(x, brain / brain.sum(), color="0.4", label="uniform")
    bottom.plot(x, slice_weights(label, class_ratios), color="k", label="class_balanced")
    bottom.set(xlabel=f"{plane} slice", ylabel="chance of being drawn")
    bottom.legend(frameon=False, title=f"class_ratios {list(class_ratios)}")
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
    return fig
