"""Training configurations: YAML files with quick / cpu / full / smoke profiles and overrides.

A config file holds a base configuration and a ``profiles`` mapping; the chosen profile
is deep-merged over the base, then ``--set key.sub=value`` overrides are applied (values
parsed as YAML, so ``--set train.epochs=3`` gives an int). The merged dict is what the
engine uses and what is logged, as is.

Example:
    >>> cfg = load_config("configs/unet2d.yaml", profile="quick", overrides=["train.epochs=2"])
    >>> cfg["model"]["name"], cfg["train"]["epochs"]
    ('unet2d', 2)
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from ibsr_helpers.errors import IBSRError

__all__ = ["DEFAULTS", "load_config", "merge", "apply_overrides", "validate_config"]

#: Defaults every config starts from; files only say what differs.
DEFAULTS: dict[str, Any] = {
    "name": "run",
    "seed": 0,
    "device": "auto",
    "tracking": "mlflow",
    "model": {"name": "unet2d"},
    "data": {
        "mode": "slices",  # slices | volume | patches
        "orientation": "RAS",  # every scan is reoriented to this axis order
        "spacing": "auto",  # mm; auto: the training scans' median, recorded in the run
        "spacing_tolerance": 0.2,  # resample a scan only when its spacing differs more
        "normalize": "zscore",
        "roi": [192, 128, 192],  # smallest brain box; holds every IBSR18 brain
        "plane": "coronal",  # slices only
        "context": 0,  # slices only: k neighbours each side (2.5D -> 2k+1 channels)
        "drop_empty": True,  # slices only: skip slices with no brain
        "patch_size": [64, 64, 64],  # patches only
        # patches: uniform | foreground | class_balanced | weighted
        # slices: uniform | class_balanced
        "sampler": "class_balanced",
        "patches_per_volume": 4,
        "pos_ratio": 1.0,  # foreground sampler: positive/negative ratio
        "class_ratios": [0.0, 1.0, 1.0, 1.0],  # class_balanced sampler: bg, CSF, GM, WM
        "weight_map": "boundary",  # weighted sampler: boundary | inverse_frequency
        "augment": True,
        "gamma": None,  # augmentation: [low, high] gamma of the brain's contrast, or None
        "gpu_augment": False,  # volume/patches: run random transforms on the device
        "num_workers": 0,
    },
    "loss": {"name": "dicefocal", "class_weights": None},
    "optim": {"lr": 1e-3, "weight_decay": 1e-4, "warmup_epochs": 1, "min_lr": 1e-6},
    "train": {
        "epochs": 10,
        "steps_per_epoch": 50,
        "batch_size": 8,
        "val_every": 1,
        "precision": "auto",  # auto | fp32 | bf16 | fp16 (see ibsr_helpers.environment)
        "channels_last": True,  # 2D models, NHWC memory layout (CUDA and CPU)
        "max_val_subjects": None,  # validate on the first N validation subjects only
        "val_hd95": False,  # also score HD95 at each validation (about 1 s per subject)
        "minutes": None,  # budget: fewer steps per epoch where the recipe would take longer
    },
    "inference": {"overlap": 0.5, "sw_batch_size": 4, "tta": False, "batch_size": 16},
}

_MODES = ("slices", "volume", "patches")
_PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_TRACKING = ("mlflow", "none")
_PLANES = ("sagittal", "coronal", "axial")
#: Patch samplers, in the order the notebooks show them (``datasets.PatchDataset``).
SAMPLERS: tuple[str, ...] = ("uniform", "foreground", "class_balanced", "weighted")
#: Slice samplers (2D): every brain slice alike, or slices drawn per class.
SLICE_SAMPLERS: tuple[str, ...] = ("uniform", "class_balanced")


def merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-merge ``update`` into a copy of ``base`` (dicts merged, other values replaced)."""
    out = copy.deepcopy(dict(base))
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def apply_overrides(config: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``key.sub=value`` overrides (values parsed as YAML).

    Raises:
        IBSRError: If an override is not of the form ``key=value``.
    """
    out = copy.deepcopy(config)
    for item in overrides:
        if "=" not in item:
            raise IBSRError(f"override {item!r} is not of the form key.sub=value")
        key, raw = item.split("=", 1)
        value = _parse_value(raw)
        node = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise IBSRError(f"override {item!r}: {part!r} is not a section")
        node[parts[-1]] = value
    return out


def _parse_value(raw: str) -> Any:
    """Parse an override value: a number (``1e-4`` too, a string to YAML 1.1), else YAML."""
    text = raw.strip()
    if not text:
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return yaml.safe_load(text)


def validate_config(config: Mapping[str, Any], source: str | Path | None = None) -> None:
    """Check the settings the engine relies on.

    Raises:
        IBSRError: Naming the config file and the bad setting.
    """
    data = config["data"]
    gamma, minutes = data["gamma"], config["train"]["minutes"]
    checks = [
        (data["mode"] in _MODES, f"data.mode must be one of {_MODES}, got {data['mode']!r}"),
        (data["plane"] in _PLANES, f"data.plane must be one of {_PLANES}, got {data['plane']!r}"),
        (
            data["sampler"] in (SLICE_SAMPLERS if data["mode"] == "slices" else SAMPLERS),
            f"data.sampler must be one of {SAMPLERS} (patches) or {SLICE_SAMPLERS} (slices), "
            f"got {data['sampler']!r} for data.mode {data['mode']!r}",
        ),
        (
            len(data["class_ratios"]) == 4 and min(data["class_ratios"]) >= 0,
            "data.class_ratios needs four ratios >= 0 (background, CSF, GM, WM)",
        ),
        (len(data["roi"]) == 3, "data.roi needs three sizes"),
        (len(data["patch_size"]) == 3, "data.patch_size needs three sizes"),
        (int(data["context"]) >= 0, "data.context must be >= 0"),
        (
            gamma is None
            or (isinstance(gamma, list | tuple) and len(gamma) == 2 and 0 < gamma[0] <= gamma[1]),
            f"data.gamma must be null or [low, high] with 0 < low <= high, got {gamma!r}",
        ),
        (int(config["train"]["epochs"]) >= 1, "train.epochs must be >= 1"),
        (int(config["train"]["batch_size"]) >= 1, "train.batch_size must be >= 1"),
        (
            minutes is None
            or (isinstance(minutes, int | float) and not isinstance(minutes, bool) and minutes > 0),
            f"train.minutes must be null or a number > 0, got {minutes!r}",
        ),
        (
            config["train"]["precision"] in _PRECISIONS,
            f"train.precision must be one of {_PRECISIONS}, got {config['train']['precision']!r}",
        ),
        (
            config["tracking"] in _TRACKING,
            f"tracking must be one of {_TRACKING}, got {config['tracking']!r}",
        ),
        (
            data["spacing"] in ("auto", "native")
            or (isinstance(data["spacing"], list | tuple) and len(data["spacing"]) == 3),
            f"data.spacing must be auto, native or three numbers, got {data['spacing']!r}",
        ),
    ]
    for ok, message in checks:
        if not ok:
            raise IBSRError(message, source)


def load_config(
    path: str | Path | Mapping[str, Any],
    profile: str | None = "quick",
    overrides: Sequence[str] = (),
) -> dict[str, Any]:
    """Load a YAML config, apply a profile and overrides, fill defaults.

    Args:
        path: A YAML file, or an already loaded mapping.
        profile: Name of an entry of the file's ``profiles`` mapping (None: base only).
        overrides: ``key.sub=value`` strings, applied last.

    Returns:
        The full configuration (``profiles`` removed, ``profile`` recorded).

    Raises:
        IBSRError: If the file is missing or malformed, the profile unknown, or a
            setting invalid.
    """
    source: Path | None = None
    if isinstance(path, Mapping):
        raw: Any = copy.deepcopy(dict(path))
    else:
        source = Path(path)
        if not source.is_file():
            raise IBSRError("config file not found", source)
        try:
            raw = yaml.safe_load(source.read_text())
        except yaml.YAMLError as exc:
            raise IBSRError(f"not valid YAML ({str(exc).splitlines()[0]})", source) from None
    if not isinstance(raw, dict):
        raise IBSRError("a config file must hold a mapping", source)
    profiles = raw.pop("profiles", {}) or {}
    config = merge(DEFAULTS, raw)
    if profile is not None:
        if profile not in profiles:
            raise IBSRError(
                f"unknown profile {profile!r}; this file has {sorted(profiles)}", source
            )
        config = merge(config, profiles[profile])
    config = apply_overrides(config, overrides)
    config["profile"] = profile
    validate_config(config, source)
    return config
