"""The slice viewer, driven headless: widget values must change what is drawn."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import write_scan

from ibsr_helpers.data import Subject, Volume
from ibsr_helpers.display import PLANES, slice_plane
from ibsr_helpers.errors import IBSRError
from ibsr_helpers.preprocessing import PLANE_AXIS
from ibsr_helpers.viewer import SliceViewer, view, view_files

SHAPE = (24, 12, 20)  # small (X, Y, Z); axis 1 plays IBSR's 1.5 mm axis
SPACING = (1.0, 1.5, 1.0)


@pytest.fixture
def image() -> np.ndarray:
    rng = np.random.default_rng(0)
    x, y, z = np.meshgrid(*(np.arange(n) for n in SHAPE), indexing="ij")
    img = (10 + x + 2 * y + 3 * z + rng.normal(0, 1, SHAPE)).astype(np.float32)
    img[:2] = 0  # some background
    return img


@pytest.fixture
def label() -> np.ndarray:
    lab = np.zeros(SHAPE, dtype=np.uint8)
    lab[4:20, 2:10, 3:17] = 3
    lab[4:20, 2:10, 3:6] = 2
    lab[10:14, 4:8, 8:12] = 1
    return lab


def png_bytes(viewer: SliceViewer) -> bytes:
    return bytes(viewer.image_widget.value)


def test_renders_rgb_and_fills_png_widget(image, label):
    v = SliceViewer(image, label, SPACING)
    rgb = v.render()
    assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3
    assert png_bytes(v).startswith(b"\x89PNG\r\n\x1a\n")
    assert v.widget is v._box
    assert v.image_widget in v.widget.children


def test_starts_mid_volume_in_coronal(image):
    v = SliceViewer(image, spacing=SPACING)
    assert v.plane == "coronal"
    assert v.index == SHAPE[1] // 2
    assert v.slice_widget.max == SHAPE[1] - 1


def test_slice_slider_changes_picture(image, label):
    v = SliceViewer(image, label, SPACING)
    before_rgb, before_png = v.render(), png_bytes(v)
    v.slice_widget.value = v.index + 3
    assert not np.array_equal(v.render(), before_rgb)
    assert png_bytes(v) != before_png


@pytest.mark.parametrize("plane", PLANES)
def test_slider_range_follows_plane(image, plane):
    v = SliceViewer(image, spacing=SPACING, plane="coronal" if plane != "coronal" else "axial")
    v.plane_widget.value = plane
    n = SHAPE[PLANE_AXIS[plane]]
    assert v.slice_widget.max == n - 1
    assert v.index == n // 2
    v.index = n - 1  # the last slice of this plane is reachable and drawable
    assert v.index == n - 1
    assert v.render().shape[2] == 3


def test_plane_change_redraws_and_each_plane_keeps_its_slice(image, label):
    v = SliceViewer(image, label, SPACING)
    coronal_png = png_bytes(v)
    v.index = 2
    v.plane = "axial"
    assert png_bytes(v) != coronal_png
    v.index = 15
    v.plane = "coronal"
    assert v.index == 2
    v.plane = "axial"
    assert v.index == 15


def test_opacity_changes_picture(image, label):
    v = SliceViewer(image, label, SPACING, alpha=0.2)
    before_rgb, before_png = v.render(), png_bytes(v)
    v.alpha_widget.value = 0.9
    assert not np.array_equal(v.render(), before_rgb)
    assert png_bytes(v) != before_png


def test_opacity_zero_equals_no_label(image, label):
    plain = SliceViewer(image, None, SPACING)
    v = SliceViewer(image, label, SPACING, alpha=0.5)
    assert not np.array_equal(v.render(), plain.render())
    v.alpha = 0.0
    np.testing.assert_array_equal(v.render(), plain.render())
    np.testing.assert_array_equal(v.panels()[0], plain.panels()[0])


def test_opacity_disabled_without_label(image, label):
    assert SliceViewer(image, None, SPACING).alpha_widget.disabled
    assert not SliceViewer(image, label, SPACING).alpha_widget.disabled


def test_label_colours_only_where_labelled(image, label):
    v = SliceViewer(image, label, SPACING, alpha=1.0, plane="axial")
    plain = SliceViewer(image, None, SPACING, plane="axial")
    v.index = plain.index = 10
    differs = np.any(v.panels()[0] != plain.panels()[0], axis=-1)
    labelled = slice_plane(label, "axial", 10) > 0
    np.testing.assert_array_equal(differs, labelled)


def test_compare_shows_two_panels(image, label):
    other = label.copy()
    other[other == 3] = 2
    single = SliceViewer(image, label, SPACING)
    v = SliceViewer(image, label, SPACING, compare=other, names=("truth", "prediction"))
    panels = v.panels()
    assert len(panels) == 2
    assert not np.array_equal(panels[0], panels[1])
    assert v.render().shape[1] > single.render().shape[1]
    titles = [ax.get_title() for ax in v.figure().axes]
    assert titles[0].startswith("truth") and titles[1].startswith("prediction")


def test_aspect_follows_spacing(image):
    # The coronal slice spans 24 x 20 mm and the sagittal 18 x 20 mm (1.5 mm axis).
    for plane, (w, h) in {"coronal": (24.0, 20.0), "sagittal": (18.0, 20.0)}.items():
        v = SliceViewer(image, spacing=SPACING, plane=plane)
        fig = v.figure()
        fig.canvas.draw()
        box = fig.axes[0].get_window_extent()
        assert box.width / box.height == pytest.approx(w / h, rel=0.02)


@pytest.mark.parametrize(
    "kw", [{"label": np.zeros((24, 12, 19))}, {"compare": np.zeros((12, 24, 20))}]
)
def test_shape_mismatch_raises(image, kw):
    with pytest.raises(IBSRError, match="does not match image shape"):
        SliceViewer(image, spacing=SPACING, **kw)


def test_bad_input_raises(image):
    with pytest.raises(IBSRError, match="3-D"):
        SliceViewer(image[0])
    with pytest.raises(IBSRError, match="spacing"):
        SliceViewer(image, spacing=(1.0, 0.0, 1.0))
    with pytest.raises(IBSRError, match="unknown plane"):
        SliceViewer(image, plane="transverse")
    v = SliceViewer(image)
    with pytest.raises(IBSRError, match="unknown plane"):
        v.plane = "transverse"


def make_volume(image: np.ndarray, label: np.ndarray, affine: np.ndarray) -> Volume:
    subject = Subject(
        "IBSR_99", "val", Path("IBSR_99.nii.gz"), Path("IBSR_99_seg.nii.gz"), SPACING, SHAPE
    )
    return Volume(subject, image, label, nib.Nifti1Image(image, affine))


def test_view_accepts_a_volume(image, label):
    vol = make_volume(image, label, np.diag([*SPACING, 1.0]))
    v = view(vol)
    assert v.title == "IBSR_99"
    assert v.spacing == SPACING
    np.testing.assert_array_equal(v.label, label)
    explicit = SliceViewer(image, label, SPACING, title="IBSR_99")
    np.testing.assert_array_equal(v.render(), explicit.render())


def test_view_reorients_a_non_ras_volume(image, label):
    # Same data stored left-to-right (LAS): the viewer must flip it back.
    flipped = make_volume(image[::-1].copy(), label[::-1].copy(), np.diag([-1.0, 1.5, 1.0, 1.0]))
    np.testing.assert_array_equal(view(flipped).image, image)
    np.testing.assert_array_equal(view(flipped).label, label)


def test_view_of_plain_array_defaults(image):
    v = view(image)
    assert v.spacing == (1.0, 1.0, 1.0) and v.label is None and v.title is None


def test_real_subject_in_every_plane(any_root):
    # IBSR18 when IBSR18_DIR is set, else demo data: same geometry, (256, 128, 256).
    from ibsr_helpers import data

    subject = next(s for s in data.discover(any_root) if s.label is not None)
    vol = data.load_subject(subject)
    v = view(vol)
    assert v.title == subject.id and v.spacing == subject.spacing
    for plane in PLANES:
        v.plane = plane
        assert v.slice_widget.max == vol.image.shape[PLANE_AXIS[plane]] - 1
        assert v.index == vol.image.shape[PLANE_AXIS[plane]] // 2
    v.plane = "coronal"
    assert {2, 3} <= set(np.unique(slice_plane(vol.label, "coronal", v.index)).tolist())
    before = v.render()
    v.alpha = 0.0
    assert not np.array_equal(v.render(), before)


def test_compare_viewer_switches_subject_model_and_slices(image, label):
    from ibsr_helpers.viewer import CompareViewer

    a = make_volume(image, label, np.diag([*SPACING, 1.0]))
    b = make_volume(image[::-1].copy(), label[::-1].copy(), np.diag([-1.0, 1.5, 1.0, 1.0]))
    b.subject = Subject("IBSR_98", "val", Path("x"), Path("y"), SPACING, SHAPE)
    wrong = np.where(label > 0, 1, 0).astype(np.uint8)
    v = CompareViewer(
        [a, b],
        {"perfect": {a.id: label, b.id: label[::-1]}, "all CSF": {a.id: wrong, b.id: wrong[::-1]}},
    )
    first = v.render()
    assert first.ndim == 3 and bytes(v.image_widget.value)[:4] == b"\x89PNG"
    v.model_widget.value = "all CSF"
    assert not np.array_equal(v.render(), first)
    v.model_widget.value = "perfect"
    v.subject_widget.value = "IBSR_98"  # stored LAS: shown RAS, so the same picture
    np.testing.assert_array_equal(v.render()[40:], first[40:])  # below the title
    v.slice_widgets[1].value = 2
    assert not np.array_equal(v.render()[40:], first[40:])
    with pytest.raises(IBSRError, match="nothing to compare"):
        CompareViewer([a], {"m": {}})


def test_view_files_opens_a_scan_and_its_segmentation(tmp_path):
    scan = write_scan(tmp_path / "scan.nii.gz")
    labels = np.zeros((20, 20, 20), np.uint8)
    labels[5:15, 4:16, 6:14] = 2
    seg = write_scan(tmp_path / "preds" / "scan_seg.nii.gz", labels)
    viewer = view_files(scan, seg)
    assert isinstance(viewer, SliceViewer) and png_bytes(viewer)
    assert png_bytes(viewer) != png_bytes(view_files(scan))  # the labels are drawn
    other = write_scan(tmp_path / "other_seg.nii.gz", np.zeros((20, 20, 10), np.uint8))
    with pytest.raises(IBSRError, match="other_seg.nii.gz.*not on the grid of scan.nii.gz"):
        view_files(scan, other)
