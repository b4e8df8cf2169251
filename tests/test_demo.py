"""Tests for ibsr_helpers.demo: layout, format, labels, contrast, determinism."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from ibsr_helpers import data, demo
from ibsr_helpers.demo import make_demo_dataset, split_sizes
from ibsr_helpers.errors import IBSRError

# Found with nib.aff2axcodes on every IBSR18 file; looking at the images confirms the
# anatomy is in this order too (axis 1 posterior->anterior, axis 2 inferior->superior).
IBSR18_AXCODES = ("R", "A", "S")
# Mean brain centroid (label > 0) of IBSR18's 15 labelled subjects, per voxel axis;
# every subject lies within 4 voxels of it.
IBSR18_BRAIN_CENTROID = np.array([127.0, 56.5, 138.0])
# Labelled brain volume of IBSR18's subjects: 1180-1670 ml.
IBSR18_BRAIN_ML = (1100.0, 1750.0)

EXPECTED = [("DEMO_01", "train"), ("DEMO_02", "val"), ("DEMO_03", "test")]


def _no_network(*args, **kwargs):
    raise AssertionError("make_demo_dataset tried to use the network")


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo") / "demo3"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", _no_network)
        mp.setattr(socket, "create_connection", _no_network)
        root = make_demo_dataset(out, n_subjects=3, seed=0, progress=False)
    assert root == out
    return root


@pytest.fixture(scope="module")
def volumes(demo_root) -> list[data.Volume]:
    return [data.load_subject(s) for s in data.discover(demo_root)]


def _arrays(root: Path, sid: str, split_dir: str) -> tuple[np.ndarray, np.ndarray | None]:
    folder = root / "TrainingValidationTestSets" / split_dir / sid
    image = np.asarray(nib.load(folder / f"{sid}.nii.gz").dataobj)
    seg_path = folder / f"{sid}_seg.nii.gz"
    seg = np.asarray(nib.load(seg_path).dataobj) if seg_path.exists() else None
    return image, seg


# --- splits ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "sizes"),
    [(3, (1, 1, 1)), (4, (2, 1, 1)), (6, (3, 2, 1)), (10, (6, 3, 1)), (18, (10, 6, 2))],
)
def test_split_sizes_examples(n, sizes):
    assert split_sizes(n) == sizes


def test_split_sizes_always_cover_every_split():
    for n in range(3, 60):
        n_train, n_val, n_test = split_sizes(n)
        assert n_train + n_val + n_test == n
        assert min(n_train, n_val, n_test) >= 1
        if n >= 4:  # 3 subjects can only split 1/1/1
            assert abs(n_train / n - 0.6) <= 0.1, n


@pytest.mark.parametrize("n", [0, 1, 2, -3])
def test_too_few_subjects_raise(n, tmp_path):
    with pytest.raises(IBSRError, match="at least 3"):
        make_demo_dataset(tmp_path / "demo", n_subjects=n, progress=False)
    assert not (tmp_path / "demo").exists()


# --- layout and marker ----------------------------------------------------------------


def test_layout(demo_root):
    course = demo_root / "TrainingValidationTestSets"
    files = sorted(p.relative_to(course).as_posix() for p in course.rglob("*") if p.is_file())
    assert files == [
        "Test_Set/DEMO_03/DEMO_03.nii.gz",
        "Training_Set/DEMO_01/DEMO_01.nii.gz",
        "Training_Set/DEMO_01/DEMO_01_seg.nii.gz",
        "Validation_Set/DEMO_02/DEMO_02.nii.gz",
        "Validation_Set/DEMO_02/DEMO_02_seg.nii.gz",
    ]


def test_marker(demo_root):
    assert data.is_demo_data(demo_root)
    text = (demo_root / data.DEMO_MARKER).read_text(encoding="utf-8")
    assert data.DEMO_DESCRIPTION in text
    assert "seed=0" in text
    assert "MNI152" in text
    assert "IBSR18 must be" in text and "data/README.md" in text
    said = data.describe_source(demo_root)
    assert said.startswith("!!! DEMO DATA") and data.DEMO_DESCRIPTION in said  # loud


def test_discover_finds_the_splits(demo_root):
    subjects = data.discover(demo_root)
    assert [(s.id, s.split) for s in subjects] == EXPECTED
    for s in subjects:
        assert s.shape == (256, 128, 256)
        assert s.spacing == pytest.approx((0.9375, 1.5, 0.9375))
        assert (s.label is None) == (s.split == "test")


# --- on-disk format -------------------------------------------------------------------


def test_files_are_4d_int16_with_ibsr_header(demo_root):
    for s in data.discover(demo_root):
        for path in (s.image, s.label):
            if path is None:
                continue
            img = nib.load(path)
            assert img.shape == (256, 128, 256, 1)
            assert img.get_data_dtype() == np.int16
            assert int(img.header["sform_code"]) == 1
            assert int(img.header["qform_code"]) == 0
            assert nib.aff2axcodes(img.affine) == IBSR18_AXCODES
            np.testing.assert_allclose(img.affine, demo.AFFINE)
            assert img.header.get_zooms()[:3] == pytest.approx((0.9375, 1.5, 0.9375))


def test_header_matches_real_ibsr18():
    root = os.environ.get("IBSR18_DIR")
    if not root:
        pytest.skip("IBSR18_DIR not set: the constants above were checked against IBSR18")
    real = [s for s in data.discover(root) if s.spacing == pytest.approx(demo.SPACING)]
    assert real, "no IBSR18 subject with the demo spacing"
    for path in (real[0].image, real[0].label):
        img = nib.load(path)
        assert nib.aff2axcodes(img.affine) == IBSR18_AXCODES
        np.testing.assert_allclose(img.affine, demo.AFFINE)
        assert img.shape == (256, 128, 256, 1) and img.get_data_dtype() == np.int16
        assert (int(img.header["sform_code"]), int(img.header["qform_code"])) == (1, 0)


# --- content --------------------------------------------------------------------------


def test_load_subject_validates(volumes):
    assert [v.id for v in volumes] == [sid for sid, _ in EXPECTED]
    for v in volumes:
        assert v.image.shape == (256, 128, 256) and v.image.dtype == np.float32
        assert np.isfinite(v.image).all()
        if v.label is not None:
            assert v.label.shape == v.image.shape and v.label.dtype == np.uint8


def test_labels_and_skull_stripping(volumes):
    for v in volumes:
        if v.label is None:
            assert 0.08 < (v.image > 0).mean() < 0.20  # test subject: still a brain
            continue
        assert set(np.unique(v.label).tolist()) == {0, 1, 2, 3}
        # Background is exactly 0 and every brain voxel is positive.
        np.testing.assert_array_equal(v.image == 0, v.label == 0)


def test_tissue_contrast_like_t1(volumes):
    for v in volumes:
        if v.label is None:
            continue
        csf, gm, wm = (float(v.image[v.label == k].mean()) for k in (1, 2, 3))
        assert wm > gm > csf, v.id
        assert gm - csf > 0.15 * wm and wm - gm > 0.15 * wm, v.id  # visibly separated


def test_tissue_fractions_and_brain_size(volumes):
    for v in volumes:
        if v.label is None:
            continue
        brain = v.label > 0
        fractions = [float((v.label == k).sum() / brain.sum()) for k in (1, 2, 3)]
        assert 0.005 < fractions[0] < 0.12, (v.id, fractions)  # IBSR18: 0.7-2.7%
        assert 0.45 < fractions[1] < 0.75, (v.id, fractions)  # IBSR18: 59-71%
        assert 0.25 < fractions[2] < 0.45, (v.id, fractions)  # IBSR18: 28-40%
        ml = brain.sum() * np.prod(v.spacing) / 1000
        assert IBSR18_BRAIN_ML[0] < ml < IBSR18_BRAIN_ML[1], (v.id, ml)
        centroid = np.argwhere(brain).mean(0)
        assert np.abs(centroid - IBSR18_BRAIN_CENTROID).max() < 8, (v.id, centroid)


def test_anatomy_the_right_way_round(volumes):
    """Same axis = same anatomical direction as IBSR18 (axis 1 P->A, axis 2 I->S).

    The lowest 25 brain slices along axis 2 (cerebellum) lie well behind (lower axis 1)
    the top 25 (vertex): by 12-23 voxels in all 15 labelled IBSR18 subjects. Flipping
    axis 1 or axis 2 makes the difference positive.
    """
    for v in volumes:
        if v.label is None:
            continue
        brain = v.label > 0
        z = np.nonzero(brain.any(axis=(0, 1)))[0]
        low = np.argwhere(brain[:, :, z.min() : z.min() + 25]).mean(0)[1]
        top = np.argwhere(brain[:, :, z.max() - 24 : z.max() + 1]).mean(0)[1]
        assert low - top < -8, (v.id, low, top)


def test_intensity_scales_differ_with_one_bright_subject(volumes):
    maxima = {v.id: float(v.image.max()) for v in volumes}
    assert maxima["DEMO_02"] > 900  # the first validation subject, like IBSR_11
    assert 80 < maxima["DEMO_01"] < 400 and 80 < maxima["DEMO_03"] < 400


# --- determinism, rerun, interruption -------------------------------------------------


def test_same_seed_identical_and_rerun_replaces(demo_root, tmp_path):
    out = tmp_path / "again"
    stale = out / "TrainingValidationTestSets" / "Training_Set" / "DEMO_09"
    stale.mkdir(parents=True)
    (stale / "DEMO_09.nii.gz").write_bytes(b"old")
    make_demo_dataset(out, n_subjects=3, seed=0, progress=False)
    assert not stale.exists()
    assert [(s.id, s.split) for s in data.discover(out)] == EXPECTED
    for sid, split_dir in [
        ("DEMO_01", "Training_Set"),
        ("DEMO_02", "Validation_Set"),
        ("DEMO_03", "Test_Set"),
    ]:
        a_img, a_seg = _arrays(demo_root, sid, split_dir)
        b_img, b_seg = _arrays(out, sid, split_dir)
        np.testing.assert_array_equal(a_img, b_img)
        if a_seg is not None:
            np.testing.assert_array_equal(a_seg, b_seg)


def test_different_seed_differs(demo_root, tmp_path):
    out = make_demo_dataset(tmp_path / "seed1", n_subjects=3, seed=1, progress=False)
    a_img, a_seg = _arrays(demo_root, "DEMO_01", "Training_Set")
    b_img, b_seg = _arrays(out, "DEMO_01", "Training_Set")
    assert (a_img != b_img).mean() > 0.01
    assert (a_seg != b_seg).mean() > 0.001


@pytest.mark.parametrize(
    "subject_dir", ["TrainingValidationTestSets/Training_Set/IBSR_01", "IBSR_05"]
)
def test_refuses_folder_with_real_subjects(tmp_path, subject_dir):
    (tmp_path / subject_dir).mkdir(parents=True)
    (tmp_path / data.DEMO_MARKER).write_text("stale")
    with pytest.raises(IBSRError, match="non-demo subjects") as info:
        make_demo_dataset(tmp_path, n_subjects=3, progress=False)
    assert "IBSR_" in str(info.value)
    assert (tmp_path / subject_dir).is_dir()
    assert not list(tmp_path.rglob("DEMO_0*"))


def test_interrupted_run_leaves_no_marker(tmp_path, monkeypatch):
    out = tmp_path / "demo"
    out.mkdir()
    (out / data.DEMO_MARKER).write_text("from an older run")
    calls = []

    def failing_save(array, path):
        calls.append(path)
        raise OSError("disk full")

    monkeypatch.setattr(demo, "_save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        make_demo_dataset(out, n_subjects=3, progress=False)
    assert len(calls) == 1
    assert not data.is_demo_data(out)


def test_out_is_a_file(tmp_path):
    target = tmp_path / "file.txt"
    target.write_text("x")
    with pytest.raises(IBSRError, match="is a file"):
        make_demo_dataset(target, n_subjects=3, progress=False)
