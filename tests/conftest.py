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
