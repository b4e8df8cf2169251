"""Segmentation metrics for CSF, GM and WM: Dice, Hausdorff distance, HD95 and AVD.

The same functions score a model during training (:func:`evaluate_segmentation`,
:func:`mean_dice`) and grade a folder of predictions (:func:`evaluate_folders`,
:func:`format_summary`, :func:`write_metrics_csv`).

Definitions, for a predicted mask P and a ground-truth mask G of one tissue:

* **Dice** ``2|P ∩ G| / (|P| + |G|)``.
* **HD** (mm), the symmetric Hausdorff distance between the *boundaries* of P and G, as
  in MONAI's ``compute_hausdorff_distance``: a boundary voxel is a mask voxel with a
  face neighbour outside the mask (the volume edge counts as outside); distances are
  Euclidean between voxel centres, scaled by the voxel spacing; HD is the larger of
  the two directed maxima. Note that this is not SimpleITK's
  ``HausdorffDistanceImageFilter`` run on the masks themselves, which measures between
  all voxels and so ignores, for example, holes inside a mask.
* **HD95** (mm), the same but with the 95th percentile of each directed set of boundary
  distances (linear interpolation) instead of its maximum; the larger of the two.
* **AVD** (%), the absolute volume difference ``|V_P - V_G| / V_G * 100``.

Empty-mask policy (no metric is ever NaN or infinite):

* both masks empty: Dice 1, HD 0, HD95 0, AVD 0 (nothing to find, nothing found);
* exactly one mask empty: Dice 0, HD = HD95 = the diagonal of the volume in mm
  (``sqrt(sum((shape * spacing) ** 2))``, the largest distance possible), AVD 100
  (also when G is empty and the formula would divide by zero).

Example:
    >>> from ibsr_helpers import metrics
    >>> scores = metrics.evaluate_segmentation(pred, label, spacing=(0.94, 1.5, 0.94))
    >>> scores["GM"]["dice"], metrics.mean_dice(scores)
    (0.912, 0.897)
"""

from __future__ import annotations

import math
import re
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import nibabel as nib
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from ibsr_helpers.data import LABELS, TISSUES
from ibsr_helpers.errors import IBSRError
from ibsr_helpers.io import read_volume

if TYPE_CHECKING:
    from ibsr_helpers.data import Volume
    from ibsr_helpers.inference import Run

__all__ = [
    "METRICS",
    "dice",
    "hausdorff",
    "avd",
    "evaluate_segmentation",
    "mean_dice",
    "evaluate_folders",
    "summary_table",
    "format_summary",
    "write_metrics_csv",
    "evaluate_runs",
    "dice_table",
]

#: Metric keys, in the order of tables and CSV columns.
METRICS: tuple[str, ...] = ("dice", "hd", "hd95", "avd")
_HEADINGS: dict[str, str] = {"dice": "Dice", "hd": "HD (mm)", "hd95": "HD95 (mm)", "avd": "AVD (%)"}
_DECIMALS: dict[str, int] = {"dice": 3, "hd": 2, "hd95": 2, "avd": 2}
#: ``ID_seg.nii.gz``, ``ID.nii.gz`` (or ``.nii``) with an id such as ``IBSR_11``.
_FILE_RE = re.compile(r"^(?P<id>[A-Za-z]+_\d+)(?P<seg>_seg)?\.nii(\.gz)?$")
_TISSUE_LABELS: dict[str, int] = {name: value for value, name in LABELS.items()}


