"""Finding, loading and validating IBSR18 subjects, as they are stored on disk.

The layouts understood are described in :mod:`ibsr_helpers.layout`; in a flat folder the
split comes from :data:`~ibsr_helpers.layout.COURSE_SPLIT` (subjects not in that table go
to ``train`` when they have a label and to ``test`` otherwise). Scans to segment, under
any names and layouts, are found by :mod:`ibsr_helpers.scans`.

A loaded :class:`Volume` holds the scan exactly as stored (raw intensities, the file's own
voxel order and spacing); everything a model needs on top of that (orientation, spacing,
normalisation, the brain box) is :mod:`ibsr_helpers.preprocessing`'s job, done once.

Example:
    >>> from ibsr_helpers import data
    >>> root, is_demo = data.resolve_data_dir()          # IBSR18 if found, else demo data
    >>> subjects = data.discover(root)
    >>> vol = data.load_subject(subjects[0])
    >>> vol.image.shape, vol.label.dtype
    ((256, 128, 256), dtype('uint8'))
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from tqdm.auto import tqdm

from ibsr_helpers.errors import IBSRError
from ibsr_helpers.io import load_nifti, read_labels, read_volume
from ibsr_helpers.layout import (
    COURSE_DIR,
    COURSE_SPLIT,
    DEMO_DESCRIPTION,
    DEMO_MARKER,
    LABELS,
    NIFTI_SUFFIXES,
    SPLIT_DIRS,
    SPLITS,
    SUBJECT_ID,
    TISSUES,
)

__all__ = [
    "Subject",
    "Volume",
    "discover",
    "find_data_dir",
    "resolve_data_dir",
    "is_demo_data",
    "describe_source",
    "load_subject",
    "load_subjects",
    "load_split",
    "subjects_table",
    "tissue_volumes",
    "project_root",
]

_SPLIT_OF_DIR: dict[str, str] = {folder: split for split, folder in SPLIT_DIRS.items()}


@dataclass(frozen=True)
class Subject:
    """One subject found on disk (header read, voxels not loaded).

    Attributes:
        id: Subject id, e.g. ``"IBSR_01"``.
        split: ``"train"``, ``"val"`` or ``"test"``.
        image: Path of the T1 image.
        label: Path of the label volume, or None (test subjects).
        spacing: Voxel size in mm, ``(sx, sy, sz)``.
        shape: Spatial shape ``(X, Y, Z)`` (trailing singleton axes dropped).
    """

    id: str
    split: str
    image: Path
    label: Path | None
    spacing: tuple[float, float, float]
    shape: tuple[int, int, int]


@dataclass
class Volume:
    """A loaded subject, exactly as stored (raw intensities, the file's voxel order).

    Attributes:
        subject: The :class:`Subject` it came from.
        image: ``(X, Y, Z)`` float32 raw intensities.
        label: ``(X, Y, Z)`` uint8 labels, or None.
        nifti: The source image (affine and header), to save predictions with.
        prepared: Cache of :func:`ibsr_helpers.preprocessing.prepare` results, one per
            preprocessing; filled by that function, never by hand.
        origin: The scan as :func:`load_subject` read it and keeps it for this process
            (None for a volume built by hand). Its own ``prepared`` holds preparations
            that later loads of the same files share while their arrays are unchanged.
    """

    subject: Subject
    image: np.ndarray
    label: np.ndarray | None
    nifti: nib.Nifti1Image
    prepared: dict[Any, Any] = field(default_factory=dict, repr=False, compare=False)
    origin: Volume | None = field(default=None, repr=False, compare=False)

    def as_read(self) -> bool:
        """Whether the arrays still equal the scan as read (always False without an origin)."""
        o = self.origin
        if o is None or not _same(self.image, o.image):
            return False
        if self.label is None or o.label is None:
            return self.label is None and o.label is None
        return _same(self.label, o.label)

    @property
    def id(self) -> str:
        """The subject id."""
        return self.subject.id

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm."""
        return self.subject.spacing

    @property
    def affine(self) -> np.ndarray:
        """The image's 4x4 affine."""
        return self.nifti.affine


def _nifti(folder: Path, stem: str) -> Path | None:
    for suffix in NIFTI_SUFFIXES:
        path = folder / f"{stem}{suffix}"
        if path.is_file():
            return path
    return None


def _subject(folder: Path, split: str, require_label: bool) -> Subject:
    sid = folder.name
    image = _nifti(folder, sid)
    if image is None:
        raise IBSRError(f"no image {sid}.nii.gz in the subject folder", folder)
    label = _nifti(folder, f"{sid}_seg")
    if label is None and require_label:
        raise IBSRError(f"{split} subject has no label file {sid}_seg.nii.gz", folder)
    img = load_nifti(image)
    shape = tuple(int(s) for s in img.shape)
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) != 3:
        raise IBSRError(f"expected a 3-D image, got shape {tuple(img.shape)}", image)
    spacing = tuple(round(float(z), 6) for z in img.header.get_zooms()[:3])
    return Subject(sid, split, image, label, spacing, shape)  # type: ignore[arg-type]


