from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from ibsr_helpers.config import load_config
from ibsr_helpers.errors import IBSRError

CONFIGS = sorted((Path(__file__).parents[1] / "configs").glob("*.yaml"))
PROFILES = [
    (path, profile) for path in CONFIGS for profile in yaml.safe_load(path.read_text())["profiles"]
]


def test_every_config_has_quick_full_and_smoke_profiles():
    for path in CONFIGS:
        assert {"quick", "full", "smoke"} <= set(yaml.safe_load(path.read_text())["profiles"])


@pytest.mark.parametrize(("path", "profile"), PROFILES, ids=[f"{p.stem}-{q}" for p, q in PROFILES])
def test_every_config_loads_and_builds(path, profile):
    from ibsr_helpers.models import build_network
    from ibsr_helpers.plan import specs

    cfg = load_config(path, profile)
    assert cfg["profile"] == profile
    spec = specs(cfg)
    assert (spec.model.dims == 2) == (spec.sampling.mode == "slices")
    build_network(spec.model)


def test_slice_crop_must_suit_the_networks_downsampling():
    from ibsr_helpers.plan import specs

    unet2d = Path(__file__).parents[1] / "configs" / "unet2d.yaml"
    cfg = load_config(unet2d, "quick", ["data.slice_crop=[128, 96]"])
    assert specs(cfg).input.sampling.slice_crop == (128, 96)
    with pytest.raises(IBSRError, match=r"slice_crop \[128, 100\].*multiple of 32"):
        specs(load_config(unet2d, "quick", ["data.slice_crop=[128, 100]"]))


def test_profile_and_overrides(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text(
        "model: {name: unet2d}\ntrain: {epochs: 9}\nprofiles:\n  quick: {train: {epochs: 2}}\n"
    )
    cfg = load_config(f, "quick", ["train.batch_size=3", "data.plane=axial", "optim.lr=1e-4"])
    assert cfg["train"]["epochs"] == 2 and cfg["train"]["batch_size"] == 3
    assert cfg["data"]["plane"] == "axial" and cfg["optim"]["lr"] == 1e-4
    assert cfg["train"]["steps_per_epoch"] == 50  # default kept


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("model: [unclosed", "not valid YAML"),
        ("- a\n- b\n", "must hold a mapping"),
        ("data: {plane: oblique}\nprofiles: {quick: {}}", "data.plane"),
        ("data: {mode: slices, sampler: weighted}\nprofiles: {quick: {}}", "slices"),
        ("data: {class_ratios: [1, 1]}\nprofiles: {quick: {}}", "class_ratios"),
        ("data: {gamma: [1.5, 0.7]}\nprofiles: {quick: {}}", "data.gamma"),
        ("data: {gamma: 1.2}\nprofiles: {quick: {}}", "data.gamma"),
        ("data: {slice_crop: [128]}\nprofiles: {quick: {}}", "data.slice_crop"),
        ("data: {slice_crop: [128, 0]}\nprofiles: {quick: {}}", "data.slice_crop"),
        ("train: {minutes: 0}\nprofiles: {quick: {}}", "train.minutes"),
        ("train: {minutes: soon}\nprofiles: {quick: {}}", "train.minutes"),
    ],
)
def test_bad_config_names_file(tmp_path, text, match):
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    with pytest.raises(IBSRError, match=match) as err:
        load_config(f, "quick")
    assert "bad.yaml" in str(err.value)


