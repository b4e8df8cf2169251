"""The training engine shared by 2D slice, 3D full-volume and 3D patch training.

:func:`train` reads a config (see :mod:`ibsr_helpers.config`), loads and caches the
normalised volumes once, and runs AdamW with a linear warm-up then cosine annealing.
On CUDA it uses bf16 autocast and channels-last (2D). Every ``train.val_every`` epochs
it predicts the **whole validation volumes** and scores per-tissue Dice. It writes, in
the run folder:

* ``config.json`` (the full config, as used), ``history.json`` (the curves);
* ``last.pt`` every epoch (model, optimiser, scheduler, epoch) and ``best.pt`` on the
  best validation mean Dice; both load with ``torch.load(weights_only=True)``;
* ``curves.png`` and ``val_overlay.png`` at the end.

A run interrupted at any point (a Colab disconnect) restarts with ``resume=True``: it
reloads ``last.pt`` and continues the same run, curve and MLflow run. Each epoch draws
its samples from ``seed + epoch``, so a resumed run sees what an uninterrupted one would.

Under ``torchrun --nproc_per_node N`` the same function trains with
DistributedDataParallel; ranks draw different samples, only rank 0 validates, logs
and writes checkpoints.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ibsr_helpers.data import TISSUES, describe_source, discover, load_subjects
from ibsr_helpers.datasets import EpochSampler, build_train_dataset, crop_volumes
from ibsr_helpers.environment import get_device, seed_everything
from ibsr_helpers.errors import IBSRError
from ibsr_helpers.inference import (
    Run,
    build_run_model,
    channels_last_inputs,
    divisor_for,
    predict_volume,
)
from ibsr_helpers.losses import build_loss
from ibsr_helpers.metrics import evaluate_segmentation, mean_dice
from ibsr_helpers.models import spatial_dims
from ibsr_helpers.tracking import Tracker
from ibsr_helpers.transforms import train_transforms

__all__ = ["Pipeline", "TrainResult", "build_pipeline", "train", "lr_lambda", "validate"]


@dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes:
        run_dir: The run folder.
        history: Per-epoch curves (``epoch``, ``train_loss``, ``lr``, ``val_dice_<tissue>``,
            ``val_mean_dice``; validation entries are NaN-free, listed at ``val_epoch``).
        best_dice: Best validation mean Dice.
        best_epoch: Epoch (0-based) of the best checkpoint.
        seconds: Wall time of this call.
    """

    run_dir: Path
    history: dict[str, list[float]] = field(default_factory=dict)
    best_dice: float = -1.0
    best_epoch: int = -1
    seconds: float = 0.0


