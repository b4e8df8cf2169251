"""Static figures: label colours, plane slicing, tri-planar views, histograms, tissue volumes.

Plane convention (shared with :mod:`ibsr_helpers.viewer`): volumes are ``(X, Y, Z)``
arrays in RAS voxel order, as IBSR18 is (``nib.aff2axcodes`` gives ``('R', 'A', 'S')``;
axis 1 is the 1.5 mm coronal-slice axis):

==========  ==========  ======================  =====================
plane       fixed axis  horizontal (left→right)  vertical (bottom→top)
==========  ==========  ======================  =====================
sagittal    X (0)       Y: posterior → anterior  Z: inferior → superior
coronal     Y (1)       X: left → right          Z: inferior → superior
axial       Z (2)       X: left → right          Y: posterior → anterior
==========  ==========  ======================  =====================

So the head is upright, and coronal/axial views are in neurological convention (the
subject's right on the viewer's right). Slices are drawn in millimetres, so the 1.5 mm
axis keeps its true length. A :class:`~ibsr_helpers.data.Volume` whose affine is not RAS
is reoriented first (:func:`as_ras`).

Every function returns a :class:`matplotlib.figure.Figure` made without pyplot, so
nothing piles up in pyplot's state; in a notebook end the cell with the figure to show it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

import nibabel as nib
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.colors import ListedColormap, to_rgb
from matplotlib.figure import Figure
from matplotlib.patches import Patch, Rectangle

from ibsr_helpers.data import LABELS, PLANE_AXIS, SPLITS, TISSUES, Volume
from ibsr_helpers.errors import IBSRError
from ibsr_helpers.transforms import normalize as _normalize

if TYPE_CHECKING:
    from ibsr_helpers.datasets import Box, PatchDataset

__all__ = [
    "LABEL_COLORS",
    "SPLIT_COLORS",
    "PLANES",
    "PLANE_AXIS",
    "label_colormap",
    "label_lut",
    "legend_handles",
    "as_ras",
    "unpack_volume",
    "check_spacing",
    "check_same_shape",
    "n_slices",
    "slice_plane",
    "plane_extent",
    "plane_letters",
    "intensity_window",
    "overlay",
    "draw_slice",
    "plot_triplanar",
    "plot_intensity_histograms",
    "tissue_volumes",
    "plot_tissue_volumes",
    "plot_learning_curves",
    "plot_prediction_overlay",
    "upright",
    "plot_slices",
    "plot_augmentations",
    "plot_roi_box",
    "patch_centres",
    "plot_patch_centres",
    "window_starts",
    "plot_sliding_window",
    "plot_dice_comparison",
]

#: Label value -> colour (Okabe-Ito, colour-blind safe). Background has no colour.
LABEL_COLORS: dict[int, str] = {1: "#56B4E9", 2: "#D55E00", 3: "#F0E442"}
#: Split -> colour map name; each subject gets its own shade of its split's colour.
SPLIT_COLORS: dict[str, str] = {"train": "Blues", "val": "Oranges", "test": "Greens"}

#: Plane names, in the order figures show them.
PLANES: tuple[str, ...] = ("sagittal", "coronal", "axial")
# Plane -> (horizontal axis, vertical axis) of the displayed slice.
_PLANE_DISPLAY: dict[str, tuple[int, int]] = {
    "sagittal": (1, 2),
    "coronal": (0, 2),
    "axial": (0, 1),
}
# Plane -> (left, right, bottom, top) letters for RAS-ordered arrays.
_PLANE_LETTERS: dict[str, tuple[str, str, str, str]] = {
    "sagittal": ("P", "A", "I", "S"),
    "coronal": ("L", "R", "I", "S"),
    "axial": ("L", "R", "P", "A"),
}


# --------------------------------------------------------------------------- colours


def label_lut() -> np.ndarray:
    """RGBA lookup table, shape ``(256, 4)``: tissues opaque, every other value transparent."""
    lut = np.zeros((256, 4), dtype=np.float32)
    for value, colour in LABEL_COLORS.items():
        lut[value, :3] = to_rgb(colour)
        lut[value, 3] = 1.0
    return lut


def label_colormap() -> ListedColormap:
    """Return a colormap for ``imshow(label, cmap=..., vmin=0, vmax=3)`` (background clear)."""
    return ListedColormap(label_lut()[: max(LABEL_COLORS) + 1], name="ibsr_labels")


def legend_handles() -> list[Patch]:
    """Legend patches for CSF, GM and WM in :data:`LABEL_COLORS`."""
    return [Patch(facecolor=LABEL_COLORS[v], label=LABELS[v]) for v in sorted(LABEL_COLORS)]


# --------------------------------------------------------------------------- geometry


def check_spacing(spacing: Sequence[float]) -> tuple[float, float, float]:
    """Validate a voxel size.

    Args:
        spacing: Three positive numbers (mm).

    Returns:
        The spacing as a tuple of floats.

    Raises:
        IBSRError: If it is not three positive finite numbers.

    """
    try:
        out = tuple(float(s) for s in spacing)
    except (TypeError, ValueError):
        raise IBSRError(f"spacing must be three numbers, got {spacing!r}") from None
    if len(out) != 3 or not all(np.isfinite(s) and s > 0 for s in out):
        raise IBSRError(f"spacing must be three positive numbers (mm), got {spacing!r}")
    return out  # type: ignore[return-value]


def check_same_shape(image: np.ndarray, other: np.ndarray | None, name: str) -> np.ndarray | None:
    """Check that ``other`` (a label volume) matches the image's shape.

    Args:
        image: The ``(X, Y, Z)`` image.
        other: A volume to show over it, or None.
        name: What ``other`` is, for the message (e.g. ``"label"``).

    Returns:
        ``other`` as an array (or None).

    Raises:
        IBSRError: If the shapes differ.

    """
    if other is None:
        return None
    other = np.asarray(other)
    if other.shape != image.shape:
        raise IBSRError(f"{name} shape {other.shape} does not match image shape {image.shape}")
    return other


def _check_image(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3:
        raise IBSRError(f"expected a 3-D (X, Y, Z) image, got shape {image.shape}")
    return image


def as_ras(array: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Reorder and flip a volume's axes so the voxel order is RAS (a no-op for IBSR18).

    Args:
        array: ``(X, Y, Z)`` volume.
        affine: Its 4x4 voxel-to-world affine.

    Returns:
        The volume with axes in R, A, S order (a view when nothing moves).

    """
    ornt = nib.orientations.io_orientation(affine)
    if np.array_equal(ornt, [[0, 1], [1, 1], [2, 1]]):
        return array
    return nib.orientations.apply_orientation(array, ornt)


