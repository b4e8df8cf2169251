"""Recipes made real: train a recipe's members, gather its runs, predict, grade and submit.

:func:`gather` is what the notebooks call: it trains the members still missing (each
resumable, in the run folder ``ibsr-seg train`` would use) or, with
``train_missing=False``, picks up only those already trained. :func:`run_recipe` is
``ibsr-seg recipe run``: it gathers, then predicts the ``Validation_Set`` and the
``Test_Set`` with every member, ensemble and the result, grades the validation
predictions as notebook 06 does, and writes ``results.md``, ``results.csv`` and a checked
submission folder (+ ``.zip``).
"""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ibsr_helpers.errors import IBSRError
from ibsr_helpers.recipes import (
    Recipe,
    member_config,
    member_folder,
    member_profile,
    results_file,
    train_command,
)

__all__ = [
    "Gathered",
    "gather",
    "finished_run",
    "ScoredRecipe",
    "score_recipe",
    "split_folder",
    "RecipeReport",
    "run_recipe",
]


@dataclass
class Gathered:
    """A recipe's runs that are ready, by member name.

    Attributes:
        folders: Member name -> run folder (finished runs only).
        commands: Member name -> the ``ibsr-seg train`` command of its run.
        best_dice: Member name -> its best validation mean Dice during training.
        missing: Members not trained (``train_missing=False``).
    """

    folders: dict[str, Path] = field(default_factory=dict)
    commands: dict[str, str] = field(default_factory=dict)
    best_dice: dict[str, float] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)

    def runs(self, device: str | None = None) -> dict[str, Any]:
        """Member name -> :class:`~ibsr_helpers.inference.Run` (best weights), loaded once."""
        from ibsr_helpers.environment import get_device
        from ibsr_helpers.inference import load_run

        dev = get_device(device)
        return {name: load_run(folder, dev) for name, folder in self.folders.items()}


def finished_run(folder: str | Path, data_dir: str | Path) -> bool:
    """Whether ``folder`` holds a finished run trained on ``data_dir``'s data."""
    import torch

    from ibsr_helpers.provenance import data_record, read_data_record, record_difference

    last = Path(folder) / "last.pt"
    if not last.is_file():
        return False
    if record_difference(read_data_record(folder), data_record(data_dir)) is not None:
        return False
    return bool(torch.load(last, map_location="cpu", weights_only=True).get("finished"))


def _announce(
    recipe: Recipe, todo: list[str], configs: dict[str, dict], profile: str | None
) -> None:
    """One line before training: what is missing and how long it should take."""
    budgets = [configs[n]["train"].get("minutes") for n in todo]
    known = [b for b in budgets if b]
    parts = []
    if known:
        parts.append(
            f"about {sum(known) * 1.1:.0f} min for the {len(known)} with a training budget "
            "(train.minutes, and their validations)"
        )
    natural = all(
        member_profile(m, profile, say=False) == member_profile(m, None, say=False)
        for m in recipe.members
    )
    if natural and recipe.minutes.get("cpu"):
        parts.append(
            f"about {recipe.minutes['cpu']:g} min on a 2-core CPU for the whole recipe "
            f"(configs/recipes/{recipe.name}.yaml)"
        )
    estimate = "; ".join(parts) or "not estimated (no training budget at this profile)"
    print(
        f"{recipe.name}: {len(todo)} of {len(configs)} runs to train ({', '.join(todo)}); "
        f"expected: {estimate}; an interrupted run resumes where it stopped"
    )


def gather(
    recipe: Recipe,
    data_dir: str | Path,
    runs_dir: str | Path,
    profile: str | None = None,
    seed: int = 0,
    train_missing: bool = True,
    progress: bool = True,
    members: Sequence[str] | None = None,
) -> Gathered:
    """A recipe's trained runs, training those still missing.

    Args:
        recipe: From :func:`ibsr_helpers.recipes.load_recipe`.
        data_dir: IBSR18 or demo data.
        runs_dir: The runs folder the notebooks share (``notebooks/runs``).
        profile: Overrides the members' profiles (see
            :func:`ibsr_helpers.recipes.member_config`).
        seed: The seed of members that name none.
        train_missing: Train (or resume) what is missing; if False, gather only the
            finished runs and list the others in ``missing`` with one line each.
        progress: Show training progress.
        members: Only these members (default: all).

    Returns:
        A :class:`Gathered`, members in the recipe's order.
    """
    from ibsr_helpers.plots import TrainingFigures
    from ibsr_helpers.provenance import describe_record, read_data_record
    from ibsr_helpers.training import standard_handlers, train

    chosen = [recipe.member(n) for n in members] if members else list(recipe.members)
    configs = {m.name: member_config(m, profile, seed) for m in chosen}
    folders = {m.name: member_folder(m, runs_dir, configs[m.name]) for m in chosen}
    done = {n: finished_run(f, data_dir) for n, f in folders.items()}
    todo = [n for n in folders if not done[n]]
    if todo and train_missing:
        _announce(recipe, todo, configs, profile)
    out = Gathered()
    for m in chosen:
        folder, command = folders[m.name], train_command(m, configs[m.name], folders[m.name])
        out.commands[m.name] = command
        if not done[m.name] and not train_missing:
            out.missing.append(m.name)
            print(f"{recipe.name}: {m.name} not trained yet ({command})")
            continue
        handlers = [*standard_handlers(progress), TrainingFigures()]
        result = train(configs[m.name], data_dir, folder, True, progress, "retrain", handlers)
        state = "trained now" if result.trained else "found"
        data = describe_record(read_data_record(folder))
        print(
            f"{m.name}: {folder} ({state} on {data}; "
            f"best validation mean Dice {result.best_dice:.4f})"
        )
        out.folders[m.name] = folder
        out.best_dice[m.name] = result.best_dice
    return out


