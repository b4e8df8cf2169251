"""Prediction for every model kind: slice stacks, whole volumes, sliding-window patches.

One entry point, :func:`predict_probabilities`, turns a normalised ``(X, Y, Z)`` volume
into ``(4, X, Y, Z)`` class probabilities for any trained run:

* ``slices`` runs predict every slice along their plane (2.5D context included) and
  restack them;
* ``volume`` runs do one forward pass over the brain-centred ROI box;
* ``patches`` runs use MONAI's sliding-window inference with Gaussian-weighted
  aggregation (``inference.overlap``, ``inference.sw_batch_size``).

Flip test-time augmentation averages the prediction of the volume and of its
left-right mirror image. Ensembles average the probabilities of several runs (2D and 3D
mixed; three 2D runs on three planes make the classic multi-plane fusion).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ibsr_helpers.data import PLANE_AXIS, Volume, find_images, load_subject
from ibsr_helpers.datasets import Box, roi_box, slice_stack
from ibsr_helpers.errors import IBSRError
from ibsr_helpers.io import save_segmentation
from ibsr_helpers.models import build_model, size_divisor, spatial_dims

__all__ = [
    "Run",
    "load_run",
    "model_in_channels",
    "predict_probabilities",
    "predict_volume",
    "predict_folder",
    "sliding_window",
]

#: TTA mirrors along these voxel axes (0 = left-right).
TTA_AXES: tuple[tuple[int, ...], ...] = ((), (0,))


@dataclass
class Run:
    """A trained model ready for inference.

    Attributes:
        model: The network, in eval mode, on its device.
        config: The training config it was trained with.
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


def model_in_channels(config: dict[str, Any]) -> int:
    """Input channels of the run's model: ``2k+1`` for 2.5D slices, else 1."""
    if config["data"]["mode"] == "slices":
        return 2 * int(config["data"]["context"]) + 1
    return 1


def model_kwargs(config: dict[str, Any]) -> dict[str, Any]:
    """The model's constructor arguments from ``config["model"]`` (``name`` removed)."""
    kwargs = {k: v for k, v in config["model"].items() if k != "name"}
    if config["model"]["name"] == "unetr" and "img_size" not in kwargs:
        d = config["data"]
        kwargs["img_size"] = d["patch_size"] if d["mode"] == "patches" else d["roi"]
    return kwargs


def divisor_for(config: dict[str, Any]) -> int:
    """The size multiple the run's network needs."""
    return size_divisor(config["model"]["name"], **model_kwargs(config))


def channels_last_inputs(config: dict[str, Any], device: torch.device) -> bool:
    """Whether a 2D network runs channels-last (CUDA only, ``train.channels_last``)."""
    return (
        spatial_dims(config["model"]["name"]) == 2
        and device.type == "cuda"
        and bool(config.get("train", {}).get("channels_last", True))
    )


def build_run_model(config: dict[str, Any], device: str | torch.device) -> torch.nn.Module:
    """The config's network on ``device``, in the memory layout that is fastest there.

    2D networks on CUDA are channels-last (see :func:`channels_last_inputs`); 3D networks
    on a CPU are channels-last-3d (NDHWC), which makes 3D convolutions, their backward
    pass above all, several times faster there.
    """
    device = torch.device(device)
    model = build_model(
        config["model"]["name"],
        in_channels=model_in_channels(config),
        out_channels=4,
        **model_kwargs(config),
    ).to(device)
    if channels_last_inputs(config, device):
        model = model.to(memory_format=torch.channels_last)
    elif spatial_dims(config["model"]["name"]) == 3 and device.type == "cpu":
        model = model.to(memory_format=torch.channels_last_3d)
    return model


def load_run(run_dir: str | Path, device: str | torch.device = "cpu", which: str = "best") -> Run:
    """Load a trained run folder (``config.json`` + ``best.pt`` or ``last.pt``).

    Raises:
        IBSRError: If the folder lacks the config or the checkpoint.
    """
    run_dir = Path(run_dir)
    cfg_path, ckpt = run_dir / "config.json", run_dir / f"{which}.pt"
    if not cfg_path.is_file():
        raise IBSRError("not a training run folder (no config.json)", run_dir)
    if not ckpt.is_file():
        raise IBSRError(f"no {which}.pt checkpoint in the run folder", run_dir)
    config = json.loads(cfg_path.read_text())
    try:
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise IBSRError(f"cannot read the checkpoint ({exc})", ckpt) from None
    model = build_run_model(config, device)
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


