"""Shared fixtures: real IBSR18 when IBSR18_DIR is set, demo data always.

CI sets IBSR18_DIR (see .ci/run), so both data sets are exercised there; on a machine
without IBSR18 the real-data cases are reported as skipped (``-ra``), never hidden.
If IBSR18_DIR is set but wrong, the fixture fails rather than skips.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(scope="session")
def ibsr_root() -> Path:
    """The real IBSR18 folder (skips when IBSR18_DIR is unset)."""
    env = os.environ.get("IBSR18_DIR")
    if not env:
        pytest.skip("IBSR18_DIR not set: real-data case not run on this machine")
    path = Path(env)
    assert path.is_dir(), f"IBSR18_DIR={env} does not exist"
    return path


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small demo set (4 subjects: 2 train, 1 val, 1 test), made once per session."""
    from ibsr_helpers.demo import make_demo_dataset

    return make_demo_dataset(tmp_path_factory.mktemp("demo"), n_subjects=4, seed=0, progress=False)


@pytest.fixture(scope="session", params=["ibsr18", "demo"])
def data_root(request: pytest.FixtureRequest) -> Path:
    """Each available data set in turn: real IBSR18, then demo data."""
    return request.getfixturevalue("ibsr_root" if request.param == "ibsr18" else "demo_root")


@pytest.fixture(scope="session")
def any_root() -> Path:
    """Real IBSR18 if available, else the demo set (for tests that need one of them)."""
    env = os.environ.get("IBSR18_DIR")
    if env:
        return Path(env)
    from ibsr_helpers.data import resolve_data_dir

    return resolve_data_dir(demo_dir=Path(os.environ.get("TMPDIR", "/tmp")) / "ibsr_demo_tests")[0]


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder holding a tiny, randomly initialised 3D U-Net (no training)."""
    import json

    import torch

    from ibsr_helpers.config import load_config
    from ibsr_helpers.models import build_network
    from ibsr_helpers.plan import specs

    cfg = load_config(
        {
            "model": {"name": "unet3d", "channels": [4, 8], "strides": [2], "num_res_units": 0},
            "data": {"mode": "volume", "roi": [32, 32, 32], "spacing": [1, 1, 1]},
            "train": {"precision": "fp32"},
        },
        None,
    )
    folder = tmp_path_factory.mktemp("tiny-run")
    (folder / "config.json").write_text(json.dumps(cfg))
    torch.manual_seed(0)
    torch.save({"model": build_network(specs(cfg).model).state_dict()}, folder / "best.pt")
    return folder


def write_scan(path: Path, data=None) -> Path:
    """A 20^3 scan (a cube of hundreds of grey levels in zeros), or ``data``, at ``path``."""
    import nibabel as nib
    import numpy as np

    if data is None:
        data = np.zeros((20, 20, 20), np.int16)
        data[5:15, 4:16, 6:14] = np.random.default_rng(len(str(path))).integers(1, 900, (10, 12, 8))
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(path))
    return path
