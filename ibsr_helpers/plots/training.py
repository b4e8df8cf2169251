"""Figures for the training chapters (03-05): curves, schedule, samplers, predictions, windows.

What a run learned (learning curves, the learning rate schedule, a prediction over the
ground truth), which slices and patches the samplers draw, and how sliding-window
inference covers a volume. The training engine draws the learning curves and the
prediction overlay; no figure module imports the engine, so the two stay out of an import
circle (the schedule comes from :mod:`ibsr_helpers.step`, below both).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from ibsr_helpers.data import Volume
from ibsr_helpers.display import (
    LABEL_COLORS,
    PLANE_DISPLAY,
    check_image,
    check_plane,
    check_same_shape,
    draw_slice,
    intensity_window,
    legend_handles,
    n_slices,
    overlay,
    plane_extent,
    slice_plane,
    unpack_volume,
)
from ibsr_helpers.errors import IBSRError
from ibsr_helpers.handlers import Handler
from ibsr_helpers.layout import LABELS, TISSUES
from ibsr_helpers.preprocessing import PLANE_AXIS

if TYPE_CHECKING:
    from ibsr_helpers.datasets import PatchDataset
    from ibsr_helpers.preprocessing import Prepared

__all__ = [
    "TrainingFigures",
    "plot_learning_curves",
    "plot_lr_schedule",
    "plot_prediction_overlay",
    "plot_slice_sampling",
    "plot_patch_centres",
    "plot_sliding_window",
]


def plot_learning_curves(
    history: Mapping[str, Sequence[float]], title: str | None = None
) -> Figure:
    """Training loss and validation Dice per tissue against the epoch.

    Args:
        history: The engine's history (``epoch``, ``train_loss``, ``val_epoch``,
            ``val_dice_<tissue>``, ``val_mean_dice``), e.g. a run's ``history.json``.
        title: Figure title.

    Returns:
        A figure with two axes: loss (left), validation Dice (right).
    """
    fig = Figure(figsize=(10, 3.6), layout="constrained")
    ax_loss, ax_dice = fig.subplots(1, 2)
    epochs = np.asarray(history.get("epoch", []), dtype=float) + 1
    ax_loss.plot(epochs, history.get("train_loss", []), marker=".", color="0.2")
    ax_loss.set(xlabel="epoch", ylabel="training loss", title="loss")
    val_epochs = np.asarray(history.get("val_epoch", []), dtype=float) + 1
    for value, tissue in enumerate(TISSUES, start=1):
        key = f"val_dice_{tissue}"
        if history.get(key):
            ax_dice.plot(
                val_epochs, history[key], marker="o", color=LABEL_COLORS[value], label=tissue
            )
    if history.get("val_mean_dice"):
        ax_dice.plot(
            val_epochs, history["val_mean_dice"], marker="s", color="k", lw=2, label="mean"
        )
        ax_dice.legend(loc="lower right")
    ax_dice.set(xlabel="epoch", ylabel="Dice", title="validation Dice (whole volumes)")
    ax_dice.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    return fig


def plot_lr_schedule(config: Mapping, ax: Axes | None = None) -> Figure:
    """The learning rate over a run's steps: linear warm-up, then cosine decay.

    Args:
        config: A training config (``optim`` and ``train`` sections).
        ax: Axes to draw in (default: a new figure).

    Returns:
        The figure; epochs are marked on the top axis.
    """
    from ibsr_helpers.plan import specs
    from ibsr_helpers.step import schedule_factor

    optim = specs(config).optim
    steps = optim.steps_per_epoch
    factor = schedule_factor(optim)  # the engine's own schedule
    x = np.arange(optim.epochs * steps)
    if ax is None:
        fig = Figure(figsize=(7, 3), layout="constrained")
        ax = fig.subplots()
    ax.plot(x, [optim.lr * factor(int(s)) for s in x], color="k")
    ax.set(
        xlabel="training step",
        ylabel="learning rate",
        title=f"{config.get('name', '')}: warm-up then cosine",
    )
    top = ax.secondary_xaxis("top", functions=(lambda s: s / steps, lambda e: e * steps))
    top.set_xlabel("epoch")
    ax.grid(alpha=0.3)
    return ax.figure  # type: ignore[return-value]


def plot_prediction_overlay(
    volume: Volume,
    prediction: np.ndarray,
    plane: str = "coronal",
    index: int | None = None,
    alpha: float = 0.45,
) -> Figure:
    """Ground truth, prediction and their disagreement on one slice.

    Args:
        volume: The subject (its image and, if present, label).
        prediction: ``(X, Y, Z)`` predicted labels.
        plane: Slicing plane.
        index: Slice index (default: the middle).
        alpha: Label opacity.

    Returns:
        A figure with two or three panels (ground truth, prediction, errors in red).
    """
    img, lab, sp, _ = unpack_volume(volume, None, None)
    pred = check_same_shape(img, np.asarray(prediction), "prediction")
    i = n_slices(img.shape, plane) // 2 if index is None else int(index)
    window = intensity_window(img)
    image2d = slice_plane(img, plane, i)
    panels = [("prediction", slice_plane(pred, plane, i))]
    if lab is not None:
        gt2d = slice_plane(lab, plane, i)
        panels.insert(0, ("ground truth", gt2d))
    fig = Figure(figsize=(4 * (len(panels) + (lab is not None)), 4.3), layout="constrained")
    axes = fig.subplots(1, len(panels) + (lab is not None))
    for ax, (name, lab2d) in zip(axes, panels, strict=False):
        draw_slice(ax, overlay(image2d, lab2d, alpha, window), img.shape, sp, plane, name)
    if lab is not None:
        wrong = (panels[0][1] != panels[1][1]).astype(np.uint8)
        rgb = overlay(image2d, None, 0.0, window).copy()
        rgb[wrong.astype(bool)] = (1.0, 0.0, 0.0)
        draw_slice(axes[-1], rgb, img.shape, sp, plane, f"errors ({int(wrong.sum())} px)")
    fig.legend(handles=legend_handles(), loc="outside lower center", ncol=3, frameon=False)
    fig.suptitle(f"{volume.id} · {plane} {i}")
    return fig


# --------------------------------------------------------------------------- samplers


def plot_slice_sampling(
    prepared: Prepared, plane: str = "coronal", class_ratios: Sequence[float] = (0, 1, 1, 1)
) -> Figure:
    """Which slices a 2D run trains on: each slice's chance under the two slice samplers.

    Top: the tissue voxels of each slice. Bottom: the probability of drawing each slice,
    ``uniform`` (every slice with brain alike) against ``class_balanced`` (a class drawn
    with ``class_ratios``, then one of its voxels: :func:`ibsr_helpers.datasets.slice_weights`).

    Args:
        prepared: A prepared, labelled volume.
        plane: Slicing plane.
        class_ratios: Background, CSF, GM, WM ratios of the class-balanced sampler.

    Returns:
        The figure.
    """
    from ibsr_helpers.datasets import slice_weights

    check_plane(plane)
    if prepared.label is None:
        raise IBSRError(f"{prepared.id}: slice sampling needs labels")
    axis = PLANE_AXIS[plane]
    label = np.moveaxis(prepared.label, axis, 0)
    brain = np.moveaxis(prepared.brain, axis, 0).any(axis=(1, 2))
    x = np.arange(len(label))
    fig = Figure(figsize=(8, 4.5), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True)
    for value, colour in LABEL_COLORS.items():
        top.plot(x, (label == value).sum(axis=(1, 2)), color=colour, label=LABELS[value])
    top.set(ylabel="voxels", title=f"{prepared.id}, {plane} slices")
    top.legend(frameon=False)
    bottom.plot(x, brain / brain.sum(), color="0.4", label="uniform")
    bottom.plot(x, slice_weights(label, class_ratios), color="k", label="class_balanced")
    bottom.set(xlabel=f"{plane} slice", ylabel="chance of being drawn")
    bottom.legend(frameon=False, title=f"class_ratios {list(class_ratios)}")
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
    return fig


def plot_patch_centres(
    samplers: Mapping[str, PatchDataset],
    plane: str = "coronal",
    index: int | None = None,
    slab: int | None = None,
    seed: int = 0,
) -> Figure:
    """Where each patch sampler puts its patch centres, over one slice.

    Each sampler (a :class:`~ibsr_helpers.datasets.PatchDataset`, whose
    ``patches_per_volume`` sets how many centres are drawn) samples its first volume
    once; the centres are the ones the MONAI sampler itself chose. Centres within
    ``slab`` slices of the shown slice are drawn as dots coloured by the tissue under
    them (white: background); the title gives the share of *all* centres per class. The
    first drawn patch is outlined for scale.

    Args:
        samplers: Name (e.g. ``"uniform"``) to PatchDataset, all on the same volume.
        plane: Slicing plane.
        index: Slice index in the cropped volume (default: the middle).
        slab: Half-thickness, in slices, of the slab whose centres are drawn
            (default: a quarter of the patch size along the plane's axis).
        seed: Seed of every sampler (same seed, same figure).

    Returns:
        A figure with one panel per sampler.
    """
    if not samplers:
        raise IBSRError("no sampler to plot")
    axis = PLANE_AXIS[check_plane(plane)]
    h_axis, v_axis = PLANE_DISPLAY[plane]
    fig = Figure(figsize=(3.2 * len(samplers), 3.9), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(samplers)))
    colours = {0: "white", **LABEL_COLORS}
    for ax, (name, ds) in zip(axes, samplers.items(), strict=True):
        vol = ds.volumes[0]
        centres = ds.centres(0, seed)
        i = vol.image.shape[axis] // 2 if index is None else int(index)
        half = ds.patch_size[axis] // 4 if slab is None else int(slab)
        tissue = vol.label[tuple(centres.T)]
        rgb = overlay(
            slice_plane(vol.image, plane, i),
            slice_plane(vol.label, plane, i),
            0.25,
            intensity_window(vol.image),
        )
        draw_slice(ax, rgb, vol.image.shape, (1.0, 1.0, 1.0), plane)
        near = np.abs(centres[:, axis] - i) <= half
        for value, colour in colours.items():
            pick = near & (tissue == value)
            ax.scatter(
                centres[pick, h_axis] + 0.5,
                centres[pick, v_axis] + 0.5,
                s=9,
                c=colour,
                edgecolors="k",
                linewidths=0.3,
            )
        c, size = centres[0], ds.patch_size
        ax.add_patch(
            Rectangle(
                (c[h_axis] - size[h_axis] // 2, c[v_axis] - size[v_axis] // 2),
                size[h_axis],
                size[v_axis],
                fill=False,
                ec="#00E5FF",
                ls="--",
            )
        )
        share = np.bincount(tissue, minlength=4) / len(tissue)
        ax.set_title(
            f"{name}\n" + " ".join(f"{LABELS[v] if v else 'bg'} {share[v]:.0%}" for v in range(4)),
            fontsize=9,
        )
    fig.suptitle(f"Patch centres within ±{half} slices of {plane} slice {i}")
    return fig


# --------------------------------------------------------------------------- 3D inference


def plot_sliding_window(
    image: np.ndarray,
    patch_size: Sequence[int],
    overlap: float = 0.5,
    plane: str = "coronal",
    index: int | None = None,
    label: np.ndarray | None = None,
) -> Figure:
    """How sliding-window inference covers a volume, and how it blends the windows.

    Three panels: the windows that cut one slice (dashed outlines, one drawn solid), the
    Gaussian importance map that weighs each window's prediction (highest at its centre,
    where the network saw the most context; MONAI's ``sigma_scale=0.125``), and the sum
    of the weights over all windows on the slice, which the blended prediction is
    divided by. Drawn one pixel per voxel, for a cropped model input.

    Args:
        image: ``(X, Y, Z)`` volume, e.g. a :class:`~ibsr_helpers.datasets.CroppedVolume`'s.
        patch_size: Window size ``(x, y, z)``.
        overlap: Window overlap, as ``inference.overlap``.
        plane: Slicing plane.
        index: Slice index (default: the middle).
        label: Optional labels drawn over the image.

    Returns:
        The figure; its title gives the number of windows in the whole volume.
    """
    from monai.data.utils import compute_importance_map

    from ibsr_helpers.inference import window_slices

    image = check_image(image)
    axis = PLANE_AXIS[check_plane(plane)]
    h_axis, v_axis = PLANE_DISPLAY[plane]
    patch = tuple(int(p) for p in patch_size)
    windows = window_slices(image.shape, patch, overlap)
    starts = [sorted({w[k].start for w in windows}) for k in range(3)]
    i = image.shape[axis] // 2 if index is None else int(index)
    weight = compute_importance_map(patch, mode="gaussian", sigma_scale=0.125).numpy()
    coverage = np.zeros(image.shape, np.float32)
    coverage = np.take(coverage, i, axis=axis)  # (A, B): the slice only
    a_axis, b_axis = (k for k in range(3) if k != axis)
    for s in starts[axis]:
        if not s <= i < s + patch[axis]:
            continue
        w = np.take(weight, i - s, axis=axis)
        for sa in starts[a_axis]:
            for sb in starts[b_axis]:
                coverage[sa : sa + patch[a_axis], sb : sb + patch[b_axis]] += w
    fig = Figure(figsize=(12, 4.2), layout="constrained")
    ax_img, ax_w, ax_cov = fig.subplots(1, 3)
    unit = (1.0, 1.0, 1.0)
    lab2d = None if label is None else slice_plane(np.asarray(label), plane, i)
    rgb = overlay(slice_plane(image, plane, i), lab2d, 0.3, intensity_window(image))
    draw_slice(ax_img, rgb, image.shape, unit, plane, f"windows on {plane} slice {i}")
    for sh in starts[h_axis]:
        for sv in starts[v_axis]:
            ax_img.add_patch(
                Rectangle(
                    (sh, sv),
                    patch[h_axis],
                    patch[v_axis],
                    fill=False,
                    ec="#00E5FF",
                    lw=0.6,
                    ls="--",
                    alpha=0.6,
                )
            )
    # Two neighbours drawn solid, so the overlap shows.
    for sh, colour in zip(starts[h_axis][:2], ("#00E5FF", "#FF00FF"), strict=False):
        ax_img.add_patch(
            Rectangle(
                (sh, starts[v_axis][0]), patch[h_axis], patch[v_axis], fill=False, ec=colour, lw=2.0
            )
        )
    mid = np.take(weight, patch[axis] // 2, axis=axis)
    ax_w.imshow(np.flipud(mid.T), cmap="magma", extent=(0, patch[h_axis], 0, patch[v_axis]))
    ax_w.set(title=f"importance map ({'x'.join(map(str, patch))} window)", xticks=[], yticks=[])
    shown = ax_cov.imshow(
        np.flipud(coverage.T), cmap="viridis", extent=plane_extent(image.shape, unit, plane)
    )
    ax_cov.set(title="sum of weights (divides the blend)", xticks=[], yticks=[])
    fig.colorbar(shown, ax=ax_cov, shrink=0.8)
    n_windows = len(windows)
    fig.suptitle(
        f"{n_windows} windows of {'x'.join(map(str, patch))} voxels cover "
        f"{'x'.join(map(str, image.shape))} at overlap {overlap:g}"
    )
    return fig


class TrainingFigures(Handler):
    """A training run's figures, drawn when it completes: ``curves.png`` and ``val_overlay.png``.

    The engine's handler for figures (:mod:`ibsr_helpers.handlers`): the CLI and the
    notebooks add it, so the engine itself never imports a figure module. The overlay
    shows the best model on the first validation volume: the segmentation validation kept
    (``trainer.best_seg``), or, after a resume, the best weights' prediction.

    Args:
        dpi: Resolution of the saved figures.
    """

    def __init__(self, dpi: int = 100) -> None:
        self.dpi = dpi

    def completed(self, trainer: Any) -> None:
        """Write ``curves.png`` and, when there is a validation volume, ``val_overlay.png``."""
        import matplotlib.pyplot as plt

        from ibsr_helpers.inference import load_run, predict_volume

        fig = plot_learning_curves(trainer.history)
        fig.savefig(trainer.out_dir / "curves.png", dpi=self.dpi, bbox_inches="tight")
        plt.close(fig)
        if not trainer.val_set:
            return
        seg = trainer.best_seg
        if seg is None and (trainer.out_dir / "best.pt").exists():
            seg, _ = predict_volume(load_run(trainer.out_dir, trainer.device), trainer.val_set[0])
        if seg is not None:
            fig = plot_prediction_overlay(trainer.val_set[0], seg)
            fig.savefig(trainer.out_dir / "val_overlay.png", dpi=self.dpi, bbox_inches="tight")
            plt.close(fig)
