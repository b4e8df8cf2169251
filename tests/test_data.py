from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from ibsr_helpers import data
from ibsr_helpers.errors import IBSRError


def test_discover_course_layout(data_root):
    subjects = data.discover(data_root)
    splits = {s.split for s in subjects}
    assert splits == {"train", "val", "test"}
    for s in subjects:
        assert s.shape == (256, 128, 256)
        assert s.spacing[1] == pytest.approx(1.5)
        assert (s.label is None) == (s.split == "test")
    if not data.is_demo_data(data_root):
        ids = {s.split: [x.id for x in subjects if x.split == s.split] for s in subjects}
        assert ids["val"] == ["IBSR_11", "IBSR_12", "IBSR_13", "IBSR_14", "IBSR_17"]
        assert len(ids["train"]) == 10 and len(ids["test"]) == 3
        assert "IBSR18" in data.describe_source(data_root)
    else:
        assert "demo data (MNI152-derived), not IBSR18" in data.describe_source(data_root)


def _flat_copy(root: Path, dest: Path, ids: list[str]) -> None:
    for s in data.discover(root):
        if s.id in ids:
            (dest / s.id).mkdir(parents=True)
            for p in (s.image, s.label):
                if p is not None:
                    (dest / s.id / p.name).symlink_to(p)


def test_discover_flat_layout_uses_course_split(ibsr_root, tmp_path):
    _flat_copy(ibsr_root, tmp_path, ["IBSR_01", "IBSR_11", "IBSR_02"])
    got = {s.id: s.split for s in data.discover(tmp_path)}
    assert got == {"IBSR_01": "train", "IBSR_11": "val", "IBSR_02": "test"}


def test_load_subject_types_and_affine(data_root):
    s = data.discover(data_root, splits=["train"])[0]
    v = data.load_subject(s)
    assert v.image.dtype == np.float32 and v.image.shape == (256, 128, 256)
    assert v.label.dtype == np.uint8 and set(np.unique(v.label)) <= {0, 1, 2, 3}
    assert v.affine.shape == (4, 4)
    np.testing.assert_allclose(np.abs(np.diag(v.affine))[:3], s.spacing, rtol=1e-5)


# --- bad input: one IBSRError naming the file ---------------------------------------------


def _make_subject(
    root: Path,
    sid: str = "IBSR_01",
    split_dir: str = "Training_Set",
    image: np.ndarray | None = None,
    label: np.ndarray | bool | None = None,
    label_affine: np.ndarray | None = None,
) -> Path:
    folder = root / "TrainingValidationTestSets" / split_dir / sid
    folder.mkdir(parents=True)
    affine = np.diag([1.0, 1.5, 1.0, 1.0])
    img = image if image is not None else np.pad(np.full((6, 6, 6), 100, np.int16), 2)
    nib.save(nib.Nifti1Image(img, affine), str(folder / f"{sid}.nii.gz"))
    if label is not False:  # False means: no label file
        lab = label if label is not None else (img > 0).astype(np.uint8) * 2
        nib.save(
            nib.Nifti1Image(lab, label_affine if label_affine is not None else affine),
            str(folder / f"{sid}_seg.nii.gz"),
        )
    return folder


def test_missing_folder(tmp_path):
    with pytest.raises(IBSRError, match="data folder not found") as err:
        data.discover(tmp_path / "nowhere")
    assert "nowhere" in str(err.value)


def test_no_subjects(tmp_path):
    with pytest.raises(IBSRError, match="no subjects found"):
        data.discover(tmp_path)


def test_training_subject_without_label(tmp_path):
    _make_subject(tmp_path, label=False)
    with pytest.raises(IBSRError, match="has no label file") as err:
        data.discover(tmp_path)
    assert "IBSR_01" in str(err.value)


def test_corrupt_image_names_file(tmp_path):
    folder = _make_subject(tmp_path)
    (folder / "IBSR_01.nii.gz").write_bytes(b"\x1f\x8b garbage")
    with pytest.raises(IBSRError) as err:
        data.discover(tmp_path)  # the header is read while discovering
    assert "IBSR_01.nii.gz" in str(err.value)


def test_truncated_label_names_file(tmp_path):
    folder = _make_subject(
        tmp_path,
        image=np.pad(np.random.default_rng(0).integers(1, 500, (40, 40, 40)).astype(np.int16), 2),
    )
    seg = folder / "IBSR_01_seg.nii.gz"
    seg.write_bytes(seg.read_bytes()[:200])
    with pytest.raises(IBSRError) as err:
        data.load_subject(data.discover(tmp_path)[0])
    assert "IBSR_01_seg.nii.gz" in str(err.value)


def test_shape_mismatch(tmp_path):
    _make_subject(tmp_path, label=np.zeros((9, 9, 9), np.uint8))
    with pytest.raises(IBSRError, match="does not match image shape") as err:
        data.load_subject(data.discover(tmp_path)[0])
    assert "IBSR_01_seg" in str(err.value)


