"""What made a result: which data (kind, subjects, a fingerprint of their files), code and machine.

A run folder records the data it was trained on (``data.json``, :func:`data_record`), so
that a run trained on demo data is never reused as an IBSR18 result; a results table
records the commit, the package versions, the hardware and the data fingerprint
(:func:`about`), so that a grade can be reproduced.

Example:
    >>> record = data_record("data/IBSR18")                   # doctest: +SKIP
    >>> describe_record(record)                               # doctest: +SKIP
    'IBSR18 (train 10, val 5 subjects; fingerprint 3f2a9c01d4e5b6a7)'
"""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from ibsr_helpers.errors import IBSRError
from ibsr_helpers.layout import COURSE_SPLIT

__all__ = [
    "DATA_RECORD",
    "fingerprint_files",
    "data_record",
    "describe_record",
    "record_difference",
    "code_version",
    "package_versions",
    "about",
    "read_data_record",
    "trained_on",
]

#: The file in a run folder that records the data the run was trained on.
DATA_RECORD = "data.json"
#: Packages whose versions a results table records.
_PACKAGES: tuple[str, ...] = (
    "ibsr_helpers",
    "torch",
    "monai",
    "segmentation-models-pytorch",
    "numpy",
    "nibabel",
)


def fingerprint_files(paths: Iterable[str | Path], root: str | Path | None = None) -> str:
    """A short SHA-256 over files' names and bytes (16 hex digits).

    Args:
        paths: The files; their order does not matter.
        root: Names are taken relative to it (default: the file name alone), so a copy of
            the data elsewhere has the same fingerprint.

    Returns:
        16 hexadecimal digits; the same files give the same fingerprint anywhere.
    """
    digest = hashlib.sha256()
    named = sorted(
        (str(Path(p).relative_to(root)) if root is not None else Path(p).name, Path(p))
        for p in paths
    )
    for name, path in named:
        digest.update(name.encode() + b"\0")
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()[:16]


def data_record(root: str | Path, splits: Sequence[str] = ("train", "val")) -> dict[str, Any]:
    """What a data folder holds for training: its kind, subject ids per split, a fingerprint.

    Args:
        root: An IBSR18, demo or other data folder (as :func:`ibsr_helpers.data.discover`).
        splits: The splits a run reads.

    Returns:
        ``{"kind": "IBSR18" | "demo" | "other", "subjects": {split: [ids]},
        "fingerprint": hex}``; the fingerprint covers every image and label of those splits.

    Raises:
        IBSRError: As :func:`ibsr_helpers.data.discover`.
    """
    from ibsr_helpers.data import discover, is_demo_data

    subjects = discover(root, splits)
    ids = {split: [s.id for s in subjects if s.split == split] for split in splits}
    if is_demo_data(root):
        kind = "demo"
    elif all(COURSE_SPLIT.get(s.id) == s.split for s in subjects):
        kind = "IBSR18"
    else:
        kind = "other"
    files = [p for s in subjects for p in (s.image, s.label) if p is not None]
    return {"kind": kind, "subjects": ids, "fingerprint": fingerprint_files(files)}


def describe_record(record: Mapping[str, Any] | None) -> str:
    """One line naming a data record: ``IBSR18 (train 10, val 5 subjects; fingerprint …)``."""
    if not record:
        return "unknown data (the run records none: trained before runs recorded their data)"
    counts = ", ".join(f"{split} {len(ids)}" for split, ids in record["subjects"].items())
    return f"{record['kind']} ({counts} subjects; fingerprint {record['fingerprint']})"


def record_difference(stored: Mapping[str, Any] | None, current: Mapping[str, Any]) -> str | None:
    """How a run's recorded data differs from the data at hand, or None when they agree."""
    if stored is None:
        return "the run records no data (it was trained before runs recorded their data)"
    if stored.get("fingerprint") == current.get("fingerprint"):
        return None
    return f"trained on {describe_record(stored)}, the data given is {describe_record(current)}"


def read_data_record(run_dir: str | Path) -> dict[str, Any] | None:
    """The data record of a run folder (``data.json``), or None for a run made before them."""
    import json

    path = Path(run_dir) / DATA_RECORD
    return json.loads(path.read_text()) if path.is_file() else None


def trained_on(run_dirs: Mapping[str, str | Path | None]) -> str:
    """Which data each run was trained on, one group per data set (for a results header).

    Args:
        run_dirs: Model name -> its run folder.

    Returns:
        ``"IBSR18 (…; fingerprint …): all 8 models"``, or one ``data: names`` group each.
    """
    groups: dict[str, list[str]] = {}
    for name, folder in run_dirs.items():
        record = read_data_record(folder) if folder is not None else None
        groups.setdefault(describe_record(record), []).append(name)
    if len(groups) == 1:
        (data, names), *_ = groups.items()
        return f"{data}: all {len(names)} models"
    return "; ".join(f"{data}: {', '.join(names)}" for data, names in groups.items())


def code_version(root: str | Path | None = None) -> str:
    """The checkout's commit (``abc1234``, ``+ changes`` when the tree differs), or "unknown"."""
    from ibsr_helpers.data import project_root

    root = Path(root) if root is not None else project_root()
    if root is None:
        return "unknown (not a checkout)"

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()

    try:
        commit = git("rev-parse", "--short", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return "unknown (git unavailable)"
    return commit + (" + uncommitted changes" if dirty else "")


def package_versions(names: Sequence[str] = _PACKAGES) -> str:
    """``name version`` of each installed package, comma-separated (missing: ``-``)."""
    out = []
    for name in names:
        try:
            out.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            out.append(f"{name} -")
    return ", ".join(out)


def about(data_root: str | Path | None = None, **extra: str) -> dict[str, str]:
    """Lines for a results table's header: date, commit, packages, hardware, data.

    Args:
        data_root: The data folder the results come from (fingerprinted), if any.
        **extra: More ``name=value`` lines, first in the header.

    Returns:
        Name -> value, in the order a reader wants them.
    """
    import time

    from ibsr_helpers.profiling import hardware_summary

    hw = hardware_summary()
    out = dict(extra)
    out.setdefault("date", time.strftime("%Y-%m-%d %H:%M"))
    out["commit"] = code_version()
    out["packages"] = package_versions()
    out["hardware"] = f"{hw['cpu']} (bf16: {hw['cpu_bf16']}), {hw['cores']} cores; GPU: {hw['gpu']}"
    if data_root is not None:
        try:
            out["data"] = f"{Path(data_root)}: " + describe_record(
                data_record(data_root, ("train", "val"))
            )
        except IBSRError as exc:
            out["data"] = f"{Path(data_root)} ({exc.problem})"
    return out
