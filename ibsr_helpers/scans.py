"""Finding and checking the scans a user asks to segment: files or folders, any names.

:func:`find_scans` turns what ``ibsr-seg predict --input`` is given (NIfTI files, and
folders searched at any depth, the course layout and BIDS layouts included) into
:class:`Scan` objects, each with where its segmentation goes: ``<stem>_seg.nii.gz``
under the output folder, at the file's path relative to the input folder it was found in
(directly in the output folder for a file given by name). Everything that can be told from the
files' names and headers is checked there, for every input, before anything is
predicted; :func:`check_voxels` checks what needs the voxels, once a scan is loaded.

What is refused, and what is only warned about:

* Errors (:class:`~ibsr_helpers.errors.IBSRError`), where a prediction would be wrong or
  would lose something: two inputs writing the same output file (one would overwrite the
  other), an output overwriting a file of the inputs, a 4-D series of several volumes
  (which one to segment?), a 2-D image or a single slice, voxels that are not grey levels
  (RGB, complex), and a label map given as the image (the models would "segment" a
  segmentation, and the result would look plausible).
* A warning, where the prediction is valid but coarse: voxels thicker than
  :data:`THICK_VOXEL_MM` (the models were trained on IBSR18's 0.84-1.5 mm voxels and
  resample the scan to their own spacing, so the segmentation follows the thick slices).
* A note (:func:`skipped_note`): files under an input folder named like label maps
  (``*_seg``, BIDS derivatives' ``*_dseg``) are not images to segment and are skipped,
  and the count is said, never silently.

Example:
    >>> scans, skipped = find_scans(["bids/", "extra/brain.nii.gz"])
    >>> [str(s.output) for s in scans]
    ['sub-01/anat/sub-01_T1w_seg.nii.gz', 'sub-02/anat/sub-02_T1w_seg.nii.gz', 'brain_seg.nii.gz']
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from ibsr_helpers.data import Subject, Volume
from ibsr_helpers.errors import IBSRError
from ibsr_helpers.io import load_nifti
from ibsr_helpers.layout import NIFTI_SUFFIXES, nifti_files

__all__ = [
    "Scan",
    "LABEL_NAME",
    "LABEL_MAP_VALUES",
    "THICK_VOXEL_MM",
    "nifti_stem",
    "find_scans",
    "skipped_note",
    "check_outputs",
    "check_voxels",
]

#: The name of a label map, not an image: ``*_seg`` (IBSR18) or ``*_dseg`` (BIDS).
LABEL_NAME = re.compile(r"_d?seg\.nii(\.gz)?$")
#: A volume whose voxels take at most this many whole-number values is a label map or a
#: mask, not a scan (IBSR18's labels take 4, a T1 scan hundreds: 204 to 837 in IBSR18 and
#: the demo data).
LABEL_MAP_VALUES = 16
#: Voxels thicker than this (mm, along any axis) get a warning.
THICK_VOXEL_MM = 3.0
#: Voxels sampled to rule a volume out as a label map before the exact count.
_SAMPLE = 65536


@dataclass(frozen=True)
class Scan:
    """One image to segment (header read and checked, voxels not loaded).

    Attributes:
        subject: The image as a test :class:`~ibsr_helpers.data.Subject` without label;
            its id is the file name without ``.nii``/``.nii.gz`` (``sub-01_T1w``).
        source: The input it was found under: the file itself or the folder given.
        output: Where its segmentation goes, relative to the output folder:
            ``<folders below source>/<id>_seg.nii.gz``.
    """

    subject: Subject
    source: Path
    output: Path

    @property
    def image(self) -> Path:
        """The image file."""
        return self.subject.image


def nifti_stem(path: str | Path) -> str:
    """A NIfTI file's name without ``.nii.gz`` or ``.nii`` (``sub-01_T1w``)."""
    name = Path(path).name
    for suffix in NIFTI_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _read_header(path: Path) -> Subject:
    """The image as a :class:`Subject`, refusing what is not one grey-level 3-D scan."""
    img = load_nifti(path)
    full = tuple(int(n) for n in img.shape)
    shape = full
    while len(shape) > 3 and shape[-1] == 1:  # IBSR18 stores (256, 128, 256, 1)
        shape = shape[:-1]
    if len(shape) == 4:
        raise IBSRError(
            f"holds a series of {shape[3]} volumes (shape {full}), not one 3-D scan: save "
            "the volume to segment on its own (e.g. nibabel.funcs.four_to_three) and give "
            "that file",
            path,
        )
    if len(shape) > 4:
        raise IBSRError(f"has {len(shape)} dimensions (shape {full}), not one 3-D scan", path)
    if len(shape) < 3 or 1 in shape:
        raise IBSRError(f"is a 2-D image (shape {full}), not a 3-D scan", path)
    dtype = img.get_data_dtype()
    if dtype.kind not in "biuf":
        raise IBSRError(f"holds {dtype} voxels (RGB or complex), not grey levels", path)
    sizes = nib.affines.voxel_sizes(img.affine)
    if not np.isfinite(sizes).all() or (sizes <= 0).any():
        raise IBSRError(f"has an affine with voxel sizes {tuple(sizes.tolist())}", path)
    if sizes.max() > THICK_VOXEL_MM:
        size = "×".join(f"{s:.3g}" for s in sizes)
        warnings.warn(
            f"{path}: voxels of {size} mm, thicker than {THICK_VOXEL_MM:g} mm: the models were "
            "trained on IBSR18's 0.84-1.5 mm voxels; expect a coarse segmentation",
            stacklevel=3,
        )
    spacing = tuple(round(float(z), 6) for z in img.header.get_zooms()[:3])
    return Subject(nifti_stem(path), "test", path, None, spacing, shape)  # type: ignore[arg-type]


