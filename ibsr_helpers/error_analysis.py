"""Where a segmentation's errors lie: on the reference's tissue boundaries, or away from them.

A Dice of 0.94 leaves about 6 % of each tissue wrong. This module asks *where*: every
misclassified voxel is binned by its distance, in face steps, to the nearest boundary
between two labels of the ground truth (a voxel is *on* a boundary when one of its six
face neighbours has another label, so both sides of an interface count). Errors on the
boundary are a matter of where exactly a manual rater put the edge between, say, GM and
WM; errors several voxels inside a tissue are blunders (a missed ventricle, a sulcus
filled with GM). Two more numbers say what is left to gain:

* **shared by every member**: for an ensemble, the share of its errors that each of its
  members also makes (any wrong label). Averaging members cannot fix those.
* **mean Dice, off-boundary errors fixed**: the mean Dice the segmentation would reach if
  every error more than one voxel away from a boundary were corrected, that is with only
  its boundary errors left: how much better a perfect blunder fixer could do.

Example:
    >>> from ibsr_helpers import error_analysis
    >>> error_analysis.error_profile(segmentation, volume.label)["on boundary"]
    0.91
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import ndimage

from ibsr_helpers.data import Volume
from ibsr_helpers.errors import IBSRError
from ibsr_helpers.layout import TISSUE_LABELS
from ibsr_helpers.metrics import dice

__all__ = ["DISTANCES", "FIXED", "boundary_distance", "error_profile", "error_profiles"]

#: Names of the distance bins, in face steps from the nearest reference boundary.
DISTANCES: tuple[str, ...] = ("on boundary", "1 voxel off", "2 voxels off", "3+ voxels off")
#: The two mean Dice columns: as segmented, and with the off-boundary errors corrected.
FIXED: tuple[str, str] = ("mean Dice", "mean Dice, off-boundary errors fixed")


def boundary_distance(label: np.ndarray) -> np.ndarray:
    """Each voxel's distance, in face steps, to the nearest boundary between two labels.

    Args:
        label: ``(X, Y, Z)`` integer labels (any number of dimensions); the edge of the
            array is not a boundary.

    Returns:
        uint8 distances, 0 on a boundary, capped at ``len(DISTANCES) - 1`` (255 everywhere
        when the label holds a single value).
    """
    label = np.asarray(label)
    cross = ndimage.generate_binary_structure(label.ndim, 1)
    boundary = np.zeros(label.shape, dtype=bool)
    for value in np.unique(label):
        mask = label == value
        boundary |= mask & ~ndimage.binary_erosion(mask, cross, border_value=1)
    if not boundary.any():
        return np.full(label.shape, 255, dtype=np.uint8)
    steps = ndimage.distance_transform_cdt(~boundary, metric="taxicab")
    return np.minimum(steps, len(DISTANCES) - 1).astype(np.uint8)


def _mean_dice(segmentation: np.ndarray, label: np.ndarray) -> float:
    return float(np.mean([dice(segmentation == v, label == v) for v in TISSUE_LABELS.values()]))


def error_profile(
    segmentation: np.ndarray,
    label: np.ndarray,
    members: Sequence[np.ndarray] = (),
    distance: np.ndarray | None = None,
) -> dict[str, float]:
    """Where one segmentation's errors lie, against its ground truth.

    Args:
        segmentation: ``(X, Y, Z)`` predicted labels.
        label: The ground truth, same shape.
        members: For an ensemble, its members' segmentations (same shape): adds
            ``shared by every member``.
        distance: :func:`boundary_distance` of ``label``, if already computed.

    Returns:
        ``errors`` (misclassified voxels), the share of them in each of
        :data:`DISTANCES` (summing to 1; all 0 without errors), ``shared by every
        member`` (with ``members``), ``mean Dice`` and ``mean Dice, off-boundary errors
        fixed`` (over CSF, GM and WM).

    Raises:
        IBSRError: If a shape differs from the label's.
    """
    label = np.asarray(label)
    for name, array in [("segmentation", segmentation), *(("member", m) for m in members)]:
        if np.shape(array) != label.shape:
            raise IBSRError(f"{name} has shape {np.shape(array)}, the label {label.shape}")
    distance = boundary_distance(label) if distance is None else distance
    wrong = np.asarray(segmentation) != label
    n = int(np.count_nonzero(wrong))
    counts = np.bincount(np.minimum(distance[wrong], len(DISTANCES) - 1), minlength=len(DISTANCES))
    profile: dict[str, float] = {"errors": n}
    profile |= {bin_: float(c / n) if n else 0.0 for bin_, c in zip(DISTANCES, counts, strict=True)}
    if len(members):
        every = wrong.copy()
        for member in members:
            every &= np.asarray(member) != label
        profile["shared by every member"] = float(np.count_nonzero(every) / n) if n else 0.0
    fixed = np.where(distance > 1, label, segmentation)
    profile[FIXED[0]] = _mean_dice(np.asarray(segmentation), label)
    profile[FIXED[1]] = _mean_dice(fixed, label)
    return profile


def error_profiles(
    segmentations: Mapping[str, Mapping[str, np.ndarray]],
    volumes: Sequence[Volume],
    members: Mapping[str, Sequence[str]] | None = None,
    names: Sequence[str] | None = None,
) -> pd.DataFrame:
    """:func:`error_profile` of predictors on every labelled volume.

    Args:
        segmentations: Predictor name -> subject id -> segmentation, as filled by
            :func:`ibsr_helpers.evaluation.evaluate_runs`.
        volumes: The labelled subjects they segment.
        members: Ensemble name -> the names (keys of ``segmentations``) of its members.
        names: The predictors to profile (default: every key of ``segmentations``).

    Returns:
        One row per predictor and subject: ``name, subject`` and the profile's columns
        (``shared by every member`` is NaN for a predictor without members).

    Raises:
        IBSRError: If a volume has no label, or a predictor's or member's segmentation is
            missing.
    """
    members = dict(members or {})
    names = list(segmentations) if names is None else list(names)
    unknown = sorted({*names, *(m for ms in members.values() for m in ms)} - set(segmentations))
    if unknown:
        raise IBSRError(f"no segmentations for {', '.join(unknown)}")
    rows = []
    for vol in volumes:
        if vol.label is None:
            raise IBSRError(f"subject {vol.id} has no label to compare with", vol.subject.image)
        distance = boundary_distance(vol.label)
        for name in names:
            by_subject = segmentations[name]
            if vol.id not in by_subject:
                raise IBSRError(f"{name} has no segmentation of {vol.id}")
            parts = [segmentations[m][vol.id] for m in members.get(name, ())]
            profile = error_profile(by_subject[vol.id], vol.label, parts, distance)
            rows.append({"name": name, "subject": vol.id, **profile})
    shared = ["shared by every member"] if members else []
    columns = ["name", "subject", "errors", *DISTANCES, *shared, *FIXED]
    return pd.DataFrame(rows, columns=columns)