def _subject_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and SUBJECT_ID.match(p.name))


def discover(root: str | Path, splits: Iterable[str] | None = None) -> list[Subject]:
    """Find the subjects under ``root``.

    Args:
        root: The data folder: one holding ``TrainingValidationTestSets/``, that folder
            itself, or a flat folder of ``IBSR_XX/`` subject folders.
        splits: Keep only these splits (default: all).

    Returns:
        Subjects sorted by split (train, val, test) then id.

    Raises:
        IBSRError: If the folder is missing, holds no subjects, a training or
            validation subject has no label, or an image header cannot be read.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise IBSRError("data folder not found (set IBSR18_DIR or pass the path)", root)
    course = root / COURSE_DIR if (root / COURSE_DIR).is_dir() else root
    found: list[Subject] = []
    split_dirs = [course / d for d in _SPLIT_OF_DIR if (course / d).is_dir()]
    if split_dirs:
        for split_dir in split_dirs:
            split = _SPLIT_OF_DIR[split_dir.name]
            for folder in _subject_dirs(split_dir):
                found.append(_subject(folder, split, require_label=split != "test"))
    else:
        for folder in _subject_dirs(course):
            known = COURSE_SPLIT.get(folder.name)
            has_label = _nifti(folder, f"{folder.name}_seg") is not None
            split = known or ("train" if has_label else "test")
            found.append(_subject(folder, split, require_label=split != "test"))
    if not found:
        raise IBSRError(
            "no subjects found: expected TrainingValidationTestSets/<split>/IBSR_XX/IBSR_XX.nii.gz "
            "or IBSR_XX/IBSR_XX.nii.gz subfolders",
            root,
        )
    if splits is not None:
        wanted = set(splits)
        unknown = wanted - set(SPLITS)
        if unknown:
            raise IBSRError(f"unknown split(s) {sorted(unknown)}; use {list(SPLITS)}")
        found = [s for s in found if s.split in wanted]
    return sorted(found, key=lambda s: (SPLITS.index(s.split), s.id))


def project_root(start: str | Path | None = None) -> Path | None:
    """The course checkout containing ``start`` (default: the working directory), if any."""
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "pyproject.toml").is_file() and (folder / "ibsr_helpers").is_dir():
            return folder
    return None


def find_data_dir(path: str | Path | None = None) -> Path | None:
    """Locate IBSR18 without creating anything.

    Looks, in order, at ``path``, the ``IBSR18_DIR`` environment variable and
    ``data/IBSR18`` in the course checkout (or the working directory).

    Args:
        path: An explicit folder; if given it must exist.

    Returns:
        The folder, or None if IBSR18 is not found (an explicit ``path`` never gives None).

    Raises:
        IBSRError: If ``path`` or ``IBSR18_DIR`` names a folder that does not exist.
    """
    if path is not None:
        path = Path(path).expanduser()
        if not path.is_dir():
            raise IBSRError("data folder not found", path)
        return path
    env = os.environ.get("IBSR18_DIR")
    if env:
        env_path = Path(env).expanduser()
        if not env_path.is_dir():
            raise IBSRError("IBSR18_DIR points to a folder that does not exist", env_path)
        return env_path
    roots = [r for r in (project_root(), Path.cwd()) if r is not None]
    for r in roots:
        candidate = r / "data" / "IBSR18"
        if candidate.is_dir() and any(candidate.iterdir()):
            return candidate
    return None


def default_demo_dir() -> Path:
    """Where demo data goes by default: ``data/demo`` in the course checkout."""
    return (project_root() or Path.cwd()) / "data" / "demo"


def resolve_data_dir(
    path: str | Path | None = None,
    demo_dir: str | Path | None = None,
    demo_subjects: int = 6,
) -> tuple[Path, bool]:
    """IBSR18 if it can be found, else demo data (made on first use).

    Args:
        path: Explicit data folder (IBSR18 or demo); used as is when given.
        demo_dir: Where to find or make demo data (default :func:`default_demo_dir`).
        demo_subjects: Subjects to make if the demo set does not exist yet.

    Returns:
        ``(folder, is_demo)``.
    """
    found = find_data_dir(path)
    if found is not None:
        return found, is_demo_data(found)
    demo = Path(demo_dir) if demo_dir is not None else default_demo_dir()
    if not (demo / DEMO_MARKER).is_file():
        from ibsr_helpers.demo import make_demo_dataset

        make_demo_dataset(demo, n_subjects=demo_subjects)
    return demo, True


def is_demo_data(root: str | Path) -> bool:
    """True if ``root`` is a demo set written by :func:`ibsr_helpers.demo.make_demo_dataset`."""
    return (Path(root) / DEMO_MARKER).is_file()


def describe_source(root: str | Path) -> str:
    """One line saying which data a run uses, for logs and notebooks (loud for demo data)."""
    if is_demo_data(root):
        return (
            f"!!! DEMO DATA: {DEMO_DESCRIPTION}, at {Path(root)}; its numbers say nothing "
            "about IBSR18 (see data/README.md to get IBSR18, then set DATA_DIR or IBSR18_DIR)"
        )
    return f"IBSR18 at {Path(root)}"


#: Scans read in this process, newest last: a notebook that trains several runs reads
#: each (gzip-compressed) scan once. Keyed by path, size and modification time, so a
#: rewritten file is read again; at most :data:`READ_CACHE_SIZE` subjects are kept.
_READ: OrderedDict[tuple, Volume] = OrderedDict()
READ_CACHE_SIZE = 20


def _file_key(path: Path | None) -> tuple | None:
    if path is None:
        return None
    stat = Path(path).stat()
    return str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns


def _same(array: np.ndarray, stored: np.ndarray) -> bool:
    """Whether ``array`` equals ``stored``: at once for a read-only view of it."""
    if array.base is stored and not array.flags.writeable:
        return True
    return np.array_equal(array, stored)


def _read_only(array: np.ndarray | None) -> np.ndarray | None:
    if array is None:
        return None
    view = array.view()
    view.flags.writeable = False
    return view


def load_subject(subject: Subject, shared: bool = False) -> Volume:
    """Load and validate one subject, as stored.

    A subject read before in this process (same files, unchanged) comes from a cache of
    the last :data:`READ_CACHE_SIZE`; the arrays returned are the caller's own unless
    ``shared``. So does its preparation for a spec another load of it was prepared with,
    while the caller's arrays still equal the stored ones (:meth:`Volume.as_read`): a
    notebook that trains several runs prepares each scan once per preprocessing.

    Args:
        subject: From :func:`discover`.
        shared: Return read-only views of the arrays this process keeps instead of
            copies (for callers that only prepare them, such as training: no copy, and
            writing into them raises).

    Returns:
        A :class:`Volume` with the float32 raw image and uint8 label (or None).

    Raises:
        IBSRError: On a corrupt file, shape/affine mismatch, label values outside 0–3
            or non-finite intensities. The message names the file.
    """
    try:
        key = (_file_key(subject.image), _file_key(subject.label))
    except OSError:
        key = None  # a missing file: _read_subject names it
    read = _READ.get(key) if key else None
    if read is None:
        read = _read_subject(subject)
        if key:
            _READ[key] = read
            while len(_READ) > READ_CACHE_SIZE:
                _READ.popitem(last=False)
    elif key:
        _READ.move_to_end(key)
    if shared:
        return Volume(
            subject, _read_only(read.image), _read_only(read.label), read.nifti, origin=read
        )
    label = None if read.label is None else read.label.copy()
    return Volume(subject, read.image.copy(), label, read.nifti, origin=read)


def _read_subject(subject: Subject) -> Volume:
    image, img = read_volume(subject.image, np.float32)
    if not np.isfinite(image).all():
        bad = int((~np.isfinite(image)).sum())
        raise IBSRError(f"image holds {bad} non-finite (NaN/inf) voxels", subject.image)
    label = None
    if subject.label is not None:
        label, lab = read_labels(subject.label)
        if label.shape != image.shape:
            raise IBSRError(
                f"label shape {label.shape} does not match image shape {image.shape}",
                subject.label,
            )
        if not np.allclose(lab.affine, img.affine, atol=1e-4):
            raise IBSRError("label affine does not match the image affine", subject.label)
    return Volume(subject, np.ascontiguousarray(image), label, img)


def load_subjects(
    subjects: Sequence[Subject], progress: bool = True, shared: bool = False
) -> list[Volume]:
    """Load several subjects, with a progress bar.

    Args:
        subjects: From :func:`discover`.
        progress: Show a tqdm bar.
        shared: Read-only views instead of copies (:func:`load_subject`).

    Returns:
        One :class:`Volume` per subject, in order.
    """
    it = tqdm(subjects, desc="loading", unit="subject", disable=not progress, leave=False)
    return [load_subject(s, shared) for s in it]


def subjects_table(subjects: Sequence[Subject]):  # -> pandas.DataFrame
    """A table of subjects: id, split, spacing, shape, whether labelled.

    Args:
        subjects: From :func:`discover`.

    Returns:
        A pandas DataFrame, one row per subject.
    """
    import pandas as pd

    return pd.DataFrame(
        {
            "id": s.id,
            "split": s.split,
            "spacing_mm": "×".join(f"{z:g}" for z in s.spacing),
            "shape": "×".join(str(n) for n in s.shape),
            "labelled": s.label is not None,
        }
        for s in subjects
    )


def load_split(
    root: str | Path,
    split: str,
    limit: int | None = None,
    progress: bool = True,
    shared: bool = False,
) -> list[Volume]:
    """Discover and load one split's subjects (the first ``limit`` of them, if given).

    ``shared``: read-only views instead of copies (:func:`load_subject`).

    Raises:
        IBSRError: If the split holds no subject.
    """
    subjects = discover(root, splits=[split])[: limit or None]
    if not subjects:
        raise IBSRError(f"no {split} subjects found", root)
    return load_subjects(subjects, progress, shared)


def tissue_volumes(volumes: Sequence[Volume]):  # -> pandas.DataFrame
    """Tissue volumes per labelled subject, from voxel counts and spacing.

    Args:
        volumes: Loaded volumes; those without a label (test subjects) are skipped.

    Returns:
        DataFrame with columns ``subject, split, tissue, voxels, volume_ml, percent``
        (percent of the subject's CSF+GM+WM), one row per subject and tissue.
    """
    import pandas as pd

    rows = []
    for vol in volumes:
        if vol.label is None:
            continue
        counts = np.bincount(vol.label.ravel(), minlength=len(LABELS))
        voxel_ml = float(np.prod(vol.spacing)) / 1000.0
        total = int(counts[1 : len(TISSUES) + 1].sum())
        for value, tissue in enumerate(TISSUES, start=1):
            rows.append(
                {
                    "subject": vol.id,
                    "split": vol.subject.split,
                    "tissue": tissue,
                    "voxels": int(counts[value]),
                    "volume_ml": counts[value] * voxel_ml,
                    "percent": 100.0 * counts[value] / total if total else 0.0,
                }
            )
    columns = ["subject", "split", "tissue", "voxels", "volume_ml", "percent"]
    return pd.DataFrame(rows, columns=columns)
