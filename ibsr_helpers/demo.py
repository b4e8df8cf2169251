"""Demo data: IBSR-like subjects made from the MNI152 templates shipped with nilearn.

IBSR18 cannot be redistributed, so the course can run on a stand-in: skull-stripped
T1-like volumes with CSF/GM/WM labels, in IBSR18's file layout and geometry
(4-D ``(256, 128, 256, 1)`` int16, spacing ``(0.9375, 1.5, 0.9375)`` mm, RAS axes with
the 1.5 mm axis at position 1, sform_code 1 and qform_code 0).

Each subject is the MNI152 2009 template (and its GM/WM probability maps) warped by a
random global affine (scale, small rotation and shift) and a smooth random deformation,
then given a multiplicative bias field, Gaussian noise and its own intensity scale. The
labels come from the warped probability maps (CSF = brain - GM - WM, label = argmax),
so image and labels always match. Nothing is downloaded: nilearn ships the templates.

Example:
    >>> from ibsr_helpers.demo import make_demo_dataset
    >>> root = make_demo_dataset("/tmp/ibsr_demo", n_subjects=6)
    >>> from ibsr_helpers import data
    >>> [s.split for s in data.discover(root)]
    ['train', 'train', 'train', 'val', 'val', 'test']

"""

from __future__ import annotations

import functools
import shutil
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage as ndi
from scipy.interpolate import CubicSpline
from tqdm.auto import tqdm

from ibsr_helpers.errors import IBSRError
from ibsr_helpers.layout import COURSE_DIR, DEMO_DESCRIPTION, DEMO_MARKER, SPLIT_DIRS, SUBJECT_ID

__all__ = ["SHAPE", "SPACING", "AFFINE", "ORIENTATION", "split_sizes", "make_demo_dataset"]

#: Spatial shape of every demo volume, as IBSR18 after squeezing.
SHAPE: tuple[int, int, int] = (256, 128, 256)
#: Voxel size in mm (the most common IBSR18 spacing; axis 1 is the 1.5 mm axis).
SPACING: tuple[float, float, float] = (0.9375, 1.5, 0.9375)
#: The affine IBSR18 uses for this spacing: diagonal, x offset ``-(256 - 1) * 0.9375``.
AFFINE: np.ndarray = np.array(
    [
        [SPACING[0], 0.0, 0.0, -(SHAPE[0] - 1) * SPACING[0]],
        [0.0, SPACING[1], 0.0, 0.0],
        [0.0, 0.0, SPACING[2], 0.0],
        [0.0, 0.0, 0.0, 1.0],
    ]
)
#: Axis codes of IBSR18 (``nib.aff2axcodes``); its anatomy really is in this order
#: (axis 0 left-right, axis 1 posterior->anterior, axis 2 inferior->superior).
ORIENTATION: tuple[str, str, str] = ("R", "A", "S")

# Mean centroid of the brain (label > 0) in IBSR18's voxel grid, to place the demo brain.
_BRAIN_CENTRE_VOXEL = np.array([127.0, 56.5, 138.0])
# Random variation between subjects.
# MNI152's brain mask is ~1880 ml, IBSR18's labelled brains 1180-1670 ml: scale it down.
_SCALE_RANGE = (0.86, 0.94)
_MAX_ROTATION_DEG = 4.0
_MAX_SHIFT_MM = 3.0
_DEFORM_SD_MM = 2.0  # smooth displacement, sd per axis at the control points
_DEFORM_CONTROL = (6, 5, 6)  # control points across the grid (~45 mm apart)
_BIAS_SD = 0.08  # log-bias sd at the control points (roughly +-15% intensity)
_BIAS_CONTROL = (3, 3, 3)
_NOISE_RANGE = (0.01, 0.03)  # Gaussian noise sd, relative to the template's maximum
_MAX_RANGE = (100.0, 300.0)  # intensity of the brightest voxels, like most IBSR18 subjects
_BRIGHT_MAX_RANGE = (1150.0, 1350.0)  # one subject as bright as IBSR_11 (max 1289)


