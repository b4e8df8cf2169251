"""Interactive viewers built from ipywidgets and matplotlib only: one volume, or many predictions.

It works wherever ipywidgets does (Jupyter, VS Code, Colab), headless included: each
view is drawn on a matplotlib Agg canvas (no pyplot state) and sent to an
``ipywidgets.Image`` as PNG. Planes follow :mod:`ibsr_helpers.display` (RAS voxel order,
head upright, neurological left/right, true millimetre aspect).

:class:`SliceViewer` browses one volume (with a label, or two side by side);
:class:`CompareViewer` puts ground truth, prediction and errors side by side in three
planes, with a dropdown over subjects and one over models.

Example:
    >>> from ibsr_helpers.viewer import view
    >>> v = view(volume)                       # a data.Volume: image, label, spacing, id
    >>> v = view(image, label=pred, spacing=(0.94, 1.5, 0.94), compare=truth,
    ...          names=("prediction", "ground truth"))
    >>> v                                      # last line of a cell: shows the widgets

"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import ipywidgets as widgets
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image as PILImage

from ibsr_helpers.data import Volume
from ibsr_helpers.display import (
    PLANES,
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
from ibsr_helpers.io import check_spacing

__all__ = ["SliceViewer", "CompareViewer", "view", "view_files"]

_PANEL_IN = 4.0  # longest side of a slice panel, inches
_GAP_IN = 0.15  # space around panels
_TOP_IN = 0.3  # room for the panel titles (plus _SUPTITLE_IN with a title)
_SUPTITLE_IN = 0.3
_BOTTOM_IN = 0.4  # room for the legend


class _PictureWidget:
    """What both viewers share: a figure drawn to PNG in an image widget, shown in a box."""

    image_widget: widgets.Image
    _box: widgets.Box

    def figure(self) -> Figure:  # pragma: no cover - each viewer draws its own
        """The current view on a new Agg figure."""
        raise NotImplementedError

    def render(self) -> np.ndarray:
        """Draw the current view.

        Returns:
            ``(H, W, 3)`` uint8 RGB array of the picture the widget shows.
        """
        fig = self.figure()
        fig.canvas.draw()
        return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()

    def update(self) -> None:
        """Redraw and put the PNG in the image widget (called on every widget change)."""
        buf = io.BytesIO()
        PILImage.fromarray(self.render()).save(buf, format="PNG", compress_level=1)
        self.image_widget.value = buf.getvalue()

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self._box)


class SliceViewer(_PictureWidget):
    """Browse a volume slice by slice, with its labels over it.

    Widgets: a plane selector (sagittal / coronal / axial), a slice slider whose range
    follows the plane (starts mid-volume; each plane remembers its slice) and a label
    opacity slider. With ``compare`` a second label volume is drawn in a panel beside
    the first (e.g. a prediction next to the ground truth).

    Args:
        image: ``(X, Y, Z)`` intensities in RAS voxel order (IBSR18's order).
        label: ``(X, Y, Z)`` labels (0 bg, 1 CSF, 2 GM, 3 WM), or None. Other values are
            not coloured.
        spacing: Voxel size in mm, for the aspect ratio.
        compare: A second ``(X, Y, Z)`` label volume, shown in its own panel, or None.
        title: Figure title.
        names: Panel titles for ``label`` and ``compare``.
        plane: The plane shown first.
        alpha: Initial label opacity in [0, 1].
        dpi: Resolution of the drawn PNG.

    Raises:
        IBSRError: If the image is not 3-D, a label's shape differs from the image's,
            the spacing is invalid or the plane unknown.

    """

    def __init__(
        self,
        image: np.ndarray,
        label: np.ndarray | None = None,
        spacing: Sequence[float] = (1.0, 1.0, 1.0),
        compare: np.ndarray | None = None,
        title: str | None = None,
        *,
        names: tuple[str, str] = ("label", "compare"),
        plane: str = "coronal",
        alpha: float = 0.4,
        dpi: int = 80,
    ) -> None:
        self.image = np.asarray(image)
        if self.image.ndim != 3:
            raise IBSRError(f"expected a 3-D (X, Y, Z) image, got shape {self.image.shape}")
        self.label = check_same_shape(self.image, label, "label")
        self.compare = check_same_shape(self.image, compare, "compare")
        self.spacing = check_spacing(spacing)
        self.title = title
        self.names = names
        self.dpi = dpi
        if plane not in PLANES:
            raise IBSRError(f"unknown plane {plane!r}; use one of {PLANES}")
        self._window = intensity_window(self.image)
        self._index = {p: n_slices(self.image.shape, p) // 2 for p in PLANES}
        self._quiet = False
        has_label = self.label is not None or self.compare is not None

        self.plane_widget = widgets.ToggleButtons(
            options=list(PLANES), value=plane, description="plane"
        )
        self.slice_widget = widgets.IntSlider(
            value=self._index[plane],
            min=0,
            max=n_slices(self.image.shape, plane) - 1,
            description="slice",
            continuous_update=True,
        )
        self.alpha_widget = widgets.FloatSlider(
            value=alpha,
            min=0.0,
            max=1.0,
            step=0.05,
            description="opacity",
            disabled=not has_label,
            continuous_update=True,
        )
        self.image_widget = widgets.Image(format="png")
        self.plane_widget.observe(self._on_plane, names="value")
        self.slice_widget.observe(self._on_change, names="value")
        self.alpha_widget.observe(self._on_change, names="value")
        controls = widgets.HBox([self.plane_widget])
        sliders = widgets.HBox([self.slice_widget, self.alpha_widget])
        self._box = widgets.VBox([controls, sliders, self.image_widget])
        self.update()

    # ----------------------------------------------------------------- state

    @property
    def widget(self) -> widgets.VBox:
        """The ipywidgets container (controls and picture)."""
        return self._box

    @property
    def plane(self) -> str:
        """The plane shown; setting it moves the slider to that plane's slice."""
        return self.plane_widget.value

    @plane.setter
    def plane(self, value: str) -> None:
        if value not in PLANES:
            raise IBSRError(f"unknown plane {value!r}; use one of {PLANES}")
        self.plane_widget.value = value

    @property
    def index(self) -> int:
        """The slice shown, along the plane's fixed axis."""
        return int(self.slice_widget.value)

    @index.setter
    def index(self, value: int) -> None:
        self.slice_widget.value = int(value)

    @property
    def alpha(self) -> float:
        """Label opacity in [0, 1]."""
        return float(self.alpha_widget.value)

    @alpha.setter
    def alpha(self, value: float) -> None:
        self.alpha_widget.value = float(value)

    def _on_plane(self, change: dict) -> None:
        self._index[change["old"]] = self.index
        plane = change["new"]
        self._quiet = True  # one redraw, not one per trait change
        try:
            self.slice_widget.max = n_slices(self.image.shape, plane) - 1
            self.slice_widget.value = self._index[plane]
        finally:
            self._quiet = False
        self.update()

    def _on_change(self, change: dict) -> None:
        if not self._quiet:
            self.update()

    # ----------------------------------------------------------------- drawing

    def panels(self) -> list[np.ndarray]:
        """Return the blended slices of the current view, one ``(H, W, 3)`` RGB array each."""
        plane, i = self.plane, self.index
        grey = slice_plane(self.image, plane, i)
        labels = [self.label] if self.compare is None else [self.label, self.compare]
        return [
            overlay(
                grey, None if lab is None else slice_plane(lab, plane, i), self.alpha, self._window
            )
            for lab in labels
        ]

    def figure(self) -> Figure:
        """Draw the current view on a new Agg figure.

        The layout depends on the plane only (panels shaped like the slice in mm), never
        on the slice, opacity or whether a legend is shown, so the picture does not jump.
        """
        rgbs = self.panels()
        n = len(rgbs)
        plane, i = self.plane, self.index
        _, w_mm, _, h_mm = plane_extent(self.image.shape, self.spacing, plane)
        scale = _PANEL_IN / max(w_mm, h_mm)
        pw, ph = w_mm * scale, h_mm * scale
        top = _TOP_IN + (_SUPTITLE_IN if self.title else 0.0)
        width, height = n * pw + (n + 1) * _GAP_IN, ph + top + _BOTTOM_IN
        fig = Figure(figsize=(width, height), dpi=self.dpi)
        FigureCanvasAgg(fig)
        show_legend = (self.label is not None or self.compare is not None) and self.alpha > 0
        last = n_slices(self.image.shape, plane) - 1
        for k, rgb in enumerate(rgbs):
            left = (_GAP_IN + k * (pw + _GAP_IN)) / width
            ax = fig.add_axes((left, _BOTTOM_IN / height, pw / width, ph / height))
            name = f"{self.names[k]} · " if n > 1 else ""
            draw_slice(ax, rgb, self.image.shape, self.spacing, plane, f"{name}{plane} {i}/{last}")
        if show_legend:
            fig.legend(
                handles=legend_handles(),
                loc="lower center",
                ncol=3,
                frameon=False,
                fontsize=9,
                bbox_to_anchor=(0.5, 0.0),
            )
        if self.title:
            fig.suptitle(self.title, y=1 - 0.05 / height, va="top", fontsize=11)
        return fig


def view(
    image: np.ndarray | Volume,
    label: np.ndarray | None = None,
    spacing: Sequence[float] | None = None,
    **kwargs,
) -> SliceViewer:
    """Open a :class:`SliceViewer` on an array or a loaded :class:`~ibsr_helpers.data.Volume`.

    Args:
        image: ``(X, Y, Z)`` array, or a Volume (its label, spacing and id are used unless
            given; a non-RAS Volume is reoriented to RAS).
        label: Labels to overlay (default: the Volume's own).
        spacing: Voxel size in mm (default: the Volume's, else ``(1, 1, 1)``).
        **kwargs: Passed to :class:`SliceViewer` (``compare``, ``title``, ``names``,
            ``plane``, ``alpha``, ``dpi``).

    Returns:
        The viewer; make it the last line of a cell to show it.

    Raises:
        IBSRError: As :class:`SliceViewer`.

    """
    img, lab, sp, vol_title = unpack_volume(image, label, spacing)
    if isinstance(image, Volume) and kwargs.get("compare") is not None:
        kwargs["compare"] = unpack_volume(image, kwargs["compare"], spacing)[1]
    kwargs.setdefault("title", vol_title)
    return SliceViewer(img, lab, sp, **kwargs)


class CompareViewer(_PictureWidget):
    """Ground truth | prediction | errors, in three planes, for any subject and model.

    Widgets: a subject and a model dropdown, one slider per plane (the slice shown in
    that plane; all three meet at one voxel) and the label opacity. The 3 x 3 grid is the
    figure of :func:`ibsr_helpers.plots.plot_error_triplanar`, redrawn on every change.

    Args:
        volumes: Labelled raw subjects (any orientation; shown in RAS).
        predictions: Model name -> subject id -> ``(X, Y, Z)`` labels on that subject's
            grid (e.g. ``inference.predict_volume(run, volume)[0]``).
        alpha: Initial label opacity.
        dpi: Resolution of the drawn PNG.

    Raises:
        IBSRError: If no subject has both a label and a prediction of every model.
    """

    def __init__(
        self,
        volumes: Sequence[Volume],
        predictions: Mapping[str, Mapping[str, np.ndarray]],
        alpha: float = 0.45,
        dpi: int = 60,
    ) -> None:
        self.volumes = {
            v.id: v
            for v in volumes
            if v.label is not None and all(v.id in p for p in predictions.values())
        }
        if not self.volumes or not predictions:
            raise IBSRError("nothing to compare: give labelled volumes and a prediction of each")
        self.predictions = predictions
        self.dpi = dpi
        self._ras: dict[tuple[str, str], tuple] = {}
        first = next(iter(self.volumes))
        self.subject_widget = widgets.Dropdown(
            options=list(self.volumes), value=first, description="subject"
        )
        self.model_widget = widgets.Dropdown(options=list(predictions), description="model")
        shape = self._arrays()[0].shape
        self.slice_widgets = [
            widgets.IntSlider(
                value=n // 2, min=0, max=n - 1, description=p, continuous_update=False
            )
            for n, p in zip(shape, PLANES, strict=True)
        ]
        self.alpha_widget = widgets.FloatSlider(
            value=alpha, min=0.0, max=1.0, step=0.05, description="opacity", continuous_update=False
        )
        self.image_widget = widgets.Image(format="png")
        self.subject_widget.observe(self._on_subject, names="value")
        for w in (self.model_widget, *self.slice_widgets, self.alpha_widget):
            w.observe(lambda _: self.update(), names="value")
        self._box = widgets.VBox(
            [
                widgets.HBox([self.subject_widget, self.model_widget, self.alpha_widget]),
                widgets.HBox(self.slice_widgets),
                self.image_widget,
            ]
        )
        self.update()

    @property
    def widget(self) -> widgets.VBox:
        """The ipywidgets container."""
        return self._box

    def _arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[float, float, float]]:
        """RAS image, label, prediction and spacing of the current subject and model."""
        sid, model = self.subject_widget.value, self.model_widget.value
        vol = self.volumes[sid]
        if (sid, "") not in self._ras:
            self._ras[(sid, "")] = unpack_volume(vol, None, None)
        if (sid, model) not in self._ras:
            pred = self.predictions[model][sid]
            self._ras[(sid, model)] = unpack_volume(vol, np.asarray(pred), None)
        img, lab, sp, _ = self._ras[(sid, "")]
        return img, lab, self._ras[(sid, model)][1], sp

    def _on_subject(self, change: dict) -> None:
        shape = self._arrays()[0].shape
        for w, n in zip(self.slice_widgets, shape, strict=True):
            w.unobserve_all()
            w.max, w.value = n - 1, n // 2
            w.observe(lambda _: self.update(), names="value")
        self.update()

    def figure(self) -> Figure:
        """The current view on a new Agg figure."""
        from ibsr_helpers.plots import draw_error_grid

        img, lab, pred, sp = self._arrays()
        fig = Figure(figsize=(9, 9.4), dpi=self.dpi, layout="constrained")
        FigureCanvasAgg(fig)
        slices = [w.value for w in self.slice_widgets]
        draw_error_grid(fig, img, lab, pred, sp, slices, self.alpha_widget.value)
        fig.suptitle(f"{self.subject_widget.value} · {self.model_widget.value}")
        return fig


