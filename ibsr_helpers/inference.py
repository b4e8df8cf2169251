"""Prediction for every model kind, on the scan's own grid, alone or as an ensemble.

:func:`predict_probabilities` takes a raw :class:`~ibsr_helpers.data.Volume` through the
run's own preprocessing (:func:`ibsr_helpers.preprocessing.prepare`: reorient, resample if
needed, normalise, brain box), predicts there and inverts every step, so the ``(4, X, Y,
Z)`` class probabilities lie on the scan's grid, whatever its orientation, voxel size or
field of view. The model itself sees:

* ``slices`` runs: every slice along their plane (2.5D context included), restacked;
* ``volume`` runs: one forward pass over the brain box;
* ``patches`` runs: MONAI's sliding-window inference with Gaussian-weighted aggregation
  (``inference.overlap``, ``inference.sw_batch_size``).

Flip test-time augmentation averages the prediction of the volume and of its left-right
mirror image (axis 0 of the RAS-ordered box). Ensembles average the probabilities of
several runs on the scan's grid (:func:`ensemble_average`, the one place that averages):
2D and 3D runs, each with its own preprocessing, mix freely, and three 2D runs on three
planes make the classic multi-plane fusion. Several singles and ensembles scored together
share each run's pass over a volume (:func:`predict_shared`, used by
:func:`predict_folders` and :func:`ibsr_helpers.evaluation.evaluate_runs`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ibsr_helpers.data import Volume, load_subject
from ibsr_helpers.environment import choose_precision
from ibsr_helpers.errors import IBSRError
from ibsr_helpers.io import save_segmentation
from ibsr_helpers.models import build_network
from ibsr_helpers.plan import Specs, specs
from ibsr_helpers.preprocessing import PLANE_AXIS, Prepared, Preprocessing, prepare
from ibsr_helpers.scans import check_outputs, check_voxels, find_scans, skipped_note

__all__ = [
    "Run",
    "load_run",
    "predict_probabilities",
    "on_scan_grid",
    "most_probable",
    "predict_volume",
    "predict_folder",
    "predict_folders",
    "predict_shared",
    "tta_flips",
    "ensemble_average",
    "sliding_window",
    "window_slices",
]

#: TTA mirrors along these axes of the RAS-ordered box (0 = left-right).
TTA_AXES: tuple[tuple[int, ...], ...] = ((), (0,))


@dataclass
class Run:
    """A trained model ready for inference.

    Attributes:
        model: The network, in eval mode, on its device.
        config: The plan it was trained with (its ``config.json``); read through
            :attr:`specs` (a change to it, e.g. ``inference.overlap``, applies at once).
        path: The run folder.
    """

    model: torch.nn.Module
    config: dict[str, Any]
    path: Path | None = None

    @property
    def device(self) -> torch.device:
        """Where the model's weights live (CPU for a model without parameters)."""
        param = next(self.model.parameters(), None)
        return param.device if param is not None else torch.device("cpu")

    @property
    def specs(self) -> Specs:
        """The run's plan, one spec per concept (:func:`ibsr_helpers.plan.specs`)."""
        return specs(self.config)

    @property
    def preprocessing(self) -> Preprocessing:
        """How scans are prepared for this run (as in training)."""
        return self.specs.preprocessing

    @property
    def name(self) -> str:
        """The run folder's name, or the config's ``name``."""
        return self.path.name if self.path is not None else str(self.config.get("name", "run"))


def load_run(run_dir: str | Path, device: str | torch.device = "cpu", which: str = "best") -> Run:
    """Load a trained run folder (``config.json`` + ``best.pt`` or ``last.pt``).

    Raises:
        IBSRError: If the folder lacks the config or the checkpoint.
    """
    from ibsr_helpers.config import DEFAULTS, merge

    run_dir = Path(run_dir)
    cfg_path, ckpt = run_dir / "config.json", run_dir / f"{which}.pt"
    if not cfg_path.is_file():
        raise IBSRError("not a training run folder (no config.json)", run_dir)
    if not ckpt.is_file():
        raise IBSRError(f"no {which}.pt checkpoint in the run folder", run_dir)
    config = merge(DEFAULTS, json.loads(cfg_path.read_text()))  # older runs lack new keys
    try:
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise IBSRError(f"cannot read the checkpoint ({exc})", ckpt) from None
    model = build_network(specs(config).model, device)
    model.load_state_dict(state["model"] if "model" in state else state)
    return Run(model.eval(), config, run_dir)


