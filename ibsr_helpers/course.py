"""Executing the course notebooks in order (``make course``, the notebook tests)."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path

from ibsr_helpers.data import describe_source, project_root, resolve_data_dir
from ibsr_helpers.errors import IBSRError

__all__ = ["notebook_paths", "run_notebook", "run_course"]


def notebook_paths(folder: str | Path | None = None) -> list[Path]:
    """The numbered notebooks ``NN_*.ipynb`` in order."""
    folder = Path(folder) if folder else (project_root() or Path.cwd()) / "notebooks"
    paths = sorted(p for p in folder.glob("[0-9][0-9]_*.ipynb"))
    if not paths:
        raise IBSRError("no numbered notebooks (NN_name.ipynb) found", folder)
    return paths


def run_notebook(path: str | Path, out_dir: str | Path, parameters: dict) -> Path:
    """Execute one notebook with papermill, writing the executed copy to ``out_dir``.

    Runs with the notebook's folder as working directory, so relative paths behave as
    they do for a student.

    Raises:
        IBSRError: If a cell fails; the message names the executed copy to open.
    """
    import papermill as pm

    path = Path(path).resolve()
    out = Path(out_dir).resolve() / path.name
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        pm.execute_notebook(
            str(path),
            str(out),
            parameters=parameters,
            cwd=str(path.parent),
            kernel_name="python3",
            progress_bar=False,
        )
    except pm.PapermillExecutionError as exc:
        raise IBSRError(
            f"cell {exc.exec_count} failed: {exc.ename}: {exc.evalue} (executed copy: {out})", path
        ) from None
    return out


def run_course(
    out_dir: str | Path = "reports",
    profile: str = "quick",
    data_dir: str | Path | None = None,
    only: Sequence[str] | None = None,
    seed: int = 0,
) -> list[Path]:
    """Execute every numbered notebook in order with the given profile.

    Uses IBSR18 if it is found (``data_dir``, ``IBSR18_DIR`` or ``data/IBSR18``), else
    the demo data (made on first use), and says which.

    Returns:
        The executed notebooks.
    """
    root, _ = resolve_data_dir(data_dir)
    print(f"course: profile {profile}, data: {describe_source(root)}")
    os.environ.setdefault("MPLBACKEND", "Agg")
    done = []
    for path in notebook_paths():
        if only and path.name[:2] not in only:
            continue
        t = time.time()
        print(f"  running {path.name} ...", flush=True)
        done.append(
            run_notebook(
                path,
                out_dir,
                {"PROFILE": profile, "DATA_DIR": str(Path(root).resolve()), "SEED": seed},
            )
        )
        print(f"  {path.name} done in {time.time() - t:.0f} s -> {done[-1]}", flush=True)
    return done
