"""The CPU recipes, run as ``ibsr-seg recipe run`` does, and the Dice-vs-minutes curve they draw.

For each recipe named (default: ``cpu`` and ``cpu-ensemble``, read from
``configs/recipes/``; this script keeps no list of its own), it trains the missing members
(a finished run in ``--runs`` is reused), predicts and grades the validation subjects and
writes ``<reports>/<recipe>/results.md`` (:func:`ibsr_helpers.cookbook.run_recipe`). With
``--record`` it appends each result to ``benchmarks/results/recipes.csv``, which
``ibsr-seg recipe list`` shows. Then, unless ``--no-curve``:

* ``benchmarks/results/dice_vs_minutes.csv`` (committed, read by notebook 05): validation
  mean Dice and HD95 against the minutes spent training, read from each member's history,
  with the date and hardware on every row; rows of the members run now replace their
  earlier rows, others are kept;
* ``images/dice_vs_minutes.png``: that curve, titled with the dates and the hardware.

Experiments that did not become recipes are history: their commands and numbers are in
``benchmarks/README.md``. Print the CPU model and its bf16 support with every figure; a
run on a CPU shared with other work gives minutes that are not 2-core minutes
(``--no-curve``).

Usage::

    python benchmarks/cpu_recipes.py                       # cpu and cpu-ensemble (about 3.5 h)
    python benchmarks/cpu_recipes.py --recipes cpu --record
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def curve_rows(name: str, folder: Path) -> list[dict]:
    """Validation mean Dice and HD95 against training minutes, from a run's history."""
    history_file = folder / "history.json"
    history = json.loads(history_file.read_text())
    date = time.strftime("%Y-%m-%d", time.localtime(history_file.stat().st_mtime))
    rows = []
    for epoch, minutes in zip(history["epoch"], history["minutes"], strict=True):
        if epoch in history["val_epoch"]:
            k = history["val_epoch"].index(epoch)
            hd95 = history.get("val_mean_hd95", [float("nan")] * (k + 1))[k]
            rows.append(
                {
                    "recipe": name,
                    "minutes": minutes,
                    "mean_dice": history["val_mean_dice"][k],
                    "hd95": hd95,
                    "date": date,
                }
            )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=None, help="IBSR18 folder (default: IBSR18_DIR)")
    parser.add_argument("--runs", default=str(ROOT / "notebooks" / "runs"))
    parser.add_argument("--reports", default=str(ROOT / "reports" / "recipes"))
    parser.add_argument("--recipes", nargs="+", default=["cpu", "cpu-ensemble"])
    parser.add_argument("--profile", default=None, help="override (smoke: a check)")
    parser.add_argument("--record", action="store_true", help="append to recipes.csv")
    parser.add_argument("--no-curve", action="store_true", help="leave the curve as it is")
    args = parser.parse_args(argv)

    import pandas as pd

    from ibsr_helpers.cookbook import gather, run_recipe
    from ibsr_helpers.data import describe_source, resolve_data_dir
    from ibsr_helpers.plots import plot_dice_vs_minutes
    from ibsr_helpers.profiling import hardware_header, hardware_summary
    from ibsr_helpers.recipes import load_recipe

    recipes = [load_recipe(n) for n in args.recipes]  # unknown names stop before training
    root, _ = resolve_data_dir(args.data)
    print(hardware_header(data=describe_source(root)) + "\n", flush=True)
    curve = []
    for recipe in recipes:
        report = run_recipe(
            recipe,
            root,
            Path(args.reports) / recipe.name,
            args.runs,
            args.profile,
            record=args.record,
        )
        print(report.table.round(4).to_string())
        print(f"{recipe.name}: {report.result} {report.mean_dice:.4f} ({report.minutes:.0f} min)")
        found = gather(recipe, root, args.runs, args.profile, train_missing=False, progress=False)
        for name, folder in found.folders.items():
            curve += curve_rows(name, folder)
    if args.no_curve or not curve:
        return 0
    hw = hardware_summary()
    frame = pd.DataFrame(curve).drop_duplicates(["recipe", "minutes"])
    frame = frame.assign(hardware=f"{hw['cpu']} (bf16: {hw['cpu_bf16']}), {hw['cores']} cores")
    curve_csv = ROOT / "benchmarks" / "results" / "dice_vs_minutes.csv"
    if curve_csv.exists():  # keep the recorded rows of runs not made in this call
        kept = pd.read_csv(curve_csv)
        frame = pd.concat([kept[~kept["recipe"].isin(frame["recipe"])], frame], ignore_index=True)
    frame.to_csv(curve_csv, index=False)
    fig = plot_dice_vs_minutes(frame)
    fig.savefig(ROOT / "images" / "dice_vs_minutes.png", dpi=72, bbox_inches="tight")
    print(f"wrote {curve_csv} and images/dice_vs_minutes.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