def sliding_window(
    model: torch.nn.Module,
    image: torch.Tensor,
    patch_size: Sequence[int],
    overlap: float = 0.5,
    sw_batch_size: int = 4,
) -> torch.Tensor:
    """Gaussian-weighted sliding-window prediction of ``(B, C, X, Y, Z)`` logits.

    Thin wrapper around ``monai.inferers.sliding_window_inference`` (mode ``gaussian``),
    padding with zeros where the image is smaller than a patch.
    """
    from monai.inferers import sliding_window_inference

    return sliding_window_inference(
        image,
        roi_size=tuple(int(p) for p in patch_size),
        sw_batch_size=sw_batch_size,
        predictor=model,
        overlap=overlap,
        mode="gaussian",
        padding_mode="constant",
    )


def window_slices(
    shape: Sequence[int], patch_size: Sequence[int], overlap: float = 0.5
) -> list[tuple[slice, ...]]:
    """The windows MONAI's sliding-window inference visits on a volume of ``shape``.

    Read from MONAI itself (its predictor is handed each window's position), so a figure
    or a count never re-derives MONAI's rule. A volume smaller than the patch is padded.

    Returns:
        One ``(slice_x, slice_y, slice_z)`` per window, in MONAI's order.
    """
    if not 0 <= overlap < 1:
        raise IBSRError(f"overlap must be in [0, 1), got {overlap}")
    seen: list[tuple[slice, ...]] = []

    def record(window: torch.Tensor, where: Sequence) -> torch.Tensor:
        seen.extend(tuple(s[2:]) for s in where)
        return torch.zeros_like(window)

    padded = [max(int(n), int(p)) for n, p in zip(shape, patch_size, strict=True)]
    with torch.no_grad():
        from monai.inferers import sliding_window_inference

        sliding_window_inference(
            torch.zeros((1, 1, *padded)),
            roi_size=tuple(int(p) for p in patch_size),
            sw_batch_size=1,
            predictor=record,
            overlap=overlap,
            with_coord=True,
        )
    return seen


def _check_fixed_size(run: Run, shape: Sequence[int]) -> None:
    """A network that takes one input size only (UNETR): say so when a brain box is larger.

    Checked in volume mode only (``data.mode: volume``), where the network sees the whole
    brain box.

    Raises:
        IBSRError: If the run feeds whole volumes to such a network and ``shape`` differs.
    """
    plan = run.specs
    expected = plan.model.fixed_size
    if expected is None or plan.sampling.mode != "volume":
        return
    if tuple(shape) != expected:
        raise IBSRError(
            f"this brain needs a box of {tuple(shape)} voxels, but the run's UNETR takes "
            f"exactly {expected} (its img_size); a brain that large cannot be segmented "
            "by this model"
        )


@torch.no_grad()
def _forward(run: Run, image: np.ndarray) -> torch.Tensor:
    """Softmax probabilities ``(4, *image.shape)`` for a prepared volume (no TTA)."""
    plan, device = run.specs, run.device
    d, inf = plan.sampling, plan.prediction
    precision = choose_precision(device, inf.precision)
    with precision.autocast():
        if d.mode == "slices":
            from ibsr_helpers.datasets import slice_stack

            stack = torch.from_numpy(slice_stack(image, d.plane, d.context))
            bs = inf.batch_size
            layout = torch.channels_last if plan.model.channels_last_on(device) else None
            outs = []
            for i in range(0, len(stack), bs):
                batch = stack[i : i + bs].to(device)
                if layout is not None:
                    batch = batch.contiguous(memory_format=layout)
                outs.append(torch.softmax(run.model(batch).float(), 1).cpu())
            probs = torch.cat(outs)  # (N, 4, H, W)
            return torch.movedim(probs, 0, PLANE_AXIS[d.plane] + 1)
        _check_fixed_size(run, image.shape)
        x = torch.from_numpy(np.ascontiguousarray(image))[None, None].to(device)
        if d.mode == "volume":
            logits = run.model(x)
        else:
            logits = sliding_window(run.model, x, d.patch_size, inf.overlap, inf.sw_batch_size)
        return torch.softmax(logits.float(), 1)[0].cpu()


