"""What this machine and installation can do: device, precision, imports, the network.

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

Installation: :func:`import_smp` imports ``segmentation_models_pytorch`` even where the
installed torchvision's compiled ops cannot load (see the comment above it).

Network: :func:`hub_offline` tells whether pretrained weights can be downloaded from the
Hugging Face Hub here (offline mode asked for, or the Hub unreachable), so that building a
network with pretrained weights fails fast instead of retrying (:mod:`ibsr_helpers.models`).

Also seeding (:func:`seed_everything`), Colab's storage and secrets, and a one-line
:func:`environment_summary`.
"""

from __future__ import annotations

import contextlib
import os
import platform
import random
import socket
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

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
    "rng_state",
    "set_rng_state",
    "in_colab",
    "colab_secrets_to_env",
    "storage",
    "environment_summary",
    "import_smp",
    "hub_offline",
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


def rng_state() -> dict[str, Any]:
    """The random generators' states (Python, NumPy, torch on the CPU and every GPU).

    Saved in a checkpoint, they let a resumed run draw what an uninterrupted one would
    (dropout, stochastic depth); only tensors, lists and numbers, so the checkpoint still
    loads with ``weights_only=True``.
    """
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {
        "python": [version, list(internal), gauss_next],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` saved (the GPU states where as many GPUs are seen)."""
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if state["cuda"] and len(state["cuda"]) == gpus:
        torch.cuda.set_rng_state_all(state["cuda"])


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
    use_drive: bool | None = None,
    drive_folder: str = "MyDrive/ibsr18-course",
) -> tuple[str | None, str]:
    """Where a notebook reads its data and writes its runs.

    On Colab, by default (``use_drive`` None or True), Google Drive is mounted, runs go to
    ``<drive_folder>/runs`` and the data, unless given, is ``<drive_folder>/IBSR18``: both
    survive a runtime reset and are shared by every notebook (each Colab notebook is its
    own runtime). ``use_drive=False`` keeps the runtime's own disk. Elsewhere the folders
    are returned as given.

    Args:
        data_dir: The notebook's ``DATA_DIR`` parameter.
        runs_dir: The notebook's ``RUNS_DIR`` parameter.
        use_drive: The notebook's ``USE_DRIVE`` parameter (None: Drive on Colab).
        drive_folder: The course's folder in the student's Drive.

    Returns:
        ``(data_dir, runs_dir)`` to use.
    """
    if not in_colab():
        if use_drive:
            print("USE_DRIVE only applies on Google Colab; using the local folders.")
        return data_dir, runs_dir
    if use_drive is False:
        print(f"USE_DRIVE = False: runs in {runs_dir} on this runtime's disk, lost at a reset.")
        return data_dir, runs_dir
    from pathlib import Path

    from google.colab import drive  # type: ignore[import-not-found]

    drive.mount("/content/drive")
    base = Path("/content/drive") / drive_folder
    (base / "runs").mkdir(parents=True, exist_ok=True)
    print(f"runs in {base / 'runs'} (Google Drive; USE_DRIVE = False keeps them on this runtime)")
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


# --------------------------------------------------------------------------- torchvision shim
# The registry's torchvision wheel is a CUDA build. Next to the CPU torch its compiled ops
# (``torchvision/_C``) cannot load, and ``import torchvision`` then dies in
# ``_meta_registrations.py``, which registers fake kernels for ``torchvision::nms`` and
# ``torchvision::qnms`` unconditionally ("operator torchvision::nms does not exist").
# timm and segmentation_models_pytorch import torchvision, so they die too. Defining the two
# schemas (as torchvision 0.28's compiled ``_C`` library declares them)
# is enough for the import to succeed; the ops themselves stay unavailable, and no model
# here uses them. Where torchvision works (a matching CUDA torch, Colab) nothing is done.
# It runs at first use (import_smp), never when this module is imported.
_TORCHVISION_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)
# Kept alive (also across importlib.reload / %autoreload): dropping it undefines the ops.
_torchvision_library: torch.library.Library | None = globals().get("_torchvision_library")


def _torchvision_op_exists(op: str) -> bool:
    try:
        getattr(torch.ops.torchvision, op)
    except (AttributeError, RuntimeError):
        return False
    return True


def _ensure_torchvision() -> None:
    """Make ``import torchvision`` work; a no-op where it already does. Idempotent."""
    global _torchvision_library
    if "torchvision" in sys.modules:
        return
    try:
        import torchvision  # noqa: F401

        return
    except ModuleNotFoundError:
        return  # not installed: only the smp models will be missing
    except RuntimeError as exc:
        if "torchvision::" not in str(exc):
            raise
    # Forget the half-imported package so the second import starts afresh.
    for key in [k for k in sys.modules if k == "torchvision" or k.startswith("torchvision.")]:
        del sys.modules[key]
    missing = [s for s in _TORCHVISION_SCHEMAS if not _torchvision_op_exists(s.split("(")[0])]
    if missing:
        library = torch.library.Library("torchvision", "DEF")
        for schema in missing:
            library.define(schema)
        _torchvision_library = library
    import torchvision  # noqa: F401, F811


def import_smp() -> ModuleType:
    """Import ``segmentation_models_pytorch``, first making torchvision importable.

    Returns:
        The ``segmentation_models_pytorch`` module.

    """
    _ensure_torchvision()
    import segmentation_models_pytorch

    return segmentation_models_pytorch


# --------------------------------------------------------------------------- the network
_TRUE = {"1", "ON", "YES", "TRUE"}
_PROXY_VARS = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")


def _offline_requested() -> bool:
    from huggingface_hub import constants

    env = any(
        os.environ.get(var, "").strip().upper() in _TRUE
        for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )
    return env or bool(constants.HF_HUB_OFFLINE)


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Tell whether a TCP connection to the Hugging Face Hub opens within ``timeout`` s."""
    if any(os.environ.get(var) for var in _PROXY_VARS):
        return True  # only the proxy knows; let the hub client try
    from huggingface_hub import constants

    url = urlsplit(constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname, port), timeout=timeout).close()
    except OSError:
        return False
    return True


def hub_offline() -> bool:
    """Whether nothing can be downloaded from the Hugging Face Hub here.

    True when offline mode is asked for (``HF_HUB_OFFLINE`` or ``TRANSFORMERS_OFFLINE``
    set, or ``huggingface_hub``'s own switch on), else when a connection to the Hub does not
    open within 3 s. Behind a proxy (``HTTPS_PROXY`` or ``ALL_PROXY`` set) the Hub counts as
    reachable: only the proxy knows. The network is not probed when offline mode is asked for.

    Returns:
        True where the hub client should run in offline mode (only cached files load).
    """
    return _offline_requested() or not _hub_reachable()
