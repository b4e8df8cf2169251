"""The install files agree with each other, and the console script is there."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).parents[1]


def _pins(lines):
    return {
        ln.split("==")[0].strip(): ln.split("==")[1].strip()
        for ln in lines
        if "==" in ln and not ln.strip().startswith("#")
    }


def test_environment_yml_matches_constraints():
    constraints = _pins((ROOT / "constraints.txt").read_text().splitlines())
    assert constraints == {"torch": "2.13.0", "torchvision": "0.28.0"}
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert _pins(pip) == constraints
    assert "-c constraints.txt" in pip and any(p.startswith("-e .") for p in pip)


def test_pyproject_declares_package_and_script():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert meta["project"]["name"] == "ibsr_helpers"
    assert meta["project"]["scripts"]["ibsr-seg"] == "ibsr_helpers.cli:main"
    deps = " ".join(meta["project"]["dependencies"])
    for needed in ("torch", "monai", "nibabel", "segmentation-models-pytorch", "mlflow", "nilearn"):
        assert needed in deps


def test_console_script_help():
    exe = Path(sys.executable).with_name("ibsr-seg")
    r = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0
    for command in ("demo-data", "train", "predict", "evaluate"):
        assert command in r.stdout


def test_no_nifti_tracked_in_git():
    r = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True)
    if r.returncode != 0 and not (ROOT / ".git").exists():
        pytest.skip("not a git checkout (an unpacked sdist): nothing is tracked")
    assert r.returncode == 0, r.stderr
    tracked = r.stdout.splitlines()
    assert tracked, "git ls-files listed nothing"
    assert not [f for f in tracked if f.endswith((".nii", ".nii.gz", ".mgz", ".hdr", ".img"))]


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    readme = (ROOT / "README.md").read_text()
    assert "make test" in ci and "make test" in readme and "make course" in readme
