"""``ibsr-seg``: the course's code, headless, for instructors and GPU servers.

Subcommands::

    ibsr-seg demo-data --out DIR [--subjects N] [--seed S]
    ibsr-seg train --config FILE [--profile quick|cpu|full|smoke] [--data DIR] [--out DIR]
                   [--resume] [--set key=value ...]
    ibsr-seg predict --run RUN_DIR [--run RUN_DIR ...] --input PATH [PATH ...] --out DIR
                     [--tta] [--postprocess mask,largest:WM,min:CSF=20]
    ibsr-seg evaluate --pred DIR --gt DIR [--out metrics.csv] [--report DIR]
                      [--postprocess ...] [--strict]
    ibsr-seg grade --submissions DIR --gt DIR --out DIR
    ibsr-seg recipe list
    ibsr-seg recipe run NAME [--data DIR] [--out DIR] [--runs DIR] [--profile P] [--record]
    ibsr-seg notebooks [--profile quick] [--out reports] [--data DIR] [--record] [--sync-repository]
    ibsr-seg report [--reports reports] [--readme README.md] [--images images]

``predict --input`` takes NIfTI files under any names and folders of them at any depth
(the course's ``Test_Set``, BIDS data sets), skipping label maps ``*_seg``/``*_dseg`` in
folders (a line says how many); each image gets ``<stem>_seg.nii.gz`` at its path relative
to the input folder (``--input Test_Set``: ``OUT/IBSR_02/IBSR_02_seg.nii.gz``), or directly
in ``--out`` for a file given by name (:mod:`ibsr_helpers.scans`).

Bad input (a missing folder, a corrupt file, a bad setting, a 4-D series or a label map
given as a scan, two inputs writing the same output) prints one line naming the file and
the problem, and exits with status 2; files already written stay.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

from ibsr_helpers.errors import IBSRError

__all__ = ["main", "build_parser"]


def _demo(args: argparse.Namespace) -> None:
    from ibsr_helpers.data import DEMO_DESCRIPTION
    from ibsr_helpers.demo import make_demo_dataset

    out = make_demo_dataset(args.out, n_subjects=args.subjects, seed=args.seed)
    print(f"wrote {args.subjects} subjects of {DEMO_DESCRIPTION} to {out}")


def _train(args: argparse.Namespace) -> None:
    from ibsr_helpers.config import load_config
    from ibsr_helpers.data import describe_source, resolve_data_dir
    from ibsr_helpers.plots import TrainingFigures
    from ibsr_helpers.training import run_folder, standard_handlers, train

    config = load_config(args.config, args.profile, args.set or [])
    data_dir, _ = resolve_data_dir(args.data)
    out = Path(args.out) if args.out else run_folder("runs", config)
    print(f"training {config['model']['name']} ({args.profile}) on {describe_source(data_dir)}")
    handlers = [*standard_handlers(), TrainingFigures()]  # curves.png, val_overlay.png
    result = train(config, data_dir, out, resume=args.resume, handlers=handlers)
    print(
        f"best validation mean Dice {result.best_dice:.4f} at epoch {result.best_epoch + 1}; "
        f"run folder {result.run_dir} ({result.seconds / 60:.1f} min)"
    )


def _predict(args: argparse.Namespace) -> None:
    from ibsr_helpers.environment import get_device
    from ibsr_helpers.inference import predict_folder
    from ibsr_helpers.postprocessing import PostProcessing

    post = PostProcessing.parse(args.postprocess)
    written = predict_folder(
        args.run,
        args.input,
        args.out,
        tta=args.tta,
        device=get_device(args.device),
        postprocess=post if post.active else None,
    )
    print(f"wrote {len(written)} segmentations to {args.out} (post-processing: {post})")


def _evaluate(args: argparse.Namespace) -> None:
    from ibsr_helpers.evaluation import (
        format_summary,
        results_table,
        write_metrics_csv,
        write_results,
    )
    from ibsr_helpers.postprocessing import PostProcessing
    from ibsr_helpers.submissions import evaluate_folders, report_header

    post = PostProcessing.parse(args.postprocess)
    result = evaluate_folders(
        args.pred, args.gt, postprocess=post if post.active else None, strict=args.strict
    )
    df = result.scores
    if args.out:
        write_metrics_csv(df, args.out)
    print(format_summary(df))
    for name, text in result.summary_lines().items():
        print(f"{name}: {text}")
    if args.out:
        print(f"per-subject metrics: {args.out}")
    if args.report:
        name = Path(args.pred).name
        extra = {"command": "ibsr-seg " + " ".join(sys.argv[1:]), "post-processing": str(post)}
        about = {**report_header(args.gt, **extra), **result.summary_lines()}
        paths = write_results(results_table(df.assign(name=name)), args.report, about)
        print(f"results table: {paths[0]} and {paths[1]}")


def _grade(args: argparse.Namespace) -> None:
    from ibsr_helpers.grading import grade, leaderboard_markdown

    grades = grade(
        args.submissions, args.gt, args.out, command="ibsr-seg " + " ".join(sys.argv[1:])
    )
    print(leaderboard_markdown(grades.table))
    if grades.not_submissions:
        names = ", ".join(p.name for p in grades.not_submissions)
        print(f"not graded (not a folder or .zip, or hidden): {names}")
    board, students = grades.paths[:3], grades.paths[3:]
    print(f"wrote {', '.join(map(str, board))} and {len(students)} <student>/results.json")


def _recipe_list(args: argparse.Namespace) -> None:
    from ibsr_helpers.recipes import all_recipes, describe_recipe

    print("\n\n".join(describe_recipe(r) for r in all_recipes().values()))


def _default_runs() -> Path:
    """The notebooks' runs folder in a checkout (so notebook 06 finds the runs), else runs."""
    from ibsr_helpers.data import project_root

    root = project_root()
    return root / "notebooks" / "runs" if root else Path("runs")


