"""Grading a class: every student's predictions scored on every ground-truth subject.

``ibsr-seg grade --submissions DIR --gt DIR --out DIR`` (:func:`grade`). ``DIR`` holds one
folder or one ``.zip`` per student, named for the student (``alice/``, ``bob.zip``), with
``ID_seg.nii.gz`` (or ``ID.nii.gz``) predictions at any depth. Each submission is scored by
:func:`ibsr_helpers.submissions.evaluate_folders` with ``keep_going``: a file with the wrong
shape, affine or label values is recorded for its student and scored as missing (Dice 0),
and the class goes on. Written to ``--out``:

* ``leaderboard.md`` (under :func:`~ibsr_helpers.submissions.report_header`'s lines),
  ``leaderboard.csv`` and ``leaderboard.html``: one row per student, best mean Dice
  first, with per-tissue Dice and HD95 and each student's missing, extra and bad files;
* ``<student>/results.json`` in Gradescope's autograder format: one test per
  ground-truth subject, the score the mean Dice over all of them x 100.

Example:
    >>> grade("submissions", "IBSR18/TrainingValidationTestSets/Validation_Set", "grades")
    ... # doctest: +SKIP
"""

from __future__ import annotations

import html
import json
import os
import tempfile
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm.auto import tqdm

from ibsr_helpers.errors import IBSRError
from ibsr_helpers.evaluation import results_table
from ibsr_helpers.layout import NIFTI_SUFFIXES, TISSUES
from ibsr_helpers.submissions import FolderScores, evaluate_folders, report_header

__all__ = [
    "LEADERBOARD_FILES",
    "Graded",
    "ClassGrades",
    "find_submissions",
    "grade_submission",
    "grade_class",
    "leaderboard",
    "leaderboard_markdown",
    "gradescope_results",
    "write_grades",
    "grade",
]

#: The files a grading run writes in its output folder (plus ``<student>/results.json``).
LEADERBOARD_FILES: tuple[str, ...] = ("leaderboard.md", "leaderboard.csv", "leaderboard.html")


@dataclass(frozen=True)
class Graded:
    """One student's graded submission.

    Attributes:
        student: The folder's name or the zip's stem.
        path: The submission (folder or ``.zip``).
        result: Its scores on every ground-truth subject, and what did not match.
        other_files: Files that are not NIfTI, relative to the submission (not graded).
        problem: Why the submission itself could not be read (e.g. a corrupt zip: every
            subject is then missing), or None.
    """

    student: str
    path: Path
    result: FolderScores
    other_files: list[Path]
    problem: str | None = None

    @property
    def mean_dice(self) -> float:
        """Mean Dice over every ground-truth subject (each subject's mean over tissues)."""
        return float(self.result.scores.groupby("subject")["dice"].mean().mean())


@dataclass(frozen=True)
class ClassGrades:
    """A graded class: the leaderboard, what was not a submission, the files written."""

    table: pd.DataFrame
    not_submissions: list[Path]
    paths: list[Path]


def find_submissions(folder: str | Path) -> tuple[dict[str, Path], list[Path]]:
    """The students' submissions in a folder.

    Args:
        folder: Holds one folder or one ``.zip`` per student.

    Returns:
        ``(student -> folder or zip, sorted by name; the entries that are neither, or
        whose name starts with a dot)``: the latter are listed, not graded.

    Raises:
        IBSRError: If the folder is missing, holds no submission, or a student has both a
            folder and a zip.
    """
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise IBSRError("submissions folder not found", folder)
    found: dict[str, Path] = {}
    other: list[Path] = []
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            other.append(entry)
            continue
        if entry.is_dir():
            student = entry.name
        elif entry.is_file() and entry.suffix.lower() == ".zip":
            student = entry.stem
        else:
            other.append(entry)
            continue
        if student in found:
            raise IBSRError(
                f"two submissions for student {student}: {found[student].name} and "
                f"{entry.name} (keep one)",
                folder,
            )
        found[student] = entry
    if not found:
        raise IBSRError("no submissions: expected one folder or .zip per student", folder)
    return found, other


def _other_files(root: Path) -> list[Path]:
    """Every file under ``root`` that is not NIfTI, relative to it, sorted."""
    return sorted(
        (Path(folder) / name).relative_to(root)
        for folder, _, names in os.walk(root, followlinks=True)
        for name in names
        if not name.endswith(NIFTI_SUFFIXES)
    )


