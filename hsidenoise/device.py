"""Device concerns: where the model runs (``--device auto|cpu|cuda``), the CPU thread count, out-of-memory errors.

``auto`` picks CUDA when torch sees a GPU and says so in the run summary; ``cuda`` without a GPU is a one-line
error rather than a silent fall-back, so a batch script that asks for a GPU learns that it has none.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

from hsidenoise.errors import ConfigError

if TYPE_CHECKING:
    import torch

DEVICES = ("auto", "cpu", "cuda")
T = TypeVar("T")


def select_device(choice: str = "auto") -> torch.device:
    """The torch device for ``choice`` (``auto``, ``cpu``, ``cuda`` or ``cuda:N``).

    Raises:
        ConfigError: an unknown choice, or CUDA asked for where torch sees no GPU.
    """
    import torch

    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if choice == "cpu":
        return torch.device("cpu")
    if choice == "cuda" or choice.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ConfigError(
                f"--device {choice} asked for a GPU but torch sees none (CPU-only build or no driver); "
                "use --device cpu or --device auto"
            )
        return torch.device(choice)
    raise ConfigError(f"unknown device {choice!r}; choose one of: {', '.join(DEVICES)} (or cuda:N)")


def lowrank_device(choice: str = "auto") -> str | None:
    """Where ``--method lowrank`` runs its eigen-image DCT: None for numpy on the CPU, or a CUDA device name.

    ``cpu`` and, on a machine without an NVIDIA driver, ``auto`` never import torch (about 2 s per process that
    the numpy path does not need); ``auto`` with a driver and ``cuda`` ask torch (:func:`select_device`), so
    ``cuda`` without a GPU is the same one-line error as for DECSC.

    Raises:
        ConfigError: an unknown choice, or CUDA asked for where torch sees no GPU.
    """
    if choice not in DEVICES and not choice.startswith("cuda:"):
        raise ConfigError(f"unknown device {choice!r}; choose one of: {', '.join(DEVICES)} (or cuda:N)")
    if choice == "cpu" or (choice == "auto" and not nvidia_driver_present()):
        return None
    device = select_device(choice)
    return None if device.type == "cpu" else str(device)


def nvidia_driver_present() -> bool:
    """Whether an NVIDIA driver shows a GPU (``/proc/driver/nvidia/gpus`` not empty), without importing torch."""
    gpus = "/proc/driver/nvidia/gpus"
    try:
        return os.path.isdir(gpus) and bool(os.listdir(gpus))
    except OSError:
        return False


def is_out_of_memory(error: BaseException) -> bool:
    """MemoryError, or an accelerator's out-of-memory error (torch's ``OutOfMemoryError``), without importing torch."""
    return isinstance(error, MemoryError) or any(cls.__name__ == "OutOfMemoryError" for cls in type(error).__mro__)


DEFAULT_MAX_THREADS = 8
"""Threads a run takes by default at most: beyond this the CPU kernels gain little and oversubscribe a shared
machine (one run took 95 s with a thread per core on a loaded machine, 5 s with one thread)."""


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity where the system tells it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def default_threads() -> int:
    """The CPU threads of a run when none is asked for: ``OMP_NUM_THREADS`` when it is set to a whole number
    >= 1 (as torch itself reads it), else the usable cores up to :data:`DEFAULT_MAX_THREADS`."""
    value = os.environ.get("OMP_NUM_THREADS", "").strip()
    if value.isascii() and value.isdigit() and int(value) >= 1:  # "²" is a digit to str.isdigit
        return int(value)
    return min(usable_cores(), DEFAULT_MAX_THREADS)


def threads_in_effect() -> int:
    """The CPU threads a run uses now: torch's intra-op count once torch is loaded (:func:`configure_threads` set
    it), else ``OMP_NUM_THREADS`` as :func:`configure_threads` leaves it, else :func:`default_threads`. What
    :func:`across_threads` divides numpy work into by default."""
    torch = sys.modules.get("torch")
    if torch is not None:
        return max(1, int(torch.get_num_threads()))
    return default_threads()


def across_threads(function: Callable[[slice], T], count: int, threads: int | None = None) -> list[T]:
    """``function`` on consecutive slices of ``range(count)``, one slice per thread, results in order.

    For numpy work whose calls release the GIL (partitions, sorts) and that splits by rows (bands) without changing
    a number. ``threads``: at most this many (default :func:`threads_in_effect`), never more than ``count``; one
    runs in the calling thread. numpy's error state is per thread, so each worker takes the caller's.
    """
    import numpy as np

    threads = max(1, min(threads_in_effect() if threads is None else threads, count))
    if threads == 1:
        return [function(slice(0, count))]
    bounds = [round(count * index / threads) for index in range(threads + 1)]
    parts = [slice(start, stop) for start, stop in zip(bounds[:-1], bounds[1:], strict=True)]
    settings = np.geterr()

    def call(part: slice) -> T:
        with np.errstate(**settings):
            return function(part)

    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(call, parts))


def autocast(device: torch.device) -> Any:
    """bf16 autocast on CUDA; a no-op context elsewhere."""
    import torch

    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


def configure_threads(threads: int | None = None) -> int:
    """Set torch's intra-op threads to ``threads`` or, when None, to :func:`default_threads`.

    Returns:
        The thread count now in effect.
    """
    if threads is None:
        threads = default_threads()
    if threads < 1:
        raise ConfigError(f"threads must be at least 1; got {threads}")
    torch = sys.modules.get("torch")
    if torch is None:  # not loaded (``--method lowrank`` never loads it): it reads OMP_NUM_THREADS when it is
        os.environ["OMP_NUM_THREADS"] = str(threads)
        return threads
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return threads
