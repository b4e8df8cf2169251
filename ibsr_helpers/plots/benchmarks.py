"""Figures for the benchmarks: validation Dice (and HD95) against CPU training minutes.

Drawn from ``benchmarks/results/dice_vs_minutes.csv`` by ``benchmarks/cpu_recipes.py``
and shown in chapter 05.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

__all__ = [
    "plot_dice_vs_minutes",
]


def plot_dice_vs_minutes(curve: pd.DataFrame, title: str | None = None) -> Figure:
    """What CPU time buys: validation Dice (and HD95) against training minutes, per recipe.

    Args:
        curve: Rows ``recipe, minutes, mean_dice`` and optionally ``hd95`` (mm), ``date``
            and ``hardware``, e.g. ``benchmarks/results/dice_vs_minutes.csv``.
        title: Figure title; by default the recording dates and hardware from the
            ``date`` and ``hardware`` columns, when the frame has them.

    Returns:
        One panel (two with ``hd95``), the legend beside the last one. When the recipes
        were recorded on different dates, each one's legend entry says its date.
    """
    import seaborn as sns

    if "date" in curve.columns:
        date = curve["date"].astype(str)
        dates = sorted(date.unique())
        if len(dates) > 1:
            curve = curve.assign(recipe=curve["recipe"] + " (" + date + ")")
        if title is None and "hardware" in curve.columns:
            when = dates[0] if len(dates) == 1 else f"{dates[0]} to {dates[-1]}"
            title = f"recorded {when} on {', '.join(curve['hardware'].astype(str).unique())}"
    panels = ["mean_dice"] + (["hd95"] if "hd95" in curve.columns else [])
    fig = Figure(figsize=(5.5 * len(panels) + 2.5, 3.8), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(panels)))
    for ax, column in zip(axes, panels, strict=True):
        sns.lineplot(data=curve, x="minutes", y=column, hue="recipe", marker="o", ax=ax)
        ax.set(
            xlabel="training time (CPU minutes)",
            ylabel="validation mean Dice"
            if column == "mean_dice"
            else "HD95, mean of tissues (mm)",
        )
        ax.grid(alpha=0.3)
    for ax in axes[:-1]:  # one legend, beside the last panel, clear of the curves
        ax.get_legend().remove()
    sns.move_legend(axes[-1], "upper left", bbox_to_anchor=(1.02, 1), frameon=False)
    if title:
        fig.suptitle(title)
    return fig
