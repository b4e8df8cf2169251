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
import difflib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from ibsr_helpers.errors import IBSRError

__all__ = [
    "DEFAULTS",
    "load_config",
    "merge",
    "apply_overrides",
    "validate_config",
    "check_settings",
    "leaves",
]

#: Defaults every config starts from; files only say what differs.
DEFAULTS: dict[str, Any] = {
    "name": "run",
    "experiment": "ibsr18",  # MLflow experiment
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
        "slice_crop": None,  # slices only: train on random [H, W] crops of each slice (None: whole)
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
    "inference": {"overlap": 0.5, "sw_batch_size": 4, "batch_size": 16},
}

#: Settings whose default is None, or that take more than their default's type.
_TYPES: dict[str, tuple[type, ...]] = {
    "data.spacing": (str, list),
    "data.gamma": (type(None), list),
    "data.slice_crop": (type(None), list),
    "loss.class_weights": (type(None), list),
    "optim.warmup_epochs": (int, float),
    "train.max_val_subjects": (type(None), int),
    "train.minutes": (type(None), int, float),
    "profile": (type(None), str),
}
#: Sections whose further settings are those of the network or loss they name
#: (:func:`ibsr_helpers.models.model_settings`, :func:`ibsr_helpers.losses.loss_settings`).
_OPEN_SECTIONS: tuple[str, ...] = ("model", "loss")

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


def leaves(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config as ``{"section.key": value}`` (lists and other values are leaves).

    Example:
        >>> leaves({"optim": {"lr": 0.001}, "seed": 0})
        {'optim.lr': 0.001, 'seed': 0}
    """
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(leaves(value, name + "."))
        else:
            out[name] = value
    return out


def _open_settings(section: str, name: Any) -> frozenset[str]:
    """The settings of the network (``model``) or loss (``loss``) named ``name``."""
    if section == "model":
        from ibsr_helpers.models import model_settings

        return model_settings(str(name))
    from ibsr_helpers.losses import loss_settings

    return loss_settings(str(name))


_TYPE_NAMES: dict[type, str] = {
    bool: "true/false",
    int: "an integer",
    float: "a number",
    str: "a word",
    list: "a list",
    type(None): "null",
}


def _type_problem(key: str, value: Any, default: Any) -> str | None:
    """Why ``value`` cannot be setting ``key`` (whose default is ``default``), or None."""
    allowed = _TYPES.get(key)
    if allowed is None:
        kind = type(default)
        allowed = (int, float) if kind is float else (kind,)
    accepted = allowed + ((tuple,) if list in allowed else ())
    if isinstance(value, accepted) and not (isinstance(value, bool) and bool not in allowed):
        return None
    wanted = " or ".join(_TYPE_NAMES[t] for t in allowed if not (t is int and float in allowed))
    hint = ""
    if isinstance(value, str) and float in allowed and "e" in value.lower():
        hint = " (YAML reads 1e-3 as text: write 1.0e-3)"
    return f"{key}: must be {wanted}, got {value!r}{hint}"


def check_settings(
    config: Mapping[str, Any], source: str | Path | None = None, origin: str = ""
) -> None:
    """Refuse unknown settings (naming the nearest known one) and values of the wrong type.

    Known settings are those of :data:`DEFAULTS`; under ``model`` and ``loss`` also those
    of the network or loss the section names (the constructor's keywords).

    Args:
        config: A full or partial config (e.g. one profile of a file).
        source: The file it came from, named in the error.
        origin: Put before the setting's name in the error, e.g. ``"--set "``.

    Raises:
        IBSRError: ``train.epoch: unknown setting; did you mean train.epochs?``, or
            ``train.epochs: must be an integer, got 'three'``.
    """
    known = {**leaves(DEFAULTS), "profile": None}
    for key, value in leaves(config).items():
        section = key.split(".", 1)[0]
        if key in known:
            problem = _type_problem(key, value, known[key])
            if problem is not None:
                raise IBSRError(origin + problem, source)
            continue
        if key in DEFAULTS:  # a section given as a single value
            raise IBSRError(f"{origin}{key}: must be a mapping of settings, got {value!r}", source)
        candidates, where = list(known), ""
        if section in _OPEN_SECTIONS:
            name = (config.get(section) or {}).get("name", DEFAULTS[section]["name"])
            settings = _open_settings(section, name)
            if key.split(".")[1] in settings:
                continue
            candidates += [f"{section}.{k}" for k in settings]
            where = f" (for {section} {name!r})"
        near = difflib.get_close_matches(key, candidates, n=1, cutoff=0.6)
        hint = f"; did you mean {near[0]}?" if near else ""
        raise IBSRError(f"{origin}{key}: unknown setting{where}{hint}", source)


def validate_config(config: Mapping[str, Any], source: str | Path | None = None) -> None:
    """Check the settings the engine relies on.

    Raises:
        IBSRError: Naming the config file and the bad setting.
    """
    check_settings(config, source)
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
            data["slice_crop"] is None
            or (
                isinstance(data["slice_crop"], list | tuple)
                and len(data["slice_crop"]) == 2
                and all(isinstance(c, int) and c > 0 for c in data["slice_crop"])
            ),
            f"data.slice_crop must be null or [height, width] > 0, got {data['slice_crop']!r}",
        ),
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


def shared_profile(source: Path | None, name: str) -> dict[str, Any]:
    """The settings a profile shares across configs: ``profiles/<name>.yaml`` beside the file.

    ``configs/profiles/smoke.yaml`` holds the smoke grid and step counts once; a config's
    own ``smoke`` entry then adds its tiny network. None for a mapping or a missing file.
    """
    shared = source.parent / "profiles" / f"{name}.yaml" if source is not None else None
    if shared is None or not shared.is_file():
        return {}
    block = yaml.safe_load(shared.read_text()) or {}
    if not isinstance(block, dict):
        raise IBSRError("a shared profile must hold a mapping", shared)
    check_settings(merge(DEFAULTS, block), shared)
    return block


def load_config(
    path: str | Path | Mapping[str, Any],
    profile: str | None = "quick",
    overrides: Sequence[str] = (),
) -> dict[str, Any]:
    """Load a YAML config, apply a profile and overrides, fill defaults.

    Args:
        path: A YAML file, or an already loaded mapping.
        profile: Name of an entry of the file's ``profiles`` mapping (None: base only), or
            several joined by ``+``, applied in order: ``cpu+smoke`` is the cpu profile
            on the smoke grid (how CI runs the notebooks' cpu path). A profile's shared
            block (:func:`shared_profile`) comes before the file's own entry.
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
    if not isinstance(profiles, dict) or not all(isinstance(p, dict) for p in profiles.values()):
        raise IBSRError("profiles must map each profile's name to its settings", source)
    config = merge(DEFAULTS, raw)
    check_settings(config, source)
    for name, settings in profiles.items():  # every profile, not only the one asked for
        check_settings(merge(config, settings), source, origin=f"profiles.{name}: ")
    for part in profile.split("+") if profile else []:  # "cpu+smoke": cpu, then smoke
        if part not in profiles:
            raise IBSRError(f"unknown profile {part!r}; this file has {sorted(profiles)}", source)
        config = merge(merge(config, shared_profile(source, part)), profiles[part])
    config = apply_overrides(config, overrides)
    config["profile"] = profile
    check_settings(config, origin="--set ")  # the file's own settings passed above
    validate_config(config, source)
    return config