def split_sizes(n_subjects: int) -> tuple[int, int, int]:
    """How many demo subjects go to train, val and test.

    Rule: ``train = floor(0.6 n)``, ``test = max(1, floor(0.15 n))``, ``val`` the rest
    (at least 1). For example 3 -> (1, 1, 1), 6 -> (3, 2, 1), 18 -> (10, 6, 2).

    Args:
        n_subjects: Total number of subjects (at least 3).

    Returns:
        ``(n_train, n_val, n_test)``.

    Raises:
        IBSRError: If ``n_subjects`` is below 3.

    """
    if isinstance(n_subjects, bool) or not isinstance(n_subjects, int | np.integer):
        raise IBSRError(f"n_subjects must be an integer, got {n_subjects!r}")
    n = int(n_subjects)
    if n < 3:
        raise IBSRError(f"n_subjects must be at least 3 (one train, val, test subject), got {n}")
    n_train = int(np.floor(0.6 * n))
    n_test = max(1, int(np.floor(0.15 * n)))
    return n_train, n - n_train - n_test, n_test


@dataclass(frozen=True)
class _Templates:
    """The MNI152 maps as float32 arrays, 1 mm voxels cropped to the brain (axes RAS)."""

    t1: np.ndarray
    brain: np.ndarray
    gm: np.ndarray
    wm: np.ndarray
    centre: np.ndarray  # brain centroid, MNI voxel coordinates
    corners: np.ndarray  # (8, 3) brain bounding-box corners in mm relative to centre


@functools.lru_cache(maxsize=1)
def _load_templates() -> _Templates:
    """Load the templates once per process, cropped to the brain (about 70 MB)."""
    from nilearn import datasets

    t1_img = datasets.load_mni152_template(resolution=1)
    if nib.aff2axcodes(t1_img.affine) != ORIENTATION or not np.allclose(
        np.abs(np.diag(t1_img.affine)[:3]), 1.0
    ):
        raise IBSRError("unexpected MNI152 template geometry in this nilearn version")
    brain = np.asarray(datasets.load_mni152_brain_mask(resolution=1).dataobj, dtype=np.float32)
    idx = np.argwhere(brain > 0)
    crop = tuple(
        slice(max(0, int(lo) - 2), int(hi) + 3)
        for lo, hi in zip(idx.min(0), idx.max(0), strict=True)
    )
    maps = [
        np.asarray(img.dataobj, dtype=np.float32)[crop]
        for img in (
            t1_img,
            datasets.load_mni152_gm_template(resolution=1),
            datasets.load_mni152_wm_template(resolution=1),
        )
    ]
    t1, gm, wm = (m / m.max() for m in maps)
    brain = np.ascontiguousarray(brain[crop])
    centre = np.array(ndi.center_of_mass(brain))
    idx = np.argwhere(brain > 0)
    lo, hi = idx.min(0) - centre, idx.max(0) - centre
    corners = np.array(
        [[a, b, c] for a in (lo[0], hi[0]) for b in (lo[1], hi[1]) for c in (lo[2], hi[2])]
    )
    return _Templates(t1, brain, gm, wm, centre, corners)


def _rotation(angles_deg: np.ndarray) -> np.ndarray:
    ax, ay, az = np.deg2rad(angles_deg)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _upsampler(n_control: int, size: int, start: int, stop: int) -> np.ndarray:
    """Matrix ``(stop - start, n_control)`` interpolating control values (cubic spline).

    Control points span the full axis ``0..size-1``; rows are voxels ``start..stop-1``.
    """
    knots = np.linspace(0.0, size - 1.0, n_control)
    spline = CubicSpline(knots, np.eye(n_control), axis=0, bc_type="natural")
    return spline(np.arange(start, stop, dtype=np.float64)).astype(np.float32)


def _smooth_field(control: np.ndarray, box: tuple[slice, slice, slice]) -> np.ndarray:
    """Evaluate a coarse ``(a, b, c)`` control grid on the voxels of ``box`` (separably)."""
    mats = [
        _upsampler(n, size, s.start, s.stop)
        for n, size, s in zip(control.shape, SHAPE, box, strict=True)
    ]
    field = np.tensordot(mats[0], control.astype(np.float32), axes=(1, 0))  # (X, b, c)
    field = np.tensordot(field, mats[1], axes=(1, 1))  # (X, c, Y)
    field = np.tensordot(field, mats[2], axes=(1, 1))  # (X, Y, Z)
    return field


