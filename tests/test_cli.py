"""``ibsr-seg`` as a user runs it: subprocesses, exit codes, one-line errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

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


def test_evaluate_identical_labels(data_root, tmp_path):
    ids = _label_copy(data_root, tmp_path / "pred")
    r = ibsr_seg(
        "evaluate",
        "--pred",
        str(tmp_path / "pred"),
        "--gt",
        str(data_root),
        "--out",
        str(tmp_path / "m.csv"),
    )
    assert r.returncode == 0, r.stderr
    df = pd.read_csv(tmp_path / "m.csv")
    assert sorted(df.subject.unique()) == sorted(ids)
    assert (df.dice == 1).all() and (df.hd == 0).all() and (df.hd95 == 0).all()
    assert (df.avd == 0).all()
    assert "CSF" in r.stdout and "±" in r.stdout


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


def test_evaluate_writes_the_report_and_applies_postprocessing(any_root, tmp_path):
    ids = _label_copy(any_root, tmp_path / "pred")
    report = tmp_path / "report"
    args = ["evaluate", "--pred", str(tmp_path / "pred"), "--gt", str(any_root)]
    r = ibsr_seg(*args, "--report", str(report), "--postprocess", "mask")
    assert r.returncode == 0, r.stderr
    text = (report / "results.md").read_text()
    assert "post-processing**: mask" in text and "ibsr-seg evaluate" in text
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