def grade_submission(student: str, path: str | Path, gt_dir: str | Path) -> Graded:
    """Score one student's folder or zip on every ground-truth subject.

    A bad prediction (two files for a subject, unreadable, wrong shape, affine or label
    values) and an unreadable zip are recorded in the result, never raised.

    Args:
        student: The student's name.
        path: Their folder or ``.zip``.
        gt_dir: The ground-truth labels.

    Returns:
        The graded submission.

    Raises:
        IBSRError: If the ground truth is missing or unreadable (the class cannot be
            graded).
    """
    path = Path(path)
    if path.is_dir():
        result = evaluate_folders(path, gt_dir, progress=False, keep_going=True)
        return Graded(student, path, result, _other_files(path))
    with tempfile.TemporaryDirectory(prefix="ibsr-grade-") as tmp:
        files, problem = Path(tmp) / "files", None
        try:
            with zipfile.ZipFile(path) as archive:
                archive.extractall(files)  # member names are made safe by zipfile
        except Exception as exc:  # BadZipFile, zlib.error, EOFError, encrypted, ...
            problem = f"{path.name}: not a readable zip file ({type(exc).__name__}: {exc})"
            files = Path(tmp) / "nothing"  # graded as empty: every subject missing
        files.mkdir(exist_ok=True)
        result = evaluate_folders(files, gt_dir, progress=False, keep_going=True)
        return Graded(student, path, result, _other_files(files), problem)


def grade_class(
    submissions_dir: str | Path, gt_dir: str | Path, progress: bool = True
) -> tuple[list[Graded], list[Path]]:
    """Score every student's submission on every ground-truth subject.

    Args:
        submissions_dir: One folder or ``.zip`` per student.
        gt_dir: The ground-truth labels (e.g. the ``Validation_Set`` folder).
        progress: Show a tqdm bar over the students.

    Returns:
        ``(each student's grade, sorted by name; entries that are not submissions)``.

    Raises:
        IBSRError: As :func:`find_submissions`, or if the ground truth cannot be read.
    """
    submissions, other = find_submissions(submissions_dir)
    graded = [
        grade_submission(student, path, gt_dir)
        for student, path in tqdm(
            submissions.items(), desc="grading", unit="student", disable=not progress
        )
    ]
    return graded, other


def _bad_text(g: Graded) -> str:
    parts = [g.problem] if g.problem else []
    parts += [f"{sid}: {problem}" for sid, problem in g.result.bad.items()]
    return "; ".join(parts)


def leaderboard(graded: Sequence[Graded]) -> pd.DataFrame:
    """One row per student, best mean Dice first (ties share a rank, then by name).

    Args:
        graded: From :func:`grade_class`.

    Returns:
        Columns ``rank, student, mean Dice, Dice CSF/GM/WM, HD95 CSF/GM/WM (mm), scored``
        (``k/n`` subjects with a usable prediction), ``missing`` (subject ids), ``extra``
        (files not graded: no ground truth, or not NIfTI) and ``bad`` (file: problem);
        every mean is over all ground-truth subjects, a missing or bad one counting as
        Dice 0 and the worst HD95.
    """
    scores = pd.concat(
        [g.result.scores.assign(student=g.student) for g in graded], ignore_index=True
    )
    table = results_table(scores, by="student")
    rows = []
    for g in graded:
        status = g.result.scores.groupby("subject")["status"].first()
        rows.append(
            {
                "student": g.student,
                "mean Dice": table.loc[g.student, "mean Dice"],
                **{f"Dice {t}": table.loc[g.student, f"Dice {t}"] for t in TISSUES},
                **{f"HD95 {t} (mm)": table.loc[g.student, f"HD95 {t}"] for t in TISSUES},
                "scored": f"{int((status == 'scored').sum())}/{len(status)}",
                "missing": ", ".join(g.result.missing),
                "extra": ", ".join(
                    [*map(str, g.result.extra), *(f"{p} (not NIfTI)" for p in g.other_files)]
                ),
                "bad": _bad_text(g),
            }
        )
    out = pd.DataFrame(rows).sort_values(["mean Dice", "student"], ascending=[False, True])
    out.insert(0, "rank", out["mean Dice"].rank(method="min", ascending=False).astype(int))
    return out.reset_index(drop=True)


def _shown(table: pd.DataFrame) -> pd.DataFrame:
    """The leaderboard with its numbers rounded for reading (Dice 3 decimals, HD95 1)."""
    shown = table.copy()
    for column in shown.columns:
        if column.startswith(("Dice", "mean Dice")):
            shown[column] = shown[column].map("{:.3f}".format)
        elif column.startswith("HD95"):
            shown[column] = shown[column].map("{:.1f}".format)
    return shown


def leaderboard_markdown(table: pd.DataFrame) -> str:
    """The leaderboard as a Markdown table (numbers rounded), for the terminal and a file."""
    numbers = ("rank", "mean Dice", "Dice", "HD95", "scored")
    align = tuple("right" if c.startswith(numbers) else "left" for c in table.columns)
    return _shown(table).to_markdown(index=False, disable_numparse=True, colalign=align)


