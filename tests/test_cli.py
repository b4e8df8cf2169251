"""``ibsr-seg`` as a user runs it: subprocesses, exit codes, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from conftest import write_scan

from ibsr_helpers.cli import main
from ibsr_helpers.data import discover


def ibsr_seg(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("ibsr-seg")
    return subprocess.run([str(exe), *args], capture_output=True, text=True, cwd=cwd, timeout=600)


def _label_copy(root: Path, dest: Path, split: str = "val") -> list[str]:
    dest.mkdir(parents=True, exist_ok=True)
    ids = []
    for s in discover(root, splits=[split]):
        (dest / s.label.name).symlink_to(s.label)
        ids.append(s.id)
    return ids


def _val_dir(root: Path) -> Path:
    """The validation split's folder (every label under --gt is a subject to predict)."""
    return discover(root, splits=["val"])[0].label.parents[1]


def test_evaluate_identical_labels(data_root, tmp_path):
    ids = _label_copy(data_root, tmp_path / "pred")
    r = ibsr_seg(
        "evaluate",
        "--pred",
        str(tmp_path / "pred"),
        "--gt",
        str(_val_dir(data_root)),
        "--out",
        str(tmp_path / "m.csv"),
    )
    assert r.returncode == 0, r.stderr
    df = pd.read_csv(tmp_path / "m.csv")
    assert sorted(df.subject.unique()) == sorted(ids)
    assert (df.dice == 1).all() and (df.hd == 0).all() and (df.hd95 == 0).all()
    assert (df.avd == 0).all() and (df.status == "scored").all()
    assert "CSF" in r.stdout and "±" in r.stdout
    assert "missing predictions: none" in r.stdout and "extra predictions: none" in r.stdout


def test_evaluate_counts_missing_subjects_and_strict_refuses(any_root, tmp_path):
    """Predictions for 1 of 3 subjects: the mean is over all 3, the rest are named."""
    subjects = discover(any_root, splits=["train", "val"])[:3]
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    for s in subjects:
        (gt / s.id).mkdir(parents=True)
        (gt / s.id / s.label.name).symlink_to(s.label)
    pred.mkdir()
    (pred / subjects[0].label.name).symlink_to(subjects[0].label)
    (pred / "notes.nii.gz").symlink_to(subjects[0].label)  # not a subject's name: extra
    args = ["evaluate", "--pred", str(pred), "--gt", str(gt)]
    r = ibsr_seg(*args, "--out", str(tmp_path / "m.csv"))
    assert r.returncode == 0, r.stderr
    missing = f"{subjects[1].id}, {subjects[2].id} (2 of 3 ground-truth subjects"
    assert f"missing predictions: {missing}" in r.stdout
    assert "extra predictions: notes.nii.gz (1 file(s)" in r.stdout
    assert "(3 subjects, 2 without a usable prediction scored Dice 0; mean ± sd)" in r.stdout
    df = pd.read_csv(tmp_path / "m.csv")
    assert df.groupby("subject").dice.mean().mean() == pytest.approx(1 / 3)
    r = ibsr_seg(*args, "--strict")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert r.stderr.startswith("ibsr-seg: error:") and subjects[2].id in r.stderr
    assert "notes.nii.gz" in r.stderr


def test_corrupt_prediction_one_line_error(any_root, tmp_path):
    _label_copy(any_root, tmp_path / "pred")
    victim = sorted((tmp_path / "pred").iterdir())[0]
    data = victim.resolve().read_bytes()
    victim.unlink()
    victim.write_bytes(data[: len(data) // 3])
    r = ibsr_seg("evaluate", "--pred", str(tmp_path / "pred"), "--gt", str(any_root))
    assert r.returncode == 2
    # one error line (progress-bar remnants aside), naming the file; no traceback
    errors = [ln for ln in r.stderr.splitlines() if "error" in ln.lower()]
    assert len(errors) == 1, r.stderr
    assert errors[0].startswith("ibsr-seg: error:") and victim.name in errors[0]
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["train", "--config", "configs/nope.yaml"],
        ["evaluate", "--pred", "/nonexistent/pred", "--gt", "/nonexistent/gt"],
        ["predict", "--run", "/nonexistent/run", "--input", ".", "--out", "x"],
    ],
)
def test_bad_paths_exit_2_with_one_line(args):
    root = Path(__file__).parents[1]
    r = ibsr_seg(*args, cwd=root)
    assert r.returncode == 2, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert "nope.yaml" in r.stderr or "nonexistent" in r.stderr


