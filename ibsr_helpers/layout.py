"""IBSR18's names and layout on disk: labels, tissues, splits, subject ids, file names.

Every module that needs one of these constants imports it from here, so the course split,
the subject-id pattern and the folder names are written once (the data layer, the demo
data and the evaluation all read the same ones).

Layouts understood:

* the course layout ``TrainingValidationTestSets/{Training,Validation,Test}_Set/ID/``;
* a flat folder of ``ID/`` subfolders, whose split is then taken from
  :data:`COURSE_SPLIT`.

Each subject folder holds ``ID.nii.gz`` (T1 image) and, for training and validation
subjects, ``ID_seg.nii.gz`` (0 background, 1 CSF, 2 GM, 3 WM); ``.nii`` works too.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

__all__ = [
    "LABELS",
    "TISSUES",
    "TISSUE_LABELS",
    "SPLITS",
    "SPLIT_DIRS",
    "COURSE_DIR",
    "COURSE_SPLIT",
    "DEMO_MARKER",
    "DEMO_DESCRIPTION",
    "NIFTI_SUFFIXES",
    "SUBJECT_ID",
    "parse_nifti_name",
    "nifti_files",
]

#: Label value -> name. 0 is background.
LABELS: dict[int, str] = {0: "background", 1: "CSF", 2: "GM", 3: "WM"}
#: The three tissues scored by every metric, in label order.
TISSUES: tuple[str, ...] = ("CSF", "GM", "WM")
#: Tissue name -> label value.
TISSUE_LABELS: dict[str, int] = {name: value for value, name in LABELS.items() if value}
#: Split names used throughout the package.
SPLITS: tuple[str, ...] = ("train", "val", "test")
#: Split -> its folder in the course layout.
SPLIT_DIRS: dict[str, str] = {"train": "Training_Set", "val": "Validation_Set", "test": "Test_Set"}
#: The folder holding the three split folders.
COURSE_DIR = "TrainingValidationTestSets"

#: The University of Girona MISA course split of IBSR18 (used for flat folders).
COURSE_SPLIT: dict[str, str] = {
    **{f"IBSR_{i:02d}": "train" for i in (1, 3, 4, 5, 6, 7, 8, 9, 16, 18)},
    **{f"IBSR_{i:02d}": "val" for i in (11, 12, 13, 14, 17)},
    **{f"IBSR_{i:02d}": "test" for i in (2, 10, 15)},
}

#: File written at the root of a demo data set; its presence marks the set as demo data.
DEMO_MARKER = "DEMO_DATA.txt"
#: How a demo data set is named wherever a run says which data it used.
DEMO_DESCRIPTION = "demo data (MNI152-derived), not IBSR18"

#: File endings of NIfTI volumes, longest first.
NIFTI_SUFFIXES: tuple[str, ...] = (".nii.gz", ".nii")
#: A subject id: letters, an underscore, digits (``IBSR_01``, ``DEMO_03``).
SUBJECT_ID = re.compile(r"^[A-Za-z]+_\d+$")
_FILE = re.compile(r"^(?P<id>[A-Za-z]+_\d+)(?P<seg>_seg)?\.nii(\.gz)?$")


def parse_nifti_name(path: str | Path) -> tuple[str, bool] | None:
    """Read a subject id from a file name.

    Args:
        path: A file such as ``IBSR_11.nii.gz`` or ``IBSR_11_seg.nii``.

    Returns:
        ``(subject id, is a label file)``, or None when the name is not of that form.

    Example:
        >>> parse_nifti_name("IBSR_11_seg.nii.gz")
        ('IBSR_11', True)
    """
    match = _FILE.match(Path(path).name)
    return None if match is None else (match["id"], match["seg"] is not None)


def nifti_files(root: str | Path) -> list[Path]:
    """Every NIfTI file (:data:`NIFTI_SUFFIXES`) under ``root`` at any depth, sorted.

    Linked folders are entered too, each real folder once: ``Path.rglob`` does not enter
    symlinked folders before Python 3.13, and a folder of links to subject folders is a
    common way to pick scans for prediction or grading.
    """
    files, seen = [], set()
    for folder, subfolders, names in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:  # a link back up the tree: do not walk it again
            subfolders.clear()
            continue
        seen.add(real)
        files.extend(Path(folder) / name for name in names if name.endswith(NIFTI_SUFFIXES))
    return sorted(files)
