"""Scoring trained runs on loaded volumes, and the tables of their results.

:func:`evaluate_runs` scores trained runs and their ensembles on loaded volumes (the
notebooks' comparisons, and the engine's validation). The tables (:func:`summary_table`,
:func:`format_summary`, :func:`dice_table`, :func:`results_table`) are what the README, the
notebooks and the grading reports show. :func:`grid_ceiling` scores what a coarse grid
costs a model that reproduces its training labels. Prediction files on disk are scored by
:mod:`ibsr_helpers.submissions`.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from ibsr_helpers.errors import IBSRError
from ibsr_helpers.layout import TISSUES
from ibsr_helpers.metrics import METRICS, evaluate_segmentation

if TYPE_CHECKING:
    from ibsr_helpers.data import Volume
    from ibsr_helpers.inference import Run
    from ibsr_helpers.postprocessing import PostProcessing

__all__ = [
    "evaluate_runs",
    "summary_table",
    "format_summary",
    "write_metrics_csv",
    "dice_table",
    "results_table",
    "write_results",
    "evaluate_postprocessing",
    "choose_postprocessing",
    "grid_ceiling",
]

_HEADINGS: dict[str, str] = {"dice": "Dice", "hd": "HD (mm)", "hd95": "HD95 (mm)", "avd": "AVD (%)"}
_DECIMALS: dict[str, int] = {"dice": 3, "hd": 2, "hd95": 2, "avd": 2}


def summary_table(df: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard deviation of each metric per tissue, and over tissues.

    The ``"mean"`` row first averages each subject's tissues, then takes the mean and
    sd of those per-subject averages. The sd is the sample sd (n - 1), and 0 for a
    single subject.

    Args:
        df: Per-subject rows as the ``scores`` of :func:`evaluate_folders` (columns ``subject``,
            ``tissue`` and any of ``dice, hd, hd95, avd``).

    Returns:
        Rows ``CSF, GM, WM, mean`` (index ``tissue``); columns ``n`` (subjects) and
        ``<metric>_mean``, ``<metric>_sd`` for each metric present.
    """
    metrics = [m for m in METRICS if m in df.columns]
    groups = [(t, df[df["tissue"] == t]) for t in TISSUES if (df["tissue"] == t).any()]
    per_subject = df.groupby("subject")[metrics].mean()
    groups.append(("mean", per_subject))
    rows = {}
    for name, part in groups:
        row: dict[str, float] = {"n": len(part)}
        for m in metrics:
            row[f"{m}_mean"] = float(part[m].mean())
            row[f"{m}_sd"] = float(part[m].std(ddof=1)) if len(part) > 1 else 0.0
        rows[name] = row
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "tissue"
    table["n"] = table["n"].astype(int)
    return table


def format_summary(df: pd.DataFrame) -> str:
    """Format a ``mean ± sd`` table: one row per tissue, plus the mean over tissues.

    Args:
        df: Per-subject rows as the ``scores`` of :func:`evaluate_folders`.

    Returns:
        A multi-line string with columns Dice, HD (mm), HD95 (mm), AVD (%); its last line
        counts the subjects, and those scored without a usable prediction.
    """
    table = summary_table(df)
    metrics = [m for m in METRICS if f"{m}_mean" in table.columns]
    header = ["tissue", *(_HEADINGS[m] for m in metrics)]
    lines = [header]
    for tissue, row in table.iterrows():
        cells = [str(tissue)]
        for m in metrics:
            d = _DECIMALS[m]
            cells.append(f"{row[f'{m}_mean']:.{d}f} ± {row[f'{m}_sd']:.{d}f}")
        lines.append(cells)
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = [
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(line, widths, strict=True))
        )
        for line in lines
    ]
    n = int(table["n"].iloc[-1]) if len(table) else 0
    text.insert(1, "-" * len(text[0]))
    note = f"{n} subject{'s' if n != 1 else ''}"
    if "status" in df.columns:
        unscored = df.loc[df["status"] != "scored", "subject"].nunique()
        if unscored:
            note += f", {unscored} without a usable prediction scored Dice 0"
    return "\n".join([*text, f"({note}; mean ± sd)"])