def test_demo_data_command(tmp_path):
    r = ibsr_seg("demo-data", "--out", str(tmp_path / "demo"), "--subjects", "3", "--seed", "1")
    assert r.returncode == 0, r.stderr
    assert "not IBSR18" in r.stdout
    assert {s.split for s in discover(tmp_path / "demo")} == {"train", "val", "test"}


def test_evaluate_report_records_provenance_and_applies_postprocessing(any_root, tmp_path):
    ids = _label_copy(any_root, tmp_path / "pred")
    report = tmp_path / "report"
    args = ["evaluate", "--pred", str(tmp_path / "pred"), "--gt", str(_val_dir(any_root))]
    r = ibsr_seg(*args, "--report", str(report), "--postprocess", "mask")
    assert r.returncode == 0, r.stderr
    text = (report / "results.md").read_text()
    assert "post-processing**: mask" in text and "ibsr-seg evaluate" in text
    for line in ("commit", "packages", "hardware", "data", "ground truth"):
        assert f"- **{line}**: " in text, line
    assert text.count("fingerprint") == 2  # the data record's and the ground truth's
    assert "- **missing predictions**: none" in text
    table = pd.read_csv(report / "results.csv", index_col=0)
    assert table.loc["pred", "subjects"] == len(ids)
    # the labels hold voxels where the skull-stripped image is 0: masking them costs Dice
    assert 0.98 < table.loc["pred", "mean Dice"] <= 1.0


def test_bad_postprocessing_is_one_line(tmp_path):
    r = ibsr_seg(
        "evaluate", "--pred", str(tmp_path), "--gt", str(tmp_path), "--postprocess", "blur"
    )
    assert r.returncode == 2 and "unknown post-processing 'blur'" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


# --------------------------------------------------------------------------- grade


def _tiny(path: Path, labels: np.ndarray, affine: np.ndarray | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(
        nib.Nifti1Image(labels.astype(np.uint8), np.eye(4) if affine is None else affine), path
    )


def test_grade_command_over_three_students(tmp_path):
    """A complete student, one missing a subject (a zip), one with a bad geometry file."""
    import zipfile

    rng = np.random.default_rng(0)
    truth = {f"IBSR_{i:02d}": rng.integers(0, 4, (8, 8, 8)) for i in (11, 12, 13)}
    for sid, labels in truth.items():
        _tiny(tmp_path / "gt" / sid / f"{sid}_seg.nii.gz", labels)
    subs = tmp_path / "subs"
    for sid, labels in truth.items():
        _tiny(subs / "alice" / f"{sid}_seg.nii.gz", labels)
        shifted = np.eye(4)
        shifted[0, 3] = 5.0 if sid == "IBSR_12" else 0.0
        _tiny(subs / "carol" / f"{sid}_seg.nii.gz", labels, shifted)
    with zipfile.ZipFile(subs / "bob.zip", "w") as archive:
        for sid in ("IBSR_11", "IBSR_12"):
            archive.write(subs / "alice" / f"{sid}_seg.nii.gz", f"preds/{sid}_seg.nii.gz")
    (subs / "roster.txt").write_text("alice bob carol")
    out = tmp_path / "grades"
    r = ibsr_seg(
        "grade", "--submissions", str(subs), "--gt", str(tmp_path / "gt"), "--out", str(out)
    )
    assert r.returncode == 0, r.stderr
    assert "not graded (not a folder or .zip, or hidden): roster.txt" in r.stdout
    board = pd.read_csv(out / "leaderboard.csv", keep_default_na=False)
    assert list(board["student"]) == ["alice", "bob", "carol"]
    assert list(board["rank"]) == [1, 2, 2]  # bob and carol both lose one subject of three
    assert board["mean Dice"].tolist() == pytest.approx([1.0, 2 / 3, 2 / 3])
    assert list(board["missing"]) == ["", "IBSR_13", ""]
    assert board.loc[2, "bad"].startswith("IBSR_12: IBSR_12_seg.nii.gz: prediction affine")
    assert list(board["scored"]) == ["3/3", "2/3", "2/3"]
    md = (out / "leaderboard.md").read_text()
    assert "- **commit**: " in md and "- **ground truth**: " in md and "| alice " in md
    assert "<table" in (out / "leaderboard.html").read_text()
    bob = json.loads((out / "bob" / "results.json").read_text())
    assert bob["score"] == pytest.approx(200 / 3, abs=0.01)
    assert [t["status"] for t in bob["tests"]] == ["passed", "passed", "failed"]
    assert sum(t["max_score"] for t in bob["tests"]) == pytest.approx(100, abs=0.01)


# --- predict: anyone's scans -------------------------------------------------------------


def test_predict_takes_files_and_folders_under_any_names(tiny_run, tmp_path):
    """--input a b and --input c together: a file named sub-01_T1w.nii.gz, a BIDS folder
    (its dseg skipped, in one line) and a folder holding brain.nii.gz."""
    write_scan(tmp_path / "sub-01_T1w.nii.gz")
    for sub in ("sub-01", "sub-02"):
        write_scan(tmp_path / "bids" / sub / "anat" / f"{sub}_T1w.nii.gz")
    dseg = tmp_path / "bids" / "derivatives" / "t" / "sub-01" / "anat" / "sub-01_dseg.nii.gz"
    write_scan(dseg, np.zeros((20, 20, 20), np.uint8))
    write_scan(tmp_path / "plain" / "brain.nii.gz")
    out = tmp_path / "out"
    r = ibsr_seg(
        "predict",
        *("--run", str(tiny_run), "--out", str(out)),
        *("--input", str(tmp_path / "sub-01_T1w.nii.gz"), str(tmp_path / "bids")),
        *("--input", str(tmp_path / "plain")),
    )
    assert r.returncode == 0, r.stderr
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.nii.gz")) == [
        "brain_seg.nii.gz",
        "sub-01/anat/sub-01_T1w_seg.nii.gz",
        "sub-01_T1w_seg.nii.gz",
        "sub-02/anat/sub-02_T1w_seg.nii.gz",
    ]
    assert "wrote 4 segmentations" in r.stdout
    skipped = [ln for ln in r.stdout.splitlines() if ln.startswith("skipped")]
    assert len(skipped) == 1 and "skipped 1 file(s)" in skipped[0] and str(dseg) in skipped[0]