def gradescope_results(g: Graded) -> dict[str, Any]:
    """A student's grade in Gradescope's autograder ``results.json`` format.

    One test per ground-truth subject, worth ``100 / n``, scoring its mean Dice over
    CSF, GM and WM times that (a missing or bad prediction: 0, the reason in its
    output); the top-level ``score`` is the mean Dice over all subjects x 100, and a
    ``leaderboard`` entry carries the mean Dice.

    Args:
        g: One graded submission.

    Returns:
        The JSON object (``score``, ``output``, ``tests``, ``leaderboard``).
    """
    scores, bad = g.result.scores, g.result.bad
    subjects = g.result.subjects
    worth = 100.0 / len(subjects)
    tests = []
    for sid in subjects:
        rows = scores[scores["subject"] == sid].set_index("tissue")
        status = rows["status"].iloc[0]
        if status == "scored":
            output = "; ".join(
                f"{t}: Dice {rows.loc[t, 'dice']:.3f}, HD95 {rows.loc[t, 'hd95']:.1f} mm"
                for t in TISSUES
            )
        elif status == "missing":
            output = f"no prediction {sid}_seg.nii.gz in the submission: scored Dice 0"
        else:
            output = f"could not be scored ({bad[sid]}): scored Dice 0"
        tests.append(
            {
                "name": f"{sid}: mean Dice over {', '.join(TISSUES)}",
                "score": round(float(rows["dice"].mean()) * worth, 4),
                "max_score": round(worth, 4),
                "status": "passed" if status == "scored" else "failed",
                "output": output,
            }
        )
    notes = [f"{g.problem}: every subject scored as missing"] if g.problem else []
    notes += [f"{name}: {text}" for name, text in g.result.summary_lines().items()]
    if g.other_files:
        notes.append(f"not NIfTI, not graded: {', '.join(map(str, g.other_files))}")
    return {
        "score": round(g.mean_dice * 100, 2),
        "output": f"Mean Dice over {len(subjects)} subjects: {g.mean_dice:.3f}\n"
        + "\n".join(notes),
        "tests": tests,
        "leaderboard": [{"name": "mean Dice", "value": round(g.mean_dice, 4)}],
    }


def write_grades(
    graded: Sequence[Graded], out_dir: str | Path, about: Mapping[str, str] | None = None
) -> list[Path]:
    """Write the leaderboard (Markdown, CSV, HTML) and each student's ``results.json``.

    Args:
        graded: From :func:`grade_class`.
        out_dir: The output folder (created).
        about: Header lines for the Markdown and HTML, e.g. from
            :func:`~ibsr_helpers.submissions.report_header`.

    Returns:
        The paths written: the three leaderboards, then one ``results.json`` per student.
    """
    out_dir = Path(out_dir).expanduser()
    out_dir.mkdir(parents=True, exist_ok=True)
    table = leaderboard(graded)
    md, csv, page = (out_dir / name for name in LEADERBOARD_FILES)
    header = [f"- **{k}**: {v}" for k, v in (about or {}).items()]
    md.write_text("\n".join(["# Leaderboard", "", *header, "", leaderboard_markdown(table), ""]))
    table.to_csv(csv, index=False)
    items = "".join(
        f"<li><b>{html.escape(k)}</b>: {html.escape(v)}</li>" for k, v in (about or {}).items()
    )
    page.write_text(
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>Leaderboard</title></head>"
        f"<body><h1>Leaderboard</h1><ul>{items}</ul>\n"
        f"{_shown(table).to_html(index=False)}\n</body></html>\n",
        encoding="utf-8",
    )
    paths = [md, csv, page]
    for g in graded:
        path = out_dir / g.student / "results.json"
        path.parent.mkdir(exist_ok=True)
        path.write_text(json.dumps(gradescope_results(g), indent=2) + "\n")
        paths.append(path)
    return paths


def grade(
    submissions_dir: str | Path,
    gt_dir: str | Path,
    out_dir: str | Path,
    command: str | None = None,
    progress: bool = True,
) -> ClassGrades:
    """Grade a class and write its leaderboard and Gradescope results (``ibsr-seg grade``).

    Args:
        submissions_dir: One folder or ``.zip`` per student.
        gt_dir: The ground-truth labels.
        out_dir: Where to write (must not lie inside ``submissions_dir``).
        command: The command line, for the leaderboard's header.
        progress: Show a tqdm bar over the students.

    Returns:
        The leaderboard, the entries that were not submissions, and the paths written.

    Raises:
        IBSRError: If ``out_dir`` lies inside ``submissions_dir``, or as
            :func:`grade_class`.
    """
    submissions_dir = Path(submissions_dir).expanduser()
    out_dir = Path(out_dir).expanduser()
    if out_dir.resolve().is_relative_to(submissions_dir.resolve()):
        raise IBSRError(
            f"the output folder lies inside the submissions folder {submissions_dir} "
            "(it would be graded as a student next time)",
            out_dir,
        )
    graded, other = grade_class(submissions_dir, gt_dir, progress=progress)
    about = report_header(gt_dir, **({"command": command} if command else {}))
    about["students"] = f"{len(graded)} ({', '.join(g.student for g in graded)})"
    if other:
        about["not graded (not a folder or .zip, or hidden)"] = ", ".join(p.name for p in other)
    paths = write_grades(graded, out_dir, about)
    return ClassGrades(leaderboard(graded), other, paths)