def write_metrics_csv(df: pd.DataFrame, path: str | Path) -> Path:
    """Write a metrics table to CSV, creating the parent folder.

    Args:
        df: A table such as the ``scores`` of :func:`evaluate_folders` (written without
            its row numbers) or :func:`summary_table` (written with its ``tissue`` index).
        path: Where to write.

    Returns:
        The path written.
    """
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(path, index=not isinstance(df.index, pd.RangeIndex))
    return path


def evaluate_runs(
    runs: Mapping[str, Run | Sequence[Run]],
    volumes: Sequence[Volume],
    tta: bool | Collection[str] = False,
    hd: bool = False,
    postprocess: Callable[[np.ndarray, Volume], np.ndarray] | None = None,
    progress: bool = False,
    segmentations: dict[str, dict[str, np.ndarray]] | None = None,
) -> pd.DataFrame:
    """Score trained runs, and ensembles of them, on labelled raw volumes.

    Each entry of ``runs`` is one predictor: a run, or a list of runs whose class
    probabilities are averaged (:func:`ibsr_helpers.inference.ensemble_average`). A run
    that appears in several entries is run once per volume: an ensemble of runs already
    evaluated costs only the averaging.

    Args:
        runs: Name to a :class:`~ibsr_helpers.inference.Run` or a list of runs.
        volumes: Labelled subjects as loaded (each run applies its own preprocessing).
        tta: Flip test-time augmentation: True for every entry, or the names of the
            entries that use it (an ensemble with and without TTA, scored in one call,
            shares its members' unmirrored passes).
        hd: Also compute HD and HD95 (about a second per subject and tissue).
        postprocess: Applied to every segmentation before scoring, e.g. a
            :class:`~ibsr_helpers.postprocessing.PostProcessing`.
        progress: Show a progress bar over the volumes.
        segmentations: If given, filled with ``name -> subject id -> segmentation`` (for
            figures and viewers, without predicting again).

    Returns:
        One row per name, subject and tissue: ``name, subject, tissue, dice, avd``
        (``hd, hd95`` with ``hd=True``) and ``seconds``, the prediction time of the
        subject by that predictor (for an ensemble, the sum over its members).

    Raises:
        IBSRError: If a volume has no label or an entry holds no run.
    """
    from ibsr_helpers.inference import Run, predict_shared

    members = {name: [r] if isinstance(r, Run) else list(r) for name, r in runs.items()}
    if any(not m for m in members.values()):
        raise IBSRError("every entry of runs needs at least one run")
    with_tta = set(members) if tta is True else set() if tta is False else set(tta)
    if with_tta - set(members):
        raise IBSRError(f"tta names entries that runs lacks: {sorted(with_tta - set(members))}")
    rows = []
    for vol in tqdm(volumes, desc="evaluating", unit="volume", disable=not progress):
        if vol.label is None:
            raise IBSRError(f"subject {vol.id} has no label to evaluate against", vol.subject.image)
        predictors = {n: (g, n in with_tta) for n, g in members.items()}
        predicted = predict_shared(predictors, vol, postprocess)
        for name, (seg, seconds) in predicted.items():
            if segmentations is not None:
                segmentations.setdefault(name, {})[vol.id] = seg
            scores = evaluate_segmentation(seg, vol.label, vol.spacing, hd=hd)
            rows += [
                {"name": name, "subject": vol.id, "tissue": t, **scores[t], "seconds": seconds}
                for t in TISSUES
            ]
    columns = ["name", "subject", "tissue", "dice", *(["hd", "hd95"] if hd else []), "avd"]
    return pd.DataFrame(rows, columns=[*columns, "seconds"])


