"""Torch datasets for the three training modes: 2D slices, whole volumes, 3D patches.

All modes start from the same cached, normalised volumes cropped to a fixed box
(``data.roi``, default 192×128×192) centred on the brain, which holds every IBSR18 brain.
The same box is used at inference (see :mod:`ibsr_helpers.inference`), and predictions
are pasted back into the full volume.

Planes, for IBSR18's RAS voxel axes (X: right-left, Y: anterior-posterior at 1.5 mm,
Z: inferior-superior): ``sagittal`` slices along axis 0, ``coronal`` along axis 1,
``axial`` along axis 2.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy import ndimage
from torch.utils.data import Dataset, Sampler

from ibsr_helpers.data import PLANE_AXIS, Volume
from ibsr_helpers.errors import IBSRError

__all__ = [
    "PLANE_AXIS",
    "Box",
    "roi_box",
    "CroppedVolume",
    "crop_volumes",
    "SliceDataset",
    "VolumeDataset",
    "PatchDataset",
    "EpochSampler",
    "slice_stack",
    "weight_map",
    "build_train_dataset",
]


@dataclass(frozen=True)
class Box:
    """A box in voxel coordinates; may reach outside the volume (padded with zeros).

    Attributes:
        start: First voxel of the box along each axis (may be negative).
        size: Box size along each axis.
    """

    start: tuple[int, ...]
    size: tuple[int, ...]

    def _slices(self, shape: Sequence[int]) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
        src, dst = [], []
        for s, n, dim in zip(self.start, self.size, shape, strict=True):
            lo, hi = max(s, 0), min(s + n, dim)
            src.append(slice(lo, hi))
            dst.append(slice(lo - s, hi - s))
        return tuple(src), tuple(dst)

    def crop(self, array: np.ndarray) -> np.ndarray:
        """Cut the box out of the last three axes of ``array`` (zeros where outside)."""
        lead = array.shape[:-3]
        out = np.zeros(lead + tuple(self.size), dtype=array.dtype)
        src, dst = self._slices(array.shape[-3:])
        out[(..., *dst)] = array[(..., *src)]
        return out

    def paste(
        self, cropped: np.ndarray | torch.Tensor, shape: Sequence[int], fill: float = 0.0
    ) -> np.ndarray | torch.Tensor:
        """Put a cropped array back into a volume of spatial ``shape`` (``fill`` elsewhere)."""
        lead = tuple(cropped.shape[:-3])
        if isinstance(cropped, torch.Tensor):
            out = torch.full(lead + tuple(shape), fill, dtype=cropped.dtype, device=cropped.device)
        else:
            out = np.full(lead + tuple(shape), fill, dtype=cropped.dtype)
        src, dst = self._slices(shape)
        out[(..., *src)] = cropped[(..., *dst)]
        return out


def roi_box(image: np.ndarray, roi: Sequence[int], divisor: int = 1) -> Box:
    """The box of size ``roi`` centred on the brain (non-zero voxels) of ``image``.

    Where the brain is larger than ``roi`` along an axis, the box grows to hold it
    (rounded up to ``divisor``), so nothing of the brain is ever cut off.

    Args:
        image: ``(X, Y, Z)`` volume (background 0).
        roi: Wanted box size.
        divisor: Sizes are rounded up to a multiple of this (network input constraint).
    """
    mask = image != 0
    if not mask.any():
        lo, hi = np.zeros(3, int), np.array(image.shape) - 1
    else:
        coords = [
            np.flatnonzero(mask.any(axis=tuple(j for j in range(3) if j != i))) for i in range(3)
        ]
        lo = np.array([c[0] for c in coords])
        hi = np.array([c[-1] for c in coords])
    extent = hi - lo + 1
    size = [
        int(-(-max(int(r), int(e)) // divisor) * divisor) for r, e in zip(roi, extent, strict=True)
    ]
    centre = (lo + hi + 1) / 2
    start = [int(np.floor(c - s / 2)) for c, s in zip(centre, size, strict=True)]
    return Box(tuple(start), tuple(size))


@dataclass
class CroppedVolume:
    """A volume cut to its ROI box, as the datasets use it.

    Attributes:
        id: Subject id.
        image: ``(X, Y, Z)`` float32, inside the box.
        label: ``(X, Y, Z)`` uint8 inside the box, or None.
        box: Where the box sits in the full volume.
        shape: Full volume shape.
    """

    id: str
    image: np.ndarray
    label: np.ndarray | None
    box: Box
    shape: tuple[int, int, int]


def crop_volumes(
    volumes: Sequence[Volume], roi: Sequence[int], divisor: int = 1
) -> list[CroppedVolume]:
    """Cut every volume to its brain-centred ROI box."""
    out = []
    for v in volumes:
        box = roi_box(v.image, roi, divisor)
        label = box.crop(v.label) if v.label is not None else None
        out.append(CroppedVolume(v.id, box.crop(v.image), label, box, tuple(v.image.shape)))
    return out


def slice_stack(image: np.ndarray, plane: str, context: int = 0) -> np.ndarray:
    """All slices of a volume along a plane, with 2.5D context as channels.

    Args:
        image: ``(X, Y, Z)`` volume.
        plane: ``"sagittal"``, ``"coronal"`` or ``"axial"``.
        context: ``k`` neighbours on each side (edge slices repeat at the borders).

    Returns:
        ``(N, 2k+1, H, W)`` float32, where N is the number of slices along the plane.
    """
    stack = np.moveaxis(image, PLANE_AXIS[plane], 0)
    n = stack.shape[0]
    offsets = np.arange(-context, context + 1)
    idx = np.clip(np.arange(n)[:, None] + offsets[None, :], 0, n - 1)
    return np.ascontiguousarray(stack[idx], dtype=np.float32)


class EpochSampler(Sampler[int]):
    """Random indices for one epoch, the same for a given (seed, epoch), split across ranks.

    A global draw of ``num_samples * world_size`` indices is made from a generator seeded
    with ``seed + epoch``; rank ``r`` takes every ``world_size``-th index from ``r``. So
    ranks see different samples, and a run resumed at epoch ``e`` draws exactly what an
    uninterrupted run would have.
    """

    def __init__(
        self, n_items: int, num_samples: int, seed: int = 0, rank: int = 0, world_size: int = 1
    ) -> None:
        if n_items < 1:
            raise IBSRError("no training samples (check the data folder and data.mode)")
        self.n_items, self.num_samples = n_items, num_samples
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose draw the next iteration yields."""
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed + 1000003 * self.epoch)
        total = self.num_samples * self.world_size
        draw = torch.randint(self.n_items, (total,), generator=g)
        return iter(draw[self.rank :: self.world_size].tolist())

    def __len__(self) -> int:
        return self.num_samples


