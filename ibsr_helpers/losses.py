"""Loss factory: MONAI's Dice, focal, Dice + focal and Dice + cross-entropy losses, for label maps.

Every loss takes the network's raw logits ``(B, C, *spatial)`` (softmax is applied inside)
and integer labels, either ``(B, 1, *spatial)`` (MONAI's layout) or ``(B, *spatial)``;
``spatial`` is ``(H, W)`` or ``(D, H, W)``.

Background. ``include_background=True`` (the default) counts the background as a fourth
class. With ``include_background=False`` the Dice term covers CSF, GM and WM only, like the
Dice scores the course reports (nnU-Net does the same); the softmax still runs over all
classes, so background is still learnt. The softmax focal loss alone cannot drop the
background (MONAI would take the softmax over the tissue channels only and never learn
background), so ``focal`` refuses it.

Class weights. ``class_weights`` has one value per class, background first (4 values for
IBSR18), whatever ``include_background`` says; when background is excluded its weight is
dropped before being given to MONAI's ``weight`` argument.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import torch
from monai.losses import DiceCELoss, DiceFocalLoss, DiceLoss, FocalLoss
from torch import nn

from ibsr_helpers.errors import IBSRError

__all__ = ["LOSS_NAMES", "SegmentationLoss", "build_loss", "loss_settings"]

LOSS_NAMES: tuple[str, ...] = ("dice", "focal", "dicefocal", "dicece")


class SegmentationLoss(nn.Module):
    """A MONAI loss that also accepts ``(B, *spatial)`` label maps.

    Args:
        loss: The MONAI loss (softmax and one-hot conversion configured).
        num_classes: Number of class weights given, checked against the logits; None if
            no weights were given.

    """

    def __init__(self, loss: nn.Module, num_classes: int | None = None) -> None:
        super().__init__()
        self.loss = loss
        self.num_classes = num_classes

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Compute the loss.

        Args:
            logits: ``(B, C, *spatial)`` raw network outputs.
            target: ``(B, 1, *spatial)`` or ``(B, *spatial)`` integer labels in ``[0, C)``.

        Returns:
            The scalar loss (with MONAI's default ``reduction="mean"``).

        Raises:
            IBSRError: ``class_weights`` do not match the number of classes ``C``.
            ValueError: ``target`` does not match ``logits`` in shape.

        """
        if target.ndim == logits.ndim - 1:
            target = target.unsqueeze(1)
        if target.ndim != logits.ndim or target.shape[1] != 1:
            raise ValueError(
                f"target of shape {tuple(target.shape)} does not fit logits of shape "
                f"{tuple(logits.shape)}: expected (B, 1, *spatial) or (B, *spatial) labels"
            )
        if self.num_classes is not None and self.num_classes != logits.shape[1]:
            raise IBSRError(
                f"class_weights has {self.num_classes} values but the model predicts "
                f"{logits.shape[1]} classes (give one weight per class, background first)"
            )
        return self.loss(logits, target)


def _weights(class_weights: Sequence[float], include_background: bool) -> list[float]:
    try:
        weights = [float(w) for w in class_weights]
    except (TypeError, ValueError) as exc:
        raise IBSRError(f"class_weights must be a list of numbers, got {class_weights!r}") from exc
    if len(weights) < 2 or min(weights) < 0:
        raise IBSRError(
            f"class_weights must have one non-negative value per class, got {class_weights!r}"
        )
    return weights if include_background else weights[1:]


#: Loss name -> the MONAI class it builds.
_LOSS_CLASSES: dict[str, type[nn.Module]] = {
    "dice": DiceLoss,
    "focal": FocalLoss,
    "dicefocal": DiceFocalLoss,
    "dicece": DiceCELoss,
}


def loss_settings(name: str) -> frozenset[str]:
    """The ``loss.*`` settings a config may give loss ``name`` (``name`` included).

    Raises:
        IBSRError: Unknown name.
    """
    if name not in LOSS_NAMES:
        raise IBSRError(f"unknown loss {name!r}; known losses: {', '.join(LOSS_NAMES)}")
    found = set(inspect.signature(build_loss).parameters) | set(
        inspect.signature(_LOSS_CLASSES[name]).parameters
    )
    return frozenset(found - {"kwargs", "self"})


def build_loss(
    name: str = "dicefocal",
    class_weights: Sequence[float] | None = None,
    include_background: bool = True,
    **kwargs: Any,
) -> nn.Module:
    """Build a segmentation loss by name.

    ``dice`` is MONAI's ``DiceLoss``; ``focal`` its ``FocalLoss`` with a softmax (the
    multi-class focal loss, ``gamma=2``); ``dicefocal`` its ``DiceFocalLoss``, the sum of a
    softmax Dice loss and MONAI's per-class (sigmoid) focal loss; ``dicece`` its
    ``DiceCELoss``, a softmax Dice loss plus cross-entropy (nnU-Net's choice).

    Args:
        name: One of ``LOSS_NAMES``.
        class_weights: One weight per class, background first (MONAI's ``weight``); None
            weighs every class alike.
        include_background: Count the background class in the loss (see the module notes).
        **kwargs: Passed to the MONAI loss, e.g. ``gamma``, ``lambda_dice``,
            ``lambda_focal``, ``batch``, ``smooth_nr``.

    Returns:
        A module called as ``loss(logits, target)``, see :class:`SegmentationLoss`.

    Raises:
        IBSRError: Unknown name, bad class weights, or a setting MONAI does not accept.

    Example:
        >>> loss = build_loss("dice", class_weights=[0.5, 1.0, 1.0, 1.0])

    """
    if name not in LOSS_NAMES:
        raise IBSRError(f"unknown loss {name!r}; known losses: {', '.join(LOSS_NAMES)}")
    if name == "focal" and not include_background:
        raise IBSRError(
            "loss 'focal' needs include_background: true (a softmax over the tissue classes "
            "alone never learns background); use 'dicefocal' or 'dice' to leave it out"
        )
    weights = None if class_weights is None else _weights(class_weights, include_background)
    settings: dict[str, Any] = {
        "include_background": include_background,
        "to_onehot_y": True,
        "weight": weights,
    }
    if name == "focal":
        settings["use_softmax"] = True
    else:
        settings["softmax"] = True
    if name == "dicece" and weights is not None:
        settings["weight"] = torch.tensor(weights)  # DiceCELoss wants a tensor
    settings.update(kwargs)
    try:
        loss = _LOSS_CLASSES[name](**settings)
    except (TypeError, ValueError) as exc:
        raise IBSRError(f"loss {name!r} could not be built with {kwargs}: {exc}") from exc
    return SegmentationLoss(loss, None if class_weights is None else len(class_weights))