@dataclass
class ScoredRecipe:
    """A gathered recipe's rows, scored for a results table (see :func:`score_recipe`).

    Attributes:
        runs: Row-prefixed member name -> loaded run.
        members: Row name -> the row-prefixed members it averages (TTA rows left out).
        scores: :func:`ibsr_helpers.evaluation.evaluate_runs` rows of every predictor.
        names: The row names, in the recipe's order.
    """

    runs: dict[str, Any]
    members: dict[str, list[str]]
    scores: Any
    names: list[str]


def score_recipe(
    recipe: Recipe,
    gathered: Gathered,
    volumes: Sequence[Any],
    segmentations: dict[str, dict[str, Any]] | None = None,
    prefix: str | None = None,
    device: str | None = None,
) -> ScoredRecipe:
    """Score every row a recipe reports (members, ensembles, the result ± TTA).

    Row names start with ``prefix`` (default ``"<recipe>: "``), so they join another
    results table (notebook 06's) without clashing with its own runs.

    Args:
        recipe: The recipe.
        gathered: Its runs (:func:`gather`); every member must be there.
        volumes: Labelled volumes to score on.
        segmentations: Filled with ``row -> subject -> segmentation`` if given.
        prefix: Put before every row name.
        device: Torch device (default: the best available).

    Returns:
        A :class:`ScoredRecipe`.

    Raises:
        IBSRError: If a member has no finished run.
    """
    from ibsr_helpers.evaluation import evaluate_runs

    if gathered.missing:
        raise IBSRError(
            f"{recipe.name}: {', '.join(gathered.missing)} not trained yet: "
            "gather it with train_missing=True first"
        )
    prefix = f"{recipe.name}: " if prefix is None else prefix
    loaded = {prefix + n: r for n, r in gathered.runs(device).items()}
    rows = {
        prefix + n: ([prefix + m for m in ms], tta) for n, (ms, tta) in recipe.predictors().items()
    }
    scores = evaluate_runs(  # one call: the TTA rows reuse their members' plain passes
        {n: [loaded[m] for m in ms] for n, (ms, _) in rows.items()},
        volumes,
        tta=[n for n, (_, tta) in rows.items() if tta],
        hd=True,
        segmentations=segmentations,
    )
    members = {n: ms for n, (ms, tta) in rows.items() if not tta}
    return ScoredRecipe(loaded, members, scores, list(rows))


def split_folder(root: str | Path, split: str) -> Path:
    """The folder of one split (``val``: ``Validation_Set``) in the course layout.

    Raises:
        IBSRError: If ``root`` is not in the course layout.
    """
    from ibsr_helpers.layout import COURSE_DIR, SPLIT_DIRS

    root = Path(root)
    for base in (root / COURSE_DIR, root):
        if (base / SPLIT_DIRS[split]).is_dir():
            return base / SPLIT_DIRS[split]
    raise IBSRError(
        f"no {COURSE_DIR}/{SPLIT_DIRS[split]} folder: a recipe run needs the course layout", root
    )


@dataclass
class RecipeReport:
    """What :func:`run_recipe` wrote and found.

    Attributes:
        table: The results table (one row per member, ensemble and the result).
        result: The result's row name.
        mean_dice: The result's validation mean Dice.
        csf_dice: The result's validation CSF Dice.
        minutes: Wall minutes of the whole run.
        paths: ``results.csv``, ``results.md``, the submission folder and its zip.
    """

    table: Any
    result: str
    mean_dice: float
    csf_dice: float
    minutes: float
    paths: list[Path]