def _subject_volumes(
    tpl: _Templates, rng: np.random.Generator, max_intensity: float
) -> tuple[np.ndarray, np.ndarray]:
    """Warp the templates into one subject: ``(image int16, label int16)``, both SHAPE."""
    spacing = np.array(SPACING)
    # Global affine in mm, mapping template (relative to its brain centre) to the grid.
    scale = rng.uniform(*_SCALE_RANGE)
    rot = _rotation(rng.uniform(-_MAX_ROTATION_DEG, _MAX_ROTATION_DEG, 3))
    shift = rng.uniform(-_MAX_SHIFT_MM, _MAX_SHIFT_MM, 3)
    forward = scale * rot
    inverse = np.linalg.inv(forward)
    deform_control = rng.normal(0.0, _DEFORM_SD_MM, (3, *_DEFORM_CONTROL))
    bias_control = rng.normal(0.0, _BIAS_SD, _BIAS_CONTROL)
    noise_sd = rng.uniform(*_NOISE_RANGE)

    # Work only in the box the warped brain can reach (about half the grid).
    reach = tpl.corners @ forward.T + shift
    margin = np.abs(deform_control).max() * 1.2 + 2 * spacing.max()
    lo = np.floor(_BRAIN_CENTRE_VOXEL + (reach.min(0) - margin) / spacing).astype(int)
    hi = np.ceil(_BRAIN_CENTRE_VOXEL + (reach.max(0) + margin) / spacing).astype(int) + 1
    box = tuple(
        slice(max(0, int(a)), min(n, int(b))) for a, b, n in zip(lo, hi, SHAPE, strict=True)
    )

    # Grid voxel -> mm relative to the brain centre, displaced, then into template voxels.
    points = [
        ((np.arange(s.start, s.stop) - c) * d).astype(np.float32)
        for s, c, d in zip(box, _BRAIN_CENTRE_VOXEL, spacing, strict=True)
    ]
    shape = tuple(s.stop - s.start for s in box)
    moved = [
        np.reshape(points[a], [-1 if b == a else 1 for b in range(3)])
        + _smooth_field(deform_control[a], box)
        - np.float32(shift[a])
        for a in range(3)
    ]
    coords = np.empty((3, *shape), dtype=np.float32)
    for a in range(3):
        coords[a] = tpl.centre[a]
        for b in range(3):
            coords[a] += np.float32(inverse[a, b]) * moved[b]
    del moved

    # The mask everywhere in the box; the other maps only inside the brain (a quarter).
    brain = ndi.map_coordinates(
        tpl.brain, coords, order=1, mode="constant", cval=0.0, output=np.float32, prefilter=False
    )
    inside = brain >= 0.5
    points = coords[:, inside]
    del coords
    gm, wm, t1 = (
        ndi.map_coordinates(
            volume, points, order=1, mode="constant", cval=0.0, output=np.float32, prefilter=False
        )
        for volume in (tpl.gm, tpl.wm, tpl.t1)
    )
    csf = np.clip(brain[inside] - gm - wm, 0.0, None)
    tissue = np.argmax(np.stack([csf, gm, wm]), axis=0).astype(np.int16) + 1

    bias = np.exp(_smooth_field(bias_control, box)[inside])
    noise = rng.standard_normal(t1.shape, dtype=np.float32) * np.float32(noise_sd)
    intensity = np.rint((t1 * bias + noise) * np.float32(max_intensity))
    intensity = np.clip(intensity, 1, np.iinfo(np.int16).max)  # brain voxels stay > 0

    image = np.zeros(SHAPE, dtype=np.int16)
    label = np.zeros(SHAPE, dtype=np.int16)
    image[box][inside] = intensity.astype(np.int16)
    label[box][inside] = tissue
    return image, label


def _save(array: np.ndarray, path: Path) -> None:
    """Write a 4-D singleton int16 volume with IBSR18's header conventions."""
    img = nib.Nifti1Image(array[..., np.newaxis], None)
    img.set_sform(AFFINE, code=1)
    img.set_qform(None)  # qform_code 0 and an empty quaternion, as in IBSR18
    header = img.header
    header.set_data_dtype(np.int16)
    header.set_zooms((*SPACING, 0.0))
    header["cal_min"] = 0
    header["cal_max"] = float(array.max())
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, str(path))