def test_affine_mismatch(tmp_path):
    _make_subject(tmp_path, label_affine=np.diag([1.0, 1.0, 1.0, 1.0]))
    with pytest.raises(IBSRError, match="affine does not match"):
        data.load_subject(data.discover(tmp_path)[0])


def test_label_out_of_range(tmp_path):
    lab = np.zeros((10, 10, 10), np.uint8)
    lab[3, 3, 3] = 7
    _make_subject(tmp_path, label=lab)
    with pytest.raises(IBSRError, match=r"label values \[7\] outside 0-3") as err:
        data.load_subject(data.discover(tmp_path)[0])
    assert "IBSR_01_seg.nii.gz" in str(err.value)


def test_nan_intensity(tmp_path):
    img = np.pad(np.full((6, 6, 6), 100, np.float32), 2)
    img[4, 4, 4] = np.nan
    _make_subject(tmp_path, image=img, label=np.zeros((10, 10, 10), np.uint8))
    with pytest.raises(IBSRError, match="non-finite") as err:
        data.load_subject(data.discover(tmp_path)[0])
    assert "IBSR_01.nii.gz" in str(err.value)


def test_find_data_dir_env(monkeypatch, tmp_path):
    monkeypatch.setenv("IBSR18_DIR", str(tmp_path / "missing"))
    with pytest.raises(IBSRError, match="IBSR18_DIR"):
        data.find_data_dir()
    monkeypatch.setenv("IBSR18_DIR", str(tmp_path))
    assert data.find_data_dir() == tmp_path


def _volume(sid: str, split: str, label: np.ndarray | None, spacing) -> data.Volume:
    image = np.ones((10, 10, 10), np.float32)
    subject = data.Subject(sid, split, Path(f"{sid}.nii.gz"), None, tuple(spacing), image.shape)
    return data.Volume(subject, image, label, nib.Nifti1Image(image, np.diag([*spacing, 1.0])))


def test_tissue_volumes_in_ml():
    label = np.zeros((10, 10, 10), dtype=np.uint8)
    label.flat[:125] = 1  # 125 voxels of 2x2x2 mm = 1000 mm3 = 1 ml
    label.flat[125:375] = 2  # 2 ml
    label.flat[375:1000] = 3  # 5 ml
    vol = _volume("IBSR_05", "train", label, (2, 2, 2))
    unlabelled = _volume("IBSR_02", "test", None, (1, 1, 1))
    df = data.tissue_volumes([vol, unlabelled])
    assert list(df.columns) == ["subject", "split", "tissue", "voxels", "volume_ml", "percent"]
    assert df["subject"].unique().tolist() == ["IBSR_05"]
    assert df["tissue"].tolist() == ["CSF", "GM", "WM"]
    np.testing.assert_allclose(df["volume_ml"], [1.0, 2.0, 5.0])
    np.testing.assert_allclose(df["percent"], [12.5, 25.0, 62.5])


def test_real_brain_volume_is_plausible(any_root):
    # Adult brains hold roughly 1000-1700 ml of CSF+GM+WM; a mm3/ml slip is off by 1000x.
    subject = next(s for s in data.discover(any_root) if s.label is not None)
    df = data.tissue_volumes([data.load_subject(subject)])
    assert 800 < df["volume_ml"].sum() < 2000
    percent = df.set_index("tissue")["percent"]
    assert percent["CSF"] < percent["GM"]


def test_a_scan_read_again_is_the_callers_own_and_follows_its_file(data_root, tmp_path):
    import dataclasses
    import shutil

    subject = data.discover(data_root, splits=["train"])[0]
    first = data.load_subject(subject)
    first.image[:] = -1.0  # a caller changing its copy changes nobody else's
    again = data.load_subject(subject)
    assert again.image is not first.image and again.image.max() > -1.0
    image = tmp_path / subject.image.name
    shutil.copy(subject.image, image)
    moved = dataclasses.replace(subject, image=image)
    before = data.load_subject(moved).image
    img = nib.load(str(image))
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj) * 2, img.affine, img.header), str(image))
    assert np.allclose(data.load_subject(moved).image, before * 2)  # rewritten: read again


def test_a_shared_load_is_read_only_and_prepared_once(data_root):
    import warnings

    from ibsr_helpers.preprocessing import Preprocessing, prepare, reorient

    subject = data.discover(data_root, splits=["train"])[0]
    shared = data.load_subject(subject, shared=True)
    with pytest.raises(ValueError, match="read-only"):
        shared.image[0, 0, 0] = 1.0  # the process's stored scan cannot be changed through it
    own = data.load_subject(subject)
    assert np.array_equal(own.image, shared.image) and own.image.flags.writeable
    spec = Preprocessing(spacing=subject.spacing, roi=(64, 64, 64), divisor=16)
    assert prepare(shared, spec) is prepare(own, spec)  # one preparation for both
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch warns of a read-only array given to it
        shown = reorient(shared)[0]  # what the figures draw: the caller's own array
    assert shown.flags.writeable and not np.shares_memory(shown, shared.image)
