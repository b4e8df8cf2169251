"""The one preprocessing every scan goes through, and its inverse for predictions.

Training, validation, ``ibsr-seg predict``, the notebooks and the benchmarks all call
:func:`prepare`, which takes a raw :class:`~ibsr_helpers.data.Volume` through:

1. **reorient** to the run's axis order (RAS: axis 0 left→right, 1 posterior→anterior,
   2 inferior→superior), so a 2D model always slices along the same anatomical axis;
2. **resample** to the run's voxel spacing, only when the scan's spacing differs from it
   by more than ``spacing_tolerance`` (relative, on any axis): IBSR18's own in-plane
   spacings (0.84, 0.94 and 1.0 mm) stay as they are (see ``benchmarks/bench_spacing.py``
   for the measurement behind that default), a 1 mm isotropic scan is resampled;
3. **normalise** the intensities over the brain (z-score or min-max after percentile
   clipping; the background stays 0);
4. **crop/pad to the brain box**: the brain's bounding box, padded symmetrically to at
   least ``roi`` and to a multiple of the network's size divisor, so no brain voxel is
   ever cut off.

Steps 1, 2 and 4 are MONAI invertible transforms (``Orientationd``, ``Spacingd``,
``CropForegroundd``, ``SpatialPadd``, ``DivisiblePadd``); :meth:`Prepared.invert` runs
their inverses, so a prediction made on the prepared volume lands on the scan's own grid
(its voxel order, spacing and field of view) and is saved with the scan's own affine.
The normalisation is computed over the brain voxels only, which the crop keeps, so it is
applied after the crop, on the smaller array, with the same result.

The brain is ``image > 0`` in the raw scan (IBSR18 is skull-stripped), defined once here
(:func:`brain_mask`) and carried through every step as its own mask, so a normalised
voxel that happens to be 0 is still brain. :func:`prepare` only ever starts from a raw
volume and records what it applied (:attr:`Prepared.applied`), so nothing can be
normalised twice.

Example:
    >>> spec = plan.specs(config).preprocessing           # what the run was trained with
    >>> prepared = prepare(volume, spec)                  # cached on the volume
    >>> probs = model_probabilities(prepared.image)       # (4, *prepared.image.shape)
    >>> on_scan_grid = prepared.invert(probs)             # (4, *volume.image.shape)
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import nibabel as nib
import numpy as np
import torch

from ibsr_helpers.errors import IBSRError

if TYPE_CHECKING:
    from ibsr_helpers.data import Volume

__all__ = [
    "NORMALIZATIONS",
    "PLANE_AXIS",
    "Box",
    "Preprocessing",
    "Prepared",
    "brain_mask",
    "zscore",
    "minmax",
    "normalize",
    "prepare",
    "reorient",
    "median_spacing",
]

NORMALIZATIONS: tuple[str, ...] = ("zscore", "minmax")
#: Plane name -> the axis slices are taken along, in a RAS-ordered (prepared) volume.
PLANE_AXIS: dict[str, int] = {"sagittal": 0, "coronal": 1, "axial": 2}
#: Anatomical labels of the positive end of each world axis (nibabel's convention).
_AXIS_LABELS = (("L", "R"), ("P", "A"), ("I", "S"))
_KEYS = ("image", "label", "brain")


# --------------------------------------------------------------------------- intensities


#: A voxel is brain above this fraction of the positive voxels' 99.5th percentile.
BRAIN_THRESHOLD = 1e-3


def brain_mask(image: np.ndarray) -> np.ndarray:
    """The brain of a skull-stripped scan: voxels above 0.1 % of its bright intensities.

    IBSR18's background is exactly 0 and its dimmest brain voxels are far above the
    threshold (the mask equals ``image > 0`` on all 18 scans). A scan resampled with a
    spline (nibabel's and most tools' default) carries near-zero ringing over its whole
    background; taken as brain, it would spread normalisation and the brain box over the
    field of view (measured: a 1 mm copy of IBSR_11 had 3.9 M "brain" voxels instead of
    1.5 M, and a trained 2D U-Net's GM Dice on it fell to 0.13).
    """
    image = np.asarray(image)
    positive = image[image > 0]
    if not positive.size:
        return np.zeros(image.shape, dtype=bool)
    return image > BRAIN_THRESHOLD * float(np.percentile(positive, 99.5))


def _clipped_brain(
    image: np.ndarray, brain: np.ndarray | None, percentiles: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray]:
    """The brain mask and its intensities clipped to the percentiles (float32)."""
    brain = brain_mask(image) if brain is None else np.asarray(brain, dtype=bool)
    values = image[brain].astype(np.float32)
    if values.size:
        values = np.clip(values, *np.percentile(values, percentiles))
    return brain, values


def _on_brain(shape: tuple[int, ...], brain: np.ndarray, values: np.ndarray) -> np.ndarray:
    out = np.zeros(shape, np.float32)
    out[brain] = values
    return out


def zscore(
    image: np.ndarray,
    brain: np.ndarray | None = None,
    percentiles: tuple[float, float] = (0.5, 99.5),
) -> np.ndarray:
    """Z-score over the brain after percentile clipping; the background becomes 0.

    Args:
        image: ``(X, Y, Z)`` raw intensities.
        brain: Boolean brain mask (default: :func:`brain_mask` of ``image``).
        percentiles: Clip brain intensities to these percentiles first.

    Returns:
        float32 array: brain voxels with mean 0 and sd 1 (after clipping), background 0.
    """
    brain, values = _clipped_brain(image, brain, percentiles)
    if values.size:
        values = (values - values.mean()) / max(float(values.std()), 1e-6)
    return _on_brain(image.shape, brain, values)


def minmax(
    image: np.ndarray,
    brain: np.ndarray | None = None,
    percentiles: tuple[float, float] = (0.5, 99.5),
) -> np.ndarray:
    """Scale the brain to [0, 1] after percentile clipping; the background becomes 0.

    Args:
        image: ``(X, Y, Z)`` raw intensities.
        brain: Boolean brain mask (default: :func:`brain_mask` of ``image``).
        percentiles: Clip brain intensities to these percentiles first.

    Returns:
        float32 array in [0, 1].
    """
    brain, values = _clipped_brain(image, brain, percentiles)
    if values.size:
        lo, hi = float(values.min()), float(values.max())
        values = (values - lo) / max(hi - lo, 1e-6)
    return _on_brain(image.shape, brain, values)


def normalize(image: np.ndarray, method: str, brain: np.ndarray | None = None) -> np.ndarray:
    """Apply the named normalisation (``"zscore"`` or ``"minmax"``) to raw intensities.

    Raises:
        IBSRError: If ``method`` is unknown.
    """
    if method == "zscore":
        return zscore(image, brain)
    if method == "minmax":
        return minmax(image, brain)
    raise IBSRError(f"unknown normalisation {method!r}; use one of {NORMALIZATIONS}")


# --------------------------------------------------------------------------- the recipe


@dataclass(frozen=True)
class Preprocessing:
    """What :func:`prepare` does to a scan: the run's preprocessing, recorded in its config.

    Attributes:
        orientation: Axis codes of the prepared volume (``"RAS"``).
        spacing: Voxel size (mm) of the prepared volume, along its (reoriented) axes; None
            keeps every scan's own spacing.
        spacing_tolerance: A scan is resampled only when its spacing differs from
            ``spacing`` by more than this fraction on some axis.
        normalize: ``"zscore"`` or ``"minmax"``.
        roi: Smallest brain box (voxels); it grows to hold a larger brain.
        divisor: Box sides are padded to a multiple of this (the network's size divisor).
    """

    orientation: str = "RAS"
    spacing: tuple[float, float, float] | None = None
    spacing_tolerance: float = 0.2
    normalize: str = "zscore"
    roi: tuple[int, int, int] = (192, 128, 192)
    divisor: int = 1

    def __post_init__(self) -> None:
        if self.normalize not in NORMALIZATIONS:
            raise IBSRError(
                f"unknown normalisation {self.normalize!r}; use one of {NORMALIZATIONS}"
            )
        if self.spacing is not None and (len(self.spacing) != 3 or min(self.spacing) <= 0):
            raise IBSRError(f"data.spacing must be three positive numbers, got {self.spacing}")

    def needs_resampling(self, spacing: Sequence[float]) -> bool:
        """Whether a scan of this (reoriented) ``spacing`` is resampled."""
        if self.spacing is None:
            return False
        ratio = np.asarray(spacing, float) / np.asarray(self.spacing, float)
        return bool(np.any(np.abs(ratio - 1.0) > self.spacing_tolerance))


@dataclass(frozen=True)
class Box:
    """Where the brain box lies in the reoriented (and resampled) scan, in voxels.

    ``start`` may be negative and ``start + size`` may pass the scan's edge: that part of
    the box is zero padding. :func:`prepare` reads ``start`` from the crop and pads MONAI
    recorded (the prepared image's ``applied_operations``).
    """

    start: tuple[int, int, int]
    size: tuple[int, int, int]

    @property
    def stop(self) -> tuple[int, int, int]:
        """One past the last voxel along each axis."""
        return tuple(s + n for s, n in zip(self.start, self.size, strict=True))  # type: ignore[return-value]

    def crop(self, array: np.ndarray) -> np.ndarray:
        """Cut the box out of the last three axes of ``array`` (zeros where outside)."""
        out = np.zeros(array.shape[:-3] + tuple(self.size), dtype=array.dtype)
        src, dst = [], []
        for s, n, dim in zip(self.start, self.size, array.shape[-3:], strict=True):
            lo, hi = max(s, 0), min(s + n, dim)
            src.append(slice(lo, hi))
            dst.append(slice(lo - s, hi - s))
        out[(..., *dst)] = array[(..., *src)]
        return out


@dataclass
class Prepared:
    """A scan as a model sees it, with what was done to it and the way back.

    Attributes:
        id: Subject id.
        image: ``(X, Y, Z)`` float32: reoriented, resampled if needed, normalised, in the
            brain box.
        label: ``(X, Y, Z)`` uint8 labels in the same box, or None.
        brain: ``(X, Y, Z)`` bool brain mask in the same box.
        spacing: Voxel size (mm) of ``image``.
        box: Where ``image`` lies in the reoriented (and resampled) scan.
        applied: The steps applied, in words, in order.
        spec: The :class:`Preprocessing` that made it.
        source_shape: Spatial shape of the scan it came from.
    """

    id: str
    image: np.ndarray
    label: np.ndarray | None
    brain: np.ndarray
    spacing: tuple[float, float, float]
    box: Box
    applied: tuple[str, ...]
    spec: Preprocessing
    source_shape: tuple[int, int, int]
    _transform: Any = field(repr=False, compare=False, default=None)
    _traces: dict[str, list] = field(repr=False, compare=False, default_factory=dict)
    _affine: Any = field(repr=False, compare=False, default=None)

    def invert(self, data: torch.Tensor | np.ndarray, nearest: bool = False) -> torch.Tensor:
        """Take channel-first data on the prepared grid back to the scan's own grid.

        Args:
            data: ``(C, *image.shape)``, e.g. class probabilities or a label map ``(1, …)``.
            nearest: Nearest-neighbour interpolation where the scan was resampled (for
                labels); the default, linear, suits probabilities.

        Returns:
            ``(C, *source_shape)`` float32 tensor on the CPU; zero outside the brain box.
        """
        from monai.data import MetaTensor

        tensor = torch.as_tensor(np.asarray(data) if not torch.is_tensor(data) else data)
        if tuple(tensor.shape[1:]) != tuple(self.image.shape):
            raise IBSRError(
                f"cannot invert data of shape {tuple(tensor.shape)}: expected (C, "
                f"{', '.join(map(str, self.image.shape))}) for {self.id}"
            )
        key = "brain" if nearest else "image"
        meta = MetaTensor(tensor.detach().cpu().float(), affine=self._affine)
        meta.applied_operations = copy.deepcopy(self._traces[key])
        out = self._transform.inverse({key: meta})[key]
        return out.as_tensor() if hasattr(out, "as_tensor") else torch.as_tensor(out)


def median_spacing(volumes: Sequence[Volume], orientation: str = "RAS") -> tuple[float, ...]:
    """The median voxel size of scans, along the axes of ``orientation``.

    This is what a run records as its spacing when its config says ``spacing: auto``.
    """
    spacings = np.array([_reoriented_spacing(v.affine, orientation) for v in volumes])
    return tuple(round(float(s), 6) for s in np.median(spacings, axis=0))


def _reoriented_spacing(affine: np.ndarray, orientation: str) -> tuple[float, float, float]:
    current = nib.orientations.io_orientation(affine)
    target = nib.orientations.axcodes2ornt(orientation, _AXIS_LABELS)
    transform = nib.orientations.ornt_transform(current, target)
    sizes = nib.affines.voxel_sizes(affine)
    out = [0.0, 0.0, 0.0]
    for axis, (new_axis, _) in enumerate(transform):
        out[int(new_axis)] = float(sizes[axis])
    return tuple(out)  # type: ignore[return-value]


@functools.lru_cache(maxsize=32)
def _transform(spec: Preprocessing, resample: bool):
    """The MONAI spatial steps for ``spec`` (one object per recipe: inversion needs it)."""
    from monai import transforms as mt

    keys = list(_KEYS)
    steps: list = [
        mt.Orientationd(
            keys, axcodes=spec.orientation, labels=_AXIS_LABELS, allow_missing_keys=True
        )
    ]
    if resample:
        steps.append(
            mt.Spacingd(
                keys,
                pixdim=spec.spacing,
                mode=("bilinear", "nearest", "nearest"),
                dtype=torch.float32,
                allow_missing_keys=True,
            )
        )
    steps += [
        mt.CropForegroundd(
            keys,
            source_key="brain",
            select_fn=lambda x: x > 0,
            allow_smaller=False,
            start_coord_key=None,
            end_coord_key=None,
            allow_missing_keys=True,
        ),
        mt.SpatialPadd(keys, spatial_size=spec.roi, method="symmetric", allow_missing_keys=True),
        mt.DivisiblePadd(keys, k=spec.divisor, method="symmetric", allow_missing_keys=True),
    ]
    return mt.Compose(steps)


def _box_start(trace: Sequence[Mapping[str, Any]]) -> tuple[int, int, int]:
    """Where a prepared volume's first voxel lies in the reoriented (resampled) scan.

    Read from the MetaTensor's ``applied_operations``: every crop MONAI applied records
    the voxels it cut off (``extra_info["cropped"]``: before, after, axis by axis), every
    pad the voxels it added (``extra_info["padded"]``: ``(before, after)`` per axis, the
    channel first); ``CropForeground`` keeps its own pad in ``extra_info["pad_info"]``.
    Reorientation and resampling record neither: the box is on their output grid.

    Args:
        trace: ``applied_operations`` of the prepared image (or of its brain mask).

    Returns:
        The start of the box along each spatial axis; negative where it is padding.
    """
    start = np.zeros(3, dtype=int)
    for operation in trace:
        start += _start_shift(operation)
    return tuple(int(s) for s in start)  # type: ignore[return-value]


def _start_shift(operation: Mapping[str, Any]) -> np.ndarray:
    """How far one traced crop or pad moved the first voxel: + cropped, - padded before it."""
    from monai.utils import TraceKeys

    info = operation.get(TraceKeys.EXTRA_INFO) or {}
    shift = np.zeros(3, dtype=int)
    if "cropped" in info:
        shift += np.asarray(info["cropped"], dtype=int).reshape(3, 2)[:, 0]
    if "padded" in info:
        shift -= np.asarray(info["padded"], dtype=int)[1:, 0]
    if "pad_info" in info:
        shift += _start_shift(info["pad_info"])
    return shift


#: How many preprocessings each scan read in a process keeps (the newest), for later
#: loads of it (:meth:`ibsr_helpers.data.Volume.as_read`).
SHARED_PREPARATIONS = 2


def prepare(volume: Volume, spec: Preprocessing) -> Prepared:
    """Preprocess a raw volume as ``spec`` says (cached on the volume, per ``spec``).

    A volume from :func:`~ibsr_helpers.data.load_subject` whose arrays are unchanged also
    shares the preparation with every other load of the same files in this process (the
    last :data:`SHARED_PREPARATIONS` specs of each).

    Args:
        volume: A loaded subject, as stored (:func:`ibsr_helpers.data.load_subject`).
        spec: The run's :class:`Preprocessing`.

    Returns:
        The :class:`Prepared` volume; its :meth:`~Prepared.invert` maps predictions back.

    Raises:
        IBSRError: If the scan has no brain voxel (nothing above 0), naming the file.
    """
    if spec in volume.prepared:
        return volume.prepared[spec]
    origin = volume.origin
    shared = origin is not None and volume.as_read()
    if shared and spec in origin.prepared:
        volume.prepared[spec] = origin.prepared[spec]
        return volume.prepared[spec]
    prepared = _prepare(volume, spec)
    volume.prepared[spec] = prepared
    if shared:
        origin.prepared[spec] = prepared
        while len(origin.prepared) > SHARED_PREPARATIONS:
            origin.prepared.pop(next(iter(origin.prepared)))
    return prepared


def _own(array: np.ndarray) -> np.ndarray:
    """A contiguous array torch may share: a copy of a read-only one."""
    return np.array(array) if not array.flags.writeable else np.ascontiguousarray(array)


def _prepare(volume: Volume, spec: Preprocessing) -> Prepared:
    from monai.data import MetaTensor

    brain = brain_mask(volume.image)
    if not brain.any():
        raise IBSRError(
            "no brain voxels: nothing in the image is above 0 (the course expects "
            "skull-stripped T1 scans with a background of exactly 0)",
            volume.subject.image,
        )
    affine = torch.as_tensor(np.asarray(volume.affine, dtype=np.float64))
    data: dict[str, Any] = {
        "image": MetaTensor(_own(volume.image)[None], affine=affine),
        "brain": MetaTensor(brain[None].astype(np.uint8), affine=affine),
    }
    if volume.label is not None:
        data["label"] = MetaTensor(_own(volume.label)[None], affine=affine)
    source_spacing = _reoriented_spacing(volume.affine, spec.orientation)
    resample = spec.needs_resampling(source_spacing)
    transform = _transform(spec, resample)
    out = transform(data)

    brain_box = out["brain"][0].numpy() > 0
    image = normalize(out["image"][0].numpy(), spec.normalize, brain_box)
    label = None if volume.label is None else out["label"][0].numpy().astype(np.uint8)
    spacing = tuple(float(s) for s in spec.spacing) if resample else source_spacing
    box = Box(_box_start(out["image"].applied_operations), image.shape)  # type: ignore[arg-type]
    axcodes = "".join(nib.aff2axcodes(volume.affine, _AXIS_LABELS))
    applied = [f"reoriented {axcodes} -> {spec.orientation}"]
    if resample:
        applied.append(
            "resampled {} -> {} mm".format(
                "x".join(f"{s:g}" for s in source_spacing), "x".join(f"{s:g}" for s in spacing)
            )
        )
    applied += [
        f"normalised ({spec.normalize} over {int(brain_box.sum())} brain voxels)",
        f"cropped/padded to the brain box {'x'.join(map(str, image.shape))} at {box.start}",
    ]
    return Prepared(
        id=volume.id,
        image=np.ascontiguousarray(image),
        label=label,
        brain=brain_box,
        spacing=spacing,  # type: ignore[arg-type]
        box=box,
        applied=tuple(applied),
        spec=spec,
        source_shape=tuple(volume.image.shape),  # type: ignore[arg-type]
        _transform=transform,
        _traces={k: out[k].applied_operations for k in ("image", "brain")},
        _affine=out["image"].affine.clone(),
    )


def reorient(
    volume: Volume, orientation: str = "RAS"
) -> tuple[np.ndarray, np.ndarray | None, tuple[float, float, float]]:
    """A volume's raw image and label in ``orientation`` axis order, for display.

    The same MONAI transform as step 1 of :func:`prepare`, nothing else (no resampling,
    normalisation or crop).

    Returns:
        ``(image, label or None, spacing)`` along the new axes.
    """
    from monai.data import MetaTensor
    from monai.transforms import Orientation

    turn = Orientation(axcodes=orientation, labels=_AXIS_LABELS)
    affine = torch.as_tensor(np.asarray(volume.affine, dtype=np.float64))

    def apply(array: np.ndarray) -> np.ndarray:
        tensor = MetaTensor(_own(array)[None], affine=affine)
        return np.ascontiguousarray(turn(tensor)[0].numpy())

    label = None if volume.label is None else apply(volume.label)
    return apply(volume.image), label, _reoriented_spacing(volume.affine, orientation)