#: One network pass of a run over a prepared volume, keyed by the axes it was mirrored
#: along (``()``: none): its probabilities, flipped back, and the seconds it took.
Passes = dict[tuple[int, ...], tuple[torch.Tensor, float]]


def tta_flips(run: Run, tta: bool) -> tuple[tuple[int, ...], ...]:
    """The mirrorings a prediction averages: none, or each of :data:`TTA_AXES` with TTA.

    A run trained without mirroring (a 2D sagittal run) gets none: its TTA is a no-op.
    """
    return TTA_AXES if tta and run.specs.input.augment.mirror else ((),)


def prepared_probabilities(
    run: Run, prepared: Prepared, tta: bool = False, passes: Passes | None = None
) -> torch.Tensor:
    """Class probabilities ``(4, *prepared.image.shape)`` on the prepared grid.

    Args:
        run: A loaded run.
        prepared: The volume prepared with the run's preprocessing.
        tta: Average over the mirrorings of :func:`tta_flips`.
        passes: Network passes of this run over this volume already made, reused and
            added to (the TTA prediction's unmirrored pass is the plain prediction's).

    Raises:
        IBSRError: If ``prepared`` was made with another preprocessing than the run's.
    """
    if prepared.spec != run.preprocessing:
        raise IBSRError(
            f"{prepared.id} was prepared with {prepared.spec}, but run {run.name} needs "
            f"{run.preprocessing}; predict from the raw volume instead"
        )
    passes = {} if passes is None else passes
    flips = tta_flips(run, tta)
    for axes in flips:
        if axes not in passes:
            start = time.perf_counter()
            x = np.flip(prepared.image, axes) if axes else prepared.image
            p = _forward(run, np.ascontiguousarray(x))
            if axes:
                p = torch.flip(p, [a + 1 for a in axes])
            passes[axes] = (p, time.perf_counter() - start)
    total = passes[flips[0]][0]
    for axes in flips[1:]:
        total = total + passes[axes][0]
    return total / len(flips)


def predict_probabilities(
    run: Run, volume: Volume, tta: bool = False, passes: Passes | None = None
) -> torch.Tensor:
    """Class probabilities for a raw volume, on the volume's own grid.

    Args:
        run: A loaded run.
        volume: A scan as stored (:func:`ibsr_helpers.data.load_subject`); the run's
            preprocessing is applied here (once per volume and preprocessing: cached).
        tta: Average with the prediction of the left-right mirrored volume (a no-op for
            a 2D sagittal run, see :func:`~ibsr_helpers.augmentation.mirrors_left_right`).
        passes: This run's passes over this volume already made (see
            :func:`prepared_probabilities`).

    Returns:
        ``(4, X, Y, Z)`` float32 probabilities on the CPU, summing to 1; outside the brain
        box the background has probability 1.
    """
    prepared = prepare(volume, run.preprocessing)
    return on_scan_grid(prepared, prepared_probabilities(run, prepared, tta, passes)[1:])


