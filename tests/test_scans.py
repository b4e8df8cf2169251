"""Finding and checking the scans a user asks to segment, on tiny synthetic NIfTI files."""

from __future__ import annotations

import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from ibsr_helpers.data import Subject, Volume
from ibsr_helpers.errors import IBSRError
from ibsr_helpers.scans import (
    check_outputs,
    check_voxels,
    find_scans,
    nifti_stem,
    skipped_note,
)


def _scan_data(shape=(8, 8, 8), seed: int = 0) -> np.ndarray:
    """A scan-like volume: hundreds of grey levels."""
    return np.random.default_rng(seed).integers(0, 1000, size=shape).astype(np.int16)


def _save(path: Path, data: np.ndarray | None = None, affine: np.ndarray | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = _scan_data() if data is None else data
    nib.save(nib.Nifti1Image(data, np.eye(4) if affine is None else affine), str(path))
    return path


def _outputs(scans) -> list[str]:
    return [s.output.as_posix() for s in scans]


def test_nifti_stem():
    assert nifti_stem("a/sub-01_T1w.nii.gz") == "sub-01_T1w"
    assert nifti_stem("brain.nii") == "brain"
    assert nifti_stem("x.nii.backup.nii.gz") == "x.nii.backup"


def test_files_and_folders_under_any_names_at_any_depth(tmp_path):
    """A BIDS folder (its derivatives' dseg skipped), a folder holding brain.nii.gz, and
    files given by name: each output mirrors the path under its input folder; a file given
    by name goes directly in the output folder."""
    bids = tmp_path / "bids"
    _save(bids / "sub-01" / "anat" / "sub-01_T1w.nii.gz")
    _save(bids / "sub-02" / "anat" / "sub-02_T1w.nii")
    dseg = _save(bids / "derivatives" / "t" / "sub-01" / "anat" / "sub-01_desc-t_dseg.nii.gz")
    plain = tmp_path / "plain"
    _save(plain / "brain.nii.gz")
    single = _save(tmp_path / "elsewhere" / "sub-03_T1w.nii.gz")
    scans, skipped = find_scans([bids, plain, str(single)])
    assert _outputs(scans) == [
        "sub-01/anat/sub-01_T1w_seg.nii.gz",
        "sub-02/anat/sub-02_T1w_seg.nii.gz",
        "brain_seg.nii.gz",
        "sub-03_T1w_seg.nii.gz",
    ]
    assert [s.subject.id for s in scans] == ["sub-01_T1w", "sub-02_T1w", "brain", "sub-03_T1w"]
    assert [s.source for s in scans] == [bids, bids, plain, single]
    assert all(s.subject.label is None and s.subject.shape == (8, 8, 8) for s in scans)
    assert skipped == [dseg]
    note = skipped_note(skipped)
    assert note.startswith("skipped 1 file(s) named like label maps") and str(dseg) in note
    assert skipped_note([]) is None
    assert _outputs(find_scans(single)[0]) == ["sub-03_T1w_seg.nii.gz"]  # one path, not a list


def test_course_layout_keeps_its_ids_and_skips_the_labels(tmp_path):
    test_set = tmp_path / "Test_Set"
    for sid in ("IBSR_02", "IBSR_10"):
        _save(test_set / sid / f"{sid}.nii.gz", _scan_data((8, 8, 8, 1)))  # IBSR's 4-D, 1 volume
    label = _save(test_set / "IBSR_10" / "IBSR_10_seg.nii.gz", np.zeros((8, 8, 8, 1), np.uint8))
    scans, skipped = find_scans(test_set)
    assert [s.subject.id for s in scans] == ["IBSR_02", "IBSR_10"]
    assert _outputs(scans) == ["IBSR_02/IBSR_02_seg.nii.gz", "IBSR_10/IBSR_10_seg.nii.gz"]
    assert skipped == [label]


def test_linked_folders_are_searched(tmp_path):
    """A folder of links to subject folders (a common way to pick scans), with a cycle."""
    image = _save(tmp_path / "scans" / "IBSR_02" / "IBSR_02.nii.gz")
    picked = tmp_path / "picked"
    picked.mkdir()
    (picked / "IBSR_02").symlink_to(image.parent, target_is_directory=True)
    (picked / "IBSR_02" / "loop").symlink_to(picked, target_is_directory=True)
    scans, _ = find_scans(picked)
    assert [s.image for s in scans] == [picked / "IBSR_02" / "IBSR_02.nii.gz"]
    assert _outputs(scans) == ["IBSR_02/IBSR_02_seg.nii.gz"]


def test_missing_unreadable_and_empty_inputs_are_named(tmp_path):
    with pytest.raises(IBSRError, match="input not found") as err:
        find_scans(tmp_path / "nope.nii.gz")
    assert "nope.nii.gz" in str(err.value)
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(IBSRError, match=r"not a NIfTI file .*notes\.txt|notes\.txt.*not a NIfTI"):
        find_scans(tmp_path / "notes.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(IBSRError, match="no NIfTI image") as err:
        find_scans(tmp_path / "empty")
    assert "empty" in str(err.value) and "skipped" not in str(err.value)
    _save(tmp_path / "labels" / "IBSR_11_seg.nii.gz", np.zeros((8, 8, 8), np.uint8))
    with pytest.raises(IBSRError, match=r"no NIfTI image.*1 label file\(s\)"):
        find_scans(tmp_path / "labels")
    with pytest.raises(IBSRError, match="no input given"):
        find_scans([])


def test_two_inputs_writing_one_output_are_refused_naming_both(tmp_path):
    a = _save(tmp_path / "siteA" / "brain.nii.gz")
    b = _save(tmp_path / "siteB" / "brain.nii.gz")
    with pytest.raises(IBSRError, match="would both be written to <out>/brain_seg.nii.gz") as err:
        find_scans([a, b])
    assert str(a) in str(err.value) and str(b) in str(err.value)
    # the same relative layout in two folders, and x.nii beside x.nii.gz
    with pytest.raises(IBSRError, match="both be written") as err:
        find_scans([tmp_path / "siteA", tmp_path / "siteB"])
    assert str(a) in str(err.value) and str(b) in str(err.value)
    _save(tmp_path / "twin" / "x.nii.gz")
    _save(tmp_path / "twin" / "x.nii")
    with pytest.raises(IBSRError, match=r"x\.nii and .*x\.nii\.gz would both be written"):
        find_scans(tmp_path / "twin")
    with pytest.raises(IBSRError, match="given twice"):
        find_scans([a, a])
    with pytest.raises(IBSRError, match=r"\(1 more output\(s\) written twice\)"):
        find_scans([a, b, tmp_path / "twin"])


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        ((8, 8, 8, 3), r"holds a series of 3 volumes \(shape \(8, 8, 8, 3\)\)"),
        ((8, 8, 8, 1, 2), r"has 5 dimensions \(shape \(8, 8, 8, 1, 2\)\)"),
        ((8, 8), r"is a 2-D image \(shape \(8, 8\)\)"),
        ((8, 8, 1), r"is a 2-D image \(shape \(8, 8, 1\)\)"),
    ],
)
def test_what_is_not_one_3d_scan_is_refused_from_the_header(tmp_path, shape, message):
    good = _save(tmp_path / "good.nii.gz")
    bad = _save(tmp_path / "bad.nii.gz", _scan_data(shape))
    with pytest.raises(IBSRError, match=message) as err:
        find_scans([good, bad])
    assert "bad.nii.gz" in str(err.value)