def find_scans(
    inputs: str | Path | Sequence[str | Path],
) -> tuple[list[Scan], list[Path]]:
    """Every image that ``inputs`` name, checked from its header, with its output path.

    Args:
        inputs: NIfTI files (``.nii``, ``.nii.gz``, any name) and folders, searched at
            any depth (through linked folders too), e.g. the IBSR18 ``Test_Set``, a BIDS
            data set or a folder of ``brain.nii.gz`` files. In a folder, files named
            like label maps (:data:`LABEL_NAME`) are skipped; a file given by name is
            always taken.

    Returns:
        ``(scans, skipped)``: the scans in the order given (each folder's sorted by
        path), and the label files skipped in folders (see :func:`skipped_note`).

    Raises:
        IBSRError: If an input is missing or is not a NIfTI file, a folder holds no
            image, a file is not one grey-level 3-D scan (a 4-D series, a 2-D image, RGB
            voxels), or two images would write the same output file (the message names
            both).
    """
    given = [inputs] if isinstance(inputs, str | Path) else list(inputs)
    if not given:
        raise IBSRError("no input given: name NIfTI files or folders of them")
    scans: list[Scan] = []
    skipped: list[Path] = []
    for source in (Path(p).expanduser() for p in given):
        if source.is_file():
            if not source.name.endswith(NIFTI_SUFFIXES):
                raise IBSRError("not a NIfTI file (.nii or .nii.gz)", source)
            output = Path(f"{nifti_stem(source)}_seg.nii.gz")
            scans.append(Scan(_read_header(source), source, output))
            continue
        if not source.is_dir():
            raise IBSRError("input not found (expected a NIfTI file or a folder)", source)
        found = 0
        for path in nifti_files(source):
            if LABEL_NAME.search(path.name):
                skipped.append(path)
                continue
            output = path.relative_to(source).parent / f"{nifti_stem(path)}_seg.nii.gz"
            scans.append(Scan(_read_header(path), source, output))
            found += 1
        if not found:
            labels = sum(p.is_relative_to(source) for p in skipped)
            also = f" ({labels} label file(s) *_seg/*_dseg skipped)" if labels else ""
            raise IBSRError(f"no NIfTI image (.nii, .nii.gz) found at any depth{also}", source)
    _refuse_collisions(scans)
    return scans, skipped


def _refuse_collisions(scans: Sequence[Scan]) -> None:
    """One error naming both inputs of the first output written twice (and the count)."""
    first: dict[Path, Scan] = {}
    clashes: list[tuple[Scan, Scan]] = []
    for scan in scans:
        if scan.output in first:
            clashes.append((first[scan.output], scan))
        else:
            first[scan.output] = scan
    if clashes:
        a, b = clashes[0]
        more = f" ({len(clashes) - 1} more output(s) written twice)" if len(clashes) > 1 else ""
        if a.image.resolve() == b.image.resolve():
            raise IBSRError(f"given twice (as {a.image} and {b.image}){more}", b.image)
        raise IBSRError(
            f"{a.image} and {b.image} would both be written to <out>/{a.output}{more}: "
            "give one of them, rename one, or predict them into separate output folders"
        )


def skipped_note(skipped: Sequence[Path]) -> str | None:
    """One line saying how many label files were skipped (None when none was)."""
    if not skipped:
        return None
    return (
        f"skipped {len(skipped)} file(s) named like label maps (*_seg, *_dseg), not images "
        f"to segment, e.g. {skipped[0]}"
    )


def check_outputs(
    scans: Sequence[Scan], skipped: Sequence[Path], out_dirs: Sequence[str | Path]
) -> None:
    """Refuse outputs that would overwrite one of the inputs' files.

    With ``--out`` the input folder itself, ``IBSR_11/IBSR_11_seg.nii.gz`` would
    overwrite the ground truth found (and skipped) there.

    Raises:
        IBSRError: Naming the first such file.
    """
    inputs = {p.resolve() for p in [*(s.image for s in scans), *skipped]}
    for out in out_dirs:
        for scan in scans:
            target = Path(out).expanduser() / scan.output
            if target.resolve() in inputs:
                raise IBSRError(
                    f"the segmentation of {scan.image} would overwrite this input file: "
                    "choose an output folder outside the input folders",
                    target,
                )


def check_voxels(volume: Volume) -> None:
    """Refuse a label map or mask given as the image (run once it is loaded).

    A volume whose voxels take 2 to :data:`LABEL_MAP_VALUES` whole-number values is
    not a scan. A strided sample rules most scans out before any full count.

    Raises:
        IBSRError: Naming the file and the values found.
    """
    image = volume.image
    flat = image.reshape(-1)
    if np.unique(flat[:: max(1, flat.size // _SAMPLE)]).size > LABEL_MAP_VALUES:
        return
    values = np.unique(flat)
    if 2 <= values.size <= LABEL_MAP_VALUES and np.array_equal(values, np.round(values)):
        shown = ", ".join(f"{v:g}" for v in values)
        raise IBSRError(
            f"looks like a label map, not a scan: its voxels take only the values {{{shown}}} "
            "(a scan has hundreds); give the MRI itself",
            volume.subject.image,
        )
