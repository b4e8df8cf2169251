"""Figures for the data chapters (00-02): scans, intensities, tissue volumes, model inputs.

Tri-planar views, intensity histograms and tissue volumes (chapter 01); 2D slices as a
network sees them, augmentations and the brain box of the crop (chapter 02).
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
    PLANE_DISPLAY,
    PLANES,
    TISSUE_COLORS,
    check_image,
    check_plane,
    check_same_shape,
    draw_slice,
    intensity_window,
    legend_handles,
    overlay,
    plane_extent,
    slice_plane,
    unpack_volume,
    upright,
)
from ibsr_helpers.errors import IBSRError
from ibsr_helpers.layout import SPLITS, TISSUES
from ibsr_helpers.preprocessing import PLANE_AXIS, brain_mask
from ibsr_helpers.preprocessing import normalize as normalize_image

if TYPE_CHECKING:
    from ibsr_helpers.preprocessing import Prepared

__all__ = [
    "SPLIT_COLORS",
    "plot_triplanar",
    "plot_intensity_histograms",
    "plot_tissue_volumes",
    "plot_slices",
    "plot_augmentations",
    "plot_roi_box",
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


# --------------------------------------------------------------------------- model inputs


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
            ``train_transforms(augment, 2)`` or ``train_transforms(augment, 3)``.
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
