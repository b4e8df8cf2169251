"""Scoring folders of predictions and trained runs, and the tables of their results.

:func:`evaluate_folders` is ``ibsr-seg evaluate``: it matches predictions to ground-truth
labels by subject id, checks their geometry and scores every tissue with
:mod:`ibsr_helpers.metrics`; every ground-truth subject counts, a missing prediction as
Dice 0 (:class:`FolderScores` says which were missing or extra). :func:`evaluate_runs`
scores trained runs and their ensembles on loaded volumes (the notebooks' comparisons).
The tables (:func:`summary_table`, :func:`format_summary`, :func:`dice_table`,
:func:`results_table`) are what the README, the notebooks and the grading report show,
under :func:`report_header`'s lines saying what made them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from ibsr_helpers.errors import IBSRError
from ibsr_helpers.io import load_nifti, read_labels, read_volume
from ibsr_helpers.layout import TISSUES, nifti_files, parse_nifti_name
from ibsr_helpers.metrics import METRICS, evaluate_segmentation, missing_scores

if TYPE_CHECKING:
    import nibabel as nib

    from ibsr_helpers.data import Volume
    from ibsr_helpers.inference import Run
    from ibsr_helpers.postprocessing import PostProcessing

__all__ = [
    "FolderScores",
    "evaluate_folders",
    "report_header",
    "evaluate_runs",
    "summary_table",
    "format_summary",
    "write_metrics_csv",
    "dice_table",
    "results_table",
    "write_results",
    "evaluate_postprocessing",
    "choose_postprocessing",
    "check_predictions",
]

_HEADINGS: dict[str, str] = {"dice": "Dice", "hd": "HD (mm)", "hd95": "HD95 (mm)", "avd": "AVD (%)"}
_DECIMALS: dict[str, int] = {"dice": 3, "hd": 2, "hd95": 2, "avd": 2}


def _files_by_subject(folder: Path, kind: str = "any") -> tuple[dict[str, list[Path]], list[Path]]:
    """Subject id -> its NIfTI files at any depth, and the NIfTI files named for no subject.

    ``kind``: ``labels`` (``ID_seg.nii.gz``), ``images`` (``ID.nii.gz``) or ``any``.
    """
    found: dict[str, list[Path]] = {}
    unnamed: list[Path] = []
    for path in nifti_files(folder):
        if not path.is_file():
            continue
        parsed = parse_nifti_name(path)
        if parsed is None:
            unnamed.append(path)
        elif kind == "any" or (kind == "labels") == parsed[1]:
            found.setdefault(parsed[0], []).append(path)
    return found, unnamed


def _two_files(sid: str, paths: Sequence[Path], folder: Path) -> str:
    """The one message for a subject with several files (each named, relative to ``folder``)."""
    names = [str(p.relative_to(folder)) for p in paths]
    return f"two files for subject {sid}: {' and '.join(names)} (keep one)"


def _find(folder: Path, kind: str = "any") -> dict[str, Path]:
    """Map subject id -> NIfTI file (``kind``: labels, images or any) at any depth.

    Raises:
        IBSRError: If a subject has two files; the message names both.
    """
    found, _ = _files_by_subject(folder, kind)
    for sid, paths in found.items():
        if len(paths) > 1:
            raise IBSRError(_two_files(sid, paths, folder), folder)
    return {sid: paths[0] for sid, paths in found.items()}


@dataclass(frozen=True)
class FolderScores:
    """A folder of predictions scored on every ground-truth subject.

    Attributes:
        scores: One row per ground-truth subject and tissue, sorted by subject then
            tissue: ``subject, tissue, dice, hd, hd95, avd, status``. ``status`` is
            ``scored``, ``missing`` (no prediction) or ``bad`` (a prediction that could
            not be scored, see ``bad``); missing and bad subjects get
            :func:`~ibsr_helpers.metrics.missing_scores` (Dice 0, the worst HD, HD95, AVD),
            so every mean is over all ground-truth subjects.
        missing: Ground-truth subjects without a prediction file, sorted.
        extra: Prediction files not scored, relative to the predictions folder: their
            subject has no ground truth, or their name is not ``ID[_seg].nii[.gz]``.
        bad: Subject -> why its prediction could not be scored (``keep_going`` only).
    """

    scores: pd.DataFrame
    missing: list[str]
    extra: list[Path]
    bad: dict[str, str]

    @property
    def subjects(self) -> list[str]:
        """Every ground-truth subject, sorted."""
        return list(dict.fromkeys(self.scores["subject"]))

    def summary_lines(self) -> dict[str, str]:
        """What did not match, as ``name -> text`` (for the terminal and a report's header)."""
        out = {
            "missing predictions": _missing_text(self.missing, len(self.subjects)),
            "extra predictions": _extra_text(self.extra),
        }
        if self.bad:
            out["unusable predictions (scored Dice 0)"] = "; ".join(
                f"{sid}: {problem}" for sid, problem in self.bad.items()
            )
        return out


def _missing_text(missing: Sequence[str], total: int) -> str:
    if not missing:
        return f"none (all {total} ground-truth subjects predicted)"
    return (
        f"{', '.join(missing)} ({len(missing)} of {total} ground-truth subjects; each scored "
        "Dice 0 with the worst HD, HD95 and AVD)"
    )


def _extra_text(extra: Sequence[Path]) -> str:
    if not extra:
        return "none"
    names = ", ".join(str(p) for p in extra)
    return f"{names} ({len(extra)} file(s) with no ground truth, not scored)"


def _spacing(img: nib.Nifti1Image) -> tuple[float, float, float]:
    """A volume's voxel size in mm."""
    x, y, z = (float(v) for v in img.header.get_zooms()[:3])
    return x, y, z


def _read_prediction(
    path: Path, gt_shape: tuple[int, ...], gt_img: nib.Nifti1Image, gt_path: Path
) -> np.ndarray:
    """Read a prediction and check its labels, shape and affine against the ground truth."""
    pred, pred_img = read_labels(path)
    if pred.shape != gt_shape:
        raise IBSRError(
            f"prediction shape {pred.shape} does not match the ground truth {gt_shape} "
            f"of {gt_path}",
            path,
        )
    if not np.allclose(pred_img.affine, gt_img.affine, atol=1e-4):
        raise IBSRError(f"prediction affine does not match the ground truth's ({gt_path})", path)
    return pred


def evaluate_folders(
    pred_dir: str | Path,
    gt_dir: str | Path,
    progress: bool = True,
    postprocess: PostProcessing | None = None,
    strict: bool = False,
    keep_going: bool = False,
) -> FolderScores:
    """Score a folder of predictions on every ground-truth subject.

    Files are matched by subject id at any depth. In ``gt_dir`` only label files
    ``ID_seg.nii.gz`` (or ``.nii``) count, so a course data folder, which also holds the
    images ``ID.nii.gz``, can be given as is; every label under it is a subject to
    predict (give a split folder, e.g. ``Validation_Set``, to grade one split). In
    ``pred_dir`` ``ID_seg.nii.gz`` and ``ID.nii.gz`` are both accepted. A ground-truth
    subject without a prediction is scored as missing (Dice 0), never left out.

    Args:
        pred_dir: Folder of predicted label volumes.
        gt_dir: Folder of ground-truth label volumes (e.g. the IBSR18 folder).
        progress: Show a tqdm bar.
        postprocess: Clean-ups applied to each prediction before scoring (``mask`` reads
            the image ``ID.nii.gz`` from ``gt_dir``).
        strict: Refuse a folder with a missing prediction or a prediction without
            ground truth.
        keep_going: Record a prediction that cannot be scored (two files for a subject,
            unreadable, wrong shape, affine or label values) in ``bad`` and score it as
            missing, instead of raising; a folder where nothing matches is then all
            missing. For grading a class.

    Returns:
        The scores, and the missing, extra and bad predictions.

    Raises:
        IBSRError: If a folder is missing or ``gt_dir`` holds no label; with ``strict``,
            if a prediction is missing or extra; unless ``keep_going``, if no
            prediction matches a ground truth, a subject has two files (the message
            names both), a prediction's shape or affine differs from its ground
            truth's, or a file holds values outside 0..3. The message names the file
            (or ``pred_dir``).
    """
    pred_dir, gt_dir = Path(pred_dir).expanduser(), Path(gt_dir).expanduser()
    for folder in (pred_dir, gt_dir):
        if not folder.is_dir():
            raise IBSRError("folder not found", folder)
    gts = _find(gt_dir, "labels")
    if not gts:
        raise IBSRError("no ground-truth label (ID_seg.nii.gz) found", gt_dir)
    pairs = _pair_predictions(pred_dir, gt_dir, gts, strict, keep_going)
    bad = dict(pairs.bad)
    clean = _cleaner(postprocess, gt_dir)
    rows = []
    for sid in tqdm(
        sorted(gts), desc="evaluating", unit="subject", disable=not progress, leave=False
    ):
        gt_path, scores, status = gts[sid], None, "missing" if sid not in bad else "bad"
        if sid in pairs.preds:
            pred_path = pairs.preds[sid]
            scores, problem = _score_prediction(sid, pred_path, gt_path, clean, keep_going)
            if problem is None:
                status = "scored"
            else:
                bad[sid] = f"{pred_path.relative_to(pred_dir)}: {problem}"
                status = "bad"
        if scores is None:
            gt_img = load_nifti(gt_path)
            scores = missing_scores(tuple(gt_img.shape[:3]), _spacing(gt_img))
        rows += [{"subject": sid, "tissue": t, **scores[t], "status": status} for t in TISSUES]
    table = pd.DataFrame(rows, columns=["subject", "tissue", *METRICS, "status"])
    return FolderScores(table, pairs.missing, pairs.extra, dict(sorted(bad.items())))


@dataclass(frozen=True)
class _Pairs:
    """Prediction files matched to ground-truth subjects (see :func:`_pair_predictions`)."""

    preds: dict[str, Path]
    missing: list[str]
    extra: list[Path]
    bad: dict[str, str]


def _pair_predictions(
    pred_dir: Path, gt_dir: Path, gts: Mapping[str, Path], strict: bool, keep_going: bool
) -> _Pairs:
    """Match the prediction files under ``pred_dir`` to the ground-truth subjects ``gts``.

    Returns:
        The one prediction file of each subject that has one, the subjects without one,
        the files that match no subject (relative to ``pred_dir``) and, with
        ``keep_going``, the subjects with two files.

    Raises:
        IBSRError: With ``strict``, if a prediction is missing or extra; unless
            ``keep_going``, if a subject has two files or no prediction matches.
    """
    found, unnamed = _files_by_subject(pred_dir)
    extra = sorted(
        p.relative_to(pred_dir)
        for p in [*unnamed, *(p for sid, ps in found.items() if sid not in gts for p in ps)]
    )
    missing = sorted(set(gts) - set(found))
    if strict and (missing or extra):
        raise IBSRError(
            f"strict grading: {len(missing)} of {len(gts)} ground-truth subjects without a "
            f"prediction ({', '.join(missing) or 'none'}), {len(extra)} prediction file(s) "
            f"without ground truth ({', '.join(map(str, extra)) or 'none'})",
            pred_dir,
        )
    bad: dict[str, str] = {}
    preds: dict[str, Path] = {}
    for sid, paths in found.items():
        if sid not in gts:
            continue
        if len(paths) > 1:
            if not keep_going:
                raise IBSRError(_two_files(sid, paths, pred_dir), pred_dir)
            bad[sid] = _two_files(sid, paths, pred_dir)
        else:
            preds[sid] = paths[0]
    if not preds and not keep_going:
        raise IBSRError(
            f"no prediction (ID_seg.nii.gz or ID.nii.gz, e.g. IBSR_11_seg.nii.gz) matches a "
            f"ground-truth label under {gt_dir} ({len(extra)} NIfTI file(s) found, none for "
            f"those {len(gts)} subjects)",
            pred_dir,
        )
    return _Pairs(preds, missing, extra, bad)


def _cleaner(
    postprocess: PostProcessing | None, gt_dir: Path
) -> Callable[[str, np.ndarray], np.ndarray]:
    """``(subject, prediction) -> prediction`` after ``postprocess`` (as is without one).

    ``mask`` reads the subject's image ``ID.nii.gz`` from ``gt_dir``.

    Raises:
        IBSRError: If an image under ``gt_dir`` has two files; when called, if ``mask``
            finds no image for the subject.
    """
    images = _find(gt_dir, "images") if postprocess is not None and postprocess.mask else {}

    def clean(sid: str, pred: np.ndarray) -> np.ndarray:
        if postprocess is None or not postprocess.active:
            return pred
        scan = None
        if postprocess.mask:
            if sid not in images:
                raise IBSRError(
                    f"post-processing 'mask' needs the image {sid}.nii.gz beside the labels",
                    gt_dir,
                )
            scan = SimpleNamespace(image=read_volume(images[sid])[0])
        return postprocess(pred, scan)

    return clean


def _score_prediction(
    sid: str,
    pred_path: Path,
    gt_path: Path,
    clean: Callable[[str, np.ndarray], np.ndarray],
    keep_going: bool,
) -> tuple[dict[str, dict[str, float]] | None, str | None]:
    """Score one subject's prediction against its ground truth, after ``clean``.

    Returns:
        ``(scores, None)``, or with ``keep_going`` ``(None, problem)`` for a prediction
        that cannot be used (unreadable, wrong shape, affine or label values).

    Raises:
        IBSRError: As :func:`_read_prediction` (unless ``keep_going``), or if the ground
            truth cannot be read or ``clean`` fails.
    """
    gt, gt_img = read_labels(gt_path)
    try:
        pred = _read_prediction(pred_path, gt.shape, gt_img, gt_path)
    except IBSRError as exc:
        if not keep_going:
            raise
        return None, exc.problem
    return evaluate_segmentation(clean(sid, pred), gt, _spacing(gt_img), hd=True), None


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
    tta: bool = False,
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
        tta: Flip test-time augmentation (every member, every volume).
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
    rows = []
    for vol in tqdm(volumes, desc="evaluating", unit="volume", disable=not progress):
        if vol.label is None:
            raise IBSRError(f"subject {vol.id} has no label to evaluate against", vol.subject.image)
        predicted = predict_shared({n: (g, tta) for n, g in members.items()}, vol, postprocess)
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


def check_predictions(pred_dir: str | Path, images_dir: str | Path) -> pd.DataFrame:
    """Check that every prediction has its image's geometry (a submission's last check).

    Returns:
        One row per prediction: ``subject, shape, affine, sform_code, qform_code, labels``,
        each True when it matches the image (labels: values within 0..3).

    Raises:
        IBSRError: If a prediction has no image, or the folder holds no prediction.
    """
    from ibsr_helpers.io import load_nifti

    images = _find(Path(images_dir), "images")
    preds = _find(Path(pred_dir), "labels")
    if not preds:
        raise IBSRError("no predictions (ID_seg.nii.gz) found", pred_dir)
    rows = []
    for sid, path in preds.items():
        if sid not in images:
            raise IBSRError(f"no image {sid}.nii.gz under {images_dir}", path)
        image, pred = load_nifti(images[sid]), load_nifti(path)
        values = np.unique(np.asarray(pred.dataobj))
        rows.append(
            {
                "subject": sid,
                "shape": pred.shape == image.shape,
                "affine": bool(np.allclose(pred.affine, image.affine, atol=1e-6)),
                "sform_code": int(pred.header["sform_code"]) == int(image.header["sform_code"]),
                "qform_code": int(pred.header["qform_code"]) == int(image.header["qform_code"]),
                "labels": bool(np.isin(values, [0, 1, 2, 3]).all()),
            }
        )
    return pd.DataFrame(rows)


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


def report_header(gt_dir: str | Path, **extra: str) -> dict[str, str]:
    """The header lines of a table graded against ``gt_dir``: what made it, and the truth.

    :func:`ibsr_helpers.provenance.about` (date, commit, package versions, hardware and,
    when ``gt_dir`` is a data folder, its data record), then a ``ground truth`` line: the
    label files graded against and their fingerprint.

    Args:
        gt_dir: The ground-truth folder, as given to :func:`evaluate_folders`.
        **extra: More lines, first (e.g. ``command``).

    Returns:
        Name -> value, for :func:`write_results`.

    Raises:
        IBSRError: If ``gt_dir`` holds two labels for one subject.
    """
    from ibsr_helpers.data import discover
    from ibsr_helpers.provenance import about, fingerprint_files

    gt_dir = Path(gt_dir).expanduser()
    try:
        discover(gt_dir)
        data_root: Path | None = gt_dir
    except IBSRError:  # a folder of labels, not a data folder: no data record
        data_root = None
    labels = _find(gt_dir, "labels") if gt_dir.is_dir() else {}
    out = about(data_root=data_root, **extra)
    out["ground truth"] = (
        f"{gt_dir}: {len(labels)} label file(s) ({', '.join(sorted(labels))}); fingerprint "
        f"{fingerprint_files(labels.values(), root=gt_dir)}"
    )
    return out
