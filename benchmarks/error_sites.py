"""Where do trained models still go wrong? The errors of runs and their ensemble, located.

Each run given with ``--run`` (and their ensemble, when there are several) segments the
five validation subjects, as ``ibsr-seg predict`` does; each misclassified voxel is then
binned by its distance to the ground truth's nearest tissue boundary
(:mod:`ibsr_helpers.error_analysis`). The script prints the hardware, then per predictor:
the errors' shares on a boundary and 1, 2, 3+ voxels off it, the share of the ensemble's
errors that every member also makes, and the mean Dice with every error more than a voxel
off a boundary corrected (what a perfect fixer of blunders could reach), then the same per
subject for the ensemble (or the single run). Uses IBSR18
(``--data`` or ``IBSR18_DIR``).

Usage::

    python benchmarks/error_sites.py --run runs/cpu/unet2d-sagittal-cpu \\
        --run runs/cpu/unet3d-patches-cpu --tta --figure error_sites.png
"""

from __future__ import annotations

import argparse
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", action="append", required=True, help="run folder (repeat)")
    parser.add_argument("--tta", action="store_true", help="flip test-time augmentation")
    parser.add_argument("--data", default=None, help="IBSR18 folder (default: IBSR18_DIR)")
    parser.add_argument("--figure", default=None, help="also save the figure here (PNG)")
    parser.add_argument(
        "--subjects", type=int, default=None, help="the first N validation subjects (default: all)"
    )
    args = parser.parse_args(argv)

    import pandas as pd

    from ibsr_helpers.data import describe_source, load_split, resolve_data_dir
    from ibsr_helpers.error_analysis import error_profiles
    from ibsr_helpers.evaluation import evaluate_runs
    from ibsr_helpers.inference import load_run
    from ibsr_helpers.plots import plot_error_distances
    from ibsr_helpers.profiling import hardware_header

    root, _ = resolve_data_dir(args.data)
    tta = "flip" if args.tta else "none"
    print(hardware_header(data=describe_source(root), TTA=tta) + "\n", flush=True)
    runs = {Path(r).name: load_run(r) for r in args.run}
    predictors = {name: [run] for name, run in runs.items()}
    members = {}
    if len(runs) > 1:
        ensemble = " + ".join(runs)
        predictors[ensemble] = list(runs.values())
        members[ensemble] = list(runs)
    volumes = load_split(root, "val", limit=args.subjects, progress=False)
    segmentations: dict = {}
    evaluate_runs(predictors, volumes, tta=args.tta, progress=True, segmentations=segmentations)
    profiles = error_profiles(segmentations, volumes, members)
    table = profiles.groupby("name", sort=False).mean(numeric_only=True)
    with pd.option_context("display.width", 200, "display.max_columns", None):
        print("\nmeans over the validation subjects (shares of each predictor's wrong voxels):")
        print(table.T.round(4).to_string())
        last = profiles[profiles["name"] == list(predictors)[-1]].set_index("subject")
        print(f"\nper subject, {list(predictors)[-1]}:")
        print(last.drop(columns="name").round(4).to_string())
    if args.figure:
        plot_error_distances(profiles).savefig(args.figure, dpi=100, bbox_inches="tight")
        print(f"\nfigure: {args.figure}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
