"""Figures for every chapter: one import for the data, training, evaluation and benchmark figures.

Every function returns a :class:`matplotlib.figure.Figure` made without pyplot, so nothing
piles up in pyplot's state; in a notebook end the cell with the figure to show it. The
drawing primitives (planes, colours, overlays) are :mod:`ibsr_helpers.display`'s, shared
with the interactive viewer; statistical charts are seaborn's.

The figures live by chapter: :mod:`~ibsr_helpers.plots.data` (00-02: scans and model
inputs), :mod:`~ibsr_helpers.plots.training` (03-05: curves, schedule, samplers, sliding
windows), :mod:`~ibsr_helpers.plots.evaluation` (06: scores and errors) and
:mod:`~ibsr_helpers.plots.benchmarks` (Dice against CPU minutes). Import them from here:
``from ibsr_helpers import plots; plots.plot_learning_curves(history)``.
"""

from __future__ import annotations

# Notebook 02 reads the plane names as `plots.PLANES`, as it could from the single module.
from ibsr_helpers.display import PLANES as PLANES
from ibsr_helpers.plots.benchmarks import plot_dice_vs_minutes
from ibsr_helpers.plots.data import (
    SPLIT_COLORS,
    plot_augmentations,
    plot_intensity_histograms,
    plot_roi_box,
    plot_slices,
    plot_tissue_volumes,
    plot_triplanar,
)
from ibsr_helpers.plots.evaluation import (
    draw_error_grid,
    plot_dice_comparison,
    plot_error_distances,
    plot_error_triplanar,
    plot_metric_distributions,
    plot_subject_heatmap,
)
from ibsr_helpers.plots.training import (
    TrainingFigures,
    plot_learning_curves,
    plot_lr_schedule,
    plot_patch_centres,
    plot_prediction_overlay,
    plot_slice_sampling,
    plot_sliding_window,
)

__all__ = [
    "SPLIT_COLORS",
    "TrainingFigures",
    "plot_triplanar",
    "plot_intensity_histograms",
    "plot_tissue_volumes",
    "plot_learning_curves",
    "plot_prediction_overlay",
    "plot_slices",
    "plot_augmentations",
    "plot_roi_box",
    "plot_patch_centres",
    "plot_sliding_window",
    "plot_dice_comparison",
    "plot_metric_distributions",
    "plot_subject_heatmap",
    "plot_error_triplanar",
    "draw_error_grid",
    "plot_lr_schedule",
    "plot_dice_vs_minutes",
    "plot_error_distances",
    "plot_slice_sampling",
]
