"""Torch datasets for the three training modes: 2D slices, whole volumes, 3D patches.

All modes start from prepared volumes (:func:`ibsr_helpers.preprocessing.prepare`):
reoriented to RAS, normalised, cut to the brain box. Planes, for those RAS axes
(X: left→right, Y: posterior→anterior, Z: inferior→superior): ``sagittal`` slices along
axis 0, ``coronal`` along axis 1, ``axial`` along axis 2
(:data:`~ibsr_helpers.preprocessing.PLANE_AXIS`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy import ndimage
from torch.utils.data import Dataset, Sampler

from ibsr_helpers.config import SAMPLERS, SLICE_SAMPLERS
from ibsr_helpers.errors import IBSRError
from ibsr_helpers.preprocessing import PLANE_AXIS, Prepared

__all__ = [
    "SliceDataset",
    "VolumeDataset",
    "PatchDataset",
    "SAMPLERS",
    "SLICE_SAMPLERS",
    "EpochSampler",
    "slice_weights",
    "slice_stack",
    "weight_map",
    "Sampling",
    "build_train_dataset",
]


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
    uninterrupted run would have. Indices are drawn uniformly, or with replacement in
    proportion to ``weights`` (e.g. :func:`slice_weights`).
    """

    def __init__(
        self,
        n_items: int,
        num_samples: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        weights: np.ndarray | None = None,
    ) -> None:
        if n_items < 1:
            raise IBSRError("no training samples (check the data folder and data.mode)")
        if weights is not None and (len(weights) != n_items or not np.sum(weights) > 0):
            raise IBSRError(f"sampling weights: need {n_items} values with a positive sum")
        self.n_items, self.num_samples = n_items, num_samples
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.weights = None if weights is None else torch.as_tensor(weights, dtype=torch.float64)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose draw the next iteration yields."""
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed + 1000003 * self.epoch)
        total = self.num_samples * self.world_size
        if self.weights is None:
            draw = torch.randint(self.n_items, (total,), generator=g)
        else:
            draw = torch.multinomial(self.weights, total, replacement=True, generator=g)
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
        volumes: Prepared, labelled volumes.
        plane: Slicing plane.
        context: 2.5D neighbours on each side.
        drop_empty: Leave out slices without brain (the volume's brain mask).
        transform: Optional random transform on the item dict (numpy/tensor ``(C, H, W)``).
        sampler: ``uniform`` (every slice alike) or ``class_balanced``: :attr:`weights`
            from :func:`slice_weights` with ``class_ratios``, for the epoch sampler.
        class_ratios: How often each class (background, CSF, GM, WM) is drawn.
        crop: ``(H, W)``: each item is a random crop of its slice (a side longer than the
            slice keeps the slice's), drawn anew at each epoch's seed; None: whole slices.
    """

    def __init__(
        self,
        volumes: Sequence[Prepared],
        plane: str = "coronal",
        context: int = 0,
        drop_empty: bool = True,
        transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        sampler: str = "uniform",
        class_ratios: Sequence[float] = (0, 1, 1, 1),
        crop: Sequence[int] | None = None,
    ) -> None:
        if sampler not in SLICE_SAMPLERS:
            raise IBSRError(f"unknown slice sampler {sampler!r}; use one of {SLICE_SAMPLERS}")
        self.images = [slice_stack(v.image, plane, context) for v in volumes]
        self.labels = [
            np.ascontiguousarray(np.moveaxis(v.label, PLANE_AXIS[plane], 0)) for v in volumes
        ]
        self.index: list[tuple[int, int]] = []
        axis = PLANE_AXIS[plane]
        for vi, v in enumerate(volumes):
            others = tuple(a for a in range(3) if a != axis)
            keep = v.brain.any(axis=others) if drop_empty else np.ones(v.image.shape[axis], bool)
            self.index.extend((vi, int(s)) for s in np.flatnonzero(keep))
        self.transform = transform
        self.weights: np.ndarray | None = None
        if sampler == "class_balanced":
            per_volume = [slice_weights(lab, class_ratios) for lab in self.labels]
            self.weights = np.array([per_volume[vi][s] for vi, s in self.index])
        self.crop = None if crop is None else (int(crop[0]), int(crop[1]))
        self._rng = np.random.default_rng(0)

    def set_seed(self, seed: int) -> None:
        """Re-seed the crops and the random transform (called by the engine at each epoch)."""
        self._rng = np.random.default_rng(seed % 2**32)
        super().set_seed(seed)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        vi, s = self.index[i]
        image, label = self.images[vi][s], self.labels[vi][s][None]
        if self.crop is not None:
            window: list[slice] = [slice(None)]  # every channel
            for size, length in zip(self.crop, image.shape[1:], strict=True):
                start = int(self._rng.integers(0, max(length - size, 0) + 1))
                window.append(slice(start, start + size))
            image, label = image[tuple(window)], label[tuple(window)]
        return self._apply({"image": image, "label": label})