def _slug(name: str) -> str:
    return re.sub(r"\W+", "-", name).strip("-")


def _record(recipe: Recipe, report: RecipeReport, made_by: str) -> Path:
    """Append a run's result to ``benchmarks/results/recipes.csv``."""
    import csv

    from ibsr_helpers.profiling import hardware_summary

    hw = hardware_summary()
    path = results_file()
    row = {
        "recipe": recipe.name,
        "mean_dice": f"{report.mean_dice:.4f}",
        "csf_dice": f"{report.csf_dice:.4f}",
        "minutes": f"{report.minutes:.0f}",
        "date": time.strftime("%Y-%m-%d"),
        "hardware": f"{hw['cpu']} (bf16: {hw['cpu_bf16']}), {hw['cores']} cores, GPU {hw['gpu']}",
        "made_by": made_by,
    }
    new = not path.is_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(row))
        if new:
            writer.writeheader()
        writer.writerow(row)
    return path


def run_recipe(
    recipe: Recipe,
    data_dir: str | Path | None,
    out_dir: str | Path,
    runs_dir: str | Path,
    profile: str | None = None,
    device: str | None = None,
    record: bool = False,
    progress: bool = True,
) -> RecipeReport:
    """Train what a recipe lacks, then predict, grade and submit (``ibsr-seg recipe run``).

    Args:
        recipe: The recipe.
        data_dir: IBSR18 or demo data in the course layout (None: found as usual).
        out_dir: Receives ``results.md``, ``results.csv``, ``predictions/{val,test}/<row>/``
            and ``submission/`` (+ ``submission.zip``): the result on the Test_Set.
        runs_dir: Where the members' runs are (and are trained).
        profile: Overrides the members' profiles (``smoke`` for a check).
        device: Torch device for prediction (default: the best available).
        record: Append the result to ``benchmarks/results/recipes.csv``.
        progress: Show progress bars.

    Returns:
        A :class:`RecipeReport`.
    """
    import pandas as pd

    from ibsr_helpers.data import resolve_data_dir
    from ibsr_helpers.environment import get_device
    from ibsr_helpers.evaluation import results_table, write_results
    from ibsr_helpers.inference import predict_folders
    from ibsr_helpers.provenance import about
    from ibsr_helpers.submissions import check_predictions, evaluate_folders

    start = time.time()
    root, _ = resolve_data_dir(data_dir)
    val_dir, test_dir = split_folder(root, "val"), split_folder(root, "test")
    out_dir = Path(out_dir)
    gathered = gather(recipe, root, runs_dir, profile, progress=progress)
    rows = recipe.predictors()
    where = {s: {n: out_dir / "predictions" / s / _slug(n) for n in rows} for s in ("val", "test")}
    dev = get_device(device)
    for split, inputs in (("val", val_dir), ("test", test_dir)):
        jobs = {
            where[split][n]: ([gathered.folders[m] for m in ms], t) for n, (ms, t) in rows.items()
        }
        for folder in jobs:
            shutil.rmtree(folder, ignore_errors=True)  # this run's predictions only
        predict_folders(jobs, inputs, dev, progress=progress)
    graded = {
        n: evaluate_folders(where["val"][n], val_dir, progress=False, strict=True) for n in rows
    }
    scores = [g.scores.assign(name=n) for n, g in graded.items()]
    table = results_table(pd.concat(scores, ignore_index=True))
    submission = out_dir / "submission"
    shutil.rmtree(submission, ignore_errors=True)
    shutil.copytree(where["test"][recipe.result_name], submission)
    check = check_predictions(submission, test_dir)
    if not bool(check.drop(columns="subject").all().all()):
        raise IBSRError(f"a Test_Set prediction fails its checks:\n{check}", submission)
    archive = Path(shutil.make_archive(str(submission), "zip", submission))
    made_by = f"ibsr-seg recipe run {recipe.name}" + (f" --profile {profile}" if profile else "")
    header = about(
        root,
        **{
            "made by": made_by,
            "recipe": f"{recipe.name}: {recipe.description}",
            "training commands": "; ".join(f"{n}: `{c}`" for n, c in gathered.commands.items()),
            "result": f"{recipe.result_name} (submitted: {archive.name}, every check passed)",
        },
    )
    csv_path, md_path = write_results(table, out_dir, header)
    result = table.loc[recipe.result_name]
    report = RecipeReport(
        table,
        recipe.result_name,
        float(result["mean Dice"]),
        float(result["Dice CSF"]),
        (time.time() - start) / 60,
        [csv_path, md_path, submission, archive],
    )
    if record:
        report.paths.append(_record(recipe, report, made_by))
    return report