def _recipe_run(args: argparse.Namespace) -> None:
    from ibsr_helpers.cookbook import run_recipe
    from ibsr_helpers.recipes import load_recipe

    recipe = load_recipe(args.name)
    runs = Path(args.runs) if args.runs else _default_runs()
    out = Path(args.out) if args.out else Path("reports") / "recipes" / recipe.name
    print(f"recipe {recipe.name}: runs in {runs}, results in {out}")
    report = run_recipe(recipe, args.data, out, runs, args.profile, args.device, args.record)
    print(report.table.round(4).to_string())
    print(
        f"{recipe.name}: {report.result}: validation mean Dice {report.mean_dice:.4f} "
        f"(CSF {report.csf_dice:.4f}) in {report.minutes:.1f} min; wrote "
        + ", ".join(str(p) for p in report.paths)
    )


def _notebooks(args: argparse.Namespace) -> None:
    from ibsr_helpers.course import repository, run_course, sync_repository

    if args.sync_repository:
        changed = sync_repository()
        print(f"repository {repository()}: {len(changed)} notebook(s) updated")
        return
    if args.record:
        from ibsr_helpers.course import record_notebooks

        record_notebooks(args.data, args.only, args.out)
        return
    run_course(args.out, profile=args.profile, data_dir=args.data, only=args.only)


def _report(args: argparse.Namespace) -> None:
    from ibsr_helpers.course import update_readme

    for path in update_readme(args.reports, args.readme, args.images):
        print(f"wrote {path}")


