"""Figures for the evaluation chapter (06): Dice bars, score spreads, hard subjects, errors.

Grouped Dice bars per predictor, per-subject score boxes, the subject x predictor heat
map, the 3 x 3 error grid (shared with :class:`ibsr_helpers.viewer.CompareViewer`) and
where the errors lie relative to the tissue boundaries.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ibsr_helpers.data import Volume
from ibsr_helpers.display import (
    PLANES,
    TISSUE_COLORS,
    check_same_shape,
    draw_slice,
    intensity_window,
    legend_handles,
    overlay,
    slice_plane,
    unpack_volume,
)
from ibsr_helpers.errors import IBSRError
from ibsr_helpers.layout import TISSUES
from ibsr_helpers.preprocessing import PLANE_AXIS

__all__ = [
    "plot_dice_comparison",
    "plot_metric_distributions",
    "plot_subject_heatmap",
    "plot_error_triplanar",
    "draw_error_grid",
    "plot_error_distances",
]


def plot_dice_comparison(
    table: pd.DataFrame, title: str | None = None, ax: Axes | None = None
) -> Figure:
    """Grouped bars of Dice per tissue, one group per predictor (seaborn).

    Args:
        table: One row per predictor (index: its name), columns ``CSF, GM, WM`` and
            optionally ``mean``, e.g. :func:`ibsr_helpers.evaluation.dice_table`.
        title: Axes title.
        ax: Axes to draw in (default: a new figure).

    Returns:
        The figure; each bar is labelled with its value.
    """
    import seaborn as sns

    cols = [c for c in (*TISSUES, "mean") if c in table.columns]
    if not cols or table.empty:
        raise IBSRError("the table needs rows and CSF / GM / WM / mean columns")
    long = (
        table[cols]
        .rename_axis("predictor")
        .reset_index()
        .melt(id_vars="predictor", var_name="tissue", value_name="Dice")
    )
    long["predictor"] = long["predictor"].astype(str)
    if ax is None:
        fig = Figure(figsize=(max(5.0, 1.6 * len(table) + 2), 3.6), layout="constrained")
        ax = fig.subplots()
    palette = TISSUE_COLORS | {"mean": "0.3"}
    sns.barplot(
        data=long,
        x="predictor",
        y="Dice",
        hue="tissue",
        hue_order=cols,
        palette=palette,
        edgecolor="k",
        linewidth=0.5,
        saturation=1.0,
        ax=ax,
    )
    for container in ax.containers:
        ax.bar_label(container, fmt="%.2f", fontsize=7, padding=1)
    low = float(np.nanmin(table[cols].to_numpy()))
    ax.set_ylim(max(0.0, low - 0.1), 1.0)
    ax.set_xlabel("")
    ax.legend(loc="lower right", fontsize=8, ncol=len(cols))
    ax.grid(axis="y", alpha=0.3)
    if title:
        ax.set_title(title)
    return ax.figure  # type: ignore[return-value]


def plot_metric_distributions(
    scores: pd.DataFrame, metrics: Sequence[str] = ("dice", "hd95"), by: str = "name"
) -> Figure:
    """Per-subject scores of every predictor, per tissue: boxes with the subjects as dots.

    Args:
        scores: Rows ``by, subject, tissue`` and the metric columns, e.g. from
            :func:`ibsr_helpers.evaluation.evaluate_runs` with ``hd=True``.
        metrics: Columns to draw, one panel each (``dice``, ``hd``, ``hd95``, ``avd``).
        by: The column naming the predictors.

    Returns:
        A figure with one panel per metric; predictors on the x axis, tissues as hues.
    """
    import seaborn as sns

    metrics = [m for m in metrics if m in scores.columns]
    if scores.empty or not metrics:
        raise IBSRError("no scores to plot (need per-subject rows with metric columns)")
    units = {"dice": "Dice", "hd": "HD (mm)", "hd95": "HD95 (mm)", "avd": "AVD (%)"}
    order = list(dict.fromkeys(scores[by]))
    width = max(6.0, 0.9 * len(order) + 2)
    fig = Figure(figsize=(width, 3.4 * len(metrics)), layout="constrained")
    axes = np.atleast_1d(fig.subplots(len(metrics), 1, sharex=True))
    for ax, metric in zip(axes, metrics, strict=True):
        common = {"data": scores, "x": by, "y": metric, "hue": "tissue", "order": order}
        common |= {"hue_order": list(TISSUES), "palette": TISSUE_COLORS, "ax": ax}
        sns.boxplot(**common, fliersize=0, linewidth=0.8, saturation=1.0)
        sns.stripplot(**common, dodge=True, size=3, color="k", legend=False)
        ax.set_ylabel(units.get(metric, metric))
        ax.set_xlabel("")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(loc="best", fontsize=8, ncol=3)
    axes[-1].tick_params(axis="x", labelrotation=20)
    return fig


def plot_subject_heatmap(scores: pd.DataFrame, by: str = "name") -> Figure:
    """Mean Dice per validation subject and predictor: which brains are hard for everyone.

    Args:
        scores: Rows ``by, subject, tissue, dice``.
        by: The column naming the predictors.

    Returns:
        A seaborn heatmap, subjects as rows (hardest first), predictors as columns.
    """
    import seaborn as sns

    table = scores.groupby(["subject", by], sort=False)["dice"].mean().unstack(by)
    table = table[list(dict.fromkeys(scores[by]))]
    table = table.loc[table.mean(axis=1).sort_values().index]
    fig = Figure(
        figsize=(max(5.0, 0.9 * table.shape[1] + 2.5), 0.45 * len(table) + 1.8),
        layout="constrained",
    )
    ax = fig.subplots()
    sns.heatmap(
        table, annot=True, fmt=".3f", cmap="viridis", cbar_kws={"label": "mean Dice"}, ax=ax
    )
    ax.set_xlabel("")
    ax.set_ylabel("validation subject (hardest first)")
    ax.tick_params(axis="x", labelrotation=20)
    return fig


def plot_error_triplanar(
    volume: Volume, prediction: np.ndarray, slices: Sequence[int] | None = None, alpha: float = 0.45
) -> Figure:
    """Ground truth, prediction and errors, in three planes: a 3 x 3 grid.

    Args:
        volume: The labelled raw subject (any orientation; shown in RAS).
        prediction: ``(X, Y, Z)`` labels on the volume's own grid.
        slices: ``(x, y, z)`` slice indices in RAS order (default: the middle).
        alpha: Label opacity.

    Returns:
        Rows: sagittal, coronal, axial; columns: ground truth, prediction, errors
        (misclassified voxels in red, with their count on the slice).
    """
    if volume.label is None:
        raise IBSRError(f"{volume.id} has no ground truth to compare with")
    img, lab, sp, _ = unpack_volume(volume, None, None)
    pred = check_same_shape(img, unpack_volume(volume, prediction, None)[1], "prediction")
    fig = Figure(figsize=(10.5, 10.5), layout="constrained")
    draw_error_grid(fig, img, lab, pred, sp, slices, alpha)
    fig.suptitle(volume.id)
    return fig


def draw_error_grid(
    fig: Figure,
    image: np.ndarray,
    label: np.ndarray,
    prediction: np.ndarray,
    spacing: Sequence[float],
    slices: Sequence[int] | None = None,
    alpha: float = 0.45,
) -> None:
    """Fill ``fig`` with the 3 x 3 grid of :func:`plot_error_triplanar` (RAS arrays).

    Shared with :class:`ibsr_helpers.viewer.CompareViewer`, which redraws it on every
    widget change.
    """
    idx = [n // 2 for n in image.shape] if slices is None else [int(i) for i in slices]
    window = intensity_window(image)
    axes = fig.subplots(3, 3)
    for row, plane in zip(axes, PLANES, strict=True):
        i = idx[PLANE_AXIS[plane]]
        grey = slice_plane(image, plane, i)
        truth, pred = slice_plane(label, plane, i), slice_plane(prediction, plane, i)
        title = f"ground truth · {plane} {i}"
        draw_slice(row[0], overlay(grey, truth, alpha, window), image.shape, spacing, plane, title)
        draw_slice(
            row[1], overlay(grey, pred, alpha, window), image.shape, spacing, plane, "prediction"
        )
        wrong = truth != pred
        rgb = overlay(grey, None, 0.0, window).copy()
        rgb[wrong] = (1.0, 0.0, 0.0)
        draw_slice(row[2], rgb, image.shape, spacing, plane, f"errors ({int(wrong.sum())} voxels)")
    fig.legend(handles=legend_handles(), loc="outside lower center", ncol=3, frameon=False)


def plot_error_distances(profiles: pd.DataFrame, by: str = "name") -> Figure:
    """Where each predictor's errors lie: their shares by distance to the reference boundary.

    Args:
        profiles: Rows from :func:`ibsr_helpers.error_analysis.error_profiles`.
        by: The column naming the predictors.

    Returns:
        Stacked horizontal bars, one per predictor (shares averaged over subjects), each
        labelled with its mean Dice and the mean Dice with its off-boundary errors fixed.
    """
    from ibsr_helpers.error_analysis import DISTANCES, FIXED

    if profiles.empty:
        raise IBSRError("no error profiles to plot")
    table = profiles.groupby(by, sort=False)[[*DISTANCES, *FIXED]].mean()
    fig = Figure(figsize=(9.0, 0.5 * len(table) + 1.6), layout="constrained")
    ax = fig.subplots()
    left = np.zeros(len(table))
    colours = ["#4c72b0", "#8fb0d9", "#dd8452", "#c44e52"]
    for bin_, colour in zip(DISTANCES, colours, strict=True):
        ax.barh(table.index, table[bin_], left=left, color=colour, label=bin_)
        left += table[bin_].to_numpy()
    for y, (now, fixed) in enumerate(table[list(FIXED)].itertuples(index=False)):
        ax.text(1.02, y, f"Dice {now:.3f} → {fixed:.3f}", va="center", fontsize=8)
    ax.text(1.02, -0.65, "mean Dice → with every error\nmore than a voxel off fixed", fontsize=8)
    ax.set(
        xlim=(0, 1),
        xlabel="share of the wrong voxels, by distance to the reference's "
        "nearest tissue boundary (face steps)",
    )
    ax.invert_yaxis()
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.3), ncol=len(DISTANCES), frameon=False)
    return fig
