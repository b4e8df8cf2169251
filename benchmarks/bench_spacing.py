"""Should IBSR18's three in-plane spacings be resampled to one? A measurement.

IBSR18 was scanned at 0.84, 0.94 and 1.0 mm in-plane (1.5 mm between coronal slices). The
preprocessing resamples a scan only when its spacing differs from the run's by more than
``data.spacing_tolerance`` (relative). This script trains the same recipe twice and scores
both on the five validation subjects:

* ``native``: tolerance 0.2 (the default): every IBSR18 scan keeps its own voxels;
* ``resampled``: tolerance 0: every scan is resampled to the training median,
  0.9375 x 1.5 x 0.9375 mm, and each prediction taken back to its scan's grid.

It prints the hardware, Dice per tissue for each variant, per validation subject (with its
spacing), and the training and prediction times. Uses IBSR18 (``--data`` or
``IBSR18_DIR``); on demo data every scan has one spacing and the two variants coincide.

Usage::

    python benchmarks/bench_spacing.py                          # 2D U-Net, quick profile
    python benchmarks/bench_spacing.py --config configs/unet3d_patches.yaml --out runs/spacing
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {"native": 0.2, "resampled": 0.0}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "unet2d.yaml"))
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--data", default=None, help="IBSR18 folder (default: IBSR18_DIR)")
    parser.add_argument("--out", default=None, help="keep the runs here (default: a temp dir)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    import pandas as pd

    from ibsr_helpers.config import load_config
    from ibsr_helpers.data import describe_source, load_split, resolve_data_dir
    from ibsr_helpers.evaluation import dice_table, evaluate_runs
    from ibsr_helpers.inference import load_run
    from ibsr_helpers.profiling import hardware_header
    from ibsr_helpers.training import train

    root, _ = resolve_data_dir(args.data)
    recipe = f"{args.config} ({args.profile}), seed {args.seed}"
    print(hardware_header(data=describe_source(root), recipe=recipe) + "\n", flush=True)
    out = Path(args.out or tempfile.mkdtemp(prefix="bench_spacing_"))
    volumes = load_split(root, "val", progress=False)
    runs, minutes = {}, {}
    for name, tolerance in VARIANTS.items():
        config = load_config(
            args.config,
            args.profile,
            [f"seed={args.seed}", f"data.spacing_tolerance={tolerance}", "tracking=none"],
        )
        start = time.time()
        result = train(config, root, out / name, resume=True)
        minutes[name] = (time.time() - start) / 60
        runs[name] = load_run(result.run_dir)
        print(f"{name}: trained in {minutes[name]:.1f} min", flush=True)
    start = time.time()
    scores = evaluate_runs(runs, volumes)
    print(f"evaluation of both on {len(volumes)} subjects: {time.time() - start:.0f} s\n")
    table = dice_table(scores)
    table["training (min)"] = pd.Series(minutes)
    print(table.round(4).to_string())
    spacing = {v.id: "x".join(f"{s:g}" for s in v.spacing) for v in volumes}
    per = scores.groupby(["subject", "name"])["dice"].mean().unstack("name")
    per.insert(0, "spacing (mm)", per.index.map(spacing))
    print("\nmean Dice per validation subject:\n" + per.round(4).to_string())
    gain = table.loc["resampled", "mean"] - table.loc["native", "mean"]
    print(f"\nresampled - native: {gain:+.4f} mean Dice")
    return 0


if __name__ == "__main__":
    sys.exit(main())
