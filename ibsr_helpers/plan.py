"""A run's plan: its config resolved once before training, and split into one spec per concept.

As nnU-Net resolves a data set's fingerprint into plans before it trains, the engine turns
the config it is asked for into the plan it trains, and writes that plan as the run's
``config.json``; nothing rewrites it afterwards, and the caller's config is never changed.
Two settings are resolved:

* ``data.spacing: auto`` becomes the training scans' median voxel size
  (:func:`resolve_spacing`);
* ``train.minutes`` (a budget) shortens ``train.steps_per_epoch`` to what fits at the
  measured seconds a step (:func:`fit_budget`).

The plan records what was asked and the step time it was fitted with (``plan.asked``,
``plan.step_seconds``), so a resumed run resolves the config it is asked for again, with the
same step time, and compares the two plans setting by setting (:func:`plan_difference`):
the same config on the same data gives the same plan on any machine.

:func:`specs` is the one place that reads a config's layout for the modules below the
engine: it turns a config (or plan) into a :class:`Specs`, one frozen spec per concept
(preprocessing, network, training input, optimisation, validation, prediction), and those
modules take their spec, never the config. A setting renamed in the config changes
:mod:`ibsr_helpers.config` and this module only.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ibsr_helpers.augmentation import Augment, mirrors_left_right
from ibsr_helpers.config import leaves
from ibsr_helpers.datasets import Sampling
from ibsr_helpers.errors import IBSRError
from ibsr_helpers.models import ModelSpec, fixed_size_setting
from ibsr_helpers.pipeline import InputSpec
from ibsr_helpers.preprocessing import Prepared, Preprocessing, median_spacing, prepare
from ibsr_helpers.step import Optim

if TYPE_CHECKING:
    from ibsr_helpers.data import Volume

__all__ = [
    "PLAN",
    "Validating",
    "Prediction",
    "Specs",
    "specs",
    "prepare_for",
    "resolve_spacing",
    "fit_budget",
    "steps_for_minutes",
    "plan_difference",
]

#: The plan's own record in a resolved config: what was asked, and the step time used.
PLAN = "plan"


def _record(plan: dict[str, Any]) -> dict[str, Any]:
    return plan.setdefault(PLAN, {"asked": {}})


@dataclass(frozen=True)
class Validating:
    """When and how a run scores itself during training (the config's ``train`` section).

    Attributes:
        every: Validate every this many epochs (and after the last).
        max_subjects: Only the first this many validation subjects (None: all).
        hd95: Also score HD95.
    """

    every: int = 1
    max_subjects: int | None = None
    hd95: bool = False


@dataclass(frozen=True)
class Prediction:
    """How a run's network is fed a whole scan (the config's ``inference`` section).

    Attributes:
        batch_size: Slices a forward pass (2D runs).
        overlap: Sliding-window overlap (3D patch runs).
        sw_batch_size: Windows a forward pass (3D patch runs).
        precision: ``auto``, ``fp32``, ``bf16`` or ``fp16`` (as in training).
    """

    batch_size: int = 16
    overlap: float = 0.5
    sw_batch_size: int = 4
    precision: str = "auto"


@dataclass(frozen=True)
class Specs:
    """A config, one spec per concept: what each module below the engine takes.

    Attributes:
        preprocessing: :func:`ibsr_helpers.preprocessing.prepare`'s.
        model: :func:`ibsr_helpers.models.build_network`'s.
        input: :func:`ibsr_helpers.pipeline.build_pipeline`'s (sampling and augmentation).
        optim: :func:`ibsr_helpers.step.build_train_step`'s.
        validation: The validation handler's.
        prediction: :mod:`ibsr_helpers.inference`'s.
    """

    preprocessing: Preprocessing
    model: ModelSpec
    input: InputSpec
    optim: Optim
    validation: Validating
    prediction: Prediction

    @property
    def sampling(self) -> Sampling:
        """What the run is fed: ``mode``, ``plane``, ``context``, ``patch_size`` and the sampler."""
        return self.input.sampling

    @property
    def epochs(self) -> int:
        """Epochs of the run."""
        return self.optim.epochs


def _model_spec(config: Mapping[str, Any]) -> ModelSpec:
    d, m = config["data"], config["model"]
    settings = {k: v for k, v in m.items() if k != "name"}
    setting = fixed_size_setting(m["name"])
    if setting is not None and setting not in settings:  # UNETR: the patch, or the box
        settings[setting] = list(d["patch_size"] if d["mode"] == "patches" else d["roi"])
    return ModelSpec(
        name=m["name"],
        in_channels=2 * int(d["context"]) + 1 if d["mode"] == "slices" else 1,
        settings=settings,
        channels_last=bool(config["train"].get("channels_last", True)),
    )


def _slice_crop(crop: Sequence[int] | None, divisor: int) -> tuple[int, int] | None:
    """``data.slice_crop`` as a pair, each side a multiple of the network's ``divisor``."""
    if crop is None:
        return None
    if any(int(c) % divisor for c in crop):
        raise IBSRError(
            f"data.slice_crop {list(crop)}: each side must be a multiple of {divisor}, "
            "what the network's downsampling needs"
        )
    return int(crop[0]), int(crop[1])


