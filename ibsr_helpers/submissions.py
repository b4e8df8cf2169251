"""Scoring prediction files on disk: every ground-truth subject, each file's geometry and labels.

:func:`evaluate_folders` is ``ibsr-seg evaluate``: it matches predictions to ground-truth
labels by subject id (one rule for duplicates: refused, naming both files), checks their
geometry and scores every tissue with :mod:`ibsr_helpers.metrics`; every ground-truth
subject counts, a missing prediction as Dice 0 (:class:`FolderScores` says which were
missing, extra or bad). :func:`check_predictions` is a submission's last check against its
images, and :func:`report_header` the lines saying what made a graded table. A class of
submissions is graded by :mod:`ibsr_helpers.grading`.
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

    from ibsr_helpers.postprocessing import PostProcessing

__all__ = ["FolderScores", "evaluate_folders", "check_predictions", "report_header"]


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
