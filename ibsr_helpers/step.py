"""The training step: forward, loss, backward and update, with AdamW and its schedule.

Below the engine (:mod:`ibsr_helpers.training`): the engine, the learning-rate figure
(:func:`ibsr_helpers.plots.plot_lr_schedule`), :mod:`ibsr_helpers.profiling` and the
benchmarks all build the one step from an :class:`Optim` spec here (a config's ``loss``,
``optim`` and ``train`` settings, made by :func:`ibsr_helpers.plan.specs`), so there is one
copy of it and no import circle.

Example:
    >>> step = build_train_step(plan.specs(config).optim, model, "cpu")  # doctest: +SKIP
    >>> loss = step(image, label)                                        # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from ibsr_helpers.environment import Precision, choose_precision
from ibsr_helpers.losses import build_loss

__all__ = ["Optim", "TrainStep", "adamw", "build_train_step", "lr_lambda", "schedule_factor"]


@dataclass(frozen=True)
class Optim:
    """How a run optimises: loss, AdamW, its schedule over the run, and the precision.

    Attributes:
        epochs: Epochs of the run.
        steps_per_epoch: Steps an epoch (the schedule spans ``epochs * steps_per_epoch``).
        lr: Peak learning rate.
        weight_decay: AdamW's decoupled weight decay.
        warmup_epochs: Linear warm-up, in epochs (fractions allowed).
        min_lr: Where the cosine ends.
        loss: The loss's settings (:func:`ibsr_helpers.losses.build_loss`).
        precision: ``auto``, ``fp32``, ``bf16`` or ``fp16``.
    """

    epochs: int = 10
    steps_per_epoch: int = 50
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_epochs: float = 1.0
    min_lr: float = 1e-6
    loss: dict[str, Any] = field(default_factory=lambda: {"name": "dicefocal"})
    precision: str = "auto"


def lr_lambda(total_steps: int, warmup_steps: int, min_ratio: float) -> Callable[[int], float]:
    """Learning-rate factor: linear warm-up to 1, then cosine down to ``min_ratio``."""

    def factor(step: int) -> float:
        if warmup_steps > 0 and step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        progress = min(max(progress, 0.0), 1.0)
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def schedule_factor(optim: Optim) -> Callable[[int], float]:
    """The learning-rate factor per step that a run with ``optim`` follows (:func:`lr_lambda`)."""
    steps = optim.steps_per_epoch
    return lr_lambda(
        optim.epochs * steps, int(optim.warmup_epochs * steps), optim.min_lr / optim.lr
    )


@dataclass
class TrainStep:
    """One optimisation step: forward (in the run's precision), loss, backward, update.

    Attributes:
        net: The network called on the batch (the model, or its DDP wrapper).
        loss_fn: ``loss(logits, label)``.
        optimizer: AdamW over the model's parameters.
        scheduler: The learning-rate schedule, stepped after every update.
        precision: fp32, bf16 or fp16 (the latter with a gradient scaler).
    """

    net: torch.nn.Module
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    precision: Precision
    scaler: torch.amp.GradScaler = field(init=False)

    def __post_init__(self) -> None:
        self.scaler = self.precision.scaler()

    def __call__(self, image: torch.Tensor, label: torch.Tensor) -> float:
        """Train on one batch; returns its loss."""
        with self.precision.autocast():
            logits = self.net(image)
        loss = self.loss_fn(logits.float(), label)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        return float(loss.detach())

    def state_dict(self) -> dict[str, Any]:
        """Optimiser, scheduler and scaler state, for ``last.pt``."""
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved."""
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])


def adamw(model: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW over ``model``'s parameters, with torch's fused kernel where it has one.

    The fused update (one kernel for all parameters; CPU, CUDA and mps in recent torch) is
    the same arithmetic as the default per-parameter loop, in far fewer operations: 3 % off
    a ``cpu``-recipe step on a 2-core Xeon (``benchmarks/bench_optimizer.py``); on a GPU,
    where each small update is a kernel launch, likely more (not measured yet). Older
    torch builds, or parameters on a device without the kernel, get the default one.
    """
    params = list(model.parameters())
    try:
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


def build_train_step(
    optim: Optim,
    model: torch.nn.Module,
    device: torch.device | str,
    net: torch.nn.Module | None = None,
) -> TrainStep:
    """The loss, optimiser, schedule and precision ``optim`` asks for, around ``model``.

    Args:
        optim: From :func:`ibsr_helpers.plan.specs` (``.optim``).
        model: The network whose parameters are optimised.
        device: Where it runs (decides the precision when ``optim.precision`` is auto).
        net: What the batch is fed to, if not ``model`` (a DDP wrapper).
    """
    optimizer = adamw(model, lr=optim.lr, weight_decay=optim.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule_factor(optim))
    precision = choose_precision(device, optim.precision)
    return TrainStep(net or model, build_loss(**optim.loss), optimizer, scheduler, precision)