def lr_lambda(total_steps: int, warmup_steps: int, min_ratio: float) -> Callable[[int], float]:
    """Learning-rate factor: linear warm-up to 1, then cosine down to ``min_ratio``."""

    def factor(step: int) -> float:
        if warmup_steps > 0 and step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        progress = min(max(progress, 0.0), 1.0)
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def _dist_info() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _init_distributed(device: torch.device) -> bool:
    """Join the process group when started by torchrun (``WORLD_SIZE`` > 1)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return False
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend)
    return True


def validate(
    run: Run, volumes: list, tta: bool = False, keep_first: bool = False
) -> dict[str, Any]:
    """Per-tissue Dice on whole (already normalised) validation volumes.

    Args:
        run: The model to score.
        volumes: Labelled, normalised volumes.
        tta: Flip test-time augmentation.
        keep_first: Also return the first volume's segmentation under ``"first_seg"``
            (the training run draws its overlay from it instead of predicting again).

    Returns:
        ``{"val_dice_CSF": …, "val_dice_GM": …, "val_dice_WM": …, "val_mean_dice": …}``
        averaged over the volumes.
    """
    was_training = run.model.training
    run.model.eval()
    per = {t: [] for t in TISSUES}
    means = []
    first = None
    for v in volumes:
        seg, _ = predict_volume(run, v, tta=tta, raw=False)
        first = seg if first is None else first
        m = evaluate_segmentation(seg, v.label, v.spacing, hd=False)
        for t in TISSUES:
            per[t].append(m[t]["dice"])
        means.append(mean_dice(m))
    run.model.train(was_training)
    out: dict[str, Any] = {f"val_dice_{t}": float(np.mean(per[t])) for t in TISSUES}
    out["val_mean_dice"] = float(np.mean(means))
    if keep_first:
        out["first_seg"] = first
    return out


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
    config: dict[str, Any],
    cropped: list,
    device: torch.device,
    seed: int = 0,
    rank: int = 0,
    world: int = 1,
    samples: int | None = None,
) -> Pipeline:
    """The training input for ``config`` over cropped, normalised training volumes.

    Args:
        config: From :func:`ibsr_helpers.config.load_config`.
        cropped: :func:`~ibsr_helpers.datasets.crop_volumes` of the training volumes.
        device: Where batches go; on CUDA with ``data.gpu_augment`` the augmentation runs
            there, on the batch, instead of in the loader.
        seed: Base seed of the sampler and the random crops.
        rank: This process's rank (distributed training).
        world: Number of processes.
        samples: Samples per epoch (default ``steps_per_epoch * batch_size``).
    """
    dcfg, tcfg = config["data"], config["train"]
    gpu_aug = bool(dcfg.get("gpu_augment")) and device.type == "cuda"
    augment = train_transforms(config, spatial_dims(config["model"]["name"]))
    dataset = build_train_dataset(config, cropped, None if gpu_aug else augment)
    batch_size = int(tcfg["batch_size"])
    samples = samples or int(tcfg["steps_per_epoch"]) * batch_size
    sampler = EpochSampler(len(dataset), samples, seed, rank, world)
    workers = int(dcfg.get("num_workers", 0))
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        drop_last=True,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
    )
    return Pipeline(
        dataset,
        sampler,
        loader,
        device,
        gpu_augment=augment if gpu_aug else None,
        channels_last=channels_last_inputs(config, device),
        seed=seed,
        rank=rank,
    )


def _save(obj: Any, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    tmp.replace(path)


def train(
    config: dict[str, Any],
    data_dir: str | Path,
    out_dir: str | Path,
    resume: bool = False,
    progress: bool = True,
) -> TrainResult:
    """Train one model as the config says.

    Args:
        config: From :func:`ibsr_helpers.config.load_config`.
        data_dir: IBSR18 or demo data folder (needs ``train`` and ``val`` subjects).
        out_dir: The run folder (created).
        resume: Continue from ``out_dir/last.pt`` if it exists; a run that already
            finished returns its result at once, without reading the data.
        progress: Show tqdm bars.

    Returns:
        A :class:`TrainResult`.

    Raises:
        IBSRError: If the data has no training or validation subjects, or the run folder
            already holds a finished or different run and ``resume`` is false.
    """
    start_time = time.time()
    out_dir = Path(out_dir)
    device = get_device(config.get("device"))
    if device.type == "cuda" and "LOCAL_RANK" in os.environ:
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
    started_dist = _init_distributed(device)
    rank, world = _dist_info()
    main = rank == 0
    seed = int(config["seed"])
    seed_everything(seed)
    tcfg, dcfg = config["train"], config["data"]

    if main:
        if (out_dir / "last.pt").exists() and not resume:
            raise IBSRError(
                "run folder already holds a run; pass --resume to continue it "
                "or choose another --out",
                out_dir,
            )
        out_dir.mkdir(parents=True, exist_ok=True)
    finished = _finished_result(out_dir, config) if resume else None
    if finished is not None:
        finished.seconds = time.time() - start_time
        if started_dist:
            dist.destroy_process_group()
        return finished
    if main:
        (out_dir / "config.json").write_text(json.dumps(config, indent=2))

    # Data: read and normalise once, crop to the brain box.
    subjects = discover(data_dir)
    train_subjects = [s for s in subjects if s.split == "train"]
    val_subjects = [s for s in subjects if s.split == "val"]
    if tcfg.get("max_val_subjects"):
        val_subjects = val_subjects[: int(tcfg["max_val_subjects"])]
    if not train_subjects or not val_subjects:
        raise IBSRError("training needs labelled train and val subjects", data_dir)
    norm = dcfg["normalize"]
    train_vols = load_subjects(train_subjects, norm, progress)
    val_vols = load_subjects(val_subjects, norm, progress) if main else []
    name = config["model"]["name"]
    dims = spatial_dims(name)
    if (dims == 2) != (dcfg["mode"] == "slices"):
        raise IBSRError(f"model {name!r} is {dims}D but data.mode is {dcfg['mode']!r}")
    divisor = divisor_for(config)
    cropped = crop_volumes(train_vols, dcfg["roi"], divisor)

    pipe = build_pipeline(config, cropped, device, seed=seed, rank=rank, world=world)
    steps = int(tcfg["steps_per_epoch"])
    model = build_run_model(config, device)
    net = model
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    loss_fn = build_loss(**config["loss"])
    ocfg = config["optim"]
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=float(ocfg["lr"]), weight_decay=float(ocfg["weight_decay"])
    )
    epochs = int(tcfg["epochs"])
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lr_lambda(
            epochs * steps,
            int(float(ocfg["warmup_epochs"]) * steps),
            float(ocfg["min_lr"]) / float(ocfg["lr"]),
        ),
    )
    amp = device.type == "cuda" and bool(tcfg.get("amp", True))

    history: dict[str, list[float]] = {"epoch": [], "train_loss": [], "lr": [], "val_epoch": []}
    best, best_epoch, start_epoch = -1.0, -1, 0
    best_seg = None  # the first validation volume, predicted by the best model
    if resume and (out_dir / "last.pt").exists():
        state = torch.load(out_dir / "last.pt", map_location=device, weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start_epoch = int(state["epoch"]) + 1
        best, best_epoch = float(state["best_dice"]), int(state["best_epoch"])
        if (out_dir / "history.json").exists():
            history = json.loads((out_dir / "history.json").read_text())

    tracker = Tracker(
        out_dir,
        experiment=str(config.get("experiment", "ibsr18")),
        backend=str(config.get("tracking", "mlflow")) if main else "none",
        run_name=str(config.get("name", out_dir.name)),
    )
    tracker.start(resume=resume)
    if main and start_epoch == 0:
        tracker.log_params(config)
        tracker.set_tags(
            {
                "data": describe_source(data_dir),
                "device": str(device),
                "seed": str(seed),
                "world_size": str(world),
            }
        )
    val_run = Run(model, config, out_dir)
    result = TrainResult(out_dir, history, best, best_epoch)
    status = "FAILED"
    try:
        for epoch in range(start_epoch, epochs):
            net.train()
            pipe.set_epoch(epoch)
            losses = []
            bar = tqdm(
                pipe.loader,
                desc=f"epoch {epoch + 1}/{epochs}",
                unit="step",
                disable=not (progress and main),
                leave=False,
            )
            for batch in bar:
                image, label = pipe.to_device(batch)
                with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
                    logits = net(image)
                loss = loss_fn(logits.float(), label)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                losses.append(float(loss.detach()))
                bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}")
            if not main:
                continue
            record = {"train_loss": float(np.mean(losses)), "lr": float(scheduler.get_last_lr()[0])}
            history["epoch"].append(epoch)
            history["train_loss"].append(record["train_loss"])
            history["lr"].append(record["lr"])
            last_epoch = epoch == epochs - 1
            if (epoch + 1) % int(tcfg["val_every"]) == 0 or last_epoch:
                scores = validate(val_run, val_vols, keep_first=True)
                first_seg = scores.pop("first_seg")
                record.update(scores)
                history["val_epoch"].append(epoch)
                for key, value in scores.items():
                    history.setdefault(key, []).append(value)
                if scores["val_mean_dice"] > best:
                    best, best_epoch = scores["val_mean_dice"], epoch
                    best_seg = first_seg
                    _save(
                        {"model": model.state_dict(), "epoch": epoch, "dice": best},
                        out_dir / "best.pt",
                    )
            _save(
                {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "epoch": epoch,
                    "best_dice": best,
                    "best_epoch": best_epoch,
                },
                out_dir / "last.pt",
            )
            (out_dir / "history.json").write_text(json.dumps(history, indent=1))
            tracker.log_metrics(record, step=epoch)
            if progress:
                shown = ", ".join(f"{k} {v:.4f}" for k, v in record.items() if k != "lr")
                tqdm.write(f"epoch {epoch + 1}/{epochs}: {shown}")
        if main:
            _finish(val_run, val_vols, best_seg, history, out_dir, tracker)
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        tracker.end(status)
        if world > 1:
            dist.barrier()
        if started_dist:
            dist.destroy_process_group()
    result.history, result.best_dice, result.best_epoch = history, best, best_epoch
    result.seconds = time.time() - start_time
    return result


def _finished_result(out_dir: Path, config: dict[str, Any]) -> TrainResult | None:
    """The result of a run in ``out_dir`` that already trained all its epochs, else None."""
    if not (out_dir / "last.pt").exists() or not (out_dir / "curves.png").exists():
        return None
    state = torch.load(out_dir / "last.pt", map_location="cpu", weights_only=True)
    if int(state["epoch"]) + 1 < int(config["train"]["epochs"]):
        return None
    history = json.loads((out_dir / "history.json").read_text())
    return TrainResult(out_dir, history, float(state["best_dice"]), int(state["best_epoch"]))


def _finish(
    run: Run,
    val_vols: list,
    best_seg: np.ndarray | None,
    history: dict,
    out_dir: Path,
    tracker: Tracker,
) -> None:
    """Write the learning curve and a validation overlay, log them and the best weights.

    ``best_seg`` is the best model's segmentation of ``val_vols[0]`` when this call
    saw that validation; after a resume it may be None, and the best weights predict it.
    """
    import matplotlib.pyplot as plt

    from ibsr_helpers.plots import plot_learning_curves, plot_prediction_overlay

    fig = plot_learning_curves(history)
    fig.savefig(out_dir / "curves.png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    best = out_dir / "best.pt"
    if best_seg is None and best.exists():
        state = torch.load(best, map_location=run.device, weights_only=True)
        run.model.load_state_dict(state["model"])
        best_seg, _ = predict_volume(run, val_vols[0], raw=False)
    if best_seg is not None:
        fig = plot_prediction_overlay(val_vols[0], best_seg)
        fig.savefig(out_dir / "val_overlay.png", dpi=100, bbox_inches="tight")
        plt.close(fig)
    for name in ("best.pt", "curves.png", "val_overlay.png", "config.json", "history.json"):
        if (out_dir / name).exists():
            tracker.log_artifact(out_dir / name)