def _masks(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred = np.asarray(pred, dtype=bool)
    gt = np.asarray(gt, dtype=bool)
    if pred.shape != gt.shape:
        raise ValueError(f"pred and gt shapes differ: {pred.shape} vs {gt.shape}")
    return pred, gt


def _spacing(spacing: Sequence[float] | np.ndarray, ndim: int) -> tuple[float, ...]:
    values = tuple(float(s) for s in np.ravel(spacing))
    if len(values) != ndim or not all(math.isfinite(s) and s > 0 for s in values):
        raise ValueError(f"spacing must be {ndim} positive numbers (mm), got {spacing!r}")
    return values


def _diagonal(shape: tuple[int, ...], spacing: tuple[float, ...]) -> float:
    return float(math.sqrt(sum((n * s) ** 2 for n, s in zip(shape, spacing, strict=True))))


def dice(pred: np.ndarray, gt: np.ndarray) -> float:
    """Dice overlap of two masks.

    Args:
        pred: Predicted mask, any shape (non-zero counts as inside).
        gt: Ground-truth mask of the same shape.

    Returns:
        ``2|P ∩ G| / (|P| + |G|)`` in [0, 1]; 1.0 when both masks are empty.

    Raises:
        ValueError: If the shapes differ.
    """
    pred, gt = _masks(pred, gt)
    total = np.count_nonzero(pred) + np.count_nonzero(gt)
    if total == 0:
        return 1.0
    return float(2.0 * np.count_nonzero(pred & gt) / total)


def avd(pred: np.ndarray, gt: np.ndarray) -> float:
    """Absolute volume difference in percent of the ground-truth volume.

    Args:
        pred: Predicted mask (non-zero counts as inside).
        gt: Ground-truth mask of the same shape.

    Returns:
        ``|V_P - V_G| / V_G * 100``; 0.0 when both are empty, 100.0 when only ``gt`` is.

    Raises:
        ValueError: If the shapes differ.
    """
    pred, gt = _masks(pred, gt)
    vp, vg = np.count_nonzero(pred), np.count_nonzero(gt)
    if vg == 0:
        return 0.0 if vp == 0 else 100.0
    return float(abs(vp - vg) / vg * 100.0)


def _surface_distances(
    pred: np.ndarray, gt: np.ndarray, spacing: tuple[float, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """Directed boundary distances (mm) pred→gt and gt→pred; both masks non-empty."""
    import torch  # deferred: importing MONAI takes seconds, most callers never need it
    from monai.metrics.utils import get_edge_surface_distance

    with warnings.catch_warnings():
        # MONAI 1.5-1.6 warn about an argument they pass to themselves internally.
        warnings.filterwarnings(
            "ignore", message=".*always_return_as_numpy", category=FutureWarning
        )
        _, distances, _ = get_edge_surface_distance(
            torch.from_numpy(np.ascontiguousarray(pred)),
            torch.from_numpy(np.ascontiguousarray(gt)),
            distance_metric="euclidean",
            spacing=spacing,
            symmetric=True,
        )
    to_np = [
        np.asarray(d.cpu() if isinstance(d, torch.Tensor) else d, np.float64) for d in distances
    ]
    return to_np[0], to_np[1]


def _hd_from(distances: tuple[np.ndarray, np.ndarray], percentile: float | None) -> float:
    if percentile is None:
        return float(max(d.max() for d in distances))
    return float(max(np.percentile(d, percentile) for d in distances))


def _distances(
    pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float], percentiles: Sequence[float | None]
) -> list[float]:
    pred, gt = _masks(pred, gt)
    sp = _spacing(spacing, pred.ndim)
    for p in percentiles:
        if p is not None and not 0 <= p <= 100:
            raise ValueError(f"percentile must lie in 0..100 or be None, got {p}")
    has_pred, has_gt = bool(pred.any()), bool(gt.any())
    if not has_pred and not has_gt:
        return [0.0 for _ in percentiles]
    if not has_pred or not has_gt:
        return [_diagonal(pred.shape, sp) for _ in percentiles]
    distances = _surface_distances(pred, gt, sp)
    return [_hd_from(distances, p) for p in percentiles]


def hausdorff(
    pred: np.ndarray,
    gt: np.ndarray,
    spacing: Sequence[float],
    percentile: float | None = None,
) -> float:
    """Symmetric Hausdorff distance between mask boundaries, in mm.

    Args:
        pred: Predicted mask, ``(X, Y, Z)`` or ``(H, W)`` (non-zero counts as inside).
        gt: Ground-truth mask of the same shape.
        spacing: Voxel size in mm along each axis, e.g. ``(0.9375, 1.5, 0.9375)``.
        percentile: None for the maximum (HD), 95 for HD95 (any value in 0..100).

    Returns:
        The distance in mm; see the module docstring for empty masks.

    Raises:
        ValueError: If the shapes differ, the spacing does not fit or the percentile
            lies outside 0..100.
    """
    return _distances(pred, gt, spacing, [percentile])[0]


def evaluate_segmentation(
    pred: np.ndarray,
    gt: np.ndarray,
    spacing: Sequence[float],
    hd: bool = True,
) -> dict[str, dict[str, float]]:
    """Score a label volume against the ground truth, tissue by tissue.

    Args:
        pred: ``(X, Y, Z)`` predicted labels (0 background, 1 CSF, 2 GM, 3 WM).
        gt: ``(X, Y, Z)`` ground-truth labels.
        spacing: Voxel size in mm along each axis.
        hd: Also compute HD and HD95 (about a second per subject); False gives only
            Dice and AVD, for fast validation during training.

    Returns:
        ``{"CSF": {"dice": …, "hd": …, "hd95": …, "avd": …}, "GM": …, "WM": …}``.

    Raises:
        ValueError: If the shapes differ or the spacing does not fit.
    """
    pred = np.asarray(pred)
    gt = np.asarray(gt)
    if pred.shape != gt.shape:
        raise ValueError(f"pred and gt shapes differ: {pred.shape} vs {gt.shape}")
    sp = _spacing(spacing, gt.ndim)
    scores: dict[str, dict[str, float]] = {}
    for tissue in TISSUES:
        value = _TISSUE_LABELS[tissue]
        p, g = pred == value, gt == value
        row = {"dice": dice(p, g)}
        if hd:
            row["hd"], row["hd95"] = _distances(p, g, sp, [None, 95.0])
        row["avd"] = avd(p, g)
        scores[tissue] = row
    return scores


def mean_dice(metrics: dict[str, dict[str, float]]) -> float:
    """Mean Dice over CSF, GM and WM.

    Args:
        metrics: The output of :func:`evaluate_segmentation`.

    Returns:
        The unweighted mean of the three tissue Dice scores.
    """
    return float(np.mean([metrics[t]["dice"] for t in TISSUES]))


def _find(folder: Path, labels_only: bool) -> dict[str, Path]:
    """Map subject id -> NIfTI file found at any depth under ``folder``."""
    found: dict[str, Path] = {}
    for path in sorted(folder.rglob("*.nii*")):
        match = _FILE_RE.match(path.name)
        if match is None or not path.is_file() or (labels_only and not match["seg"]):
            continue
        sid = match["id"]
        if sid in found:
            raise IBSRError(f"two files for subject {sid} (the other is {found[sid]})", path)
        found[sid] = path
    return found


def _read_labels(path: Path) -> tuple[np.ndarray, nib.Nifti1Image]:
    data, img = read_volume(path, np.float32)
    bad = ~np.isin(data, list(LABELS))
    if bad.any():
        values = np.unique(data[bad])
        shown = ", ".join(f"{v:g}" for v in values[:5]) + (", …" if values.size > 5 else "")
        raise IBSRError(f"label values outside 0..3 (0 bg, 1 CSF, 2 GM, 3 WM): {shown}", path)
    return data.astype(np.uint8), img


def evaluate_folders(
    pred_dir: str | Path, gt_dir: str | Path, progress: bool = True
) -> pd.DataFrame:
    """Score every prediction in a folder against the matching ground truth.

    Files are matched by subject id at any depth. In ``gt_dir`` only label files
    ``ID_seg.nii.gz`` (or ``.nii``) count, so a course data folder, which also holds the
    images ``ID.nii.gz``, can be given as is. In ``pred_dir`` ``ID_seg.nii.gz`` and
    ``ID.nii.gz`` are both accepted. Ground-truth subjects without a prediction are
    left out of the table.

    Args:
        pred_dir: Folder of predicted label volumes.
        gt_dir: Folder of ground-truth label volumes (e.g. the IBSR18 folder).
        progress: Show a tqdm bar.

    Returns:
        One row per subject and tissue, columns ``subject, tissue, dice, hd, hd95, avd``,
        sorted by subject then tissue (CSF, GM, WM).

    Raises:
        IBSRError: If a folder is missing, no prediction matches a ground truth, a
            subject has two files, a prediction's shape or affine differs from its
            ground truth's, or a file holds values outside 0..3. The message names the
            file (or ``pred_dir``).
    """
    pred_dir, gt_dir = Path(pred_dir).expanduser(), Path(gt_dir).expanduser()
    for folder in (pred_dir, gt_dir):
        if not folder.is_dir():
            raise IBSRError("folder not found", folder)
    gts = _find(gt_dir, labels_only=True)
    preds = _find(pred_dir, labels_only=False)
    pairs = []
    for sid, path in preds.items():
        if sid in gts:
            pairs.append((sid, path, gts[sid]))
        else:
            warnings.warn(
                f"{path}: no ground truth {sid}_seg.nii.gz under {gt_dir}, skipped", stacklevel=2
            )
    if not pairs:
        raise IBSRError(
            f"no prediction (ID_seg.nii.gz or ID.nii.gz, e.g. IBSR_11_seg.nii.gz) matches a "
            f"ground-truth label under {gt_dir} ({len(preds)} prediction(s), "
            f"{len(gts)} label(s) found)",
            pred_dir,
        )
    rows = []
    for sid, pred_path, gt_path in tqdm(
        pairs, desc="evaluating", unit="subject", disable=not progress, leave=False
    ):
        gt, gt_img = _read_labels(gt_path)
        pred, pred_img = _read_labels(pred_path)
        if pred.shape != gt.shape:
            raise IBSRError(
                f"prediction shape {pred.shape} does not match the ground truth {gt.shape} "
                f"of {gt_path}",
                pred_path,
            )
        if not np.allclose(pred_img.affine, gt_img.affine, atol=1e-4):
            raise IBSRError(
                f"prediction affine does not match the ground truth's ({gt_path})", pred_path
            )
        spacing = tuple(float(z) for z in gt_img.header.get_zooms()[:3])
        scores = evaluate_segmentation(pred, gt, spacing, hd=True)
        rows += [{"subject": sid, "tissue": t, **scores[t]} for t in TISSUES]
    return pd.DataFrame(rows, columns=["subject", "tissue", *METRICS])


def summary_table(df: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard deviation of each metric per tissue, and over tissues.

    The ``"mean"`` row first averages each subject's tissues, then takes the mean and
    sd of those per-subject averages. The sd is the sample sd (n - 1), and 0 for a
    single subject.

    Args:
        df: Per-subject rows as from :func:`evaluate_folders` (columns ``subject``,
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
        df: Per-subject rows as from :func:`evaluate_folders`.

    Returns:
        A multi-line string with columns Dice, HD (mm), HD95 (mm), AVD (%).
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
    return "\n".join([*text, f"({n} subject{'s' if n != 1 else ''}; mean ± sd)"])


def write_metrics_csv(df: pd.DataFrame, path: str | Path) -> Path:
    """Write a metrics table to CSV, creating the parent folder.

    Args:
        df: A table such as the output of :func:`evaluate_folders` (written without
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
    raw: bool = True,
    hd: bool = False,
    progress: bool = False,
) -> pd.DataFrame:
    """Score trained runs, and ensembles of them, on labelled volumes.

    Each entry of ``runs`` is one predictor: a run, or a list of runs whose class
    probabilities are averaged (an ensemble, as :func:`ibsr_helpers.inference.predict_volume`
    does). A run that appears in several entries is run once per volume: an ensemble of
    runs already evaluated costs only the averaging.

    Args:
        runs: Name to a :class:`~ibsr_helpers.inference.Run` or a list of runs.
        volumes: Labelled subjects.
        tta: Flip test-time augmentation (every member, every volume).
        raw: Whether ``volume.image`` still needs each run's normalisation (as loaded
            by ``data.load_subjects`` without ``normalize``).
        hd: Also compute HD and HD95 (about a second per subject and tissue).
        progress: Show a progress bar over the volumes.

    Returns:
        One row per name, subject and tissue: ``name, subject, tissue, dice, avd``
        (``hd, hd95`` with ``hd=True``) and ``seconds``, the prediction time of the
        subject by that predictor (for an ensemble, the sum over its members).

    Raises:
        IBSRError: If a volume has no label or an entry holds no run.
    """
    import torch

    from ibsr_helpers.inference import Run, predict_volume

    members = {name: [r] if isinstance(r, Run) else list(r) for name, r in runs.items()}
    if any(not m for m in members.values()):
        raise IBSRError("every entry of runs needs at least one run")
    rows = []
    for vol in tqdm(volumes, desc="evaluating", unit="volume", disable=not progress):
        if vol.label is None:
            raise IBSRError(f"subject {vol.id} has no label to evaluate against", vol.subject.image)
        cache: dict[int, tuple[torch.Tensor, float]] = {}
        for name, group in members.items():
            for run in group:
                if id(run) not in cache:
                    start = time.perf_counter()
                    _, probs = predict_volume(run, vol, tta=tta, raw=raw)
                    cache[id(run)] = (probs, time.perf_counter() - start)
            probs = sum(cache[id(r)][0] for r in group) / len(group)
            seconds = sum(cache[id(r)][1] for r in group)
            seg = probs.argmax(0).numpy().astype(np.uint8)
            scores = evaluate_segmentation(seg, vol.label, vol.spacing, hd=hd)
            rows += [
                {"name": name, "subject": vol.id, "tissue": t, **scores[t], "seconds": seconds}
                for t in TISSUES
            ]
    columns = [
        "name",
        "subject",
        "tissue",
        "dice",
        *(["hd", "hd95"] if hd else []),
        "avd",
        "seconds",
    ]
    return pd.DataFrame(rows, columns=columns)


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
