"""The GPU check: a few minutes of the gpu recipes' 3D patch member; Dice, HD95, time to 0.93, TTA.

On one GPU, in under 9 minutes: the ``3D U-Net patches, full-resolution skip`` member of
the ``gpu-ensemble`` recipe (``configs/recipes/gpu-ensemble.yaml``, full profile) trains
under a ``--minutes`` budget on IBSR18 (default ``data/IBSR18``, a git-ignored copy),
validated every few epochs with HD95; then it prints, with the hardware (GPU, CPU, bf16):

* validation Dice per tissue and mean, HD95 per tissue (best checkpoint, 5 subjects);
* the training minutes at which validation mean Dice first reached 0.93 (or "not reached");
* seconds per volume to predict, without and with flip TTA.

Usage (the device machine: carry ``data/IBSR18`` and the wheels, see benchmarks/README.md)::

    python benchmarks/gpu_check.py                     # about 8 min on an H100
    python benchmarks/gpu_check.py --profile smoke --minutes 1 --device cpu   # a CPU check
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MEMBER = "3D U-Net patches, full-resolution skip"
TARGET = 0.93


def minutes_to(history: dict, target: float) -> float | None:
    """Training minutes at the first validation whose mean Dice reached ``target``."""
    for epoch, dice in zip(history["val_epoch"], history["val_mean_dice"], strict=True):
        if dice >= target:
            return history["minutes"][history["epoch"].index(epoch)]
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(ROOT / "data" / "IBSR18"))
    parser.add_argument("--out", default=str(ROOT / "runs" / "gpu_check"))
    parser.add_argument("--minutes", type=float, default=6.0, help="training budget")
    parser.add_argument("--profile", default=None, help="override the member's (full)")
    parser.add_argument("--device", default=None, help="default: the best available")
    args = parser.parse_args(argv)

    import pandas as pd
    import torch

    from ibsr_helpers.data import describe_source, load_split, resolve_data_dir
    from ibsr_helpers.environment import get_device
    from ibsr_helpers.evaluation import results_table
    from ibsr_helpers.inference import load_run, predict_volume
    from ibsr_helpers.metrics import evaluate_segmentation
    from ibsr_helpers.profiling import hardware_header
    from ibsr_helpers.recipes import load_recipe, member_config
    from ibsr_helpers.training import train

    root, _ = resolve_data_dir(args.data)
    device = get_device(args.device)
    print(hardware_header(data=describe_source(root), device=str(device)) + "\n", flush=True)
    member = load_recipe("gpu-ensemble").member(MEMBER)
    config = member_config(member, args.profile)
    config["tracking"] = "none"  # no MLflow on the device machine
    train_cfg = config["train"]
    train_cfg.update(minutes=args.minutes, val_hd95=True, epochs=40, val_every=4)
    start = time.time()
    result = train(config, root, Path(args.out) / f"{time.strftime('%Y%m%d-%H%M%S')}")
    wall = (time.time() - start) / 60
    reached = minutes_to(result.history, TARGET)
    run = load_run(result.run_dir, device)
    volumes = load_split(root, "val")
    rows, seconds = [], {False: [], True: []}
    for volume in volumes:
        for tta in (False, True):
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            seg, _ = predict_volume(run, volume, tta=tta)
            if device.type == "cuda":
                torch.cuda.synchronize()
            seconds[tta].append(time.perf_counter() - t0)
        scores = evaluate_segmentation(seg, volume.label, volume.spacing, hd=True)
        rows += [
            {"name": f"{MEMBER} + TTA", "subject": volume.id, "tissue": t, **s}
            for t, s in scores.items()
        ]
    table = results_table(pd.DataFrame(rows))
    print(table.round(4).T.to_string())
    print(
        f"\n{MEMBER} ({config['profile']} profile, {args.minutes:g}-minute budget, "
        f"{train_cfg['epochs']} epochs planned): best validation mean Dice during training "
        f"{result.best_dice:.4f}; with flip TTA {table['mean Dice'].iloc[0]:.4f}; "
        f"{TARGET} reached after "
        + (f"{reached:.1f} training minutes" if reached is not None else "- (not reached)")
        + f"; {wall:.1f} min wall for training"
    )
    plain, flipped = (sum(seconds[t]) / len(seconds[t]) for t in (False, True))
    print(f"predict: {plain:.2f} s per volume, with flip TTA {flipped:.2f} s ({device})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
