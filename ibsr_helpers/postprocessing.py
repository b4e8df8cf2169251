"""Clean-ups applied to a segmentation after the network: to be measured, not assumed.

Two families, each switched on per tissue only where the validation numbers say it helps
(notebook 06 measures them; ``ibsr-seg predict`` and ``ibsr-seg evaluate`` apply them):

* **mask**: tissue where the skull-stripped image is 0 becomes background (the labels
  hold a few such voxels, so this can also cost a little);
* **components** per tissue: keep only the largest connected component (``largest``),
  or drop components smaller than a number of voxels (``min_size``). A dropped voxel takes
  the label of the nearest voxel that was kept, so a stray CSF island inside white matter
  becomes white matter and one in the background becomes background. nnU-Net's own check
  on IBSR found that keeping only the largest CSF component cost Dice (.873 → .820): CSF
  is not one connected piece.

Example:
    >>> post = PostProcessing.parse("mask,largest:WM,min:CSF=20")
    >>> seg = post(seg, volume)            # volume: the raw scan (for the mask)
    >>> str(post)
    'mask, largest WM, CSF >= 20 voxels'
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

from ibsr_helpers.errors import IBSRError
from ibsr_helpers.layout import TISSUE_LABELS, TISSUES
from ibsr_helpers.preprocessing import brain_mask

__all__ = ["PostProcessing", "keep_components"]


def keep_components(mask: np.ndarray, largest: bool = False, min_size: int = 0) -> np.ndarray:
    """The part of a binary mask that a component clean-up keeps.

    Args:
        mask: ``(X, Y, Z)`` bool.
        largest: Keep only the largest face-connected component.
        min_size: Drop components of fewer voxels than this.

    Returns:
        The kept voxels, bool.
    """
    components, n = ndimage.label(mask)
    if n == 0:
        return mask.copy()
    sizes = np.bincount(components.ravel())[1:]
    keep = np.zeros(n + 1, bool)
    if largest:
        keep[1 + int(np.argmax(sizes))] = True
    else:
        keep[1:] = sizes >= min_size
    return keep[components]


@dataclass(frozen=True)
class PostProcessing:
    """Which clean-ups to apply (all off by default).

    Attributes:
        mask: Set voxels where the raw image is 0 to background.
        largest: Tissues reduced to their largest connected component.
        min_size: Tissue -> smallest component kept, in voxels.
    """

    mask: bool = False
    largest: tuple[str, ...] = ()
    min_size: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for tissue in (*self.largest, *self.min_size):
            if tissue not in TISSUES:
                raise IBSRError(f"unknown tissue {tissue!r} in post-processing; use {TISSUES}")
        object.__setattr__(self, "largest", tuple(self.largest))
        object.__setattr__(self, "min_size", dict(self.min_size))

    def __hash__(self) -> int:
        return hash((self.mask, self.largest, tuple(sorted(self.min_size.items()))))

    @property
    def active(self) -> bool:
        """Whether anything is switched on."""
        return self.mask or bool(self.largest) or bool(self.min_size)

    def __str__(self) -> str:
        parts = ["mask"] if self.mask else []
        parts += [f"largest {t}" for t in self.largest]
        parts += [f"{t} >= {n} voxels" for t, n in self.min_size.items()]
        return ", ".join(parts) or "none"

    @classmethod
    def parse(cls, text: str | None) -> PostProcessing:
        """Read ``"mask,largest:WM,min:CSF=20"`` (``--postprocess``); ``none`` or empty: off.

        Raises:
            IBSRError: On an item it does not understand.
        """
        mask, largest, min_size = False, [], {}
        for item in (p.strip() for p in (text or "").split(",")):
            if item in ("", "none"):
                continue
            if item == "mask":
                mask = True
            elif item.startswith("largest:"):
                largest.append(item.split(":", 1)[1])
            elif item.startswith("min:") and "=" in item:
                tissue, size = item[4:].split("=", 1)
                try:
                    min_size[tissue] = int(size)
                except ValueError:
                    raise IBSRError(f"post-processing {item!r}: {size!r} is not a number") from None
            else:
                raise IBSRError(
                    f"unknown post-processing {item!r}; use mask, largest:TISSUE, "
                    "min:TISSUE=VOXELS (comma-separated)"
                )
        return cls(mask, tuple(largest), min_size)

    def __call__(self, seg: np.ndarray, volume: Any = None) -> np.ndarray:
        """Apply the clean-ups to an ``(X, Y, Z)`` label volume.

        Args:
            seg: The segmentation, on the scan's grid.
            volume: The raw scan (:class:`~ibsr_helpers.data.Volume`), needed by ``mask``.

        Returns:
            A new uint8 label volume.
        """
        out = np.asarray(seg, np.uint8).copy()
        if self.mask:
            if volume is None:
                raise IBSRError("post-processing 'mask' needs the scan the segmentation is of")
            out[~brain_mask(volume.image)] = 0
        dropped = np.zeros(out.shape, bool)
        for tissue in TISSUES:
            if tissue not in self.largest and tissue not in self.min_size:
                continue
            where = out == TISSUE_LABELS[tissue]
            kept = keep_components(where, tissue in self.largest, self.min_size.get(tissue, 0))
            dropped |= where & ~kept
        if dropped.any():  # each dropped voxel takes the label of the nearest kept one
            nearest = ndimage.distance_transform_edt(
                dropped, return_distances=False, return_indices=True
            )
            out[dropped] = out[tuple(i[dropped] for i in nearest)]
        return out