def specs(config: Mapping[str, Any]) -> Specs:
    """One spec per concept, from a config or a plan (not changed).

    ``data.spacing`` is three numbers in a plan (the engine resolves ``auto`` to the training
    scans' median); ``auto``, ``native`` or None here mean: keep every scan's own spacing
    (use :func:`prepare_for` to resolve ``auto`` from scans first).

    Raises:
        IBSRError: An unknown model name or normalisation.
    """
    d, t, o, inf = config["data"], config["train"], config["optim"], config["inference"]
    model = _model_spec(config)
    spacing = d.get("spacing")
    gamma = d.get("gamma")
    return Specs(
        preprocessing=Preprocessing(
            orientation=str(d.get("orientation", "RAS")),
            spacing=None
            if spacing in (None, "auto", "native")
            else tuple(float(s) for s in spacing),  # type: ignore[arg-type]
            spacing_tolerance=float(d.get("spacing_tolerance", 0.2)),
            normalize=str(d["normalize"]),
            roi=tuple(int(r) for r in d["roi"]),  # type: ignore[arg-type]
            divisor=model.divisor,
        ),
        model=model,
        input=InputSpec(
            model=model,
            sampling=Sampling(
                mode=d["mode"],
                plane=d["plane"],
                context=int(d["context"]),
                drop_empty=bool(d["drop_empty"]),
                slice_crop=_slice_crop(d.get("slice_crop"), model.divisor),
                sampler=d["sampler"],
                class_ratios=tuple(float(r) for r in d["class_ratios"]),
                patch_size=tuple(int(p) for p in d["patch_size"]),  # type: ignore[arg-type]
                patches_per_volume=int(d["patches_per_volume"]),
                pos_ratio=float(d["pos_ratio"]),
                weight_map=d["weight_map"],
            ),
            augment=Augment(
                enabled=bool(d.get("augment", True)),
                mirror=mirrors_left_right(d["mode"], d["plane"]),
                gamma=None if gamma is None else (float(gamma[0]), float(gamma[1])),
            ),
            batch_size=int(t["batch_size"]),
            steps_per_epoch=int(t["steps_per_epoch"]),
            num_workers=int(d.get("num_workers", 0)),
            gpu_augment=bool(d.get("gpu_augment")),
        ),
        optim=Optim(
            epochs=int(t["epochs"]),
            steps_per_epoch=int(t["steps_per_epoch"]),
            lr=float(o["lr"]),
            weight_decay=float(o["weight_decay"]),
            warmup_epochs=float(o["warmup_epochs"]),
            min_lr=float(o["min_lr"]),
            loss=dict(config["loss"]),
            precision=str(t.get("precision", "auto")),
        ),
        validation=Validating(
            every=int(t["val_every"]),
            max_subjects=int(t["max_val_subjects"] or 0) or None,
            hd95=bool(t["val_hd95"]),
        ),
        prediction=Prediction(
            batch_size=int(inf.get("batch_size", 16)),
            overlap=float(inf["overlap"]),
            sw_batch_size=int(inf["sw_batch_size"]),
            precision=str(t.get("precision", "auto")),
        ),
    )


