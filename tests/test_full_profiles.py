"""Every ``full`` (GPU) profile, run for one step on the CPU at its real input shapes.

GPUs are lent to this project only now and then, so a full profile could otherwise fail on
its first GPU step for a shape or config error. Here each one is built exactly as the
engine builds it (the model at its full size, the preprocessing, the input pipeline with
its augmentation, the loss and optimiser), trains for one step on real-size inputs, and
predicts one whole validation volume (whole box or sliding window, at the full patch
size). Only the batch is reduced to one sample, so the step fits a CI machine's memory.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from ibsr_helpers.config import load_config
from ibsr_helpers.data import load_split
from ibsr_helpers.inference import Run, predict_volume
from ibsr_helpers.models import build_network
from ibsr_helpers.pipeline import build_pipeline
from ibsr_helpers.plan import prepare_for, specs
from ibsr_helpers.preprocessing import PLANE_AXIS
from ibsr_helpers.step import build_train_step

CONFIGS = sorted((Path(__file__).parents[1] / "configs").glob("*.yaml"))


@pytest.fixture(scope="module")
def scans(any_root):
    train = load_split(any_root, "train", 1, progress=False)
    return train, load_split(any_root, "val", 1, progress=False)


@pytest.mark.slow
@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_full_profile_trains_one_step_and_predicts_on_the_cpu(path, scans):
    config = load_config(
        path,
        "full",
        [
            "device=cpu",
            "train.batch_size=1",
            "data.patches_per_volume=1",
            "data.gpu_augment=false",  # the same transforms, in the loader
            "data.num_workers=0",
        ],
    )
    train, val = scans
    prepared = prepare_for(config, train)
    d, box = config["data"], prepared[0].image.shape
    plan = specs(config)
    pipe = build_pipeline(plan.input, prepared, torch.device("cpu"), samples=1)
    image, label = pipe.to_device(next(iter(pipe.loader)))
    if d["mode"] == "slices":
        in_plane = np.delete(np.array(box), PLANE_AXIS[d["plane"]])
        expected = (1, 2 * int(d["context"]) + 1, *in_plane)
    else:
        expected = (1, 1, *(box if d["mode"] == "volume" else d["patch_size"]))
    assert tuple(image.shape) == expected and label.shape[2:] == image.shape[2:]
    model = build_network(plan.model, "cpu")
    step = build_train_step(plan.optim, model, "cpu")
    before = [p.detach().clone() for p in model.parameters()][:3]
    loss = step(image, label)
    assert np.isfinite(loss)
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=False))
    seg, probs = predict_volume(Run(model.eval(), config), val[0])
    assert seg.shape == val[0].image.shape and probs.shape == (4, *seg.shape)
    assert torch.isfinite(probs).all()