def _autocast(device: torch.device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


@torch.no_grad()
def _forward(run: Run, cropped: np.ndarray) -> torch.Tensor:
    """Softmax probabilities ``(4, *cropped.shape)`` for a cropped volume (no TTA)."""
    cfg, device = run.config, run.device
    d = cfg["data"]
    with _autocast(device):
        if d["mode"] == "slices":
            stack = torch.from_numpy(slice_stack(cropped, d["plane"], int(d["context"])))
            bs = int(cfg["inference"].get("batch_size", 16))
            outs = []
            for i in range(0, len(stack), bs):
                batch = stack[i : i + bs].to(device)
                outs.append(torch.softmax(run.model(batch).float(), 1).cpu())
            probs = torch.cat(outs)  # (N, 4, H, W)
            return torch.movedim(probs, 0, PLANE_AXIS[d["plane"]] + 1)
        image = torch.from_numpy(np.ascontiguousarray(cropped))[None, None].to(device)
        if d["mode"] == "volume":
            logits = run.model(image)
        else:
            inf = cfg["inference"]
            logits = sliding_window(
                run.model, image, d["patch_size"], float(inf["overlap"]), int(inf["sw_batch_size"])
            )
        return torch.softmax(logits.float(), 1)[0].cpu()


def predict_probabilities(run: Run, image: np.ndarray, tta: bool = False) -> torch.Tensor:
    """Class probabilities for a normalised volume.

    Args:
        run: A loaded run.
        image: ``(X, Y, Z)`` volume, normalised as the run was trained
            (``run.config["data"]["normalize"]``).
        tta: Average with the prediction of the left-right mirrored volume.

    Returns:
        ``(4, X, Y, Z)`` float32 probabilities on the CPU; outside the brain box the
        background has probability 1.
    """
    box: Box = roi_box(image, run.config["data"]["roi"], divisor_for(run.config))
    cropped = box.crop(image)
    total = None
    flips = TTA_AXES if tta else ((),)
    for axes in flips:
        x = np.flip(cropped, axes) if axes else cropped
        p = _forward(run, np.ascontiguousarray(x))
        if axes:
            p = torch.flip(p, [a + 1 for a in axes])
        total = p if total is None else total + p
    probs = total / len(flips)
    background = torch.zeros((4,) + tuple(image.shape))
    background[0] = 1.0
    full = box.paste(probs, image.shape)
    outside = torch.ones(tuple(image.shape), dtype=torch.bool)
    outside[box._slices(image.shape)[0]] = False
    full[:, outside] = background[:, outside]
    return full


def _normalised(volume: Volume, method: str, cache: dict[str, np.ndarray]) -> np.ndarray:
    if method not in cache:
        from ibsr_helpers.transforms import normalize

        cache[method] = normalize(volume.image, method) if method else volume.image
    return cache[method]


def predict_volume(
    runs: Run | Sequence[Run], volume: Volume, tta: bool = False, raw: bool = True
) -> tuple[np.ndarray, torch.Tensor]:
    """Predict one subject with one run or an ensemble (probabilities averaged).

    Args:
        runs: One run or several (2D and 3D may be mixed).
        volume: The subject; ``raw=True`` means its image is not normalised yet, and each
            run's own normalisation is applied.
        tta: Flip test-time augmentation.
        raw: Whether ``volume.image`` still needs normalising.

    Returns:
        ``(segmentation, probabilities)``: ``(X, Y, Z)`` uint8 labels and
        ``(4, X, Y, Z)`` averaged probabilities.
    """
    runs = [runs] if isinstance(runs, Run) else list(runs)
    if not runs:
        raise IBSRError("no run given to predict with")
    cache: dict[str, np.ndarray] = {}
    total = None
    for run in runs:
        image = _normalised(volume, run.config["data"]["normalize"], cache) if raw else volume.image
        p = predict_probabilities(run, image, tta)
        total = p if total is None else total + p
    probs = total / len(runs)
    return probs.argmax(0).numpy().astype(np.uint8), probs


def predict_folder(
    run_dirs: Sequence[str | Path],
    input_dir: str | Path,
    out_dir: str | Path,
    tta: bool = False,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> list[Path]:
    """Predict every image under ``input_dir`` and save ``ID_seg.nii.gz`` files.

    Args:
        run_dirs: One run folder, or several for an ensemble.
        input_dir: Any folder holding ``ID/ID.nii.gz`` images at any depth (labels, if
            present, are ignored), e.g. the IBSR18 ``Test_Set``.
        out_dir: Where predictions go, one ``ID_seg.nii.gz`` per image, with the source
            image's geometry.
        tta: Flip test-time augmentation.
        device: Torch device.
        progress: Show a progress bar.

    Returns:
        The files written.
    """
    from tqdm.auto import tqdm

    runs = [load_run(r, device) for r in run_dirs]
    subjects = find_images(input_dir)
    written = []
    for subject in tqdm(subjects, desc="predicting", unit="volume", disable=not progress):
        volume = load_subject(subject)
        seg, _ = predict_volume(runs, volume, tta)
        written.append(
            save_segmentation(seg, volume.nifti, Path(out_dir) / f"{subject.id}_seg.nii.gz")
        )
    return written
