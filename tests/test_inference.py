from __future__ import annotations

import numpy as np
import pytest
import torch

from ibsr_helpers.config import load_config
from ibsr_helpers.inference import Run, predict_probabilities, predict_volume, sliding_window


class Identity(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


@pytest.mark.parametrize("shape", [(1, 2, 50, 37, 29), (2, 1, 64, 64, 64), (1, 1, 20, 20, 20)])
@pytest.mark.parametrize("overlap", [0.0, 0.25, 0.5])
def test_sliding_window_identity_returns_input_exactly(shape, overlap):
    """Gaussian-weighted aggregation of an identity network's patches gives the input back,
    at the borders too (patches not dividing the volume, volume smaller than a patch)."""
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    y = sliding_window(Identity(), x, patch_size=(24, 16, 32), overlap=overlap, sw_batch_size=3)
    assert y.shape == x.shape
    torch.testing.assert_close(y, x, atol=1e-5, rtol=1e-5)


class OneHotOfSign(torch.nn.Module):
    """Logits that put class 3 where the image is positive, class 0 elsewhere."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x[:, :1]
        z = torch.zeros_like(c)
        return torch.cat([-10 * c, z - 10, z - 10, 10 * c], 1)


def _run(mode: str, **data) -> Run:
    cfg = load_config(
        {
            "model": {"name": "unet2d" if mode == "slices" else "unet3d"},
            "data": {"mode": mode, "roi": [32, 32, 32], "patch_size": [16, 16, 16], **data},
        },
        None,
    )
    return Run(OneHotOfSign().eval(), cfg)


@pytest.mark.parametrize("mode", ["slices", "volume", "patches"])
@pytest.mark.parametrize("tta", [False, True])
def test_predict_probabilities_every_mode(mode, tta):
    img = np.zeros((40, 36, 44), np.float32)
    img[10:30, 8:28, 12:34] = np.random.default_rng(0).normal(size=(20, 20, 22))
    probs = predict_probabilities(_run(mode), img, tta=tta).numpy()
    assert probs.shape == (4, 40, 36, 44)
    np.testing.assert_allclose(probs.sum(0), 1, atol=1e-5)
    seg = probs.argmax(0)
    np.testing.assert_array_equal(seg, np.where(img > 0, 3, 0))


def test_ensemble_averages_probabilities():
    img = np.zeros((40, 36, 44), np.float32)
    img[10:30, 8:28, 12:34] = 1.0

    class Flipped(OneHotOfSign):
        def forward(self, x):
            return super().forward(-x)

    from ibsr_helpers.data import Subject, Volume

    vol = Volume(Subject("X_1", "test", None, None, (1, 1, 1), img.shape), img, None, None)
    a, b = _run("volume"), _run("volume")
    b.model = Flipped()
    _, pa = predict_volume(a, vol, raw=False)
    _, pb = predict_volume(b, vol, raw=False)
    _, pab = predict_volume([a, b], vol, raw=False)
    torch.testing.assert_close(pab, (pa + pb) / 2)