def _prepare(out: Path) -> None:
    """Check ``out`` can hold a demo set and remove an old one (marker first).

    Raises:
        IBSRError: If ``out`` is a file or holds subject folders other than ``DEMO_XX``
            (real data must never be mixed with, or deleted for, demo data).

    """
    if out.exists() and not out.is_dir():
        raise IBSRError("demo data folder is a file", out)
    course = out / COURSE_DIR
    folders = [out, *(p for p in course.glob("*") if p.is_dir())] if out.is_dir() else []
    for folder in folders:
        foreign = sorted(
            p.name
            for p in folder.iterdir()
            if p.is_dir() and SUBJECT_ID.match(p.name) and not p.name.startswith("DEMO_")
        )
        if foreign:
            raise IBSRError(
                f"holds non-demo subjects {foreign[:3]}; refusing to write demo data here", folder
            )
    (out / DEMO_MARKER).unlink(missing_ok=True)
    for old in course.glob("*/DEMO_*"):
        if old.is_dir():
            shutil.rmtree(old)
        else:
            old.unlink()


def _marker_text(n_subjects: int, seed: int, sizes: tuple[int, int, int], bright: str) -> str:
    import nilearn

    return (
        f"{DEMO_DESCRIPTION}.\n\n"
        f"Made by ibsr_helpers.demo.make_demo_dataset(n_subjects={n_subjects}, seed={seed}) "
        f"with nilearn {nilearn.__version__}.\n"
        f"Splits: {sizes[0]} train, {sizes[1]} val, {sizes[2]} test.\n\n"
        "Each subject is the MNI152 2009 (nonlinear symmetric) T1 template and its GM/WM\n"
        "probability maps, warped by a random affine and a smooth random deformation,\n"
        "resampled to IBSR18's geometry (256x128x256, 0.9375x1.5x0.9375 mm, RAS), with a\n"
        "bias field, Gaussian noise and its own intensity scale "
        f"({bright} is much brighter, like IBSR_11).\n"
        "Labels: CSF = brain - GM - WM, label = argmax(CSF, GM, WM) in the brain mask\n"
        "(0 background, 1 CSF, 2 GM, 3 WM). Skull-stripped: background is exactly 0.\n\n"
        "This is NOT IBSR18 and results on it say nothing about IBSR18. IBSR18 must be\n"
        "obtained separately (see data/README.md).\n"
    )


def make_demo_dataset(
    out: str | Path, n_subjects: int = 6, seed: int = 0, progress: bool = True
) -> Path:
    """Write an IBSR-like demo data set in the course layout.

    Files: ``out/TrainingValidationTestSets/{Training_Set,Validation_Set,Test_Set}/
    DEMO_XX/DEMO_XX.nii.gz`` plus ``DEMO_XX_seg.nii.gz`` for train and val subjects,
    with ids ``DEMO_01``, ``DEMO_02``, ... in split order (see :func:`split_sizes`).
    The first validation subject is about 5x brighter than the others, like IBSR_11.
    ``out/DEMO_DATA.txt`` (:data:`ibsr_helpers.layout.DEMO_MARKER`) is written last, so a
    folder without it is an interrupted run. Old ``DEMO_XX`` folders in ``out`` are
    replaced. The same ``seed`` gives identical volumes; subject ``k`` does not depend
    on ``n_subjects`` apart from its split and the bright subject's scale.

    Args:
        out: Folder to write (created if needed).
        n_subjects: Number of subjects, at least 3.
        seed: Random seed.
        progress: Show a tqdm progress bar.

    Returns:
        ``out`` as a Path.

    Raises:
        IBSRError: If ``n_subjects < 3``, ``out`` is a file, or ``out`` already holds
            non-demo subjects.

    """
    sizes = split_sizes(n_subjects)
    out = Path(out).expanduser()
    _prepare(out)
    splits = [s for s, k in zip(("train", "val", "test"), sizes, strict=True) for _ in range(k)]
    bright = sizes[0]  # index of the first validation subject
    tpl = _load_templates()
    course = out / COURSE_DIR
    for k in tqdm(range(len(splits)), desc="demo data", unit="subject", disable=not progress):
        sid = f"DEMO_{k + 1:02d}"
        rng = np.random.default_rng([int(seed), k])
        top = _BRIGHT_MAX_RANGE if k == bright else _MAX_RANGE
        max_intensity = float(rng.uniform(*top))
        image, label = _subject_volumes(tpl, rng, max_intensity)
        folder = course / SPLIT_DIRS[splits[k]] / sid
        _save(image, folder / f"{sid}.nii.gz")
        if splits[k] != "test":
            _save(label, folder / f"{sid}_seg.nii.gz")
    text = _marker_text(n_subjects, seed, sizes, f"DEMO_{bright + 1:02d}")
    (out / DEMO_MARKER).write_text(text, encoding="utf-8")
    return out
