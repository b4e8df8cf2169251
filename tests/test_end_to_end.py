"""The whole path as a user runs it, short: ``ibsr-seg train`` → ``predict`` → ``evaluate``.

Real IBSR18 when IBSR18_DIR is set (CI), else demo data. The networks are tiny (the
``smoke`` profile) and barely trained: this checks the plumbing and the geometry of every
file written, not accuracy; the accuracy runs are ``make acceptance``
(``tests/test_acceptance.py``).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch

from ibsr_helpers.data import discover

ROOT = Path(__file__).parents[1]


def ibsr_seg(*args: str) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("ibsr-seg")
    r = subprocess.run([str(exe), *args], capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


@pytest.fixture(scope="module")
def runs(any_root, tmp_path_factory) -> list[Path]:
    """Two smoke runs: a 2D slice model and a 3D patch model."""
    out = tmp_path_factory.mktemp("runs")
    made = []
    for config in ("unet2d", "unet3d_patches"):
        run = out / config
        ibsr_seg(
            "train",
            "--config",
            f"configs/{config}.yaml",
            "--profile",
            "smoke",
            "--data",
            str(any_root),
            "--out",
            str(run),
        )
        made.append(run)
    return made


def test_train_writes_a_complete_run(runs):
    for run in runs:
        for name in ("config.json", "history.json", "last.pt", "best.pt", "curves.png"):
            assert (run / name).is_file(), (run, name)
        config = json.loads((run / "config.json").read_text())
        assert len(config["data"]["spacing"]) == 3  # the run records its spacing
        state = torch.load(run / "last.pt", weights_only=True)
        assert state["epoch"] == 0 and state["mlflow_run_id"]


def test_predict_ensemble_and_evaluate_keep_every_files_geometry(runs, any_root, tmp_path):
    val = sorted(discover(any_root, splits=["val"]), key=lambda s: s.id)
    src = tmp_path / "in"
    for s in val[:2]:
        (src / s.id).mkdir(parents=True)
        (src / s.id / s.image.name).symlink_to(s.image)
    pred = tmp_path / "pred"
    args = ["predict", "--input", str(src), "--out", str(pred), "--tta"]
    r = ibsr_seg(*args, *[a for run in runs for a in ("--run", str(run))])
    assert "wrote 2 segmentations" in r.stdout
    for s in val[:2]:
        image, out = nib.load(str(s.image)), nib.load(str(pred / s.id / f"{s.id}_seg.nii.gz"))
        assert out.shape == image.shape and out.get_data_dtype() == np.uint8
        np.testing.assert_array_equal(out.affine, image.affine)
        assert out.header.get_zooms() == image.header.get_zooms()
        for code in ("sform_code", "qform_code"):
            assert int(out.header[code]) == int(image.header[code])
        assert set(np.unique(np.asarray(out.dataobj))) <= {0, 1, 2, 3}
    gt = tmp_path / "gt"  # the two subjects' labels: every label under --gt is graded
    for s in val[:2]:
        (gt / s.id).mkdir(parents=True)
        (gt / s.id / s.label.name).symlink_to(s.label)
    csv = tmp_path / "metrics.csv"
    r = ibsr_seg("evaluate", "--pred", str(pred), "--gt", str(gt), "--out", str(csv))
    df = pd.read_csv(csv)
    assert sorted(df["subject"].unique()) == [s.id for s in val[:2]]
    assert {"dice", "hd", "hd95", "avd"} <= set(df.columns) and df["dice"].between(0, 1).all()
    assert (df["status"] == "scored").all() and "missing predictions: none" in r.stdout
    assert "±" in r.stdout


def test_error_sites_benchmark_locates_the_errors_of_runs_and_their_ensemble(
    runs, any_root, tmp_path
):
    figure = tmp_path / "sites.png"
    script = ROOT / "benchmarks" / "error_sites.py"
    args = [sys.executable, str(script), "--data", str(any_root), "--figure", str(figure)]
    args += ["--subjects", "2"]  # the plumbing, not the means: two subjects suffice
    r = subprocess.run(
        [*args, *[a for run in runs for a in ("--run", str(run))]],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=900,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    table = r.stdout.split("wrong voxels):\n")[1]
    header = table.splitlines()[0]
    assert header.split()[:3] == ["name", runs[0].name, runs[1].name]
    assert header.endswith(f"{runs[0].name} + {runs[1].name}")
    for row in ("on boundary", "3+ voxels off", "shared by every member", "mean Dice"):
        assert row in table
    assert "cpu" in r.stdout.splitlines()[1] and figure.stat().st_size > 0