def test_complex_voxels_are_refused(tmp_path):
    bad = _save(tmp_path / "phase.nii.gz", np.ones((8, 8, 8), np.complex64))
    with pytest.raises(IBSRError, match="complex64 voxels .*not grey levels"):
        find_scans(bad)


def test_thick_voxels_are_a_warning_not_an_error(tmp_path):
    thick = _save(tmp_path / "thick.nii.gz", affine=np.diag([1.0, 1.0, 5.0, 1.0]))
    with pytest.warns(UserWarning, match=r"thick\.nii\.gz: voxels of 1×1×5 mm, thicker than 3"):
        scans, _ = find_scans(thick)
    assert len(scans) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        find_scans(_save(tmp_path / "fine.nii.gz", affine=np.diag([0.94, 1.5, 0.94, 1.0])))


def _volume(image: np.ndarray, name: str = "IBSR_11.nii.gz") -> Volume:
    image = image.astype(np.float32)
    subject = Subject(nifti_stem(name), "test", Path(name), None, (1, 1, 1), image.shape)
    return Volume(subject, image, None, nib.Nifti1Image(image, np.eye(4)))


def test_a_label_map_given_as_the_image_is_refused_with_its_values():
    labels = np.random.default_rng(0).integers(0, 4, size=(40, 40, 40))
    with pytest.raises(IBSRError, match=r"IBSR_11\.nii\.gz: looks like a label map") as err:
        check_voxels(_volume(labels))
    assert "{0, 1, 2, 3}" in str(err.value)
    with pytest.raises(IBSRError, match=r"\{0, 255\}"):  # a mask
        check_voxels(_volume(labels.astype(bool) * 255))
    check_voxels(_volume(_scan_data((40, 40, 40))))  # a scan: hundreds of values
    check_voxels(_volume(np.zeros((8, 8, 8))))  # empty: preprocessing says "no brain voxels"
    check_voxels(_volume(labels + 0.5))  # four values, but not whole numbers: not labels


def test_an_output_overwriting_an_input_file_is_refused(tmp_path):
    """--out the input folder itself: IBSR_11/IBSR_11_seg.nii.gz is the ground truth."""
    val = tmp_path / "Validation_Set"
    _save(val / "IBSR_11" / "IBSR_11.nii.gz")
    truth = _save(val / "IBSR_11" / "IBSR_11_seg.nii.gz", np.zeros((8, 8, 8), np.uint8))
    scans, skipped = find_scans(val)
    check_outputs(scans, skipped, [tmp_path / "pred"])
    with pytest.raises(IBSRError, match="would overwrite this input file") as err:
        check_outputs(scans, skipped, [tmp_path / "pred", val])
    assert str(truth) in str(err.value)