def _ras_spacing(spacing: Sequence[float], affine: np.ndarray) -> tuple[float, float, float]:
    ornt = nib.orientations.io_orientation(affine)
    out = [0.0, 0.0, 0.0]
    for axis, (new_axis, _) in enumerate(ornt):
        out[int(new_axis)] = float(spacing[axis])
    return tuple(out)  # type: ignore[return-value]


def unpack_volume(
    image: np.ndarray | Volume,
    label: np.ndarray | None,
    spacing: Sequence[float] | None,
) -> tuple[np.ndarray, np.ndarray | None, tuple[float, float, float], str | None]:
    """Arrays, spacing and a title from an array or a :class:`Volume` (reoriented to RAS).

    Args:
        image: ``(X, Y, Z)`` array or a loaded Volume.
        label: A label volume; for a Volume, defaults to its own label.
        spacing: Voxel size in mm; for a Volume, defaults to its own; else ``(1, 1, 1)``.

    Returns:
        ``(image, label, spacing, title)`` where title is the subject id for a Volume.

    """
    if isinstance(image, Volume):
        vol = image
        label = vol.label if label is None else label
        spacing = vol.spacing if spacing is None else spacing
        img = as_ras(vol.image, vol.affine)
        lab = None if label is None else as_ras(np.asarray(label), vol.affine)
        return img, lab, _ras_spacing(check_spacing(spacing), vol.affine), vol.id
    return np.asarray(image), label, check_spacing((1, 1, 1) if spacing is None else spacing), None


