"""Tests for ibsr_helpers.losses: the MONAI losses set up for logits and label maps."""

from __future__ import annotations

import pytest
import torch

from ibsr_helpers.errors import IBSRError
from ibsr_helpers.losses import LOSS_NAMES, build_loss

SPATIAL = {2: (16, 16), 3: (8, 8, 8)}


def _labels(dims: int, seed: int = 0) -> torch.Tensor:
    """``(2, *spatial)`` random labels 0..3 (every class present in every sample)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 4, (2, *SPATIAL[dims]), generator=generator)


def _perfect_logits(labels: torch.Tensor) -> torch.Tensor:
    """Logits +20 on the true class, -20 elsewhere: softmax and sigmoid both near-certain."""
    onehot = torch.nn.functional.one_hot(labels, 4).movedim(-1, 1).float()
    return 20.0 * (2.0 * onehot - 1.0)


def _random_logits(labels: torch.Tensor, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn((labels.shape[0], 4, *labels.shape[1:]), generator=generator)


def test_loss_names() -> None:
    assert LOSS_NAMES == ("dice", "focal", "dicefocal", "dicece")


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("name", LOSS_NAMES)
def test_perfect_prediction_scores_far_below_random(name: str, dims: int) -> None:
    loss = build_loss(name)
    labels = _labels(dims)
    perfect = loss(_perfect_logits(labels), labels.unsqueeze(1)).item()
    chance = loss(_random_logits(labels), labels.unsqueeze(1)).item()
    assert perfect < 1e-3
    assert chance > 0.1
    assert perfect < chance / 100


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("name", LOSS_NAMES)
def test_both_target_layouts_give_the_same_loss(name: str, dims: int) -> None:
    loss = build_loss(name)
    labels = _labels(dims)
    logits = _random_logits(labels)
    with_channel = loss(logits, labels.unsqueeze(1))
    without_channel = loss(logits, labels)
    assert torch.allclose(with_channel, without_channel)
    assert torch.allclose(loss(logits, labels.to(torch.uint8)), with_channel)  # label dtype


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_class_weights_change_the_loss(name: str) -> None:
    labels = _labels(3)
    logits = _random_logits(labels)
    plain = build_loss(name)(logits, labels)
    ones = build_loss(name, class_weights=[1, 1, 1, 1])(logits, labels)
    weighted = build_loss(name, class_weights=[0.1, 1.0, 2.0, 5.0])(logits, labels)
    assert torch.allclose(plain, ones)
    assert not torch.allclose(plain, weighted, rtol=1e-3)


@pytest.mark.parametrize("name", ["dice", "dicefocal"])
def test_excluded_background_drops_its_weight(name: str) -> None:
    labels = _labels(2)
    logits = _random_logits(labels)
    with_bg = build_loss(name, include_background=True)(logits, labels)
    without_bg = build_loss(name, include_background=False)(logits, labels)
    assert not torch.allclose(with_bg, without_bg)
    # Background's weight no longer matters; the tissue weights still do.
    a = build_loss(name, [0.0, 1, 2, 3], include_background=False)(logits, labels)
    b = build_loss(name, [9.0, 1, 2, 3], include_background=False)(logits, labels)
    c = build_loss(name, [9.0, 3, 2, 1], include_background=False)(logits, labels)
    assert torch.allclose(a, b)
    assert not torch.allclose(a, c)


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_gradients_flow_to_the_logits(name: str) -> None:
    labels = _labels(2)
    logits = _random_logits(labels).requires_grad_()
    build_loss(name)(logits, labels).backward()
    assert logits.grad is not None
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


def test_kwargs_reach_monai() -> None:
    labels = _labels(2)
    logits = _random_logits(labels)
    both = build_loss("dicefocal")(logits, labels)
    dice_only = build_loss("dicefocal", lambda_focal=0.0)(logits, labels)
    assert torch.allclose(dice_only, build_loss("dice")(logits, labels))
    assert dice_only < both
    gentle = build_loss("focal", gamma=0.0)(logits, labels)  # gamma 0: cross-entropy
    expected = torch.nn.functional.cross_entropy(logits, labels, reduction="none").mean() / 4
    assert torch.allclose(gentle, expected, rtol=1e-4)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"name": "tversky"}, "unknown loss 'tversky'.*dicefocal"),
        ({"name": "focal", "include_background": False}, "include_background"),
        ({"name": "dice", "class_weights": [1.0, -1.0, 1.0, 1.0]}, "class_weights"),
        ({"name": "dice", "class_weights": ["a", 1, 1, 1]}, "class_weights"),
        ({"name": "dice", "smoth_nr": 1e-5}, "smoth_nr"),
    ],
)
def test_bad_settings_raise_ibsr_error(kwargs: dict, match: str) -> None:
    with pytest.raises(IBSRError, match=match):
        build_loss(**kwargs)


def test_class_weights_must_match_the_classes() -> None:
    labels = _labels(2)
    loss = build_loss("dice", class_weights=[1.0, 1.0, 1.0])
    with pytest.raises(IBSRError, match="3 values.*4 classes"):
        loss(_random_logits(labels), labels)


def test_mismatched_target_shape_is_rejected() -> None:
    labels = _labels(2)
    with pytest.raises(ValueError, match="does not fit"):
        build_loss("dice")(_random_logits(labels), labels[:, None, None])
