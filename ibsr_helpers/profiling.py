"""Time and memory of training steps and inference: what a model costs before you train it.

Used by notebook 04 (the per-model cost table) and ``benchmarks/bench_models.py``; the
step timed is the engine's own (:class:`ibsr_helpers.step.TrainStep`).

Peak memory is the device's on CUDA (``torch.cuda.max_memory_allocated``) and the
process's peak resident set size (RSS) on the CPU. On Linux the RSS peak is reset
before each measurement (``/proc/self/clear_refs``), so one process can measure several
models in turn; elsewhere a background thread samples the RSS every 5 ms instead.

Example:
    >>> with PeakMemory(device) as peak:
    ...     model(x).sum().backward()
    >>> peak.mb
    1834.2
"""

from __future__ import annotations

import os
import platform
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from ibsr_helpers.step import TrainStep

__all__ = [
    "PeakMemory",
    "cpu_model",
    "hardware_header",
    "hardware_summary",
    "rss_mb",
    "time_train_steps",
]

_CLEAR_REFS = Path("/proc/self/clear_refs")
_STATUS = Path("/proc/self/status")


def rss_mb() -> float:
    """The process's current resident set size in MB (psutil)."""
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def _vm_hwm_mb() -> float | None:
    """Peak RSS since the last reset (Linux ``VmHWM``), or None where unavailable."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _reset_vm_hwm() -> bool:
    try:
        _CLEAR_REFS.write_text("5")  # Linux >= 4.0: reset VmHWM to the current RSS
    except OSError:
        return False
    return True


class PeakMemory:
    """Context manager measuring the peak memory of the code it wraps.

    Args:
        device: On CUDA the peak allocated by torch on that device; otherwise the
            process's peak RSS (everything the process holds, Python included).

    Attributes:
        mb: The peak in MB (set on exit).
        kind: ``"cuda allocated"`` or ``"process RSS"``.
    """

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self.mb = float("nan")
        self.kind = "cuda allocated" if self.device.type == "cuda" else "process RSS"
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._sampled = 0.0

    def _sample(self) -> None:
        while not self._stop.is_set():
            self._sampled = max(self._sampled, rss_mb())
            time.sleep(0.005)

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        elif not (_reset_vm_hwm() and _vm_hwm_mb() is not None):
            self._sampled = rss_mb()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.mb = torch.cuda.max_memory_allocated(self.device) / 2**20
        elif self._thread is not None:
            self._stop.set()
            self._thread.join()
            self.mb = max(self._sampled, rss_mb())
        else:
            self.mb = float(_vm_hwm_mb() or float("nan"))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_train_steps(
    step: TrainStep,
    batches: Callable[[], tuple[torch.Tensor, torch.Tensor]],
    steps: int = 5,
    warmup: int = 1,
) -> dict[str, float]:
    """Time the engine's own training step (forward, loss, backward, AdamW update).

    Args:
        step: From :func:`ibsr_helpers.step.build_train_step` (its model's weights are
            updated; its precision is the run's).
        batches: Called once per step for ``(image, label)`` already on the device: a
            loader's next batch (includes the loading time) or the same tensors again
            (the model's time alone).
        steps: Timed steps.
        warmup: Untimed steps first (allocator, cuDNN autotuning, lazy init).

    Returns:
        ``{"step_s": mean seconds per step, "peak_mb": peak memory, "batch": items per step}``.
    """
    device = next(step.net.parameters()).device
    step.net.train()

    def one() -> int:
        image, label = batches()
        step(image, label)
        return int(image.shape[0])

    for _ in range(warmup):
        one()
    with PeakMemory(device) as peak:
        _sync(device)
        start = time.perf_counter()
        n = sum(one() for _ in range(steps))
        _sync(device)
        seconds = (time.perf_counter() - start) / max(steps, 1)
    return {"step_s": seconds, "peak_mb": peak.mb, "batch": n / max(steps, 1)}


def cpu_model(cpuinfo: str | None = None) -> str:
    """The CPU's model name, with its family and model numbers where Linux reports them.

    Cloud CPUs often name themselves only "AMD EPYC"; the family and model tell a Zen 3
    (family 25, model 1) from a Zen 5 (family 26), which train at very different speeds.

    Args:
        cpuinfo: The text of ``/proc/cpuinfo`` (default: read it).

    Returns:
        For example ``AMD EPYC (family 26, model 2)``; the name alone elsewhere.
    """
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            if fields:
                break  # the first processor's block is enough
            continue
        fields.setdefault(key.strip(), value.strip())
    name = fields.get("model name") or platform.processor() or platform.machine()
    if "cpu family" in fields and "model" in fields:
        name += f" (family {fields['cpu family']}, model {fields['model']})"
    return name


def hardware_summary() -> dict[str, Any]:
    """CPU model and cores, memory, GPU, and the versions that matter for speed.

    Returns:
        A flat dict (``cpu``, ``cpu_bf16``, ``cores``, ``torch_threads``, ``memory_gb``, ``gpu``,
        ``python``, ``torch``, ``monai``, ``cuda``, ``platform``).
    """
    import monai
    import psutil

    from ibsr_helpers.environment import cpu_has_native_bf16

    gpu = "none"
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        gpu = f"{props.name} ({props.total_memory / 2**30:.0f} GiB) x{torch.cuda.device_count()}"
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return {
        "cpu": cpu_model(),
        "cpu_bf16": "native" if cpu_has_native_bf16() else "none (fp32 on the CPU)",
        "cores": cores,
        "torch_threads": torch.get_num_threads(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "gpu": gpu,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "monai": monai.__version__,
        "cuda": torch.version.cuda or "none",
        "platform": platform.platform(),
    }


def hardware_header(**extra: object) -> str:
    """The lines a benchmark prints first: the date, :func:`hardware_summary`, then ``extra``.

    Args:
        **extra: More ``name: value`` lines (the data, the recipe, ...), in this order.

    Returns:
        One ``name value`` line each, names padded to one column.
    """
    rows = {"date": time.strftime("%Y-%m-%d %H:%M"), **hardware_summary(), **extra}
    width = max(map(len, rows))
    return "\n".join(f"{name:{width}s} {value}" for name, value in rows.items())