def _check_plane(plane: str) -> str:
    if plane not in PLANE_AXIS:
        raise IBSRError(f"unknown plane {plane!r}; use one of {PLANES}")
    return plane


def n_slices(shape: Sequence[int], plane: str) -> int:
    """Return the number of slices of a volume of ``shape`` in ``plane``."""
    return int(shape[PLANE_AXIS[_check_plane(plane)]])


def slice_plane(volume: np.ndarray, plane: str, index: int) -> np.ndarray:
    """One slice, oriented for display: row 0 is the top of the picture.

    Args:
        volume: ``(X, Y, Z)`` array in RAS voxel order.
        plane: ``"sagittal"``, ``"coronal"`` or ``"axial"``.
        index: Slice number along the plane's fixed axis.

    Returns:
        ``(H, W)`` array for ``imshow(..., origin="upper")`` (see the module table).

    Raises:
        IBSRError: If the plane is unknown or the index out of range.

    """
    axis = PLANE_AXIS[_check_plane(plane)]
    n = volume.shape[axis]
    if not 0 <= index < n:
        raise IBSRError(f"{plane} slice {index} out of range 0..{n - 1}")
    # After np.take the remaining axes keep their order, so .T puts the vertical axis in
    # rows; flipping makes row 0 the top (superior / anterior).
    return np.flipud(np.take(volume, index, axis=axis).T)


def plane_extent(shape: Sequence[int], spacing: Sequence[float], plane: str) -> tuple[float, ...]:
    """``imshow`` extent ``(left, right, bottom, top)`` in mm, so pixels keep their true size."""
    h_axis, v_axis = _PLANE_DISPLAY[_check_plane(plane)]
    return (0.0, shape[h_axis] * spacing[h_axis], 0.0, shape[v_axis] * spacing[v_axis])


def plane_letters(plane: str) -> tuple[str, str, str, str]:
    """Anatomical directions at the (left, right, bottom, top) edges of a slice."""
    return _PLANE_LETTERS[_check_plane(plane)]


# --------------------------------------------------------------------------- drawing


def intensity_window(
    image: np.ndarray, percentiles: tuple[float, float] = (0.5, 99.5)
) -> tuple[float, float]:
    """Grey-level window from the brain (non-zero) voxels' percentiles.

    Args:
        image: Any intensity array.
        percentiles: Lower and upper percentile.

    Returns:
        ``(low, high)`` with ``high > low``.

    """
    values = image[image != 0]
    if values.size == 0:
        return 0.0, 1.0
    lo, hi = (float(v) for v in np.percentile(values, percentiles))
    if hi <= lo:
        hi = lo + 1.0
    return lo, hi


def overlay(
    image2d: np.ndarray,
    label2d: np.ndarray | None,
    alpha: float,
    window: tuple[float, float],
) -> np.ndarray:
    """Blend a grey slice with its label colours.

    Args:
        image2d: ``(H, W)`` intensities.
        label2d: ``(H, W)`` labels (0 background, 1 CSF, 2 GM, 3 WM), or None.
        alpha: Label opacity in [0, 1]; 0 gives the plain grey slice.
        window: ``(low, high)`` grey-level window.

    Returns:
        ``(H, W, 3)`` float32 RGB in [0, 1].

    """
    lo, hi = window
    grey = np.clip((np.asarray(image2d, dtype=np.float32) - lo) / (hi - lo), 0.0, 1.0)
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    if label2d is None or alpha <= 0:
        return rgb
    rgba = label_lut()[np.clip(np.asarray(label2d), 0, 255).astype(np.intp)]
    weight = (float(min(alpha, 1.0)) * rgba[..., 3])[..., None]
    return (1.0 - weight) * rgb + weight * rgba[..., :3]