def grid_ceiling(
    config: Mapping[str, Any], volumes: Sequence[Volume], reference: Sequence[Volume] | None = None
) -> pd.DataFrame:
    """The Dice of ``config``'s own training labels, brought back from its grid to the scans'.

    Each volume's labels, prepared as a run with ``config`` prepares them (on a coarser grid:
    the targets a model there learns from), go back onto the scan's grid the way a prediction
    does (one-hot probabilities, :func:`~ibsr_helpers.inference.on_scan_grid`,
    :func:`~ibsr_helpers.inference.most_probable`) and are scored against the labels as
    stored: what the grid alone costs a model that reproduces its targets (soft
    probabilities can do slightly better).

    Args:
        config: A resolved config or plan (its ``data`` settings decide the grid).
        volumes: Labelled subjects as loaded.
        reference: The training scans, for ``data.spacing: auto`` (default: ``volumes``).

    Returns:
        One row per subject and tissue: ``name`` ("labels on the grid"), ``subject``,
        ``tissue``, ``dice``, ``avd``.

    Raises:
        IBSRError: If a volume has no label.
    """
    from ibsr_helpers.inference import most_probable, on_scan_grid
    from ibsr_helpers.plan import prepare_for

    rows = []
    for vol, prepared in zip(volumes, prepare_for(config, volumes, reference), strict=True):
        if vol.label is None or prepared.label is None:
            raise IBSRError(f"subject {vol.id} has no label to score against", vol.subject.image)
        targets = np.stack([prepared.label == t for t in range(1, len(TISSUES) + 1)])
        seg = most_probable(on_scan_grid(prepared, targets.astype(np.float32)))
        scores = evaluate_segmentation(seg, vol.label, vol.spacing, hd=False)
        rows += [
            {"name": "labels on the grid", "subject": vol.id, "tissue": t, **scores[t]}
            for t in TISSUES
        ]
    return pd.DataFrame(rows, columns=["name", "subject", "tissue", "dice", "avd"])


def evaluate_postprocessing(
    segmentations: Mapping[str, np.ndarray],
    volumes: Sequence[Volume],
    candidates: Mapping[str, PostProcessing],
    hd: bool = True,
) -> pd.DataFrame:
    """Score one predictor's segmentations under several post-processings.

    Args:
        segmentations: Subject id -> the predictor's segmentation (e.g. one entry of
            the ``segmentations`` that :func:`evaluate_runs` fills): nothing is predicted
            again.
        volumes: The labelled raw volumes they segment.
        candidates: Name -> :class:`~ibsr_helpers.postprocessing.PostProcessing` (include
            one that does nothing, to compare with).
        hd: Also compute HD and HD95.

    Returns:
        Rows as :func:`evaluate_runs`, ``name`` being the candidate's name.
    """
    rows = []
    for vol in volumes:
        if vol.label is None or vol.id not in segmentations:
            raise IBSRError(f"subject {vol.id} needs a label and a segmentation", vol.subject.image)
        for name, post in candidates.items():
            seg = post(segmentations[vol.id], vol)
            scores = evaluate_segmentation(seg, vol.label, vol.spacing, hd=hd)
            rows += [{"name": name, "subject": vol.id, "tissue": t, **scores[t]} for t in TISSUES]
    return pd.DataFrame(rows)


def choose_postprocessing(
    scores: pd.DataFrame, candidates: Mapping[str, PostProcessing], baseline: str = "none"
) -> PostProcessing:
    """The clean-ups the validation numbers support, decided tissue by tissue.

    ``mask`` is kept when it raises the mean Dice over tissues; for each tissue, the
    component rule (``largest`` or ``min_size``) of the candidate with the best Dice on
    that tissue is kept if it beats ``baseline`` there.

    Args:
        scores: From :func:`evaluate_postprocessing`.
        candidates: The same mapping.
        baseline: The candidate that does nothing.

    Returns:
        The combined :class:`~ibsr_helpers.postprocessing.PostProcessing`.
    """
    from ibsr_helpers.postprocessing import PostProcessing

    table = dice_table(scores)
    base = table.loc[baseline]
    mask = any(c.mask and table.loc[n, "mean"] > base["mean"] for n, c in candidates.items())
    largest, min_size = [], {}
    for tissue in TISSUES:
        best = table[tissue].idxmax()
        chosen = candidates[best]
        if table.loc[best, tissue] <= base[tissue]:
            continue
        if tissue in chosen.largest:
            largest.append(tissue)
        elif tissue in chosen.min_size:
            min_size[tissue] = chosen.min_size[tissue]
    return PostProcessing(mask, tuple(largest), min_size)


