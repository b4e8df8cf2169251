"""What a training run does at its events besides training: validation, checkpoints, progress.

The engine (:class:`ibsr_helpers.training.Trainer`) trains; everything else is a handler
called at the run's events, in the order of its list, as in MONAI's engines
(``monai.handlers``) without ignite:

* ``started(trainer)``: once, after the model is built and ``last.pt`` restored;
* ``epoch_completed(trainer, epoch, record)``: after each epoch; ``record`` holds the
  epoch's ``train_loss`` and ``lr``, and a handler may add to it (validation adds its
  scores, which the handlers after it see);
* ``completed(trainer)``: once every epoch is trained;
* ``ended(trainer, status)``: always, last: ``"FINISHED"``, ``"KILLED"`` or ``"FAILED"``.

A notebook adds or removes any of them: ``train(..., handlers=[...])``. The engine's
defaults are :class:`Validation`, :class:`Checkpoint`, the MLflow handler
(:class:`ibsr_helpers.tracking.Tracking`) and :class:`Progress`; the learning-curve and
overlay figures are a handler of the figures package
(:class:`ibsr_helpers.plots.TrainingFigures`) that the CLI and the notebooks add.

Handlers see the trainer's state: ``config`` (the plan), ``specs`` (the plan per concept:
:func:`ibsr_helpers.plan.specs`; handlers read their settings there), ``out_dir``,
``model``, ``step``, ``history``, ``best``, ``best_epoch``, ``best_seg``, ``val_set``,
``start_epoch``, ``train_seconds``, ``resumed`` (what ``last.pt`` held) and
``extra_state`` (what a handler wants saved in ``last.pt``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ibsr_helpers.data import load_split
from ibsr_helpers.environment import rng_state
from ibsr_helpers.evaluation import evaluate_runs
from ibsr_helpers.inference import Run
from ibsr_helpers.layout import TISSUES
from ibsr_helpers.preprocessing import prepare

__all__ = ["Handler", "Validation", "Checkpoint", "Progress", "validate", "save_atomic"]


class Handler:
    """A handler's events, each doing nothing: override the ones a handler needs."""

    def started(self, trainer: Any) -> None:
        """Once, before the first epoch of this call (after a resume too)."""

    def epoch_completed(self, trainer: Any, epoch: int, record: dict[str, Any]) -> None:
        """After each epoch; ``record`` may be added to."""

    def completed(self, trainer: Any) -> None:
        """Once every epoch is trained."""

    def ended(self, trainer: Any, status: str) -> None:
        """Always, last (``FINISHED``, ``KILLED`` or ``FAILED``)."""


def validate(
    run: Run,
    volumes: list[Any],
    tta: bool = False,
    keep_first: bool = False,
    hd95: bool = False,
) -> dict[str, Any]:
    """Per-tissue Dice (and HD95) on whole validation volumes, scored on their own grids.

    A thin call into :func:`ibsr_helpers.evaluation.evaluate_runs` (the grading's own
    scoring), averaged over the volumes.

    Args:
        run: The model to score (put in eval mode for the call, then back).
        volumes: Labelled raw volumes (their preprocessing for the run is cached on them).
        tta: Flip test-time augmentation.
        keep_first: Also return the first volume's segmentation under ``"first_seg"``.
        hd95: Also score HD95 per tissue (about a second more per volume).

    Returns:
        ``{"val_dice_CSF": …, "val_dice_GM": …, "val_dice_WM": …, "val_mean_dice": …}``
        (with ``hd95``, ``val_hd95_<tissue>`` and ``val_mean_hd95`` in mm too).
    """
    was_training = run.model.training
    run.model.eval()
    segs: dict[str, dict[str, np.ndarray]] = {}
    scores = evaluate_runs({"run": run}, volumes, tta=tta, hd=hd95, segmentations=segs)
    run.model.train(was_training)
    out: dict[str, Any] = {}
    for metric in ("dice", "hd95") if hd95 else ("dice",):
        for t in TISSUES:
            out[f"val_{metric}_{t}"] = float(scores.loc[scores["tissue"] == t, metric].mean())
        out[f"val_mean_{metric}"] = float(np.mean([out[f"val_{metric}_{t}"] for t in TISSUES]))
    if keep_first:
        out["first_seg"] = segs["run"][volumes[0].id]
    return out