def draw_slice(
    ax: Axes,
    rgb: np.ndarray,
    shape: Sequence[int],
    spacing: Sequence[float],
    plane: str,
    title: str | None = None,
) -> None:
    """Draw an :func:`overlay` slice in mm with orientation letters and no ticks."""
    ax.imshow(rgb, extent=plane_extent(shape, spacing, plane), interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_facecolor("black")
    style = {"color": "white", "fontsize": 9, "fontweight": "bold", "transform": ax.transAxes}
    left, right, bottom, top = plane_letters(plane)
    ax.text(0.02, 0.5, left, ha="left", va="center", **style)
    ax.text(0.98, 0.5, right, ha="right", va="center", **style)
    ax.text(0.5, 0.02, bottom, ha="center", va="bottom", **style)
    ax.text(0.5, 0.98, top, ha="center", va="top", **style)
    if title:
        ax.set_title(title, fontsize=10)


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
    img = _check_image(img)
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
        image = vol.image if normalize is None else _normalize(vol.image, normalize)
        values.append(image[vol.image != 0])
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


def tissue_volumes(volumes: Sequence[Volume]) -> pd.DataFrame:
    """Tissue volumes per labelled subject, from voxel counts and spacing.

    Args:
        volumes: Loaded volumes; those without a label (test subjects) are skipped.

    Returns:
        DataFrame with columns ``subject, split, tissue, voxels, volume_ml, percent``
        (percent of the subject's CSF+GM+WM), one row per subject and tissue.

    """
    rows = []
    for vol in volumes:
        if vol.label is None:
            continue
        counts = np.bincount(vol.label.ravel(), minlength=len(LABELS))
        voxel_ml = float(np.prod(vol.spacing)) / 1000.0
        total = int(counts[1 : len(TISSUES) + 1].sum())
        for value, tissue in enumerate(TISSUES, start=1):
            rows.append(
                {
                    "subject": vol.id,
                    "split": vol.subject.split,
                    "tissue": tissue,
                    "voxels": int(counts[value]),
                    "volume_ml": counts[value] * voxel_ml,
                    "percent": 100.0 * counts[value] / total if total else 0.0,
                }
            )
    columns = ["subject", "split", "tissue", "voxels", "volume_ml", "percent"]
    return pd.DataFrame(rows, columns=columns)


def plot_tissue_volumes(df: pd.DataFrame, ax: Axes | None = None) -> Figure:
    """Plot tissue volumes (ml) as grouped bars per subject, subjects grouped by split.

    Args:
        df: From :func:`tissue_volumes`.
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
    palette = {LABELS[v]: LABEL_COLORS[v] for v in LABEL_COLORS}
    sns.barplot(
        data=df,
        x="subject",
        y="volume_ml",
        hue="tissue",
        order=order,
        hue_order=list(TISSUES),
        palette=palette,
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


# --------------------------------------------------------------------------- model inputs


def upright(slice2d: np.ndarray) -> np.ndarray:
    """Turn a model-input slice for display, as :func:`slice_plane` does.

    A slice of :func:`ibsr_helpers.datasets.slice_stack` keeps the two remaining voxel
    axes in order (e.g. ``(X, Z)`` for a coronal slice); transposed and flipped, the head
    is upright. ``upright(slice_stack(v, p)[i, 0])`` equals ``slice_plane(v, p, i)``.

    Args:
        slice2d: ``(A, B)`` slice in voxel-axis order.

    Returns:
        ``(B, A)`` array, row 0 at the top (superior or anterior).
    """
    return np.flipud(np.asarray(slice2d).T)


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
    a, b = (i for i in range(3) if i != PLANE_AXIS[_check_plane(plane)])
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
    """One slice and ``n`` random augmentations of it: images on top, labels below.

    Args:
        image: ``(C, A, B)`` model input (``C`` = 1, or ``2k+1`` for 2.5D; the centre
            channel is drawn), as a :class:`~ibsr_helpers.datasets.SliceDataset` gives it.
        label: ``(1, A, B)`` or ``(A, B)`` labels.
        transform: A MONAI transform on ``{"image", "label"}`` dicts, e.g.
            ``train_transforms(config, 2)``.
        n: Augmented copies to draw.
        seed: Seed of the transform's random state (same seed, same figure).
        plane: The slice's plane (orientation letters).
        alpha: Label opacity in the bottom row.

    Returns:
        A figure of two rows of ``n + 1`` panels (the original first).
    """
    image = np.asarray(image, dtype=np.float32)
    label = np.asarray(label)
    label = label[None] if label.ndim == 2 else label
    if image.ndim != 3 or label.shape[1:] != image.shape[1:]:
        raise IBSRError(
            f"expected image (C, A, B) and label (1, A, B), got {image.shape}, {label.shape}"
        )
    if hasattr(transform, "set_random_state"):
        transform.set_random_state(seed=seed)
    centre = image.shape[0] // 2
    pairs = [(image[centre], label[0])]
    for _ in range(n):
        out = transform({"image": image.copy(), "label": label.copy()})
        pairs.append((np.asarray(out["image"])[centre], np.asarray(out["label"])[0]))
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
        window=intensity_window(image[centre]),
    )


def plot_roi_box(volume: Volume, box: Box, slices: Sequence[int] | None = None) -> Figure:
    """Tri-planar view of a subject with its brain ROI box drawn in each plane.

    Args:
        volume: A loaded subject in RAS voxel order (IBSR18 is).
        box: A :class:`~ibsr_helpers.datasets.Box` in the volume's voxel coordinates,
            e.g. ``roi_box(volume.image, roi)``; parts outside the volume are zero padding.
        slices: ``(x, y, z)`` slice indices (default: the box centre, clipped to the volume).

    Returns:
        The :func:`plot_triplanar` figure with a dashed box in each panel.
    """
    start, size = np.asarray(box.start), np.asarray(box.size)
    shape = np.asarray(volume.image.shape)
    if slices is None:
        slices = tuple(int(i) for i in np.clip(start + size // 2, 0, shape - 1))
    fig = plot_triplanar(volume, slices=slices)
    sp = volume.spacing
    for ax, plane in zip(fig.axes, PLANES, strict=True):
        h, v = _PLANE_DISPLAY[plane]
        x0, y0 = start[h] * sp[h], start[v] * sp[v]
        w, hgt = size[h] * sp[h], size[v] * sp[v]
        ax.add_patch(Rectangle((x0, y0), w, hgt, fill=False, ec="#00E5FF", lw=1.5, ls="--"))
        ax.set_xlim(min(0.0, x0), max(shape[h] * sp[h], x0 + w))
        ax.set_ylim(min(0.0, y0), max(shape[v] * sp[v], y0 + hgt))
    return fig


def patch_centres(
    dataset: PatchDataset, volume_index: int = 0, seed: int | None = None
) -> np.ndarray:
    """Draw one round of patches from a patch dataset and return their centres.

    The centres are read from the crop MONAI records in each patch's
    ``applied_operations`` (so MONAI's meta-data tracking must be on, its default).

    Args:
        dataset: A :class:`~ibsr_helpers.datasets.PatchDataset`.
        volume_index: Which of its volumes to sample.
        seed: Re-seed the sampler first (None: go on from its current state).

    Returns:
        ``(P, 3)`` int array of voxel centres in the cropped volume
        (``P = patches_per_volume``), ``start + size // 2`` of each patch.

    Raises:
        IBSRError: If a patch carries no crop record.
    """
    if seed is not None:
        dataset.crop.set_random_state(seed=seed)
    centres = []
    for patch in dataset.crop(dataset.items[volume_index]):
        ops = getattr(patch["image"], "applied_operations", None) or [{}]
        info = ops[-1]
        while isinstance(info, Mapping) and "cropped" not in info:
            info = info.get("extra_info")
        if not isinstance(info, Mapping):
            raise IBSRError("patch has no crop record (is MONAI's track_meta off?)")
        before = np.asarray(info["cropped"])[::2]
        centres.append(before + np.asarray(dataset.patch_size) // 2)
    return np.asarray(centres, dtype=int)


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
    once. Centres within ``slab`` slices of the shown slice are drawn as dots coloured by
    the tissue under them (white: background); the title gives the share of *all*
    centres per class. The first drawn patch is outlined for scale.

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
    axis = PLANE_AXIS[_check_plane(plane)]
    h_axis, v_axis = _PLANE_DISPLAY[plane]
    fig = Figure(figsize=(3.2 * len(samplers), 3.9), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(samplers)))
    colours = {0: "white", **LABEL_COLORS}
    for ax, (name, ds) in zip(axes, samplers.items(), strict=True):
        vol = ds.volumes[0]
        centres = patch_centres(ds, 0, seed)
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


def window_starts(size: int, patch: int, overlap: float) -> list[int]:
    """Where sliding windows start along one axis, as MONAI's sliding-window inference.

    The step is ``int(patch * (1 - overlap))`` voxels (at least 1); the last window is
    moved back so it ends at the border. A volume smaller than the patch gets one window
    (MONAI pads it).

    Args:
        size: Volume size along the axis.
        patch: Window (patch) size along the axis.
        overlap: Fraction of a window shared with the next, in ``[0, 1)``.

    Returns:
        The start voxel of every window, ascending.

    Example:
        >>> window_starts(192, 64, 0.5)
        [0, 32, 64, 96, 128]
    """
    if not 0 <= overlap < 1:
        raise IBSRError(f"overlap must be in [0, 1), got {overlap}")
    span = max(int(size) - int(patch), 0)
    step = max(int(patch * (1 - overlap)), 1)
    return sorted({min(i * step, span) for i in range(-(-span // step) + 1)})


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

    image = _check_image(image)
    axis = PLANE_AXIS[_check_plane(plane)]
    h_axis, v_axis = _PLANE_DISPLAY[plane]
    patch = tuple(int(p) for p in patch_size)
    starts = [window_starts(n, p, overlap) for n, p in zip(image.shape, patch, strict=True)]
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
    n_windows = int(np.prod([len(s) for s in starts]))
    fig.suptitle(
        f"{n_windows} windows of {'x'.join(map(str, patch))} voxels cover "
        f"{'x'.join(map(str, image.shape))} at overlap {overlap:g}"
    )
    return fig


def plot_dice_comparison(
    table: pd.DataFrame, title: str | None = None, ax: Axes | None = None
) -> Figure:
    """Grouped bars of Dice per tissue, one group per predictor.

    Args:
        table: One row per predictor (index: its name), columns ``CSF, GM, WM`` and
            optionally ``mean``, e.g. :func:`ibsr_helpers.metrics.dice_table`.
        title: Axes title.
        ax: Axes to draw in (default: a new figure).

    Returns:
        The figure; each bar is labelled with its value.
    """
    cols = [c for c in (*TISSUES, "mean") if c in table.columns]
    if not cols or table.empty:
        raise IBSRError("the table needs rows and CSF / GM / WM / mean columns")
    if ax is None:
        fig = Figure(figsize=(max(5.0, 1.6 * len(table) + 2), 3.6), layout="constrained")
        ax = fig.subplots()
    colours = {t: LABEL_COLORS[v] for v, t in enumerate(TISSUES, start=1)} | {"mean": "0.3"}
    width = 0.8 / len(cols)
    x = np.arange(len(table))
    for k, col in enumerate(cols):
        bars = ax.bar(
            x + (k - (len(cols) - 1) / 2) * width,
            table[col],
            width,
            color=colours[col],
            edgecolor="k",
            lw=0.5,
            label=col,
        )
        ax.bar_label(bars, fmt="%.2f", fontsize=7, padding=1)
    ax.set_xticks(x, [str(i) for i in table.index])
    low = float(np.nanmin(table[cols].to_numpy()))
    ax.set_ylim(max(0.0, low - 0.1), 1.0)
    ax.set_ylabel("Dice")
    ax.legend(loc="lower right", fontsize=8, ncol=len(cols))
    ax.grid(axis="y", alpha=0.3)
    if title:
        ax.set_title(title)
    return ax.figure  # type: ignore[return-value]