def dice_table(df: pd.DataFrame, by: str = "name") -> pd.DataFrame:
    """Mean Dice per tissue and overall, one row per predictor.

    Args:
        df: Rows with columns ``by``, ``subject``, ``tissue`` and ``dice``, e.g. from
            :func:`evaluate_runs`.
        by: The column naming the predictors (rows keep their first-seen order).

    Returns:
        Columns ``CSF, GM, WM`` (mean over subjects) and ``mean`` (the mean of the three).
    """
    table = df.pivot_table(index=by, columns="tissue", values="dice", aggfunc="mean", sort=False)
    table = table[[t for t in TISSUES if t in table.columns]]
    table["mean"] = table.mean(axis=1)
    table.columns.name = None
    return table


def results_table(scores: pd.DataFrame, by: str = "name") -> pd.DataFrame:
    """The course's results table: one row per predictor, every metric per tissue.

    Args:
        scores: Rows ``by, subject, tissue, dice[, hd, hd95], avd`` (from
            :func:`evaluate_runs` with ``hd=True``, or the ``scores`` of
            :func:`evaluate_folders` with a ``by`` column added).
        by: The column naming the predictors (rows keep their first-seen order).

    Returns:
        Columns ``Dice CSF, Dice GM, Dice WM, mean Dice, sd`` (the sd over subjects of
        each subject's mean Dice), then ``HD95 <tissue>``, ``HD <tissue>`` (mm) and
        ``AVD <tissue>`` (%) when present, and ``subjects``.
    """
    order = list(dict.fromkeys(scores[by]))
    out = pd.DataFrame(index=pd.Index(order, name=by))
    dice = scores.pivot_table(index=by, columns="tissue", values="dice", aggfunc="mean")
    for t in TISSUES:
        out[f"Dice {t}"] = dice[t]
    per_subject = scores.groupby([by, "subject"])["dice"].mean()
    out["mean Dice"] = per_subject.groupby(level=0).mean()
    out["sd"] = per_subject.groupby(level=0).std(ddof=1).fillna(0.0)
    for metric, label in (("hd95", "HD95"), ("hd", "HD"), ("avd", "AVD")):
        if metric in scores.columns:
            values = scores.pivot_table(index=by, columns="tissue", values=metric, aggfunc="mean")
            for t in TISSUES:
                out[f"{label} {t}"] = values[t]
    out["subjects"] = scores.groupby(by)["subject"].nunique()
    return out.loc[order]


def write_results(
    table: pd.DataFrame, folder: str | Path, about: Mapping[str, str] | None = None
) -> tuple[Path, Path]:
    """Write a results table as ``results.csv`` and ``results.md`` (with what made it).

    Args:
        table: From :func:`results_table`.
        folder: The reports folder (created).
        about: Lines for the Markdown's header, e.g. ``{"command": …, "date": …,
            "hardware": …, "data": …}``.

    Returns:
        ``(csv path, markdown path)``.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    csv = folder / "results.csv"
    table.to_csv(csv)
    shown = pd.DataFrame(index=table.index)
    for t in TISSUES:
        shown[f"Dice {t}"] = table[f"Dice {t}"].map("{:.3f}".format)
    shown["mean Dice"] = [
        f"**{m:.3f}** ± {sd:.3f}" for m, sd in zip(table["mean Dice"], table["sd"], strict=True)
    ]
    for label, unit in (("HD95", "mm"), ("HD", "mm"), ("AVD", "%")):
        if f"{label} CSF" in table.columns:
            shown[f"{label} ({unit}) CSF / GM / WM"] = [
                " / ".join(f"{row[f'{label} {t}']:.1f}" for t in TISSUES)
                for _, row in table.iterrows()
            ]
    shown["subjects"] = table["subjects"]
    lines = [f"- **{k}**: {v}" for k, v in (about or {}).items()]
    text = "\n".join(
        [
            *lines,
            "",
            shown.to_markdown(
                disable_numparse=True, colalign=("left",) + ("right",) * shown.shape[1]
            ),
            "",
        ]
    )
    md = folder / "results.md"
    md.write_text(text)
    return csv, md