def view_files(
    image: str | Path, segmentation: str | Path | None = None, **kwargs: Any
) -> SliceViewer:
    """Open a :class:`SliceViewer` on NIfTI files: a scan and its segmentation, if given.

    For ``ibsr-seg predict``'s output: ``view_files("scan.nii.gz",
    "preds/scan_seg.nii.gz")``. Both are reoriented to RAS, so any scan orientation shows
    upright; the voxel size comes from the scan's header.

    Args:
        image: The scan.
        segmentation: A label map on the scan's grid (values 0-3).
        **kwargs: As :func:`view` (``title``, ``plane``, ``alpha``, ...).

    Raises:
        IBSRError: If a file cannot be read or the segmentation's grid differs from the
            scan's (the message names it).
    """
    import nibabel as nib

    from ibsr_helpers.io import load_nifti, squeeze_trailing

    scan = nib.as_closest_canonical(load_nifti(image))
    data = squeeze_trailing(np.asarray(scan.dataobj, dtype=np.float32))
    labels = None
    if segmentation is not None:
        seg = nib.as_closest_canonical(load_nifti(segmentation))
        labels = squeeze_trailing(np.asarray(seg.dataobj)).astype(np.int16)
        if labels.shape != data.shape or not np.allclose(seg.affine, scan.affine, atol=1e-3):
            raise IBSRError(
                f"not on the grid of {Path(image).name} (shape {labels.shape} against "
                f"{data.shape}, or another affine)",
                segmentation,
            )
    kwargs.setdefault("title", Path(image).name)
    return SliceViewer(data, labels, tuple(float(z) for z in scan.header.get_zooms()[:3]), **kwargs)
