"""Issue acceptance on real IBSR18, as a user runs it: train (quick) -> predict -> evaluate.

Each test takes several minutes on a 2-core CPU, so they are marked slow; `make test`
runs them, and CI runs them on the shared IBSR18 copy.
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


def train_quick(config: str, data: Path, out: Path, *sets: str) -> Path:
    """``ibsr-seg train --profile quick``; returns the run folder."""
    extra = [arg for value in sets for arg in ("--set", value)]
    ibsr_seg(
        "train",
        "--config",
        config,
        "--profile",
        "quick",
        "--data",
        str(data),
        "--out",
        str(out),
        *extra,
    )
    return out


def predict_and_score(runs: list[Path], val: Path, out: Path, *flags: str) -> float:
    """``ibsr-seg predict`` (one run or an ensemble) then ``evaluate``; the mean Dice."""
    ibsr_seg(
        "predict",
        *[a for r in runs for a in ("--run", str(r))],
        "--input",
        str(val),
        "--out",
        str(out),
        *flags,
    )
    r = ibsr_seg("evaluate", "--pred", str(out), "--gt", str(val), "--out", f"{out}.csv")
    print(r.stdout)
    df = pd.read_csv(f"{out}.csv")
    assert df.subject.nunique() == 5
    return float(df.groupby("subject").dice.mean().mean())


@pytest.mark.slow
def test_unet2d_quick_train_predict_evaluate(ibsr_root, tmp_path):
    run = train_quick("configs/unet2d.yaml", ibsr_root, tmp_path / "runs" / "unet2d-quick")
    val = ibsr_root / "TrainingValidationTestSets" / "Validation_Set"
    mean_dice = predict_and_score([run], val, tmp_path / "pred")
    assert mean_dice >= 0.88, f"validation mean Dice {mean_dice:.4f} < 0.88"
    # predictions carry the source geometry exactly
    for s in discover(ibsr_root, splits=["val"]):
        src, pred = nib.load(str(s.image)), nib.load(str(tmp_path / "pred" / f"{s.id}_seg.nii.gz"))
        assert pred.shape == src.shape
        np.testing.assert_array_equal(pred.affine, src.affine)
        assert pred.header.get_zooms() == src.header.get_zooms()
        assert int(pred.header["sform_code"]) == int(src.header["sform_code"])
        assert int(pred.header["qform_code"]) == int(src.header["qform_code"])


@pytest.mark.slow
def test_unet3d_patches_quick_tta_and_ensemble(ibsr_root, tmp_path):
    """Two quick patch runs (seeds 0, 1) -> predict --tta, alone and as an ensemble."""
    runs = [
        train_quick(
            "configs/unet3d_patches.yaml",
            ibsr_root,
            tmp_path / "runs" / f"unet3d-patches-quick-seed{seed}",
            f"seed={seed}",
        )
        for seed in (0, 1)
    ]
    val = ibsr_root / "TrainingValidationTestSets" / "Validation_Set"
    single = [predict_and_score([run], val, tmp_path / f"pred-{run.name}", "--tta") for run in runs]
    ensemble = predict_and_score(runs, val, tmp_path / "pred-ensemble", "--tta")
    print(f"patch runs {single}, ensemble {ensemble}")
    assert min(single) >= 0.82, f"validation mean Dice {single} (want >= 0.82)"
    assert ensemble >= max(single), f"ensemble {ensemble:.4f} below a member {single}"