def slice_weights(label: np.ndarray, class_ratios: Sequence[float]) -> np.ndarray:
    """Class-balanced sampling weights of a volume's slices (the 2D ``class_balanced`` sampler).

    The slice analogue of MONAI's ``RandCropByLabelClasses``: draw a class with
    ``class_ratios``, then one of its voxels at random, and take that voxel's slice. So a
    slice's weight is the sum over classes of ``ratio * (its voxels of the class / the
    volume's voxels of the class)``; the weights of a volume sum to 1 (each volume is drawn
    equally often), and classes absent from the volume are left out.

    Args:
        label: ``(S, H, W)`` labels, slice axis first.
        class_ratios: One ratio per class, background first.

    Returns:
        ``(S,)`` float weights summing to 1.

    Raises:
        IBSRError: Negative ratios, or none positive for a class the volume holds.
    """
    ratios = np.asarray(class_ratios, float)
    if (ratios < 0).any():
        raise IBSRError(f"class_ratios must not be negative, got {list(class_ratios)}")
    counts = np.stack([(label == k).sum(axis=(1, 2)) for k in range(len(ratios))], axis=1)
    totals = counts.sum(axis=0)
    present = (totals > 0) & (ratios > 0)
    if not present.any():
        raise IBSRError(f"class_ratios {list(class_ratios)} select no class present in the volume")
    per_class = counts[:, present] / totals[present]
    weights = per_class @ (ratios[present] / ratios[present].sum())
    return weights / weights.sum()


