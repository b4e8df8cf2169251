"""Every ``full`` (GPU) profile, run for one step on the CPU at its real input shapes.

GPUs are lent to this project only now and then, so a full profile could otherwise fail on
its first GPU step for a shape or config error. Here each one is built exactly as the
engine builds it (the model at its full size, the preprocessing, the input pipeline with
its augmentation, the loss and optimiser), trains for one step on real-size inputs, and
predicts one whole validation volume (whole box or sliding window, at the full patch
size). Only the batch is reduced to one sample, so the step fits a CI machine's memory.

The whole-volume models (``data.mode: volume``) run that step on PyTorch's ``meta``
device instead: every shape of the forward pass, the loss and the backward pass is
checked, nothing is computed. On a 2-core CPU their real full-size step took a minute
each (UNETR 64 s, SegResNet 46 s, 2026-12-07), more than the suite can spend; their
whole-volume prediction still runs for real, and every config's real step runs at the
smoke profile elsewhere.
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
    if d["mode"] == "volume":
        _shapes_of_one_step(plan, image, label)
    else:
        step = build_train_step(plan.optim, model, "cpu")
        before = [p.detach().clone() for p in model.parameters()][:3]
        loss = step(image, label)
        assert np.isfinite(loss)
        assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=False))
    seg, probs = predict_volume(Run(model.eval(), config), val[0])
    assert seg.shape == val[0].image.shape and probs.shape == (4, *seg.shape)
    assert torch.isfinite(probs).all()


def _shapes_of_one_step(plan, image: torch.Tensor, label: torch.Tensor) -> None:
    """The engine's step on the meta device: forward, loss and backward, shapes only."""
    model = build_network(plan.model, "cpu").to("meta")
    step = build_train_step(plan.optim, model, "meta")
    x, y = image.to("meta"), label.to("meta")
    with step.precision.autocast():
        logits = step.net(x)
    assert logits.shape == (x.shape[0], 4, *x.shape[2:])
    loss = step.loss_fn(logits.float(), y)
    assert loss.shape == ()
    loss.backward()
    grads = [p for p in model.parameters() if p.grad is not None]
    assert grads and all(p.grad.shape == p.shape for p in grads)
