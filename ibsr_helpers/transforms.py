"""Intensity normalisation (and, later, the augmentation pipelines).

IBSR18 intensities differ a lot between subjects (IBSR_11 reaches 1289 while most top
out at 80–300), so every model sees normalised images. Both methods work on the brain
(non-zero) voxels only and leave the background at 0.
"""

from __future__ import annotations

import numpy as np

from ibsr_helpers.errors import IBSRError

__all__ = ["NORMALIZATIONS", "zscore", "minmax", "normalize", "brain_mask"]

NORMALIZATIONS = ("zscore", "minmax")


def brain_mask(image: np.ndarray) -> np.ndarray:
    """Boolean mask of brain voxels (IBSR18 is skull-stripped: brain = non-zero)."""
    return image > 0


def _clip(image: np.ndarray, mask: np.ndarray, percentiles: tuple[float, float]) -> np.ndarray:
    lo, hi = np.percentile(image[mask], percentiles)
    return np.clip(image, lo, hi)


def zscore(image: np.ndarray, percentiles: tuple[float, float] = (0.5, 99.5)) -> np.ndarray:
    """Z-score over brain voxels after percentile clipping; background stays 0.

    Args:
        image: ``(X, Y, Z)`` intensities.
        percentiles: Clip brain intensities to these percentiles first.

    Returns:
        float32 array, brain voxels with mean 0 and sd 1 (before clipping's effect).
    """
    mask = brain_mask(image)
    if not mask.any():
        return np.zeros_like(image, dtype=np.float32)
    clipped = _clip(image.astype(np.float32), mask, percentiles)
    values = clipped[mask]
    out = (clipped - values.mean()) / max(float(values.std()), 1e-6)
    out[~mask] = 0.0
    return out.astype(np.float32)


def minmax(image: np.ndarray, percentiles: tuple[float, float] = (0.5, 99.5)) -> np.ndarray:
    """Scale brain intensities to [0, 1] after percentile clipping; background stays 0.

    Args:
        image: ``(X, Y, Z)`` intensities.
        percentiles: Clip brain intensities to these percentiles first.

    Returns:
        float32 array in [0, 1].
    """
    mask = brain_mask(image)
    if not mask.any():
        return np.zeros_like(image, dtype=np.float32)
    clipped = _clip(image.astype(np.float32), mask, percentiles)
    lo, hi = float(clipped[mask].min()), float(clipped[mask].max())
    out = (clipped - lo) / max(hi - lo, 1e-6)
    out[~mask] = 0.0
    return out.astype(np.float32)


def normalize(image: np.ndarray, method: str) -> np.ndarray:
    """Apply the named normalisation (``"zscore"`` or ``"minmax"``).

    Raises:
        IBSRError: If ``method`` is unknown.
    """
    if method == "zscore":
        return zscore(image)
    if method == "minmax":
        return minmax(image)
    raise IBSRError(f"unknown normalisation {method!r}; use one of {NORMALIZATIONS}")


def train_transforms(config: dict, spatial_dims: int):
    """The random augmentation for training items ``{"image", "label"}`` (MONAI).

    2D slices: rotations (±15°), left-right flips (coronal and axial planes only: there
    is no left-right axis in a sagittal slice), small zoom, intensity scale/shift.
    3D volumes and patches: random affine (rotation ±9°, scale ±10%), bias field,
    left-right flips, intensity scale/shift. The transforms accept numpy arrays or
    torch tensors on any device, so the engine can run them on the GPU
    (``data.gpu_augment``).

    Args:
        config: Full training config (reads ``data.augment``, ``data.plane``).
        spatial_dims: 2 or 3.

    Returns:
        A ``monai.transforms.Compose``, or None when ``data.augment`` is false.
    """
    from monai import transforms as mt

    if not config["data"].get("augment", True):
        return None
    keys = ["image", "label"]
    modes = ("bilinear", "nearest")
    intensity = [
        mt.RandScaleIntensityd("image", factors=0.1, prob=0.5),
        mt.RandShiftIntensityd("image", offsets=0.1, prob=0.5),
    ]
    if spatial_dims == 2:
        spatial = [
            mt.RandRotated(
                keys, range_x=np.deg2rad(15), prob=0.5, mode=modes, padding_mode="zeros"
            ),
            mt.RandZoomd(
                keys,
                min_zoom=0.9,
                max_zoom=1.1,
                prob=0.3,
                mode=("bilinear", "nearest-exact"),
                padding_mode="constant",
            ),
        ]
        if config["data"]["plane"] != "sagittal":
            spatial.append(mt.RandFlipd(keys, prob=0.5, spatial_axis=0))
    else:
        spatial = [
            mt.RandAffined(
                keys,
                prob=0.5,
                rotate_range=(0.15, 0.15, 0.15),
                scale_range=0.1,
                mode=modes,
                padding_mode="zeros",
            ),
            mt.RandBiasFieldd("image", prob=0.3, coeff_range=(0.0, 0.1)),
            mt.RandFlipd(keys, prob=0.5, spatial_axis=0),
        ]
    return mt.Compose(spatial + intensity)
