"""Display primitives shared by the figures (:mod:`ibsr_helpers.plots`) and the viewer.

Plane convention: volumes are ``(X, Y, Z)`` arrays in RAS voxel order, as IBSR18 is and
as :func:`ibsr_helpers.preprocessing.reorient` makes any scan (axis 1 is IBSR18's 1.5 mm
coronal-slice axis):

==========  ==========  ======================  =====================
plane       fixed axis  horizontal (left→right)  vertical (bottom→top)
==========  ==========  ======================  =====================
sagittal    X (0)       Y: posterior → anterior  Z: inferior → superior
coronal     Y (1)       X: left → right          Z: inferior → superior
axial       Z (2)       X: left → right          Y: posterior → anterior
==========  ==========  ======================  =====================

So the head is upright, and coronal/axial views are in neurological convention (the
subject's right on the viewer's right). Slices are drawn in millimetres, so the 1.5 mm
axis keeps its true length.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import to_rgb
from matplotlib.patches import Patch

from ibsr_helpers.data import Volume
from ibsr_helpers.errors import IBSRError
from ibsr_helpers.io import check_spacing
from ibsr_helpers.layout import LABELS
from ibsr_helpers.preprocessing import PLANE_AXIS, reorient

__all__ = [
    "LABEL_COLORS",
    "TISSUE_COLORS",
    "PLANES",
    "PLANE_DISPLAY",
    "label_lut",
    "legend_handles",
    "unpack_volume",
    "check_image",
    "check_plane",
    "check_same_shape",
    "n_slices",
    "slice_plane",
    "plane_extent",
    "plane_letters",
    "intensity_window",
    "overlay",
    "draw_slice",
    "upright",
]

#: Label value -> colour (Okabe-Ito, colour-blind safe). Background has no colour.
LABEL_COLORS: dict[int, str] = {1: "#56B4E9", 2: "#D55E00", 3: "#F0E442"}
#: Tissue name -> its colour, for seaborn palettes.
TISSUE_COLORS: dict[str, str] = {LABELS[v]: c for v, c in LABEL_COLORS.items()}
#: Plane names, in the order figures show them.
PLANES: tuple[str, ...] = ("sagittal", "coronal", "axial")
#: Plane -> (horizontal axis, vertical axis) of the displayed slice.
PLANE_DISPLAY: dict[str, tuple[int, int]] = {
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


def label_lut() -> np.ndarray:
    """RGBA lookup table, shape ``(256, 4)``: tissues opaque, every other value transparent."""
    lut = np.zeros((256, 4), dtype=np.float32)
    for value, colour in LABEL_COLORS.items():
        lut[value, :3] = to_rgb(colour)
        lut[value, 3] = 1.0
    return lut


def legend_handles() -> list[Patch]:
    """Legend patches for CSF, GM and WM in :data:`LABEL_COLORS`."""
    return [Patch(facecolor=LABEL_COLORS[v], label=LABELS[v]) for v in sorted(LABEL_COLORS)]


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


def check_image(image: np.ndarray) -> np.ndarray:
    """The image as an array, checked to be 3-D ``(X, Y, Z)``.

    Raises:
        IBSRError: If it is not 3-D.
    """
    image = np.asarray(image)
    if image.ndim != 3:
        raise IBSRError(f"expected a 3-D (X, Y, Z) image, got shape {image.shape}")
    return image


def unpack_volume(
    image: np.ndarray | Volume,
    label: np.ndarray | None,
    spacing: Sequence[float] | None,
) -> tuple[np.ndarray, np.ndarray | None, tuple[float, float, float], str | None]:
    """Arrays, spacing and a title from an array or a :class:`Volume` (reoriented to RAS).

    Args:
        image: ``(X, Y, Z)`` array in RAS order, or a loaded Volume (any orientation).
        label: A label volume in the image's voxel order; for a Volume, defaults to its
            own label.
        spacing: Voxel size in mm; for a Volume, defaults to its own; else ``(1, 1, 1)``.

    Returns:
        ``(image, label, spacing, title)`` where title is the subject id for a Volume.
    """
    if isinstance(image, Volume):
        vol = image
        img, own_label, sp = reorient(vol)
        if label is None:
            lab = own_label
        else:
            lab = reorient(Volume(vol.subject, np.asarray(label), None, vol.nifti))[0]
        if spacing is not None:
            sp = check_spacing(spacing)
        return img, lab, sp, vol.id  # type: ignore[return-value]
    sp = check_spacing((1, 1, 1) if spacing is None else spacing)
    return np.asarray(image), label, sp, None  # type: ignore[return-value]


def check_plane(plane: str) -> str:
    """The plane name, checked."""
    if plane not in PLANE_AXIS:
        raise IBSRError(f"unknown plane {plane!r}; use one of {PLANES}")
    return plane


def n_slices(shape: Sequence[int], plane: str) -> int:
    """Return the number of slices of a volume of ``shape`` in ``plane``."""
    return int(shape[PLANE_AXIS[check_plane(plane)]])


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
    axis = PLANE_AXIS[check_plane(plane)]
    n = volume.shape[axis]
    if not 0 <= index < n:
        raise IBSRError(f"{plane} slice {index} out of range 0..{n - 1}")
    # After np.take the remaining axes keep their order, so .T puts the vertical axis in
    # rows; flipping makes row 0 the top (superior / anterior).
    return np.flipud(np.take(volume, index, axis=axis).T)


def plane_extent(shape: Sequence[int], spacing: Sequence[float], plane: str) -> tuple[float, ...]:
    """``imshow`` extent ``(left, right, bottom, top)`` in mm, so pixels keep their true size."""
    h_axis, v_axis = PLANE_DISPLAY[check_plane(plane)]
    return (0.0, shape[h_axis] * spacing[h_axis], 0.0, shape[v_axis] * spacing[v_axis])


def plane_letters(plane: str) -> tuple[str, str, str, str]:
    """Anatomical directions at the (left, right, bottom, top) edges of a slice."""
    return _PLANE_LETTERS[check_plane(plane)]


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