def build_parser() -> argparse.ArgumentParser:
    """The ``ibsr-seg`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="ibsr-seg",
        description=__doc__.split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo-data", help="write an IBSR-like demo set (MNI152-derived)")
    p.add_argument("--out", required=True, help="folder to write")
    p.add_argument("--subjects", type=int, default=6, help="number of subjects (default 6)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.set_defaults(func=_demo)

    p = sub.add_parser("train", help="train a model from a YAML config")
    p.add_argument("--config", required=True, help="configs/<model>.yaml")
    p.add_argument(
        "--profile",
        default="quick",
        help="profile in the config: quick (CPU minutes), cpu (CPU recipe), full (GPU), smoke",
    )
    p.add_argument(
        "--data",
        default=None,
        help="data folder (default: IBSR18_DIR, data/IBSR18, else demo data)",
    )
    p.add_argument("--out", default=None, help="run folder (default runs/<name>-<profile>[-seedN])")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set train.epochs=3",
    )
    p.set_defaults(func=_train)

    p = sub.add_parser("predict", help="segment NIfTI scans: files or folders of them")
    p.add_argument(
        "--run", action="append", required=True, help="run folder; repeat for an ensemble"
    )
    p.add_argument(
        "--input",
        action="extend",
        nargs="+",
        required=True,
        metavar="PATH",
        help="NIfTI files (.nii, .nii.gz, any name) or folders of them at any depth, e.g. "
        "Test_Set or a BIDS data set (*_seg/*_dseg label maps in folders are skipped); "
        "several after one --input or --input repeated",
    )
    p.add_argument(
        "--out",
        required=True,
        help="folder for the predictions: <stem>_seg.nii.gz at each image's path under its "
        "input folder (directly here for a file given by name)",
    )
    p.add_argument("--tta", action="store_true", help="flip test-time augmentation")
    p.add_argument("--device", default="auto", help="cpu, cuda, mps or auto (default)")
    p.add_argument(
        "--postprocess",
        default=None,
        help="clean-ups: mask (background where the image is 0), largest:TISSUE, "
        "min:TISSUE=VOXELS, comma-separated (default none; notebook 06 measures them)",
    )
    p.set_defaults(func=_predict)

    p = sub.add_parser("evaluate", help="score predictions against labels")
    p.add_argument("--pred", required=True, help="folder with predictions")
    p.add_argument(
        "--gt", required=True, help="folder with ID_seg.nii.gz labels (each one is graded)"
    )
    p.add_argument("--out", default=None, help="CSV of per-subject metrics")
    p.add_argument("--report", default=None, help="write results.csv / results.md here")
    p.add_argument(
        "--postprocess", default=None, help="clean-ups applied before scoring (as predict)"
    )
    p.add_argument(
        "--strict",
        action="store_true",
        help="fail (exit 2) if a ground-truth subject has no prediction or a prediction has "
        "no ground truth (default: a missing one scores Dice 0, an extra one is listed)",
    )
    p.set_defaults(func=_evaluate)

    p = sub.add_parser("grade", help="grade a class: one folder or .zip of predictions each")
    p.add_argument(
        "--submissions", required=True, help="folder of <student>/ folders or <student>.zip"
    )
    p.add_argument(
        "--gt", required=True, help="folder with ID_seg.nii.gz labels (each one is graded)"
    )
    p.add_argument(
        "--out", required=True, help="folder for the leaderboard and <student>/results.json"
    )
    p.set_defaults(func=_grade)

    p = sub.add_parser("recipe", help="the recipes: list them, or run one end to end")
    recipe = p.add_subparsers(dest="action", required=True)
    r = recipe.add_parser("list", help="each recipe's members, what it reached, its minutes")
    r.set_defaults(func=_recipe_list)
    r = recipe.add_parser(
        "run", help="train a recipe's missing runs, predict, grade, write a submission"
    )
    r.add_argument("name", help="a recipe (ibsr-seg recipe list), e.g. cpu")
    r.add_argument("--data", default=None, help="data folder (default: found or demo)")
    r.add_argument(
        "--out", default=None, help="results and submission (default reports/recipes/NAME)"
    )
    r.add_argument(
        "--runs",
        default=None,
        help="run folders, shared with the notebooks (default notebooks/runs in a checkout)",
    )
    r.add_argument(
        "--profile", default=None, help="train every member at this profile (e.g. smoke)"
    )
    r.add_argument("--device", default=None, help="cpu, cuda, mps (default: the best)")
    r.add_argument(
        "--record", action="store_true", help="append the result to benchmarks/results/recipes.csv"
    )
    r.set_defaults(func=_recipe_run)

    p = sub.add_parser("notebooks", help="execute the course notebooks into a report folder")
    p.add_argument("--profile", default="quick", help="quick (CPU) or full (GPU)")
    p.add_argument("--out", default="reports", help="folder for executed notebooks")
    p.add_argument("--data", default=None, help="data folder (default: found or demo)")
    p.add_argument("--only", nargs="*", default=None, help="notebook numbers, e.g. 00 01")
    p.add_argument(
        "--record",
        action="store_true",
        help="run them on IBSR18 (quick) and keep their outputs in notebooks/ (make record)",
    )
    p.add_argument(
        "--sync-repository",
        action="store_true",
        help="write pyproject.toml's repository address into every notebook's Colab cells",
    )
    p.set_defaults(func=_notebooks)

    p = sub.add_parser("report", help="copy a course run's results into the README and images/")
    p.add_argument("--reports", default="reports", help="the make course output folder")
    p.add_argument("--readme", default="README.md")
    p.add_argument("--images", default="images")
    p.set_defaults(func=_report)
    return parser


def _warning_line(message: Warning | str, *_: object, **__: object) -> None:
    """Print a warning as one line, as errors are (no source line, no category)."""
    print(f"ibsr-seg: warning: {message}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``ibsr-seg``; returns the exit status (2 on bad input)."""
    args = build_parser().parse_args(argv)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _warning_line
            args.func(args)
    except IBSRError as exc:
        print(f"ibsr-seg: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ibsr-seg: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
