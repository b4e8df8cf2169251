"""The random augmentation applied to training samples (MONAI transforms).

Geometric transforms move image and labels together (labels with nearest-neighbour
interpolation, so they stay whole numbers); intensity transforms touch the image only.
Prediction never augments, except the flip test-time augmentation of
:mod:`ibsr_helpers.inference`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

__all__ = ["Augment", "train_transforms", "mirrors_left_right", "brain_gamma"]

#: How often the contrast gamma (``data.gamma``) is applied to a training item.
GAMMA_PROB = 0.3


def mirrors_left_right(mode: str, plane: str) -> bool:
    """Whether a run fed ``mode`` (on ``plane``) trains on left-right mirrored inputs.

    Such a run may also be given mirrored inputs by flip TTA. Not a 2D run on sagittal
    slices: a sagittal slice has no left-right axis, and mirroring the volume only reverses
    the order of its 2.5D neighbours, which such a run never saw (flip TTA lowered the
    sagittal CPU recipe's mean Dice from 0.934 to 0.928).
    """
    return not (mode == "slices" and plane == "sagittal")


@dataclass(frozen=True)
class Augment:
    """The augmentation a run trains with (a config's ``data.augment``, ``data.gamma``).

    Attributes:
        enabled: Augment at all.
        mirror: Left-right flips (:func:`mirrors_left_right`).
        gamma: Range of a random gamma of the brain's contrast, or None.
    """

    enabled: bool = True
    mirror: bool = True
    gamma: tuple[float, float] | None = None


def _nonzero(x: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """The brain: every voxel not exactly 0 (z-scores are negative too)."""
    return x != 0


def brain_gamma(gamma: tuple[float, float], prob: float = GAMMA_PROB) -> list:
    """Random gamma on the brain's contrast; the background (exactly 0) stays 0 (MONAI).

    ``RandAdjustContrastd`` with ``retain_stats`` (the image keeps its mean and sd, so
    the z-scores stay z-scores) bends the whole image from its minimum, which would light
    up the zero background around the brain; a copy of the image taken before serves as
    the brain mask after (every voxel not 0: MONAI's default mask, the positive voxels,
    would cut the negative z-scores, the darker half of the brain).

    Args:
        gamma: Range the gamma is drawn from (below 1 brightens the dark tissues).
        prob: Probability of applying it to an item.

    Returns:
        The transforms, to be placed in a ``Compose``.
    """
    from monai import transforms as mt

    return [
        mt.CopyItemsd("image", names="brain"),
        mt.RandAdjustContrastd("image", prob=prob, gamma=gamma, retain_stats=True),
        mt.MaskIntensityd("image", mask_key="brain", select_fn=_nonzero),
        mt.DeleteItemsd("brain"),
    ]


def train_transforms(augment: Augment, spatial_dims: int):
    """The random augmentation for training items ``{"image", "label"}`` (MONAI).

    2D slices: rotations (±15°), left-right flips (coronal and axial planes only: there
    is no left-right axis in a sagittal slice), small zoom, intensity scale/shift.
    3D volumes and patches: random affine (rotation ±9°, scale ±10%), bias field,
    left-right flips, intensity scale/shift. With ``gamma`` ([low, high]), also a
    random gamma of the brain's contrast (:func:`brain_gamma`). The transforms accept
    numpy arrays or torch tensors on any device, so the engine can run them on the GPU
    (``data.gpu_augment``).

    Args:
        augment: What to apply (:func:`ibsr_helpers.plan.specs` makes it from a config).
        spatial_dims: 2 or 3.

    Returns:
        A ``monai.transforms.Compose``, or None when ``augment.enabled`` is false.
    """
    from monai import transforms as mt

    if not augment.enabled:
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
        if augment.mirror:
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
    if augment.gamma is not None:
        intensity += brain_gamma(augment.gamma)
    return mt.Compose(spatial + intensity)