class Validation(Handler):
    """Score whole validation volumes every ``train.val_every`` epochs and at the last one.

    Loads the validation subjects at ``started`` (the first ``train.max_val_subjects``)
    into ``trainer.val_set``; keeps the best mean Dice in ``trainer.best``,
    ``trainer.best_epoch`` and the first volume's best segmentation in ``trainer.best_seg``.
    """

    def started(self, trainer: Any) -> None:
        """Load and prepare the validation subjects (once per call)."""
        spec = trainer.specs.validation
        trainer.val_set = load_split(
            trainer.data_dir, "val", spec.max_subjects, trainer.progress, shared=True
        )
        for volume in trainer.val_set:  # cached on the volumes
            prepare(volume, trainer.specs.preprocessing)

    def epoch_completed(self, trainer: Any, epoch: int, record: dict[str, Any]) -> None:
        """Validate when due; scores go into ``record`` and the history."""
        spec = trainer.specs.validation
        if (epoch + 1) % spec.every and epoch != trainer.specs.epochs - 1:
            return
        run = Run(trainer.model, trainer.config, trainer.out_dir)
        scores = validate(run, trainer.val_set, keep_first=True, hd95=spec.hd95)
        first_seg = scores.pop("first_seg")
        record.update(scores)
        trainer.history["val_epoch"].append(epoch)
        for key, value in scores.items():
            trainer.history.setdefault(key, []).append(value)
        if scores["val_mean_dice"] > trainer.best:
            trainer.best, trainer.best_epoch, trainer.best_seg = (
                scores["val_mean_dice"],
                epoch,
                first_seg,
            )


def save_atomic(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary file, then rename it: a kill never leaves half a file."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    tmp.replace(path)


class Checkpoint(Handler):
    """``best.pt`` when validation found a better model, ``last.pt`` and the history always.

    ``last.pt`` holds the weights, the step's state (optimiser, schedule, scaler), the
    epoch, the best score, the minutes trained, every handler's ``trainer.extra_state``
    (the MLflow run id), the random generators' states (so that a resumed run's dropout
    draws what an uninterrupted run's would) and ``finished``, true once the run is
    complete: a resumed run that finds it returns at once.
    """

    def _last(self, trainer: Any, epoch: int, finished: bool) -> None:
        state = {
            "model": trainer.model.state_dict(),
            **trainer.step.state_dict(),
            "epoch": epoch,
            "best_dice": trainer.best,
            "best_epoch": trainer.best_epoch,
            "train_seconds": trainer.train_seconds,
            **trainer.extra_state,
            "rng": rng_state(),
            "finished": finished,
        }
        save_atomic(state, trainer.out_dir / "last.pt")

    def epoch_completed(self, trainer: Any, epoch: int, record: dict[str, Any]) -> None:
        """Write ``best.pt`` (a new best at this epoch), ``last.pt`` and ``history.json``."""
        if trainer.best_epoch == epoch:
            save_atomic(
                {"model": trainer.model.state_dict(), "epoch": epoch, "dice": trainer.best},
                trainer.out_dir / "best.pt",
            )
        self._last(trainer, epoch, finished=False)
        (trainer.out_dir / "history.json").write_text(json.dumps(trainer.history, indent=1))

    def ended(self, trainer: Any, status: str) -> None:
        """Mark ``last.pt`` finished once every handler has completed."""
        if status == "FINISHED":
            self._last(trainer, trainer.specs.epochs - 1, finished=True)


class Progress(Handler):
    """One line per epoch: its loss and, when validated, its scores."""

    def epoch_completed(self, trainer: Any, epoch: int, record: dict[str, Any]) -> None:
        """Print the epoch's line."""
        shown = ", ".join(f"{k} {v:.4f}" for k, v in record.items() if k != "lr")
        tqdm.write(f"epoch {epoch + 1}/{trainer.specs.epochs}: {shown}")
