"""The training augmentation: the brain-contrast gamma option (``data.gamma``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ibsr_helpers.augmentation import brain_gamma, train_transforms
from ibsr_helpers.config import load_config
from ibsr_helpers.plan import specs

UNET2D = Path(__file__).parents[1] / "configs" / "unet2d.yaml"


def _brain_item(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    image = np.zeros((1, 32, 32), np.float32)
    image[:, 8:24, 8:24] = rng.normal(size=(1, 16, 16))
    return {"image": image, "label": np.zeros((1, 32, 32), np.int64)}


@pytest.mark.parametrize("as_tensor", [False, True], ids=["numpy", "torch"])
def test_brain_gamma_bends_the_brain_and_keeps_the_background(as_tensor):
    import torch
    from monai.transforms import Compose

    item = _brain_item()
    given = {k: torch.as_tensor(v) if as_tensor else v.copy() for k, v in item.items()}
    out = Compose(brain_gamma((2.0, 2.0), prob=1.0))(given)
    image = np.asarray(torch.as_tensor(out["image"]))
    assert set(out) == {"image", "label"}  # the mask copy is removed again
    brain = item["image"] != 0
    assert np.all(image[~brain] == 0)
    before, after = item["image"][brain], image[brain]
    # monotone: the tissues keep their order ...
    assert np.array_equal(np.argsort(before, kind="stable"), np.argsort(after, kind="stable"))
    # ... but the contrast is bent, not just scaled and shifted
    fit = np.polyfit(before, after, 1)
    assert np.abs(np.polyval(fit, before) - after).max() > 0.05


@pytest.mark.parametrize("gamma", [None, [0.7, 1.5]])
def test_train_transforms_add_the_gamma_only_when_asked(gamma):
    config = load_config(UNET2D, "cpu", ["data.plane=sagittal", f"data.gamma={json.dumps(gamma)}"])
    transform = train_transforms(specs(config).input.augment, 2)
    names = [type(t).__name__ for t in transform.transforms]
    assert ("RandAdjustContrastd" in names) == (gamma is not None)
    transform.set_random_state(3)
    out = transform(_brain_item())
    assert set(out) == {"image", "label"} and out["image"].shape == (1, 32, 32)
