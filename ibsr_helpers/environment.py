"""Runtime environment: device and mixed precision choice, seeding, a one-line summary.

Device (``device: auto``): CUDA when there is a GPU, else Apple silicon's ``mps``, else
the CPU. On ``mps`` an operation PyTorch has not written for Apple GPUs (3D
``grid_sample`` in the augmentation, for example) runs on the CPU instead when
``PYTORCH_ENABLE_MPS_FALLBACK=1`` is set before torch is imported; ``import
ibsr_helpers`` sets it on macOS, and the notebooks import it first.

Precision (``train.precision: auto``), chosen by what the device runs natively:

==========================================  ===================================
device                                      auto
==========================================  ===================================
CUDA with native bf16 (Ampere and newer)    bf16 autocast
older CUDA (Colab's T4, V100, …)             fp16 autocast with a gradient scaler
Apple ``mps``                                fp32
CPU with AVX512-BF16 or AMX (Zen 4+, SPR+)   bf16 autocast
any other CPU                                fp32
==========================================  ===================================

``fp32``, ``bf16`` or ``fp16`` force one. Weights and optimiser state stay fp32 either
way; autocast runs the convolutions in the low precision.
"""

from __future__ import annotations

import contextlib
import os
import platform
import random
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ibsr_helpers.errors import IBSRError

__all__ = [
    "PRECISIONS",
    "Precision",
    "get_device",
    "choose_precision",
    "cpu_has_native_bf16",
    "seed_everything",
    "in_colab",
    "colab_secrets_to_env",
    "storage",
    "environment_summary",
]

PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16", "fp16")
_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def get_device(preferred: str | None = None) -> torch.device:
    """The device to train on: ``preferred`` if given, else CUDA, else ``mps``, else CPU.

    Args:
        preferred: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"`` … or None/``"auto"``.

    Raises:
        IBSRError: If the preferred device is not available here.
    """
    if preferred and preferred != "auto":
        device = torch.device(preferred)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise IBSRError(f"device {preferred!r} asked for, but no CUDA GPU is available")
        if device.type == "mps" and not torch.backends.mps.is_available():
            raise IBSRError(f"device {preferred!r} asked for, but no Apple GPU is available")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX on x86, BF16 on Arm)."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    if any(getattr(torch.cpu, name, lambda: False)() for name in checks):
        return True
    if platform.machine().lower() in ("arm64", "aarch64") and sys.platform == "linux":
        with contextlib.suppress(OSError):
            return " bf16" in open("/proc/cpuinfo").read()
    return False


@dataclass(frozen=True)
class Precision:
    """The arithmetic of a training or inference run.

    Attributes:
        name: ``"fp32"``, ``"bf16"`` or ``"fp16"``.
        device_type: ``"cuda"``, ``"cpu"`` or ``"mps"``.
    """

    name: str
    device_type: str

    @property
    def dtype(self) -> torch.dtype | None:
        """The autocast dtype, None for fp32."""
        return _DTYPES[self.name]

    @property
    def needs_scaler(self) -> bool:
        """fp16 gradients underflow without loss scaling; bf16 has fp32's range."""
        return self.name == "fp16"

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        """Autocast to :attr:`dtype` (a no-op for fp32)."""
        if self.dtype is None:
            yield
            return
        with torch.autocast(self.device_type, dtype=self.dtype):
            yield

    def scaler(self) -> torch.amp.GradScaler:
        """A gradient scaler, enabled only where :attr:`needs_scaler`."""
        return torch.amp.GradScaler(self.device_type, enabled=self.needs_scaler)


def choose_precision(device: torch.device | str, requested: str = "auto") -> Precision:
    """Pick the precision for ``device`` (see the module table).

    Args:
        device: Where the model runs.
        requested: ``"auto"``, ``"fp32"``, ``"bf16"`` or ``"fp16"``.

    Raises:
        IBSRError: If ``requested`` is unknown.
    """
    device = torch.device(device)
    requested = "fp32" if requested in (None, False) else str(requested)
    if requested not in PRECISIONS:
        raise IBSRError(f"train.precision must be one of {PRECISIONS}, got {requested!r}")
    if requested != "auto":
        return Precision(requested, device.type)
    if device.type == "cuda":
        native = torch.cuda.is_bf16_supported(including_emulation=False)
        return Precision("bf16" if native else "fp16", "cuda")
    if device.type == "cpu" and cpu_has_native_bf16():
        return Precision("bf16", "cpu")
    return Precision("fp32", device.type)


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


def colab_secrets_to_env(names: Sequence[str]) -> list[str]:
    """Copy Colab *Secrets* (the key icon) into environment variables; nothing elsewhere.

    A variable already set is kept, and a secret that is missing or not shared with the
    notebook is skipped.

    Returns:
        The names now set from secrets.
    """
    if not in_colab():
        return []
    from google.colab import userdata

    copied = []
    for name in names:
        if os.environ.get(name):
            continue
        try:
            value = userdata.get(name)
        except Exception:  # SecretNotFoundError, NotebookAccessError: not shared
            continue
        if value:
            os.environ[name], copied = value, [*copied, name]
    return copied


def storage(
    data_dir: str | None = None,
    runs_dir: str = "runs",
    use_drive: bool = False,
    drive_folder: str = "MyDrive/ibsr18-course",
) -> tuple[str | None, str]:
    """Where a notebook reads its data and writes its runs.

    Returned as given, unless ``use_drive`` on Colab: then Google Drive is mounted, runs go
    to ``<drive_folder>/runs`` and the data, unless given, is ``<drive_folder>/IBSR18``;
    both survive a Colab runtime reset (the local disk does not).

    Args:
        data_dir: The notebook's ``DATA_DIR`` parameter.
        runs_dir: The notebook's ``RUNS_DIR`` parameter.
        use_drive: The notebook's ``USE_DRIVE`` parameter.
        drive_folder: The course's folder in the student's Drive.

    Returns:
        ``(data_dir, runs_dir)`` to use.
    """
    if not use_drive:
        return data_dir, runs_dir
    if not in_colab():
        print("USE_DRIVE only applies on Google Colab; using the local folders.")
        return data_dir, runs_dir
    from pathlib import Path

    from google.colab import drive  # type: ignore[import-not-found]

    drive.mount("/content/drive")
    base = Path("/content/drive") / drive_folder
    (base / "runs").mkdir(parents=True, exist_ok=True)
    if data_dir is None:
        if (base / "IBSR18").is_dir():
            data_dir = str(base / "IBSR18")
        else:
            print(f"No IBSR18 in {base / 'IBSR18'}: upload it there (see data/README.md).")
    return data_dir, str(base / "runs")


def environment_summary() -> str:
    """One line with Python, torch, MONAI versions, the device and the CPU threads."""
    import monai

    from ibsr_helpers import __version__

    device = get_device()
    if device.type == "cuda":
        dev = f"CUDA {torch.cuda.get_device_name(device)}"
    elif device.type == "mps":
        dev = "Apple GPU (mps)"
    else:
        dev = f"CPU ({torch.get_num_threads()} threads)"
    where = "Colab" if in_colab() else platform.node() or "local"
    return (
        f"ibsr_helpers {__version__} | Python {platform.python_version()}"
        f" | torch {torch.__version__} | MONAI {monai.__version__} | device: {dev}"
        f" | precision: {choose_precision(device).name} | {where}"
    )
