from __future__ import annotations

import gzip
import shutil

import nibabel as nib
import numpy as np
import pytest

from ibsr_helpers.data import discover
from ibsr_helpers.errors import IBSRError
from ibsr_helpers.io import read_volume, save_segmentation


def test_save_segmentation_keeps_reference_geometry(data_root, tmp_path):
    subject = discover(data_root, splits=["val"])[0]
    ref = nib.load(str(subject.image))
    labels, _ = read_volume(subject.label, np.uint8)
    out = save_segmentation(labels, subject.image, tmp_path / "pred" / f"{subject.id}_seg.nii.gz")
    back = nib.load(str(out))
    assert back.shape == ref.shape  # 4-D singleton kept for IBSR-style references
    assert back.get_data_dtype() == np.uint8
    np.testing.assert_array_equal(back.affine, ref.affine)
    np.testing.assert_array_equal(back.get_sform(), ref.get_sform())
    np.testing.assert_array_equal(back.get_qform(), ref.get_qform())
    for key in (
        "sform_code",
        "qform_code",
        "dim",
        "pixdim",
        "xyzt_units",
        "quatern_b",
        "quatern_c",
        "quatern_d",
        "qoffset_x",
        "qoffset_y",
        "qoffset_z",
    ):
        np.testing.assert_array_equal(back.header[key], ref.header[key], err_msg=key)
    assert back.header.get_zooms() == ref.header.get_zooms()
    np.testing.assert_array_equal(np.asarray(back.dataobj).reshape(labels.shape), labels)


def test_save_segmentation_3d_reference_stays_3d(tmp_path):
    ref = nib.Nifti1Image(np.zeros((8, 6, 4), np.int16), np.diag([0.8, 1.5, 0.8, 1]))
    ref.set_sform(ref.affine, code=1)
    ref.set_qform(None, code=0)
    out = save_segmentation(np.ones((8, 6, 4), np.int64), ref, tmp_path / "a.nii.gz")
    back = nib.load(str(out))
    assert back.shape == (8, 6, 4)
    assert int(back.header["sform_code"]) == 1 and int(back.header["qform_code"]) == 0


def test_save_segmentation_rejects_wrong_shape(tmp_path):
    ref = nib.Nifti1Image(np.zeros((8, 6, 4, 1), np.int16), np.eye(4))
    with pytest.raises(IBSRError, match="does not match"):
        save_segmentation(np.zeros((8, 6, 5)), ref, tmp_path / "x.nii.gz")
    assert not (tmp_path / "x.nii.gz").exists()


def test_read_volume_truncated_file_names_it(any_root, tmp_path):
    src = discover(any_root)[0].image
    bad = tmp_path / "IBSR_99.nii.gz"
    data = src.read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(IBSRError) as err:
        read_volume(bad)
    assert str(bad) in str(err.value)
    assert "truncated or corrupt" in str(err.value) or "readable" in str(err.value)


def test_read_volume_garbage_file(tmp_path):
    bad = tmp_path / "IBSR_98.nii.gz"
    with gzip.open(bad, "wb") as f:
        f.write(b"not a nifti header at all" * 20)
    with pytest.raises(IBSRError, match="IBSR_98"):
        read_volume(bad)


def test_read_volume_missing(tmp_path):
    with pytest.raises(IBSRError, match="file not found"):
        read_volume(tmp_path / "nope.nii.gz")


def test_read_volume_squeezes_singleton(any_root, tmp_path):
    src = discover(any_root)[0].image
    shutil.copy(src, tmp_path / "x.nii.gz")
    arr, img = read_volume(tmp_path / "x.nii.gz")
    assert arr.ndim == 3 and arr.dtype == np.float32
    assert img.shape[:3] == arr.shape