@pytest.mark.parametrize("case", ["collision", "series", "label map"])
def test_predict_refuses_what_it_cannot_segment_in_one_line(tiny_run, tmp_path, case, capsys):
    """Two inputs writing one file and a 4-D series: refused before anything is predicted;
    a label map renamed as a scan: refused when loaded, what was written stays. Run in this
    process (``main``, as the ``ibsr-seg`` script does): a subprocess per case would spend
    its time importing torch."""
    first = write_scan(tmp_path / "in" / "A_1" / "A_1.nii.gz")
    if case == "collision":
        bad = write_scan(tmp_path / "elsewhere" / "A_1" / "A_1.nii.gz")
        inputs, expected = [tmp_path / "in", tmp_path / "elsewhere"], ["both be written", first]
    elif case == "series":
        bad = write_scan(
            tmp_path / "in" / "B_2" / "B_2.nii.gz", np.zeros((20, 20, 20, 3), np.int16)
        )
        inputs, expected = [tmp_path / "in"], ["series of 3 volumes", "(20, 20, 20, 3)"]
    else:
        labels = np.random.default_rng(0).integers(0, 4, (20, 20, 20)).astype(np.uint8)
        bad = write_scan(tmp_path / "in" / "B_2" / "B_2.nii.gz", labels)
        inputs, expected = [tmp_path / "in"], ["looks like a label map", "{0, 1, 2, 3}"]
    out = tmp_path / "out"
    rc = main(["predict", "--run", str(tiny_run), "--out", str(out), "--input", *map(str, inputs)])
    stderr = capsys.readouterr().err
    assert rc == 2, stderr
    errors = [ln for ln in stderr.splitlines() if "error" in ln]  # progress-bar remnants aside
    assert len(errors) == 1 and errors[0].startswith("ibsr-seg: error:"), stderr
    assert str(bad) in errors[0] and all(str(e) in errors[0] for e in expected)
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) if out.exists() else []
    assert written == (["A_1", "A_1/A_1_seg.nii.gz"] if case == "label map" else [])


def test_predict_warns_of_thick_voxels_in_one_line_and_segments(tiny_run, tmp_path, capsys):
    """A valid but coarse scan: a one-line warning naming it (no source line), then it is
    segmented."""
    thick = write_scan(tmp_path / "thick.nii.gz")
    img = nib.load(str(thick))
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj), np.diag([1.0, 1.0, 5.0, 1.0])), str(thick))
    rc = main(["predict", "--run", str(tiny_run), "--input", str(thick), "--out", str(tmp_path)])
    stderr = capsys.readouterr().err
    assert rc == 0, stderr
    warned = [ln for ln in stderr.splitlines() if "warning" in ln]
    assert len(warned) == 1 and warned[0].startswith(f"ibsr-seg: warning: {thick}: voxels of")
    assert "warnings.warn" not in stderr
    assert (tmp_path / "thick_seg.nii.gz").is_file()
