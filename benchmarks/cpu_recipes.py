"""The CPU recipes: train them, score them and their ensembles, draw Dice against CPU minutes.

Four runs of the ``cpu`` profiles (30-45 min each on 2 cores): the 3D patch U-Net and
the 2D U-Net (class-balanced slices) on each of the three planes. Each is trained as
``ibsr-seg train`` would (a finished run in ``--runs`` is reused as it is), then segments
the validation subjects as ``ibsr-seg predict`` would and is graded as ``ibsr-seg
evaluate`` would, alone and in the ensembles whose members it has (multi-plane fusion,
fusion + 3D), without and with flip TTA; every run predicts each volume once for all
the ensembles it is in (:func:`ibsr_helpers.inference.predict_folders`). The script
writes:

* ``<reports>/results.md`` and ``results.csv``: the results table with the commands,
  date, hardware and training minutes (``--readme`` copies it into the README);
* ``benchmarks/results/dice_vs_minutes.csv`` (committed, read by notebook 05): validation
  mean Dice and HD95 against the minutes spent training, read from each run's history
  (validated every 4 epochs), with the date the run was trained and the hardware on
  every row (a run found in ``--runs`` counts as trained on this hardware); the rows of the
  recipes in this call replace their earlier rows, other recipes' rows are kept;
* ``images/dice_vs_minutes.png``: that curve, titled with the date and the hardware.

Usage::

    python benchmarks/cpu_recipes.py                          # everything (about 3 h on 2 cores)
    python benchmarks/cpu_recipes.py --recipes "3D U-Net patches"   # one recipe
    python benchmarks/cpu_recipes.py --readme                 # also update README.md
    python benchmarks/cpu_recipes.py --no-curve --readme --block cpu-fullres-results \
        --recipes "2D U-Net sagittal, full-resolution skip" \
        "2D U-Net sagittal, full-resolution skip, seed 1" "2D U-Net coronal" \
        "3D U-Net patches"   # the best ensemble within 3 h (0.9402 on a 2-core EPYC)
    python benchmarks/cpu_recipes.py --recipes "3D U-Net patches" "2D U-Net sagittal" \
        "2D U-Net coronal" "2D U-Net axial" "3D U-Net patches, Dice+CE"   # + an experiment

Several copies can train side by side (``--tracking none``: one MLflow store does not take
concurrent writers; ``--no-curve``: minutes on a shared CPU are not 2-core minutes), each
with ``OMP_NUM_THREADS=1``; a last call naming all of them (same ``--tracking``) finds the
finished runs and scores them and their ensembles.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: Recipe -> (config, overrides, run-folder variant).
RECIPES: dict[str, tuple[str, list[str], str]] = {
    "3D U-Net patches": ("unet3d_patches", [], ""),
    "2D U-Net coronal": ("unet2d", [], "coronal"),
    "2D U-Net sagittal": ("unet2d", ["data.plane=sagittal"], "sagittal"),
    "2D U-Net axial": ("unet2d", ["data.plane=axial"], "axial"),
}
#: Variants measured against the recipes; trained only when named with ``--recipes``.
#: The full-resolution variants train 24 x 180 steps: what the 38-minute budget gave the
#: sagittal runs on a 2-core AMD EPYC Zen 4 (2026-12-04), so every machine trains the same
#: steps (the budget gives a coronal run only 90 there).
FULLRES = ["model.full_resolution_skip=true", "train.steps_per_epoch=180", "train.minutes=null"]
#: The 3D stage trains under the recipe's own 38-minute budget (a step a third dearer).
FULLRES_3D = ["model.full_resolution_skip=true"]
EXPERIMENTS: dict[str, tuple[str, list[str], str]] = {
    "3D U-Net patches, Dice+CE": ("unet3d_patches", ["loss.name=dicece"], "dicece"),
    "3D U-Net patches, seed 1": ("unet3d_patches", ["seed=1"], ""),
    "2D U-Net sagittal, 36 epochs": (
        "unet2d",
        ["data.plane=sagittal", "train.epochs=36", "train.minutes=null"],
        "sagittal-36ep",
    ),
    "2D U-Net sagittal, seed 1": ("unet2d", ["data.plane=sagittal", "seed=1"], "sagittal"),
    "2D U-Net coronal, seed 1": ("unet2d", ["seed=1"], "coronal"),
    "2D U-Net sagittal, ResNet-34": (
        "unet2d",
        ["data.plane=sagittal", "model.encoder_name=resnet34"],
        "sagittal-resnet34",
    ),
    "2D U-Net sagittal, 7 slices": (
        "unet2d",
        ["data.plane=sagittal", "data.context=3"],
        "sagittal-7slices",
    ),
    "2D U-Net sagittal, Dice+CE": (
        "unet2d",
        ["data.plane=sagittal", "loss.name=dicece"],
        "sagittal-dicece",
    ),
    "2D U-Net sagittal, Dice+CE, lr 0.001": (
        "unet2d",
        ["data.plane=sagittal", "loss.name=dicece", "optim.lr=0.001"],
        "sagittal-dicece-lr1e-3",
    ),
    "3D U-Net patches, 36 epochs": (
        "unet3d_patches",
        ["train.epochs=36", "train.minutes=null"],
        "36ep",
    ),
    "2D EfficientNet-B0 U-Net sagittal, 16 epochs": (
        "unet2d",
        [
            "data.plane=sagittal",
            "model.name=efficientunet2d",
            "model.encoder_name=timm-efficientnet-b0",
            "train.epochs=16",
        ],
        "sagittal-effb0-16ep",
    ),
    "2D U-Net sagittal, gamma": (
        "unet2d",
        ["data.plane=sagittal", "data.gamma=[0.7,1.5]"],
        "sagittal-gamma",
    ),
    "2D U-Net sagittal, full-resolution skip": (
        "unet2d",
        [
            "data.plane=sagittal",
            *FULLRES,
        ],
        "sagittal-fullres",
    ),
    "2D U-Net sagittal, full-resolution skip, seed 1": (
        "unet2d",
        [
            "data.plane=sagittal",
            "seed=1",
            *FULLRES,
        ],
        "sagittal-fullres",
    ),
    "2D U-Net sagittal, full-resolution skip, Dice+CE": (
        "unet2d",
        [
            "data.plane=sagittal",
            "loss.name=dicece",
            *FULLRES,
        ],
        "sagittal-fullres-dicece",
    ),
    "2D U-Net coronal, full-resolution skip": (
        "unet2d",
        FULLRES,
        "coronal-fullres",
    ),
    "2D U-Net axial, full-resolution skip": (
        "unet2d",
        ["data.plane=axial", *FULLRES],
        "axial-fullres",
    ),
    "3D U-Net patches, full-resolution skip": ("unet3d_patches", FULLRES_3D, "fullres"),
    "3D U-Net patches, full-resolution skip, seed 1": (
        "unet3d_patches",
        ["seed=1", *FULLRES_3D],
        "fullres",
    ),
}
PLANES = ["2D U-Net sagittal", "2D U-Net coronal", "2D U-Net axial"]
#: The two full-resolution sagittal seeds, the core of the best ensembles.
SAGITTAL_FULLRES = [
    "2D U-Net sagittal, full-resolution skip",
    "2D U-Net sagittal, full-resolution skip, seed 1",
]
#: The 2D members of the best ensemble: both sagittal seeds and the coronal recipe.
BEST_2D = [*SAGITTAL_FULLRES, "2D U-Net coronal"]
#: Ensembles scored when all their members were trained (or found) in this call.
ENSEMBLES = {
    "fusion of 3 planes": PLANES,
    "fusion + 3D patches": [*PLANES, "3D U-Net patches"],
    "fusion + both 3D": [*PLANES, "3D U-Net patches", "3D U-Net patches, Dice+CE"],
    "sagittal + coronal": PLANES[:2],
    "sagittal + coronal + 3D patches": [*PLANES[:2], "3D U-Net patches"],
    "sagittal (24 + 36 epochs) + coronal + 3D patches": [
        *PLANES[:2],
        "2D U-Net sagittal, 36 epochs",
        "3D U-Net patches",
    ],
    "sagittal (seeds 0 + 1) + coronal + 3D patches": [
        *PLANES[:2],
        "2D U-Net sagittal, seed 1",
        "3D U-Net patches",
    ],
    "three sagittal runs + coronal + 3D patches": [
        *PLANES[:2],
        "2D U-Net sagittal, seed 1",
        "2D U-Net sagittal, 36 epochs",
        "3D U-Net patches",
    ],
    "sagittal and coronal (seeds 0 + 1 each) + 3D patches": [
        *PLANES[:2],
        "2D U-Net sagittal, seed 1",
        "2D U-Net coronal, seed 1",
        "3D U-Net patches",
    ],
    "sagittal (ResNet-18 + ResNet-34) + coronal + 3D patches": [
        *PLANES[:2],
        "2D U-Net sagittal, ResNet-34",
        "3D U-Net patches",
    ],
    "sagittal (two ResNet-18 seeds + ResNet-34) + coronal + 3D patches": [
        *PLANES[:2],
        "2D U-Net sagittal, seed 1",
        "2D U-Net sagittal, ResNet-34",
        "3D U-Net patches",
    ],
    "sagittal (seeds 0 + 1) + coronal + both 3D": [
        *PLANES[:2],
        "2D U-Net sagittal, seed 1",
        "3D U-Net patches",
        "3D U-Net patches, Dice+CE",
    ],
    "sagittal (5 + 7 slices) + coronal + 3D patches": [
        *PLANES[:2],
        "2D U-Net sagittal, 7 slices",
        "3D U-Net patches",
    ],
    "sagittal (5 + 7 slices, seeds 0 + 1) + coronal + 3D patches": [
        *PLANES[:2],
        "2D U-Net sagittal, seed 1",
        "2D U-Net sagittal, 7 slices",
        "3D U-Net patches",
    ],
    "sagittal (Dice+CE) + coronal + 3D patches": [
        "2D U-Net sagittal, Dice+CE",
        "2D U-Net coronal",
        "3D U-Net patches",
    ],
    "sagittal (Dice+Focal + Dice+CE) + coronal + 3D patches": [
        *PLANES[:2],
        "2D U-Net sagittal, Dice+CE",
        "3D U-Net patches",
    ],
    "sagittal (seeds 0 + 1, Dice+CE) + coronal + 3D patches": [
        *PLANES[:2],
        "2D U-Net sagittal, seed 1",
        "2D U-Net sagittal, Dice+CE",
        "3D U-Net patches",
    ],
    "sagittal (Dice+Focal + Dice+CE at lr 0.002 and 0.001) + coronal + 3D patches": [
        *PLANES[:2],
        "2D U-Net sagittal, Dice+CE",
        "2D U-Net sagittal, Dice+CE, lr 0.001",
        "3D U-Net patches",
    ],
    "sagittal (Dice+Focal + Dice+CE) + coronal + 3D patches (36 epochs)": [
        *PLANES[:2],
        "2D U-Net sagittal, Dice+CE",
        "3D U-Net patches, 36 epochs",
    ],
    "sagittal (Dice+Focal + Dice+CE) + coronal + 3D patches (28 + 36 epochs)": [
        *PLANES[:2],
        "2D U-Net sagittal, Dice+CE",
        "3D U-Net patches",
        "3D U-Net patches, 36 epochs",
    ],
    "sagittal (ResNet-18 + EfficientNet-B0) + coronal + 3D patches": [
        *PLANES[:2],
        "2D EfficientNet-B0 U-Net sagittal, 16 epochs",
        "3D U-Net patches",
    ],
    "sagittal (ResNet-18 Dice+Focal + Dice+CE + EfficientNet-B0) + coronal + 3D patches": [
        *PLANES[:2],
        "2D U-Net sagittal, Dice+CE",
        "2D EfficientNet-B0 U-Net sagittal, 16 epochs",
        "3D U-Net patches",
    ],
    "sagittal (gamma) + coronal + 3D patches": [
        "2D U-Net sagittal, gamma",
        "2D U-Net coronal",
        "3D U-Net patches",
    ],
    "sagittal (Dice+Focal + gamma) + coronal + 3D patches": [
        *PLANES[:2],
        "2D U-Net sagittal, gamma",
        "3D U-Net patches",
    ],
    "sagittal (Dice+Focal + Dice+CE + gamma) + coronal + 3D patches": [
        *PLANES[:2],
        "2D U-Net sagittal, Dice+CE",
        "2D U-Net sagittal, gamma",
        "3D U-Net patches",
    ],
    "sagittal + coronal, both with the full-resolution skip": [
        "2D U-Net sagittal, full-resolution skip",
        "2D U-Net coronal, full-resolution skip",
    ],
    "sagittal + coronal (full-resolution skip) + 3D patches": [
        "2D U-Net sagittal, full-resolution skip",
        "2D U-Net coronal, full-resolution skip",
        "3D U-Net patches",
    ],
    "sagittal (seeds 0 + 1) + coronal, all with the full-resolution skip": [
        *SAGITTAL_FULLRES,
        "2D U-Net coronal, full-resolution skip",
    ],
    "sagittal (full-resolution skip) + 3D patches": [
        "2D U-Net sagittal, full-resolution skip",
        "3D U-Net patches",
    ],
    "sagittal (full-resolution skip, seeds 0 + 1) + 3D patches": [
        *SAGITTAL_FULLRES,
        "3D U-Net patches",
    ],
    "sagittal (full-resolution skip: seeds 0 + 1, Dice+CE) + 3D patches": [
        *SAGITTAL_FULLRES,
        "2D U-Net sagittal, full-resolution skip, Dice+CE",
        "3D U-Net patches",
    ],
    "sagittal (full-resolution skip, seeds 0 + 1) + coronal + 3D patches": [
        *BEST_2D,
        "3D U-Net patches",
    ],
    "sagittal (full-resolution skip: seeds 0 + 1, Dice+CE) + coronal + 3D patches": [
        *SAGITTAL_FULLRES,
        "2D U-Net sagittal, full-resolution skip, Dice+CE",
        "2D U-Net coronal",
        "3D U-Net patches",
    ],
    "sagittal (seeds 0 + 1) + coronal (full-resolution skip) + 3D patches": [
        *SAGITTAL_FULLRES,
        "2D U-Net coronal, full-resolution skip",
        "3D U-Net patches",
    ],
    "sagittal (full-resolution skip, seeds 0 + 1) + coronal (seed 1) + 3D patches": [
        *SAGITTAL_FULLRES,
        "2D U-Net coronal, seed 1",
        "3D U-Net patches",
    ],
    "sagittal (full-resolution skip, seeds 0 + 1) + coronal (seeds 0 + 1) + 3D patches": [
        *BEST_2D,
        "2D U-Net coronal, seed 1",
        "3D U-Net patches",
    ],
    "sagittal (full-resolution skip, seeds 0 + 1) + coronal + 3D patches (seed 1)": [
        *BEST_2D,
        "3D U-Net patches, seed 1",
    ],
    "sagittal (full-resolution skip, seeds 0 + 1) + 3D patches (full-resolution skip)": [
        *SAGITTAL_FULLRES,
        "3D U-Net patches, full-resolution skip",
    ],
    "sagittal (full-resolution skip, seeds 0 + 1) + coronal + 3D patches (full-resolution skip)": [
        *BEST_2D,
        "3D U-Net patches, full-resolution skip",
    ],
    (
        "sagittal (full-resolution skip, seeds 0 + 1) + coronal"
        " + 3D patches (full-resolution skip, seed 1)"
    ): [
        *BEST_2D,
        "3D U-Net patches, full-resolution skip, seed 1",
    ],
    (
        "sagittal (full-resolution skip, seeds 0 + 1) + coronal"
        " + 3D patches (with and without the full-resolution skip)"
    ): [
        *BEST_2D,
        "3D U-Net patches",
        "3D U-Net patches, full-resolution skip",
    ],
    "sagittal + axial (full-resolution skip) + coronal + 3D patches": [
        "2D U-Net sagittal, full-resolution skip",
        "2D U-Net axial, full-resolution skip",
        "2D U-Net coronal",
        "3D U-Net patches",
    ],
    "sagittal (full-resolution skip, seeds 0 + 1) + axial (full-resolution skip) + 3D patches": [
        *SAGITTAL_FULLRES,
        "2D U-Net axial, full-resolution skip",
        "3D U-Net patches",
    ],
    (
        "sagittal (full-resolution skip, seeds 0 + 1) + axial (full-resolution skip)"
        " + coronal + 3D patches"
    ): [
        *SAGITTAL_FULLRES,
        "2D U-Net axial, full-resolution skip",
        "2D U-Net coronal",
        "3D U-Net patches",
    ],
}


def recipe_run(
    name: str, runs_dir: str | Path, seed: int = 0, tracking: str = "none"
) -> tuple[dict, Path, str]:
    """A recipe's or experiment's ``cpu``-profile config, its run folder and its train command."""
    from ibsr_helpers.config import load_config
    from ibsr_helpers.training import run_folder

    stem, overrides, variant = (RECIPES | EXPERIMENTS)[name]
    config = load_config(
        ROOT / "configs" / f"{stem}.yaml",
        "cpu",
        [f"seed={seed}", f"tracking={tracking}", *overrides],
    )
    folder = run_folder(runs_dir, config, variant)
    sets = "".join(f" --set {o}" for o in overrides)
    command = f"ibsr-seg train --config configs/{stem}.yaml --profile cpu{sets} --out {folder.name}"
    return config, folder, command


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=None, help="IBSR18 folder (default: IBSR18_DIR)")
    parser.add_argument("--runs", default=str(ROOT / "runs" / "cpu"))
    parser.add_argument("--reports", default=str(ROOT / "reports" / "cpu_recipes"))
    parser.add_argument(
        "--recipes", nargs="+", default=list(RECIPES), choices=[*RECIPES, *EXPERIMENTS]
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--tracking",
        default="mlflow",
        choices=["mlflow", "none"],
        help="log the runs to MLflow (runs/cpu/mlflow.db); none when several copies of this "
        "script train at once",
    )
    parser.add_argument(
        "--no-curve",
        action="store_true",
        help="leave the recorded Dice-vs-minutes curve as it is (e.g. when runs shared the CPU, "
        "so their minutes are not 2-core minutes)",
    )
    parser.add_argument("--readme", action="store_true", help="copy the table into README.md")
    parser.add_argument(
        "--block",
        default="cpu-results",
        help="with --readme: the README block to replace, between <!-- BLOCK:start --> and "
        "<!-- BLOCK:end --> (default: cpu-results, the recipes' table)",
    )
    args = parser.parse_args(argv)
    from ibsr_helpers.course import has_readme_block, replace_readme_block

    readme = ROOT / "README.md"
    if args.readme and not has_readme_block(readme, args.block):  # say so before hours of training
        parser.error(f"{readme} has no <!-- {args.block}:start --> ... :end --> block")

    import pandas as pd

    from ibsr_helpers.data import describe_source, resolve_data_dir
    from ibsr_helpers.evaluation import results_table, write_results
    from ibsr_helpers.inference import predict_folders
    from ibsr_helpers.plots import plot_dice_vs_minutes
    from ibsr_helpers.profiling import hardware_header, hardware_summary
    from ibsr_helpers.submissions import evaluate_folders
    from ibsr_helpers.training import train

    root, _ = resolve_data_dir(args.data)
    hw = hardware_summary()
    date = time.strftime("%Y-%m-%d")
    print(hardware_header(data=describe_source(root)) + "\n", flush=True)
    val = next(root.glob("**/Validation_Set"))
    runs, minutes, curve, commands = {}, {}, [], {}
    for name in args.recipes:
        config, folder, commands[name] = recipe_run(name, args.runs, args.seed, args.tracking)
        result = train(config, root, folder, resume=True)
        history_file = folder / "history.json"
        history = json.loads(history_file.read_text())
        trained_on = time.strftime("%Y-%m-%d", time.localtime(history_file.stat().st_mtime))
        minutes[name] = history["minutes"][-1]
        runs[name] = folder
        state = f"trained in {result.seconds / 60:.1f} min wall" if result.trained else "found"
        print(f"{name}: {folder} ({state}; {minutes[name]:.1f} min in training steps)", flush=True)
        for epoch, mins in zip(history["epoch"], history["minutes"], strict=True):
            if epoch in history["val_epoch"]:
                k = history["val_epoch"].index(epoch)
                curve.append(
                    {
                        "recipe": name,
                        "minutes": mins,
                        "mean_dice": history["val_mean_dice"][k],
                        "hd95": history.get("val_mean_hd95", [float("nan")] * (k + 1))[k],
                        "date": trained_on,
                    }
                )
    reports = Path(args.reports)
    predictors = {n: ([runs[n]], False) for n in runs}
    for e, ms in ENSEMBLES.items():
        if set(ms) <= set(runs):
            predictors[e] = ([runs[m] for m in ms], False)
            predictors[f"{e} + TTA"] = ([runs[m] for m in ms], True)
    folders = {n: reports / "predictions" / re.sub(r"\W+", "-", n).strip("-") for n in predictors}
    start = time.time()
    predict_folders({folders[n]: p for n, p in predictors.items()}, val)
    print(f"predicted with every run and ensemble in {(time.time() - start) / 60:.1f} min")
    scores = []
    for name in predictors:
        df = evaluate_folders(folders[name], val, progress=False, strict=True).scores
        df = df.assign(name=name)
        scores.append(df)
        mean = df.groupby("subject")["dice"].mean().mean()
        print(f"{name}: validation mean Dice {mean:.4f}")
    table = results_table(pd.concat(scores, ignore_index=True))
    table.insert(len(table.columns) - 1, "training (min)", pd.Series(minutes))
    about = {
        "made by": "python benchmarks/cpu_recipes.py (the ibsr-seg train/predict/evaluate code)",
        "date": date,
        "hardware": f"{hw['cpu']}, {hw['cores']} cores, {hw['memory_gb']} GiB; GPU: {hw['gpu']}",
        "data": describe_source(root),
        "training commands": "; ".join(f"{n}: `{c}`" for n, c in commands.items()),
        "ensembles": "each `ibsr-seg predict` with one `--run` per member (+ TTA: and "
        "`--tta`, left-right flips averaged): "
        + "; ".join(e for e in ENSEMBLES if e in predictors),
    }
    csv_path, md_path = write_results(table, reports, about)
    print(f"\nwrote {csv_path} and {md_path}")
    if not args.no_curve:
        machine = f"{hw['cpu']}, {hw['cores']} cores"
        frame = pd.DataFrame(curve).assign(hardware=machine)
        curve_csv = ROOT / "benchmarks" / "results" / "dice_vs_minutes.csv"
        curve_csv.parent.mkdir(exist_ok=True)
        if curve_csv.exists():  # keep the recorded rows of recipes not run in this call
            kept = pd.read_csv(curve_csv)
            frame = pd.concat([kept[~kept["recipe"].isin(runs)], frame], ignore_index=True)
        frame.to_csv(curve_csv, index=False)
        fig = plot_dice_vs_minutes(frame)
        (ROOT / "images").mkdir(exist_ok=True)
        fig.savefig(ROOT / "images" / "dice_vs_minutes.png", dpi=72, bbox_inches="tight")
        print(f"wrote {curve_csv} and images/dice_vs_minutes.png")
    print(table.round(4).to_string())
    if args.readme:
        replace_readme_block(readme, args.block, md_path.read_text())
        print(f"README.md updated ({args.block} block)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