def test_unknown_profile(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("profiles: {quick: {}}\n")
    with pytest.raises(IBSRError, match="unknown profile 'full'"):
        load_config(f, "full")
    with pytest.raises(IBSRError, match="key.sub=value"):
        load_config(f, "quick", ["nonsense"])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.epoch=3", "--set train.epoch: unknown setting; did you mean train.epochs?"),
        ("inference.tta=true", "--set inference.tta: unknown setting"),
        ("model.encoder_nam=resnet34", "did you mean model.encoder_name?"),
        ("loss.gama=2", "(for loss 'dicefocal'); did you mean loss.gamma?"),
        ("train.epochs=three", "--set train.epochs: must be an integer, got 'three'"),
        ("seed=1.5", "--set seed: must be an integer, got 1.5"),
        ("train.minutes=false", "--set train.minutes: must be null or a number, got False"),
        ("data.roi=5", "--set data.roi: must be a list, got 5"),
    ],
)
def test_an_unknown_or_mistyped_override_is_refused(override, message):
    with pytest.raises(IBSRError) as err:
        load_config(CONFIGS[0].parent / "unet2d.yaml", "smoke", [override])
    assert message in str(err.value)


def test_settings_of_the_named_network_and_loss_are_known():
    cfg = load_config(
        CONFIGS[0].parent / "unet3d_patches.yaml",
        "smoke",
        ["model.full_resolution_skip=true", "model.dropout=0.1", "loss.lambda_dice=0.5"],
    )
    assert cfg["model"]["dropout"] == 0.1 and cfg["loss"]["lambda_dice"] == 0.5


def test_an_unknown_setting_in_any_profile_of_a_file_names_the_file(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("model: {name: unet2d}\nprofiles:\n  quick: {}\n  full: {train: {epoch: 3}}\n")
    with pytest.raises(IBSRError) as err:
        load_config(f, "quick")  # the bad profile is not the one asked for
    assert str(err.value) == (
        f"{f}: profiles.full: train.epoch: unknown setting; did you mean train.epochs?"
    )
    f.write_text("model: {name: unet2d}\noptim: {lr: 1e-3}\n")
    with pytest.raises(IBSRError, match="write 1.0e-3"):
        load_config(f, None)


def test_config_files_hold_settings_with_one_line_comments():
    root = Path(__file__).parents[1] / "configs"
    files = [*CONFIGS, *sorted((root / "profiles").glob("*.yaml")), *sorted(root.glob("recipes/*"))]
    for path in files:
        lines = path.read_text().splitlines()
        assert lines[0].startswith("# "), f"{path.name}: no first-line comment saying what it is"
        comment = [line.lstrip().startswith("#") for line in lines]
        runs = [i for i in range(1, len(lines)) if comment[i] and comment[i - 1]]
        assert not runs, f"{path.name}:{runs[0] + 1}: a comment block; history goes to benchmarks/"
        for number, line in enumerate(lines, 1):
            assert len(line) <= 120, f"{path.name}:{number}: too long for a one-line comment"
            assert not re.search(r"20\d\d-\d\d-\d\d|\b[0-9a-f]{7}\b", line), f"{path.name}:{number}"


def test_the_smoke_block_lives_in_one_place(tmp_path):
    from ibsr_helpers.config import shared_profile

    shared = shared_profile(CONFIGS[0], "smoke")
    assert shared["train"]["steps_per_epoch"] == 2 and shared["data"]["spacing"] == [2, 3, 2]
    for path in CONFIGS:
        own = yaml.safe_load(path.read_text())["profiles"]["smoke"]
        assert "train" not in own and not {"spacing", "roi"} & set(own.get("data", {})), path.name
        cfg = load_config(path, "smoke")
        assert cfg["train"]["max_val_subjects"] == 1 and cfg["data"]["roi"] == [80, 64, 80]
    copy = tmp_path / "unet2d.yaml"  # a config away from configs/: its own entry only
    copy.write_text((CONFIGS[-1].parent / "unet2d.yaml").read_text())
    assert load_config(copy, "smoke")["train"]["steps_per_epoch"] != 2


def test_profiles_join_with_plus_in_order():
    path = CONFIGS[0].parent / "unet2d.yaml"
    cfg = load_config(path, "cpu+smoke")
    assert cfg["profile"] == "cpu+smoke" and cfg["data"]["context"] == 2
    assert cfg["train"]["steps_per_epoch"] == 2 and cfg["model"]["encoder_depth"] == 3
    with pytest.raises(IBSRError, match="unknown profile 'cpuu'"):
        load_config(path, "cpuu+smoke")
