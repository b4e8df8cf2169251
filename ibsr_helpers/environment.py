"""Runtime environment: device choice, seeding and a one-line summary for notebooks."""

from __future__ import annotations

import os
import platform
import random
import sys

import numpy as np
import torch

__all__ = ["get_device", "seed_everything", "in_colab", "environment_summary"]


def get_device(preferred: str | None = None) -> torch.device:
    """The device to train on: ``preferred`` if given, else CUDA when available, else CPU.

    Args:
        preferred: ``"cpu"``, ``"cuda"``, ``"cuda:1"`` … or None/``"auto"``.
    """
    if preferred and preferred != "auto":
        return torch.device(preferred)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def seed_everything(seed: int, deterministic: bool = False) -> int:
    """Seed Python, NumPy and torch (all devices).

    Args:
        seed: The seed.
        deterministic: Also ask cuDNN for deterministic kernels (slower).

    Returns:
        The seed, so it can be logged.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    os.environ["PYTHONHASHSEED"] = str(seed)
    if deterministic:
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    return seed


def in_colab() -> bool:
    """True when running inside Google Colab."""
    return "google.colab" in sys.modules


def environment_summary() -> str:
    """One line with Python, torch, MONAI versions, the device and the CPU threads."""
    import monai

    from ibsr_helpers import __version__

    device = get_device()
    if device.type == "cuda":
        dev = f"CUDA {torch.cuda.get_device_name(device)}"
    else:
        dev = f"CPU ({torch.get_num_threads()} threads)"
    where = "Colab" if in_colab() else platform.node() or "local"
    return (
        f"ibsr_helpers {__version__} | Python {platform.python_version()}"
        f" | torch {torch.__version__} | MONAI {monai.__version__} | device: {dev} | {where}"
    )
