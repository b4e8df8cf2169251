"""How much of a training step the optimiser is: fused AdamW against the per-parameter loop.

The engine's step (:class:`ibsr_helpers.step.TrainStep`: forward in the run's
precision, loss, backward, AdamW) is timed for the ``cpu`` recipes' two networks at their
real input shapes, on one batch already in memory, with the optimiser the engine builds
(:func:`ibsr_helpers.step.adamw`, torch's fused kernel) and with torch's default
per-parameter AdamW. The two alternate in rounds within one process, so a machine that
slows down mid-run slows both; the best round of each is printed, with the hardware.
No data needed (random batches of the recipes' shapes).

Usage::

    python benchmarks/bench_optimizer.py
    python benchmarks/bench_optimizer.py --steps 10 --rounds 5
"""

from __future__ import annotations

import argparse

import torch

from ibsr_helpers.config import load_config
from ibsr_helpers.models import build_network
from ibsr_helpers.plan import specs
from ibsr_helpers.profiling import hardware_summary, time_train_steps
from ibsr_helpers.step import build_train_step

ROOT_CONFIGS = "configs"
#: Recipe -> (config, overrides, batch input shape without the batch axis).
RECIPES = {
    "2D U-Net sagittal (cpu)": ("unet2d", ["data.plane=sagittal"], (128, 192)),
    "3D U-Net patches (cpu)": ("unet3d_patches", [], (64, 64, 64)),
}


def _batch(config: dict, shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    n = int(config["train"]["batch_size"])
    if len(shape) == 3:
        n *= int(config["data"]["patches_per_volume"])
    image = torch.randn(n, specs(config).model.in_channels, *shape)
    label = torch.randint(0, 4, (n, 1, *shape))
    layout = torch.channels_last if len(shape) == 2 else torch.channels_last_3d
    return image.contiguous(memory_format=layout), label


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=8, help="timed steps per round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each optimiser")
    args = parser.parse_args(argv)
    hw = hardware_summary()
    print(
        f"{hw['cpu']}, {hw['cores']} cores ({hw['torch_threads']} torch threads), "
        f"torch {hw['torch']}, GPU: {hw['gpu']}"
    )
    print(
        f"{'recipe':26} {'precision':9} {'batch':>5} {'fused (s)':>10} {'loop (s)':>9} "
        f"{'loop/fused':>10}"
    )
    for name, (cfg_name, overrides, shape) in RECIPES.items():
        config = load_config(f"{ROOT_CONFIGS}/{cfg_name}.yaml", "cpu", overrides)
        torch.manual_seed(0)
        plan = specs(config)
        model = build_network(plan.model)
        fused = build_train_step(plan.optim, model, "cpu")
        loop = build_train_step(plan.optim, model, "cpu")
        loop.optimizer = torch.optim.AdamW(
            model.parameters(),
            lr=float(config["optim"]["lr"]),
            weight_decay=float(config["optim"]["weight_decay"]),
        )
        loop.scheduler = torch.optim.lr_scheduler.LambdaLR(loop.optimizer, lambda _: 1.0)
        batch = _batch(config, shape)
        best = {"fused": float("inf"), "loop": float("inf")}
        for _ in range(args.rounds):
            for key, step in (("fused", fused), ("loop", loop)):
                timed = time_train_steps(step, lambda b=batch: b, steps=args.steps)
                best[key] = min(best[key], timed["step_s"])
        print(
            f"{name:26} {fused.precision.name:9} {batch[0].shape[0]:>5} {best['fused']:>10.3f} "
            f"{best['loop']:>9.3f} {best['loop'] / best['fused']:>10.2f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
