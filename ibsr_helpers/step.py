"""The training step: forward, loss, backward and update, with AdamW and its schedule.

Below the engine (:mod:`ibsr_helpers.training`): the engine, the learning-rate figure
(:func:`ibsr_helpers.plots.plot_lr_schedule`), :mod:`ibsr_helpers.profiling` and the
benchmarks all build the one step from a config here, so there is one copy of it and no
import circle.

Example:
    >>> step = build_train_step(config, model, "cpu")      # doctest: +SKIP
    >>> loss = step(image, label)                          # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from ibsr_helpers.environment import Precision, choose_precision
from ibsr_helpers.losses import build_loss

__all__ = ["TrainStep", "adamw", "build_train_step", "lr_lambda", "schedule_factor"]


def lr_lambda(total_steps: int, warmup_steps: int, min_ratio: float) -> Callable[[int], float]:
    """Learning-rate factor: linear warm-up to 1, then cosine down to ``min_ratio``."""

    def factor(step: int) -> float:
        if warmup_steps > 0 and step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        progress = min(max(progress, 0.0), 1.0)
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def schedule_factor(config: dict[str, Any]) -> Callable[[int], float]:
    """The learning-rate factor per step that ``config``'s run follows (:func:`lr_lambda`)."""
    ocfg, tcfg = config["optim"], config["train"]
    steps = int(tcfg["steps_per_epoch"])
    return lr_lambda(
        int(tcfg["epochs"]) * steps,
        int(float(ocfg["warmup_epochs"]) * steps),
        float(ocfg["min_lr"]) / float(ocfg["lr"]),
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
    config: dict[str, Any],
    model: torch.nn.Module,
    device: torch.device | str,
    net: torch.nn.Module | None = None,
) -> TrainStep:
    """The config's loss, optimiser, schedule and precision around ``model``.

    Args:
        config: A training config (``loss``, ``optim``, ``train`` sections).
        model: The network whose parameters are optimised.
        device: Where it runs (decides the precision when ``train.precision`` is auto).
        net: What the batch is fed to, if not ``model`` (a DDP wrapper).
    """
    ocfg = config["optim"]
    optimizer = adamw(model, lr=float(ocfg["lr"]), weight_decay=float(ocfg["weight_decay"]))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule_factor(config))
    precision = choose_precision(device, config["train"].get("precision", "auto"))
    return TrainStep(net or model, build_loss(**config["loss"]), optimizer, scheduler, precision)
