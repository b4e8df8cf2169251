"""Grading a class: submissions found, each student scored on every subject, the outputs."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from ibsr_helpers import grading as G
from ibsr_helpers.errors import IBSRError

SUBJECTS = ("IBSR_11", "IBSR_12", "IBSR_13")


def _save(path: Path, labels: np.ndarray, affine: np.ndarray | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(
        nib.Nifti1Image(labels.astype(np.uint8), np.eye(4) if affine is None else affine), path
    )
    return path


@pytest.fixture()
def truth(tmp_path) -> dict[str, np.ndarray]:
    """Three 8x8x8 ground-truth label volumes under tmp_path/gt/ID/ID_seg.nii.gz."""
    rng = np.random.default_rng(1)
    labels = {sid: rng.integers(0, 4, (8, 8, 8)) for sid in SUBJECTS}
    for sid, lab in labels.items():
        _save(tmp_path / "gt" / sid / f"{sid}_seg.nii.gz", lab)
    return labels


def _student(root: Path, name: str, truth: dict[str, np.ndarray], ids=SUBJECTS) -> Path:
    for sid in ids:
        _save(root / name / f"{sid}_seg.nii.gz", truth[sid])
    return root / name


def test_find_submissions_folders_and_zips(tmp_path):
    subs = tmp_path / "subs"
    (subs / "alice").mkdir(parents=True)
    (subs / ".ipynb_checkpoints").mkdir()
    (subs / "bob.zip").write_bytes(b"")
    (subs / "grades.csv").write_text("")
    found, other = G.find_submissions(subs)
    assert found == {"alice": subs / "alice", "bob": subs / "bob.zip"}
    assert [p.name for p in other] == [".ipynb_checkpoints", "grades.csv"]
    (subs / "bob").mkdir()
    with pytest.raises(IBSRError, match="two submissions for student bob: bob and bob.zip"):
        G.find_submissions(subs)
    with pytest.raises(IBSRError, match="no submissions"):
        G.find_submissions(subs / "alice")
    with pytest.raises(IBSRError, match="not found"):
        G.find_submissions(tmp_path / "nowhere")


def test_a_bad_submission_is_recorded_not_raised(tmp_path, truth):
    """Bad labels, two files for a subject, a corrupt zip: each stays with its student."""
    subs = tmp_path / "subs"
    dana = _student(subs, "dana", truth)
    bad = truth["IBSR_11"].copy()
    bad[0, 0, 0] = 7
    _save(dana / "IBSR_11_seg.nii.gz", bad)
    _save(dana / "again" / "IBSR_12.nii.gz", truth["IBSR_12"])
    (dana / "README.txt").write_text("my predictions")
    (subs / "eve.zip").write_bytes(b"PK\x03\x04 not really a zip")
    graded, other = G.grade_class(subs, tmp_path / "gt", progress=False)
    assert [g.student for g in graded] == ["dana", "eve"] and other == []
    dana_grade, eve = graded
    assert list(dana_grade.result.bad) == ["IBSR_11", "IBSR_12"]
    assert "label values [7] outside 0-3" in dana_grade.result.bad["IBSR_11"]
    assert dana_grade.result.bad["IBSR_12"] == (
        "two files for subject IBSR_12: IBSR_12_seg.nii.gz and again/IBSR_12.nii.gz (keep one)"
    )
    assert dana_grade.other_files == [Path("README.txt")]
    assert dana_grade.mean_dice == pytest.approx(1 / 3)
    assert eve.problem.startswith("eve.zip: not a readable zip file")
    assert eve.result.missing == list(SUBJECTS) and eve.mean_dice == 0
    board = G.leaderboard(graded).set_index("student")
    assert board.loc["dana", "extra"] == "README.txt (not NIfTI)"
    assert board.loc["eve", "bad"].startswith("eve.zip: not a readable zip file")
    assert board.loc["eve", "missing"] == ", ".join(SUBJECTS)


def test_zip_submission_at_any_depth_with_extra_files(tmp_path, truth):
    subs = tmp_path / "subs"
    source = _student(tmp_path / "src", "frank", truth, ids=SUBJECTS[:2])
    _save(source / "IBSR_99_seg.nii.gz", truth["IBSR_11"])  # no ground truth
    subs.mkdir()
    with zipfile.ZipFile(subs / "frank.zip", "w") as archive:
        for path in sorted(source.iterdir()):
            archive.write(path, f"frank/output/{path.name}")
    [frank], _ = G.grade_class(subs, tmp_path / "gt", progress=False)
    assert frank.result.missing == ["IBSR_13"]
    assert frank.result.extra == [Path("frank/output/IBSR_99_seg.nii.gz")]
    assert frank.mean_dice == pytest.approx(2 / 3)


def test_leaderboard_sorted_best_first_and_gradescope_results(tmp_path, truth):
    subs = tmp_path / "subs"
    _student(subs, "zoe", truth)
    _student(subs, "adam", truth, ids=SUBJECTS[:1])
    noisy = {sid: np.where(lab == 3, 2, lab) for sid, lab in truth.items()}  # WM called GM
    _student(subs, "mia", noisy)
    graded, _ = G.grade_class(subs, tmp_path / "gt", progress=False)
    board = G.leaderboard(graded)
    assert list(board["student"]) == ["zoe", "mia", "adam"]
    assert list(board["rank"]) == [1, 2, 3]
    mia = board.set_index("student").loc["mia"]
    assert mia["Dice WM"] == 0 and mia["Dice CSF"] == 1 and 0 < mia["Dice GM"] < 1
    assert mia["HD95 CSF (mm)"] == 0
    adam = next(g for g in graded if g.student == "adam")
    results = G.gradescope_results(adam)
    assert results["score"] == pytest.approx(100 / 3, abs=0.01)
    assert [t["name"].split(":")[0] for t in results["tests"]] == list(SUBJECTS)
    assert [t["score"] for t in results["tests"]] == pytest.approx([100 / 3, 0, 0], abs=1e-3)
    assert "no prediction IBSR_12_seg.nii.gz" in results["tests"][1]["output"]
    assert "IBSR_12, IBSR_13 (2 of 3" in results["output"]
    assert results["leaderboard"] == [
        {"name": "mean Dice", "value": pytest.approx(1 / 3, abs=1e-4)}
    ]
    paths = G.write_grades(graded, tmp_path / "out", {"ground truth": "gt <3 labels>"})
    assert [p.name for p in paths[:3]] == list(G.LEADERBOARD_FILES)
    assert json.loads((tmp_path / "out" / "adam" / "results.json").read_text()) == json.loads(
        json.dumps(results)
    )
    back = pd.read_csv(paths[1], keep_default_na=False)
    assert list(back["student"]) == ["zoe", "mia", "adam"]
    md = paths[0].read_text()
    assert "- **ground truth**: gt <3 labels>" in md and "| zoe " in md
    assert "gt &lt;3 labels&gt;" in paths[2].read_text()  # escaped in the HTML


def test_grade_refuses_an_output_folder_inside_the_submissions(tmp_path, truth):
    subs = tmp_path / "subs"
    _student(subs, "alice", truth)
    with pytest.raises(IBSRError, match="inside the submissions folder"):
        G.grade(subs, tmp_path / "gt", subs / "grades", progress=False)
