"""Reading and writing NIfTI volumes, with their geometry kept exactly and checked once.

IBSR18 files are 4-D ``(256, 128, 256, 1)`` int16 with the 1.5 mm axis at position 1.
:func:`read_volume` squeezes trailing singleton axes; :func:`save_segmentation` puts
them back so a prediction has the same dimensionality, affine, zooms and sform/qform
codes as the image it was made from. :func:`read_labels` is the one place label values
are checked, :func:`check_spacing` the one place a voxel size is.
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np

from ibsr_helpers.errors import IBSRError
from ibsr_helpers.layout import LABELS

__all__ = [
    "read_volume",
    "read_labels",
    "load_nifti",
    "save_segmentation",
    "squeeze_trailing",
    "check_spacing",
]


def squeeze_trailing(array: np.ndarray, ndim: int = 3) -> np.ndarray:
    """Drop trailing singleton axes until ``array`` has ``ndim`` axes.

    Args:
        array: Array such as IBSR's ``(256, 128, 256, 1)``.
        ndim: Number of axes to keep.

    Returns:
        A view with at most ``ndim`` axes; non-singleton axes are never dropped.
    """
    while array.ndim > ndim and array.shape[-1] == 1:
        array = array[..., 0]
    return array


def load_nifti(path: str | Path) -> nib.Nifti1Image:
    """Open a NIfTI file, turning every failure into one :class:`IBSRError`.

    Args:
        path: A ``.nii`` or ``.nii.gz`` file.

    Returns:
        The nibabel image (data not yet read).

    Raises:
        IBSRError: If the file is missing or is not a readable NIfTI file.
    """
    path = Path(path)
    if not path.is_file():
        raise IBSRError("file not found", path)
    try:
        img = nib.load(str(path))
    except Exception as exc:  # nibabel raises many types for a bad header
        raise IBSRError(f"not a readable NIfTI file ({_reason(exc)})", path) from None
    if not isinstance(img, nib.Nifti1Image | nib.Nifti2Image):
        raise IBSRError(f"expected a NIfTI image, got {type(img).__name__}", path)
    return img


def read_volume(
    path: str | Path, dtype: type | np.dtype | None = np.float32
) -> tuple[np.ndarray, nib.Nifti1Image]:
    """Read a 3-D volume, squeezing trailing singleton axes.

    Args:
        path: A ``.nii`` or ``.nii.gz`` file.
        dtype: Dtype of the returned array (None: as stored, after the header's scaling).

    Returns:
        ``(array, image)``: the ``(X, Y, Z)`` data and the nibabel image (affine, header).

    Raises:
        IBSRError: If the file is missing, truncated, corrupt or not 3-D.
    """
    img = load_nifti(path)
    try:
        data = np.asarray(img.dataobj)
    except Exception as exc:  # truncated gzip streams fail only when read
        raise IBSRError(
            f"cannot read the voxel data, file truncated or corrupt ({_reason(exc)})", path
        ) from None
    data = squeeze_trailing(data)
    if data.ndim != 3:
        raise IBSRError(f"expected a 3-D volume, got shape {data.shape}", path)
    return (data if dtype is None else data.astype(dtype, copy=False)), img


def read_labels(path: str | Path) -> tuple[np.ndarray, nib.Nifti1Image]:
    """Read a label volume and check its values are whole numbers in 0..3.

    Args:
        path: A ``.nii`` or ``.nii.gz`` label file (0 background, 1 CSF, 2 GM, 3 WM).

    Returns:
        ``(labels, image)``: ``(X, Y, Z)`` uint8 labels and the nibabel image.

    Raises:
        IBSRError: If the file cannot be read, or holds non-finite, fractional or
            out-of-range values (the message lists up to five of them).
    """
    raw, img = read_volume(path, None)
    if np.issubdtype(raw.dtype, np.integer) and raw.size and raw.min() >= 0 and raw.max() <= 3:
        return raw.astype(np.uint8), img  # stored as integers in range: no float copy (0.3 s)
    raw = raw.astype(np.float64, copy=False)
    labels = raw.astype(np.uint8)
    if raw.size and raw.min() >= 0 and raw.max() <= 3 and np.array_equal(labels, raw):
        return labels, img  # the usual case, checked at a tenth of the cost of np.isin
    if not np.isfinite(raw).all():
        raise IBSRError("label holds non-finite values", path)
    bad = ~np.isin(raw, list(LABELS))
    if bad.any():
        values = np.unique(raw[bad])
        shown = ", ".join(f"{v:g}" for v in values[:5]) + (", …" if values.size > 5 else "")
        raise IBSRError(f"label values [{shown}] outside 0-3 (0 bg, 1 CSF, 2 GM, 3 WM)", path)
    return raw.astype(np.uint8), img


def check_spacing(spacing: Sequence[float], ndim: int = 3) -> tuple[float, ...]:
    """Validate a voxel size.

    Args:
        spacing: ``ndim`` positive finite numbers (mm).
        ndim: How many axes the volume has.

    Returns:
        The spacing as a tuple of floats.

    Raises:
        IBSRError: If it is not ``ndim`` positive finite numbers.
    """
    try:
        out = tuple(float(s) for s in np.ravel(spacing))
    except (TypeError, ValueError):
        raise IBSRError(f"spacing must be {ndim} numbers (mm), got {spacing!r}") from None
    if len(out) != ndim or not all(np.isfinite(s) and s > 0 for s in out):
        raise IBSRError(f"spacing must be {ndim} positive numbers (mm), got {spacing!r}")
    return out


def save_segmentation(
    seg: np.ndarray,
    reference: str | Path | nib.Nifti1Image,
    out_path: str | Path,
) -> Path:
    """Write a label volume with the geometry of the image it was predicted from.

    The output is uint8 and keeps the reference's affine, sform/qform codes, zooms and
    dimensionality (a 4-D singleton reference gives a 4-D singleton output).

    Args:
        seg: ``(X, Y, Z)`` integer labels (0 background, 1 CSF, 2 GM, 3 WM).
        reference: The source image (path or nibabel image).
        out_path: Where to write (``.nii.gz``). Parent folders are created.

    Returns:
        The path written.

    Raises:
        IBSRError: If ``seg`` does not match the reference's spatial shape or holds
            values outside 0–255.
    """
    ref = load_nifti(reference) if isinstance(reference, str | Path) else reference
    ref_shape = tuple(ref.shape)
    spatial = ref_shape[:3]
    seg = np.asarray(seg)
    seg = squeeze_trailing(seg)
    if seg.shape != spatial:
        raise IBSRError(
            f"segmentation shape {seg.shape} does not match the reference {spatial}", out_path
        )
    if seg.size and (seg.min() < 0 or seg.max() > 255):
        raise IBSRError("segmentation values must lie in 0..255", out_path)
    data = seg.astype(np.uint8).reshape(ref_shape[:3] + (1,) * (len(ref_shape) - 3))
    header = ref.header.copy()
    header.set_data_dtype(np.uint8)
    out = nib.Nifti1Image(data, ref.affine, header)
    # Keep the reference's exact sform/qform (and their codes), not nibabel's rewrite.
    out.set_sform(ref.get_sform(), code=int(ref.header["sform_code"]))
    out.set_qform(ref.get_qform(), code=int(ref.header["qform_code"]))
    out.header["scl_slope"] = 1.0
    out.header["scl_inter"] = 0.0
    out.header["cal_min"] = 0
    out.header["cal_max"] = 0
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    # Write beside the target, then rename: an interrupted save never leaves a half file.
    tmp = out_path.with_name(f".partial-{out_path.name}")
    nib.save(out, str(tmp))
    tmp.replace(out_path)
    return out_path


def _reason(exc: BaseException) -> str:
    """Shorten a library exception to a one-line reason."""
    if isinstance(exc, EOFError | gzip.BadGzipFile | zlib.error):
        return f"{type(exc).__name__}: {exc}".strip()
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