def on_scan_grid(prepared: Prepared, foreground: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Foreground class probabilities on a prepared grid, taken back onto the scan's grid.

    Args:
        prepared: The scan as the run's preprocessing prepared it.
        foreground: ``(3, *prepared.image.shape)`` probabilities of CSF, GM and WM.

    Returns:
        ``(4, X, Y, Z)`` float32 probabilities on the scan's grid (linear interpolation
        where it was resampled); the background takes what the tissues leave.
    """
    probs = prepared.invert(foreground)
    background = (1.0 - probs.sum(0, keepdim=True)).clamp_(0.0, 1.0)
    return torch.cat([background, probs])


def ensemble_average(probabilities: Sequence[torch.Tensor]) -> torch.Tensor:
    """The ensemble's probabilities: the mean of its members' (all on one grid).

    Raises:
        IBSRError: If there is no member.
    """
    if not probabilities:
        raise IBSRError("no run given to predict with")
    if len(probabilities) == 1:
        return probabilities[0]  # a single run: no copy of a (4, X, Y, Z) volume
    return torch.stack(list(probabilities)).mean(0)


def predict_volume(
    runs: Run | Sequence[Run],
    volume: Volume,
    tta: bool = False,
    postprocess: Any = None,
) -> tuple[np.ndarray, torch.Tensor]:
    """Segment one raw volume with one run or an ensemble (probabilities averaged).

    Args:
        runs: One run or several (2D and 3D may be mixed).
        volume: A scan as stored; each run applies its own preprocessing.
        tta: Flip test-time augmentation.
        postprocess: Optional :class:`ibsr_helpers.postprocessing.PostProcessing` applied
            to the segmentation (the probabilities are returned as predicted).

    Returns:
        ``(segmentation, probabilities)``: ``(X, Y, Z)`` uint8 labels and
        ``(4, X, Y, Z)`` averaged probabilities, both on the volume's grid.
    """
    runs = [runs] if isinstance(runs, Run) else list(runs)
    probs = ensemble_average([predict_probabilities(run, volume, tta) for run in runs])
    return _segment(probs, volume, postprocess), probs


def most_probable(probs: torch.Tensor) -> np.ndarray:
    """The labels of the most probable class of ``(C, X, Y, Z)`` probabilities, as uint8.

    ``max(0).indices`` is ``argmax(0)`` (the first maximum wins a tie) at a ninth of its
    CPU time on a ``(4, X, Y, Z)`` volume: torch's argmax over the leading axis is slow
    (``benchmarks/README.md``, "Inference outside the network").
    """
    return probs.max(0).indices.numpy().astype(np.uint8)


def _segment(probs: torch.Tensor, volume: Volume, postprocess: Any) -> np.ndarray:
    """The labels of the most probable class, post-processed if asked."""
    seg = most_probable(probs)
    return seg if postprocess is None else postprocess(seg, volume)


def predict_shared(
    predictors: Mapping[Hashable, tuple[Sequence[Run], bool]],
    volume: Volume,
    postprocess: Any = None,
) -> dict[Hashable, tuple[np.ndarray, float]]:
    """Segment one volume with several runs and ensembles, each run predicting once.

    A run that is in several predictors passes over the volume once per mirroring: its
    plain prediction and the unmirrored half of its TTA prediction are one pass. Each
    predictor averages its members' probabilities from those shared passes, exactly as
    :func:`predict_volume` would. Scoring ten ensembles of five runs thus costs about
    five forward passes, not fifty; an ensemble with and without TTA, its members' passes
    and their mirror images.

    Args:
        predictors: Key -> (runs, flip TTA), one per single model or ensemble.
        volume: A scan as stored.
        postprocess: Optional :class:`ibsr_helpers.postprocessing.PostProcessing`, applied
            to every predictor's segmentation.

    Returns:
        Key -> (``(X, Y, Z)`` uint8 labels, seconds of prediction: for an ensemble, the
        sum over its members, what it costs alone).

    Raises:
        IBSRError: If a predictor has no run.
    """
    wanted: dict[int, tuple[Run, set[bool]]] = {}
    for members, tta in predictors.values():
        for run in members:
            wanted.setdefault(id(run), (run, set()))[1].add(tta)
    shared: dict[tuple[int, bool], tuple[torch.Tensor, float]] = {}
    for run, settings in wanted.values():
        passes: Passes = {}  # this run's passes, dropped once its predictions are made
        for tta in sorted(settings):
            start = time.perf_counter()
            made = set(passes)
            probs = predict_probabilities(run, volume, tta, passes)
            reused = sum(passes[a][1] for a in tta_flips(run, tta) if a in made)
            shared[id(run), tta] = (probs, time.perf_counter() - start + reused)
    out = {}
    for key, (members, tta) in predictors.items():
        probs = ensemble_average([shared[id(r), tta][0] for r in members])
        seconds = sum(shared[id(r), tta][1] for r in members)
        out[key] = (_segment(probs, volume, postprocess), seconds)
    return out


def predict_folder(
    run_dirs: Sequence[str | Path],
    inputs: str | Path | Sequence[str | Path],
    out_dir: str | Path,
    tta: bool = False,
    device: str | torch.device = "cpu",
    postprocess: Any = None,
    progress: bool = True,
) -> list[Path]:
    """Segment the images that ``inputs`` name and save one ``<stem>_seg.nii.gz`` each.

    Args:
        run_dirs: One run folder, or several for an ensemble.
        inputs: NIfTI files and folders of them, any names, at any depth (the IBSR18
            ``Test_Set``, a BIDS data set, a folder of ``brain.nii.gz``); in folders,
            label maps ``*_seg``/``*_dseg`` are skipped (a line says how many). See
            :func:`ibsr_helpers.scans.find_scans`.
        out_dir: Where predictions go, with the source image's grid, affine and header
            codes: ``<stem>_seg.nii.gz`` at the image's path relative to the input folder
            it was found in (``Test_Set/IBSR_02/IBSR_02.nii.gz`` ->
            ``out_dir/IBSR_02/IBSR_02_seg.nii.gz``), directly in ``out_dir`` for a file.
        tta: Flip test-time augmentation.
        device: Torch device.
        postprocess: Optional :class:`ibsr_helpers.postprocessing.PostProcessing`.
        progress: Show a progress bar.

    Returns:
        The files written, in the order of the inputs.

    Raises:
        IBSRError: Before anything is predicted, for a bad run folder, a missing or
            unreadable input, a folder without images, a file that is not one 3-D scan
            (e.g. a 4-D series), two inputs writing the same output, or an output
            overwriting an input. Then for a scan that fails (e.g. a label map given as
            the image): the loop stops with an error naming it, and the files already
            written stay.
    """
    predictors = {Path(out_dir): (run_dirs, tta)}
    return predict_folders(predictors, inputs, device, postprocess, progress)[Path(out_dir)]


def predict_folders(
    predictors: Mapping[Path, tuple[Sequence[str | Path], bool]],
    inputs: str | Path | Sequence[str | Path],
    device: str | torch.device = "cpu",
    postprocess: Any = None,
    progress: bool = True,
) -> dict[Path, list[Path]]:
    """Segment the images that ``inputs`` name with several runs and ensembles at once.

    Each run is loaded once and predicts each volume once per TTA setting for all the
    predictors it is in (:func:`predict_shared`).

    Args:
        predictors: Output folder -> (run folders, flip TTA), one per single model or
            ensemble; each folder gets one ``<stem>_seg.nii.gz`` per image, laid out as
            :func:`predict_folder` says.
        inputs: NIfTI files and folders of them (as :func:`predict_folder`).
        device: Torch device.
        postprocess: Optional :class:`ibsr_helpers.postprocessing.PostProcessing`,
            applied to every predictor's segmentation.
        progress: Show a progress bar.

    Returns:
        Output folder -> the files written there, in the order of the inputs.

    Raises:
        IBSRError: As :func:`predict_folder`: every run is loaded, then every input found
            and checked from its header, before anything is predicted; a scan that fails
            once loaded stops the loop with an error naming it, and the files already
            written stay.
    """
    from tqdm.auto import tqdm

    folders = {Path(r) for members, _ in predictors.values() for r in members}
    runs = {folder: load_run(folder, device) for folder in sorted(folders)}
    loaded = {Path(out): ([runs[Path(r)] for r in m], tta) for out, (m, tta) in predictors.items()}
    scans, skipped = find_scans(inputs)
    check_outputs(scans, skipped, list(loaded))
    note = skipped_note(skipped)
    if note:
        print(note)
    written: dict[Path, list[Path]] = {out: [] for out in loaded}
    for scan in tqdm(scans, desc="predicting", unit="volume", disable=not progress):
        volume = load_subject(scan.subject)
        check_voxels(volume)
        for out, (seg, _) in predict_shared(loaded, volume, postprocess).items():
            written[out].append(save_segmentation(seg, volume.nifti, out / scan.output))
    return written
