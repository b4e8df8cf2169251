"""A run's plan: its config with every ``auto`` and budget resolved once, before training.

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
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

from ibsr_helpers.config import leaves
from ibsr_helpers.preprocessing import spacing_for

__all__ = ["PLAN", "resolve_spacing", "fit_budget", "steps_for_minutes", "plan_difference"]

#: The plan's own record in a resolved config: what was asked, and the step time used.
PLAN = "plan"


def _record(plan: dict[str, Any]) -> dict[str, Any]:
    return plan.setdefault(PLAN, {"asked": {}})


def resolve_spacing(config: Mapping[str, Any], reference: Sequence[Any]) -> dict[str, Any]:
    """A copy of ``config`` whose ``data.spacing`` is resolved (``auto``: ``reference``'s median).

    Args:
        config: A config or a plan (not changed).
        reference: The training scans: anything with an ``affine`` (loaded volumes, or
            nibabel images, whose voxels are never read).

    Returns:
        The plan so far.
    """
    plan = copy.deepcopy(dict(config))
    spacing = spacing_for(plan, reference)
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
    out = copy.deepcopy(dict(plan))
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
