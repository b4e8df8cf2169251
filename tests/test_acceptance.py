"""Issue acceptance on real IBSR18, as a user runs it: train (quick) -> predict -> evaluate.

Takes several minutes on a 2-core CPU, so it is marked slow; `make test` runs it, and CI
runs it on the shared IBSR18 copy.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from ibsr_helpers.data import discover

ROOT = Path(__file__).parents[1]


def ibsr_seg(*args: str) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("ibsr-seg")
    r = subprocess.run([str(exe), *args], capture_output=True, text=True, cwd=ROOT, timeout=1800)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


@pytest.mark.slow
def test_unet2d_quick_train_predict_evaluate(ibsr_root, tmp_path):
    run = tmp_path / "runs" / "unet2d-quick"
    ibsr_seg(
        "train",
        "--config",
        "configs/unet2d.yaml",
        "--profile",
        "quick",
        "--data",
        str(ibsr_root),
        "--out",
        str(run),
    )
    val = ibsr_root / "TrainingValidationTestSets" / "Validation_Set"
    ibsr_seg("predict", "--run", str(run), "--input", str(val), "--out", str(tmp_path / "pred"))
    r = ibsr_seg(
        "evaluate",
        "--pred",
        str(tmp_path / "pred"),
        "--gt",
        str(val),
        "--out",
        str(tmp_path / "metrics.csv"),
    )
    print(r.stdout)
    df = pd.read_csv(tmp_path / "metrics.csv")
    assert df.subject.nunique() == 5
    mean_dice = df.groupby("subject").dice.mean().mean()
    assert mean_dice >= 0.88, f"validation mean Dice {mean_dice:.4f} < 0.88"
    # predictions carry the source geometry exactly
    for s in discover(ibsr_root, splits=["val"]):
        src, pred = nib.load(str(s.image)), nib.load(str(tmp_path / "pred" / f"{s.id}_seg.nii.gz"))
        assert pred.shape == src.shape
        np.testing.assert_array_equal(pred.affine, src.affine)
        assert pred.header.get_zooms() == src.header.get_zooms()
        assert int(pred.header["sform_code"]) == int(src.header["sform_code"])
        assert int(pred.header["qform_code"]) == int(src.header["qform_code"])
