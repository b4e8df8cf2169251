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