class _Augmented(Dataset):
    """Base: holds an optional random transform acting on ``{"image", "label"}`` dicts."""

    transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None

    def set_seed(self, seed: int) -> None:
        """Re-seed the random transform (called by the engine at each epoch)."""
        if self.transform is not None and hasattr(self.transform, "set_random_state"):
            self.transform.set_random_state(seed=seed % 2**32)

    def _apply(self, item: dict[str, Any]) -> dict[str, Any]:
        if self.transform is not None:
            item = self.transform(item)
        return {
            "image": torch.as_tensor(item["image"]).float(),
            "label": torch.as_tensor(item["label"]).long(),
        }


class SliceDataset(_Augmented):
    """2D (or 2.5D) slices along one plane of cropped volumes.

    Items are ``{"image": (2k+1, H, W) float, "label": (1, H, W) long}``.

    Args:
        volumes: Cropped, labelled volumes.
        plane: Slicing plane.
        context: 2.5D neighbours on each side.
        drop_empty: Leave out slices without brain.
        transform: Optional random transform on the item dict (numpy/tensor ``(C, H, W)``).
    """

    def __init__(
        self,
        volumes: Sequence[CroppedVolume],
        plane: str = "coronal",
        context: int = 0,
        drop_empty: bool = True,
        transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> None:
        self.images = [slice_stack(v.image, plane, context) for v in volumes]
        self.labels = [
            np.ascontiguousarray(np.moveaxis(v.label, PLANE_AXIS[plane], 0)) for v in volumes
        ]
        self.index: list[tuple[int, int]] = []
        for vi, img in enumerate(self.images):
            centre = img[:, context]
            keep = (centre != 0).any(axis=(1, 2)) if drop_empty else np.ones(len(img), bool)
            self.index.extend((vi, int(s)) for s in np.flatnonzero(keep))
        self.transform = transform

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        vi, s = self.index[i]
        return self._apply({"image": self.images[vi][s], "label": self.labels[vi][s][None]})


class VolumeDataset(_Augmented):
    """Whole cropped volumes: items ``{"image": (1, X, Y, Z), "label": (1, X, Y, Z)}``."""

    def __init__(
        self,
        volumes: Sequence[CroppedVolume],
        transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> None:
        self.volumes = list(volumes)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.volumes)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        v = self.volumes[i]
        return self._apply({"image": v.image[None], "label": v.label[None]})


def weight_map(
    label: np.ndarray, kind: str = "boundary", boundary_weight: float = 10.0
) -> np.ndarray:
    """A voxel weight map for weighted patch sampling.

    Args:
        label: ``(X, Y, Z)`` labels.
        kind: ``"boundary"`` (tissue boundaries weigh ``boundary_weight``, other brain 1,
            background 0) or ``"inverse_frequency"`` (each tissue voxel weighs 1/its
            tissue's voxel count, so every tissue is drawn equally often).
        boundary_weight: Weight of boundary voxels for ``"boundary"``.

    Returns:
        ``(X, Y, Z)`` float32 weights.
    """
    brain = label > 0
    if kind == "boundary":
        grown = ndimage.grey_dilation(label, size=3)
        shrunk = ndimage.grey_erosion(label, size=3)
        edge = (grown != shrunk) & brain
        return np.where(edge, boundary_weight, brain.astype(np.float32)).astype(np.float32)
    if kind == "inverse_frequency":
        counts = np.bincount(label.ravel(), minlength=4).astype(np.float64)
        inv = np.where(counts > 0, 1.0 / np.maximum(counts, 1), 0.0)
        inv[0] = 0.0
        return (inv[label] / inv.max()).astype(np.float32)
    raise IBSRError(f"unknown weight map {kind!r}; use 'boundary' or 'inverse_frequency'")


class PatchDataset(_Augmented):
    """Fixed-size 3D patches drawn from cached volumes with a chosen sampler.

    Each item is one volume's ``patches_per_volume`` patches stacked:
    ``{"image": (P, 1, *patch), "label": (P, 1, *patch)}``; the engine flattens the
    volume and patch axes into the batch.

    Samplers (MONAI):
        * ``uniform``: ``RandSpatialCropSamples``, anywhere in the ROI box.
        * ``foreground``: ``RandCropByPosNegLabel``, centres on brain vs background at
          ``pos_ratio``.
        * ``class_balanced``: ``RandCropByLabelClasses``, centres drawn per class with
          ``class_ratios`` (so CSF, ~1% of the brain, is seen often).
        * ``weighted``: ``RandWeightedCrop`` on a :func:`weight_map`.
    """

    def __init__(
        self,
        volumes: Sequence[CroppedVolume],
        patch_size: Sequence[int],
        sampler: str = "class_balanced",
        patches_per_volume: int = 4,
        pos_ratio: float = 1.0,
        class_ratios: Sequence[float] = (0, 1, 1, 1),
        weight_kind: str = "boundary",
        transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> None:
        from monai import transforms as mt

        self.volumes = list(volumes)
        self.patch_size = tuple(int(p) for p in patch_size)
        self.sampler = sampler
        self.transform = transform
        n = int(patches_per_volume)
        keys = ["image", "label"]
        self.items: list[dict[str, Any]] = []
        for v in self.volumes:
            item: dict[str, Any] = {"image": v.image[None], "label": v.label[None]}
            if sampler == "weighted":
                item["weight"] = weight_map(v.label, weight_kind)[None]
            self.items.append(item)
        if sampler == "uniform":
            self.crop = mt.RandSpatialCropSamplesd(
                keys, roi_size=self.patch_size, num_samples=n, random_size=False
            )
        elif sampler == "foreground":
            self._precompute(mt.FgBgToIndicesd("label"))
            self.crop = mt.RandCropByPosNegLabeld(
                keys,
                "label",
                self.patch_size,
                pos=float(pos_ratio),
                neg=1.0,
                num_samples=n,
                fg_indices_key="label_fg_indices",
                bg_indices_key="label_bg_indices",
                allow_smaller=False,
            )
        elif sampler == "class_balanced":
            self._precompute(mt.ClassesToIndicesd("label", num_classes=4))
            self.crop = mt.RandCropByLabelClassesd(
                keys,
                "label",
                self.patch_size,
                ratios=list(class_ratios),
                num_classes=4,
                num_samples=n,
                indices_key="label_cls_indices",
                warn=False,
            )
        elif sampler == "weighted":
            self.crop = mt.RandWeightedCropd(keys, "weight", self.patch_size, num_samples=n)
        else:
            raise IBSRError(f"unknown patch sampler {sampler!r}")

    def _precompute(self, transform: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
        """Store the sampler's voxel indices with each cached volume (computed once)."""
        for item in self.items:
            item.update(transform(item))

    def set_seed(self, seed: int) -> None:
        """Re-seed the patch sampler and the augmentation."""
        self.crop.set_random_state(seed=seed % 2**32)
        super().set_seed(seed + 1)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        patches = self.crop(self.items[i])
        out = [self._apply({"image": p["image"], "label": p["label"]}) for p in patches]
        return {k: torch.stack([o[k] for o in out]) for k in ("image", "label")}


def build_train_dataset(
    config: dict[str, Any],
    volumes: Sequence[CroppedVolume],
    transform: Callable[[dict[str, Any]], dict[str, Any]] | None,
) -> _Augmented:
    """The training dataset the config asks for (``data.mode``)."""
    d = config["data"]
    if d["mode"] == "slices":
        return SliceDataset(
            volumes, d["plane"], int(d["context"]), bool(d["drop_empty"]), transform
        )
    if d["mode"] == "volume":
        return VolumeDataset(volumes, transform)
    return PatchDataset(
        volumes,
        d["patch_size"],
        d["sampler"],
        int(d["patches_per_volume"]),
        float(d["pos_ratio"]),
        d["class_ratios"],
        d["weight_map"],
        transform,
    )
