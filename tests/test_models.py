"""Tests for ibsr_helpers.models: every network builds, runs and is sized by its settings."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
import torch

from ibsr_helpers import models
from ibsr_helpers.config import DEFAULTS
from ibsr_helpers.errors import IBSRError
from ibsr_helpers.plan import specs

# Tiny inputs: the smallest the deepest default network accepts (2D: 32, 3D: 16).
INPUTS = {2: (2, 1, 64, 64), 3: (2, 1, 32, 32, 32)}
EXTRA = {"unetr": {"img_size": (32, 32, 32)}}


def _forward(model: torch.nn.Module, shape: tuple[int, ...]) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(torch.randn(shape))


def test_model_names_match_the_course() -> None:
    assert set(models.MODEL_NAMES) == {"unet2d", "efficientunet2d", "unet3d", "unetr", "segresnet"}


@pytest.mark.parametrize("name", models.MODEL_NAMES)
def test_every_model_builds_and_keeps_the_spatial_shape(name: str) -> None:
    dims = models.spatial_dims(name)
    model = models.build_model(name, in_channels=1, out_channels=4, **EXTRA.get(name, {}))
    shape = INPUTS[dims]
    assert all(side % models.size_divisor(name, **EXTRA.get(name, {})) == 0 for side in shape[2:])
    out = _forward(model, shape)
    assert out.shape == (2, 4, *shape[2:])
    assert torch.isfinite(out).all()
    assert models.count_parameters(model) > 100_000


def test_spatial_dims() -> None:
    assert {n: models.spatial_dims(n) for n in models.MODEL_NAMES} == {
        "unet2d": 2,
        "efficientunet2d": 2,
        "unet3d": 3,
        "unetr": 3,
        "segresnet": 3,
    }


@pytest.mark.parametrize("name", ["unet2d", "efficientunet2d"])
def test_two_and_a_half_d_takes_neighbouring_slices(name: str) -> None:
    model = models.build_model(name, in_channels=5, out_channels=4)
    assert _forward(model, (2, 5, 64, 64)).shape == (2, 4, 64, 64)
    with pytest.raises(RuntimeError):  # the first convolution really expects 5 channels
        _forward(model, (2, 1, 64, 64))


@pytest.mark.parametrize("name", ["unet2d", "efficientunet2d"])
def test_full_resolution_skip_feeds_the_input_to_a_last_decoder_block(name: str) -> None:
    plain = models.build_model(name, in_channels=5, out_channels=4)
    model = models.build_model(name, in_channels=5, out_channels=4, full_resolution_skip=True)
    assert isinstance(model, models.FullResolutionUnet)
    seen: dict[str, torch.Tensor] = {}

    def keep(module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        seen["decoded"], seen["skip"] = args[0], kwargs["skip_connection"]

    model.full_resolution.register_forward_pre_hook(keep, with_kwargs=True)
    x = torch.randn(2, 5, 64, 64)
    model.eval()
    with torch.no_grad():
        out = model(x)
    assert out.shape == (2, 4, 64, 64)
    assert seen["skip"] is x and seen["decoded"].shape[-2:] == (64, 64)
    block = sum(p.numel() for p in model.full_resolution.parameters())
    assert models.count_parameters(model) == models.count_parameters(plain) + block
    first = model.full_resolution.conv1[0]
    assert first.in_channels == seen["decoded"].shape[1] + 5  # decoder width + the slices
    # The block changes what the head sees: zeroing its skip changes the logits.
    with torch.no_grad():
        zeroed = model.unet.segmentation_head(
            model.full_resolution(seen["decoded"], 64, 64, skip_connection=torch.zeros_like(x))
        )
    assert not torch.allclose(out, zeroed)


@pytest.mark.parametrize("num_res_units", [0, 2])
def test_unet3d_full_resolution_skip_sees_the_input_at_full_resolution(num_res_units: int) -> None:
    small = {"channels": [8, 16, 32], "strides": [2, 2], "num_res_units": num_res_units}
    plain = models.build_model("unet3d", **small)
    model = models.build_model("unet3d", full_resolution_skip=True, **small)
    assert isinstance(model, models.FullResolutionUNet3d)
    seen: dict[str, torch.Tensor] = {}
    model.up.register_forward_hook(lambda m, args, out: seen.update(up=out))
    model.refine.register_forward_pre_hook(lambda m, args: seen.update(refine_in=args[0]))
    x = torch.randn(1, 1, 16, 16, 24)
    model.eval()
    with torch.no_grad():
        out = model(x)
    assert out.shape == (1, 4, 16, 16, 24)
    # The last stage works at the input's size, 8 // 2 = 4 features wide, and gets the input.
    assert seen["up"].shape == (1, 4, 16, 16, 24)
    assert torch.equal(seen["refine_in"][:, 4:], x)
    # The plain network's encoder and middle are kept; its last layer is replaced.
    assert models.count_parameters(model.down) + models.count_parameters(model.middle) == (
        models.count_parameters(plain.model[0]) + models.count_parameters(plain.model[1])
    )
    # The input reaches the logits through the new stage, not only through the encoder.
    with torch.no_grad():
        cut = model.head(model.refine(torch.cat([seen["up"], torch.zeros_like(x)], dim=1)))
    assert not torch.allclose(out, cut)


def test_full_resolution_skip_is_a_config_setting_and_reloads() -> None:
    from ibsr_helpers.config import load_config

    cfg = load_config(
        {"model": {"name": "unet2d", "full_resolution_skip": True}, "data": {"context": 2}}, None
    )
    spec = specs(cfg).model
    model = models.build_network(spec)
    again = models.build_network(spec)
    again.load_state_dict(model.state_dict())  # strict: the same keys and shapes
    assert any(k.startswith("full_resolution.") for k in model.state_dict())
    assert spec.divisor == 32


def test_size_divisor_follows_the_settings() -> None:
    assert models.size_divisor("unet2d") == 32
    assert models.size_divisor("unet2d", encoder_depth=4) == 16
    assert models.size_divisor("efficientunet2d") == 32
    assert models.size_divisor("unet3d") == 16
    assert models.size_divisor("unet3d", channels=[8, 16, 32]) == 4
    assert models.size_divisor("unet3d", channels=[8, 16, 32], strides=[2, 3]) == 6
    assert models.size_divisor("unet3d", channels=[8, 16, 32], strides=[[2, 2, 1], [2, 2, 1]]) == 4
    assert models.size_divisor("segresnet") == 8
    assert models.size_divisor("segresnet", blocks_down=[1, 2, 2]) == 4
    assert models.size_divisor("unetr", img_size=[32, 32, 32]) == 16


def test_size_divisor_is_what_the_network_needs() -> None:
    # Sides that are multiples of the divisor work; one that is not breaks the skips.
    small = {"channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 0}
    model = models.build_model("unet3d", **small)
    k = models.size_divisor("unet3d", **small)
    assert _forward(model, (1, 1, k, k, 2 * k)).shape == (1, 4, k, k, 2 * k)
    with pytest.raises(RuntimeError):
        _forward(model, (1, 1, k, k, k + 2))


def test_kwargs_reach_the_constructor() -> None:
    default = models.count_parameters(models.build_model("unet3d"))
    # YAML gives lists; MONAI wants tuples.
    small = models.build_model("unet3d", channels=[8, 16, 32], strides=[2, 2], num_res_units=1)
    assert models.count_parameters(small) < default / 10
    assert _forward(small, (1, 1, 16, 16, 16)).shape == (1, 4, 16, 16, 16)
    wider = models.build_model("segresnet", init_filters=32)
    assert models.count_parameters(wider) > 3 * models.count_parameters(
        models.build_model("segresnet")
    )
    unetr = models.build_model(
        "unetr", img_size=[32, 32, 32], hidden_size=96, mlp_dim=192, num_heads=4, feature_size=8
    )
    assert models.count_parameters(unetr) < 5_000_000
    resnet34 = models.build_model("unet2d", encoder_name="resnet34")
    assert models.count_parameters(resnet34) > models.count_parameters(models.build_model("unet2d"))


def test_out_channels_and_dropout_reach_the_network() -> None:
    model = models.build_model("unet3d", out_channels=2, channels=[4, 8], strides=[2], dropout=0.5)
    assert any(isinstance(m, torch.nn.Dropout) and m.p == 0.5 for m in model.modules())
    assert _forward(model, (1, 1, 8, 8, 8)).shape == (1, 2, 8, 8, 8)


def test_unknown_model_lists_the_known_ones() -> None:
    with pytest.raises(IBSRError, match="unknown model 'unet4d'.*unet2d.*segresnet"):
        models.build_model("unet4d")
    with pytest.raises(IBSRError, match="unknown model"):
        models.spatial_dims("unet4d")
    with pytest.raises(IBSRError, match="unknown model"):
        models.size_divisor("unet4d")


@pytest.mark.parametrize(
    ("name", "kwargs", "match"),
    [
        ("unet3d", {"chanels": [8, 16]}, "chanels"),
        ("unetr", {}, "img_size"),
        ("unetr", {"img_size": [32, 32, 40]}, "divisible by 16"),
        ("unet2d", {"encoder_name": "resnet19"}, "resnet19"),
        ("segresnet", {"in_channels": 0}, "in_channels"),
    ],
)
def test_bad_settings_raise_ibsr_error(name: str, kwargs: dict, match: str) -> None:
    with pytest.raises(IBSRError, match=match):
        models.build_model(name, **kwargs)


def test_importing_models_has_no_side_effects_and_smp_works_at_first_use() -> None:
    code = (
        "import sys, ibsr_helpers.models, ibsr_helpers.environment as env; "
        "assert 'torchvision' not in sys.modules; "
        "assert 'segmentation_models_pytorch' not in sys.modules; "
        "smp = env.import_smp(); env.import_smp(); import torchvision, timm; "
        "print(torchvision.__version__, smp.__version__)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]


def test_the_model_spec_reads_channels_settings_and_layout() -> None:
    from ibsr_helpers.config import load_config

    cfg = load_config(
        {
            "model": {"name": "unet3d", "channels": [4, 8, 16], "num_res_units": 0},
            "data": {"mode": "patches"},
        },
        None,
    )
    spec = specs(cfg).model
    model = models.build_network(spec)
    assert spec.divisor == 4 and spec.in_channels == 1
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv3d))
    assert conv.out_channels == 4
    assert conv.weight.is_contiguous(memory_format=torch.channels_last_3d)  # CPU layout
    cfg2 = load_config({"model": {"name": "unet2d"}, "data": {"context": 2}}, None)
    spec2 = specs(cfg2).model
    first = next(m for m in models.build_network(spec2).modules() if isinstance(m, torch.nn.Conv2d))
    assert first.in_channels == 5 and spec2.divisor == 32


def test_offline_pretrained_weights_fail_fast(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))  # nothing cached here
    before = constants.HF_HUB_OFFLINE
    start = time.perf_counter()
    with pytest.raises(IBSRError, match="resnet18.*could not be downloaded.*encoder_weights"):
        models.build_model("unet2d", encoder_weights="imagenet")
    assert time.perf_counter() - start < 10
    assert constants.HF_HUB_OFFLINE == before  # the offline switch is put back


def test_an_unreachable_hub_fails_fast_through_the_environment_probe(
    monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    """models asks ibsr_helpers.environment whether the Hub is reachable, at build time."""
    from huggingface_hub import constants

    from ibsr_helpers import environment

    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))  # nothing cached here
    probed: list[bool] = []

    def unreachable(timeout: float = 3.0) -> bool:
        probed.append(True)
        return False

    monkeypatch.setattr(environment, "_hub_reachable", unreachable)
    start = time.perf_counter()
    with pytest.raises(IBSRError, match="resnet18.*could not be downloaded"):
        models.build_model("unet2d", encoder_weights="imagenet")
    assert probed and time.perf_counter() - start < 10
    assert constants.HF_HUB_OFFLINE is False  # the offline switch is put back


def _model(name: str, mode: str = "volume", **model: object) -> models.ModelSpec:
    """The model spec the plan makes of a config (whole volumes: a 192 x 128 x 192 box)."""
    data = {"mode": mode, "roi": [192, 128, 192], "patch_size": [64, 64, 64]}
    return specs(
        {
            **DEFAULTS,
            "model": {"name": name, **model},
            "data": data | {k: v for k, v in DEFAULTS["data"].items() if k not in data},
        }
    ).model


def test_fixed_size_is_unetrs_img_size_and_none_elsewhere() -> None:
    assert _model("unetr").fixed_size == (192, 128, 192)
    assert _model("unetr", "patches").fixed_size == (64, 64, 64)
    assert _model("unetr", img_size=[96, 80, 96]).fixed_size == (96, 80, 96)
    assert _model("unetr", "patches", img_size=32).fixed_size == (32, 32, 32)
    for name in ("unet2d", "efficientunet2d", "unet3d", "segresnet"):
        assert _model(name).fixed_size is None
    with pytest.raises(IBSRError, match="unknown model"):
        _model("unet4d")


def test_the_model_spec_gives_unetr_its_fixed_size_unless_set() -> None:
    assert _model("unetr", feature_size=8).settings == {
        "feature_size": 8,
        "img_size": [192, 128, 192],
    }
    assert _model("unetr", "patches").settings["img_size"] == [64, 64, 64]
    assert _model("unetr", img_size=[96, 80, 96]).settings["img_size"] == [96, 80, 96]
    assert _model("unet3d", channels=[4, 8]).settings == {"channels": [4, 8]}