def _spacing_for(config: Mapping[str, Any], reference: Sequence[Any]) -> Any:
    """``data.spacing`` as given, or for ``auto`` the median spacing of ``reference``."""
    d = config["data"]
    if d.get("spacing", "auto") != "auto":
        return d["spacing"]
    return list(median_spacing(reference, d.get("orientation", "RAS")))


def prepare_for(
    config: Mapping[str, Any],
    volumes: Sequence[Volume],
    reference: Sequence[Volume] | None = None,
) -> list[Prepared]:
    """Prepare volumes as a run with ``config`` does (``config`` is not changed).

    ``data.spacing: auto`` means the median spacing of ``reference`` (the training scans;
    default: ``volumes``), as the engine's plan resolves it (:func:`resolve_spacing`).

    Returns:
        One :class:`~ibsr_helpers.preprocessing.Prepared` per volume, in order.
    """
    spec = specs(resolve_spacing(config, reference or volumes)).preprocessing
    return [prepare(v, spec) for v in volumes]


def resolve_spacing(config: Mapping[str, Any], reference: Sequence[Any]) -> dict[str, Any]:
    """A copy of ``config`` whose ``data.spacing`` is resolved (``auto``: ``reference``'s median).

    Args:
        config: A config or a plan (not changed).
        reference: The training scans: anything with an ``affine`` (loaded volumes, or
            nibabel images, whose voxels are never read).

    Returns:
        The plan so far.
    """
    plan = copy.deepcopy(config)
    spacing = _spacing_for(plan, reference)
    if spacing != plan["data"]["spacing"]:
        _record(plan)["asked"]["data.spacing"] = plan["data"]["spacing"]
        plan["data"]["spacing"] = spacing
    return plan


def steps_for_minutes(minutes: float, epochs: int, step_seconds: float, asked: int) -> int:
    """Steps per epoch that fit ``minutes`` of training at ``step_seconds`` a step.

    Never more than ``asked`` (a budget only shortens a recipe); from 20 up, rounded down to
    a multiple of 10, so that re-runs on one machine agree despite timing noise.
    """
    fit = int(minutes * 60 / (epochs * step_seconds))
    if fit >= 20:
        fit -= fit % 10
    return max(1, min(asked, fit))


def fit_budget(plan: Mapping[str, Any], step_seconds: float | None) -> dict[str, Any]:
    """A copy of ``plan`` whose epochs fit ``train.minutes`` at ``step_seconds`` a step.

    Without ``train.minutes`` or a step time, the copy is unchanged.

    Returns:
        The plan, with ``plan.step_seconds`` recorded when a budget was fitted.
    """
    out = copy.deepcopy(plan)
    tcfg = out["train"]
    if not tcfg.get("minutes") or step_seconds is None:
        return out
    asked = int(tcfg["steps_per_epoch"])
    steps = steps_for_minutes(float(tcfg["minutes"]), int(tcfg["epochs"]), step_seconds, asked)
    record = _record(out)
    record["step_seconds"] = round(float(step_seconds), 4)
    if steps != asked:
        record["asked"]["train.steps_per_epoch"] = asked
        tcfg["steps_per_epoch"] = steps
    return out


def plan_difference(asked: Mapping[str, Any], stored: Mapping[str, Any]) -> str | None:
    """The first setting in which a stored run's plan differs from the plan asked for.

    Both are plans (resolved configs); a setting missing on one side (a run made before the
    setting existed) is a difference too.

    Returns:
        ``"key: stored value -> asked value"``, or None when they agree.
    """
    a, s = leaves(asked), leaves(stored)
    for key in [*a, *(k for k in s if k not in a)]:
        if a.get(key, "(not set)") != s.get(key, "(not set)"):
            return f"{key}: {s.get(key, '(not set)')} -> {a.get(key, '(not set)')}"
    return None