class VolumeDataset(_Augmented):
    """Whole cropped volumes: items ``{"image": (1, X, Y, Z), "label": (1, X, Y, Z)}``."""

    def __init__(
        self,
        volumes: Sequence[Prepared],
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
    """Fixed-size 3D patches drawn from prepared volumes with a chosen sampler.

    Each item is one volume's ``patches_per_volume`` patches stacked:
    ``{"image": (P, 1, *patch), "label": (P, 1, *patch)}``; the engine flattens the
    volume and patch axes into the batch.

    Samplers (MONAI crop transforms; each keeps the centres it drew, see :meth:`centres`):
        * ``uniform``: ``RandWeightedCrop`` on a uniform map: any centre that keeps the
          patch inside the box, background included.
        * ``foreground``: ``RandCropByPosNegLabel``, centres on brain vs background at
          ``pos_ratio``.
        * ``class_balanced``: ``RandCropByLabelClasses``, centres drawn per class with
          ``class_ratios`` (so CSF, ~1% of the brain, is seen often).
        * ``weighted``: ``RandWeightedCrop`` on a :func:`weight_map`.
    """

    def __init__(
        self,
        volumes: Sequence[Prepared],
        patch_size: Sequence[int],
        sampler: str = "class_balanced",
        patches_per_volume: int = 4,
        pos_ratio: float = 1.0,
        class_ratios: Sequence[float] = (0, 1, 1, 1),
        weight_kind: str = "boundary",
        transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> None:
        from monai import transforms as mt

        if sampler not in SAMPLERS:
            raise IBSRError(f"unknown patch sampler {sampler!r}; use one of {SAMPLERS}")
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
            elif sampler == "uniform":  # every voxel alike
                item["weight"] = np.ones((1, *v.image.shape), np.float32)
            self.items.append(item)
        if sampler in ("uniform", "weighted"):
            # the weight map is cropped too: MONAI would deep-copy a key it leaves alone
            # (the whole map, once per patch)
            self.crop = mt.RandWeightedCropd(
                [*keys, "weight"], "weight", self.patch_size, num_samples=n
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
        else:
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

    def _precompute(self, transform: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
        """Store the sampler's voxel indices with each cached volume (computed once)."""
        for item in self.items:
            item.update(transform(item))

    def set_seed(self, seed: int) -> None:
        """Re-seed the patch sampler and the augmentation."""
        self.crop.set_random_state(seed=seed % 2**32)
        super().set_seed(seed + 1)

    def centres(self, volume_index: int = 0, seed: int | None = None) -> np.ndarray:
        """Draw one round of patches from a volume and return the centres the sampler chose.

        Args:
            volume_index: Which volume to sample.
            seed: Re-seed the sampler first (None: go on from its current state).

        Returns:
            ``(P, 3)`` int array of voxel centres (``P = patches_per_volume``).
        """
        if seed is not None:
            self.crop.set_random_state(seed=seed)
        self.crop(self.items[volume_index])
        return np.asarray([np.asarray(c, int) for c in self.crop.cropper.centers])

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        patches = self.crop(self.items[i])
        out = [self._apply({"image": p["image"], "label": p["label"]}) for p in patches]
        return {k: torch.stack([o[k] for o in out]) for k in ("image", "label")}


@dataclass(frozen=True)
class Sampling:
    """What a run trains on, drawn how (a config's ``data`` section, made by the plan).

    Attributes:
        mode: ``slices``, ``volume`` or ``patches``.
        plane: Slices only: ``sagittal``, ``coronal`` or ``axial``.
        context: Slices only: neighbours each side (2.5D: ``2k + 1`` channels).
        drop_empty: Slices only: skip slices without brain.
        slice_crop: Slices only: train on random ``(H, W)`` crops of each slice, or None.
        sampler: See :data:`SAMPLERS` and :data:`SLICE_SAMPLERS`.
        class_ratios: ``class_balanced``: how often each class (bg, CSF, GM, WM) is aimed at.
        patch_size: Patches only.
        patches_per_volume: Patches only: patches cut from one volume per item.
        pos_ratio: ``foreground`` sampler: positive/negative ratio.
        weight_map: ``weighted`` sampler: ``boundary`` or ``inverse_frequency``.
    """

    mode: str = "slices"
    plane: str = "coronal"
    context: int = 0
    drop_empty: bool = True
    slice_crop: tuple[int, int] | None = None
    sampler: str = "class_balanced"
    class_ratios: tuple[float, ...] = (0.0, 1.0, 1.0, 1.0)
    patch_size: tuple[int, int, int] = (64, 64, 64)
    patches_per_volume: int = 4
    pos_ratio: float = 1.0
    weight_map: str = "boundary"


def build_train_dataset(
    sampling: Sampling,
    volumes: Sequence[Prepared],
    transform: Callable[[dict[str, Any]], dict[str, Any]] | None,
) -> _Augmented:
    """The training dataset ``sampling`` asks for (by its ``mode``)."""
    d = sampling
    if d.mode == "slices":
        return SliceDataset(
            volumes,
            d.plane,
            d.context,
            d.drop_empty,
            transform,
            d.sampler,
            d.class_ratios,
            d.slice_crop,
        )
    if d.mode == "volume":
        return VolumeDataset(volumes, transform)
    return PatchDataset(
        volumes,
        d.patch_size,
        d.sampler,
        d.patches_per_volume,
        d.pos_ratio,
        d.class_ratios,
        d.weight_map,
        transform,
    )
