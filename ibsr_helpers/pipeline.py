"""The training input: dataset, epoch sampler and loader, and each batch onto the device.

A :class:`Pipeline` draws ``steps_per_epoch * batch_size`` samples an epoch from the
prepared training volumes (slices, whole volumes or patches, :mod:`ibsr_helpers.datasets`),
augments them in the loader or, with ``gpu_augment`` on CUDA, on the device, and
reseeds everything from ``seed + epoch`` so that a resumed run draws what an uninterrupted
one would.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.data import DataLoader

from ibsr_helpers.augmentation import Augment, train_transforms
from ibsr_helpers.datasets import EpochSampler, Sampling, build_train_dataset
from ibsr_helpers.models import ModelSpec
from ibsr_helpers.preprocessing import Prepared

__all__ = ["InputSpec", "Pipeline", "build_pipeline"]


@dataclass(frozen=True)
class InputSpec:
    """A run's training input (made from a config by :func:`ibsr_helpers.plan.specs`).

    Attributes:
        model: The network fed (its dimensions and memory layout).
        sampling: What is drawn, how.
        augment: The random augmentation.
        batch_size: Samples a step.
        steps_per_epoch: Steps an epoch.
        num_workers: Loader processes (0: in the training process).
        gpu_augment: Augment on the device (CUDA only) instead of in the loader.
    """

    model: ModelSpec
    sampling: Sampling = field(default_factory=Sampling)
    augment: Augment = field(default_factory=Augment)
    batch_size: int = 8
    steps_per_epoch: int = 50
    num_workers: int = 0
    gpu_augment: bool = False


@dataclass
class Pipeline:
    """The training input: dataset, epoch sampler, loader, and the step onto the device.

    Attributes:
        dataset: Slices, volumes or patches (:func:`~ibsr_helpers.datasets.build_train_dataset`).
        sampler: Draws ``steps_per_epoch * batch_size`` samples per epoch, per rank.
        loader: The DataLoader over both.
        device: Where batches go.
        gpu_augment: The augmentation, when it runs on the device instead of in the loader.
        channels_last: Whether 2D inputs go channels-last (as the model does).
        seed: Base seed; each epoch and rank draws from ``seed + 7919 * epoch + rank``.
        rank: This process's rank.
    """

    dataset: Any
    sampler: EpochSampler
    loader: DataLoader
    device: torch.device
    gpu_augment: Callable | None = None
    channels_last: bool = False
    seed: int = 0
    rank: int = 0

    def set_epoch(self, epoch: int) -> None:
        """Reseed the sampler, the dataset's random crops and any on-device augmentation."""
        epoch_seed = self.seed + 7919 * epoch + self.rank
        self.sampler.set_epoch(epoch)
        self.dataset.set_seed(epoch_seed)
        if self.gpu_augment is not None:
            self.gpu_augment.set_random_state(seed=epoch_seed % 2**32)

    def to_device(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """A loader batch as ``(image, label)`` on the device, augmented there if asked."""
        image, label = batch["image"], batch["label"]
        if image.ndim == 6:  # patches: (B, P, 1, x, y, z) -> (B*P, 1, x, y, z)
            image, label = image.flatten(0, 1), label.flatten(0, 1)
        image = image.to(self.device, non_blocking=True)
        label = label.to(self.device, non_blocking=True)
        if self.gpu_augment is not None:  # one sample at a time
            items = [
                self.gpu_augment({"image": i, "label": lab})
                for i, lab in zip(image, label, strict=True)
            ]
            image = torch.stack([torch.as_tensor(it["image"]) for it in items]).float()
            label = torch.stack([torch.as_tensor(it["label"]) for it in items]).long()
        if self.channels_last:
            image = image.contiguous(memory_format=torch.channels_last)
        return image, label


def build_pipeline(
    spec: InputSpec,
    volumes: Sequence[Prepared],
    device: torch.device,
    seed: int = 0,
    rank: int = 0,
    world: int = 1,
    samples: int | None = None,
) -> Pipeline:
    """The training input ``spec`` asks for, over prepared training volumes.

    Args:
        spec: From :func:`ibsr_helpers.plan.specs` (``.input``).
        volumes: The training volumes, through :func:`~ibsr_helpers.preprocessing.prepare`.
        device: Where batches go; on CUDA with ``spec.gpu_augment`` the augmentation runs
            there, on the batch, instead of in the loader.
        seed: Base seed of the sampler and the random crops.
        rank: This process's rank (distributed training).
        world: Number of processes.
        samples: Samples per epoch (default ``steps_per_epoch * batch_size``).
    """
    gpu_aug = spec.gpu_augment and device.type == "cuda"
    augment = train_transforms(spec.augment, spec.model.dims)
    dataset = build_train_dataset(spec.sampling, volumes, None if gpu_aug else augment)
    samples = samples or spec.steps_per_epoch * spec.batch_size
    sampler = EpochSampler(
        len(dataset), samples, seed, rank, world, getattr(dataset, "weights", None)
    )
    loader = DataLoader(
        dataset,
        batch_size=spec.batch_size,
        sampler=sampler,
        num_workers=spec.num_workers,
        drop_last=True,
        pin_memory=device.type == "cuda",
        persistent_workers=spec.num_workers > 0,
    )
    return Pipeline(
        dataset,
        sampler,
        loader,
        device,
        gpu_augment=augment if gpu_aug else None,
        channels_last=spec.model.channels_last_on(device),
        seed=seed,
        rank=rank,
    )
