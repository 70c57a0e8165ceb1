"""Where the model runs: ``--device auto|cpu|cuda`` and the CPU thread count.

``auto`` picks CUDA when torch sees a GPU and says so in the run summary; ``cuda`` without a GPU is a one-line
error rather than a silent fall-back, so a batch script that asks for a GPU learns that it has none.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from hsidenoise.errors import ConfigError

if TYPE_CHECKING:
    import torch

DEVICES = ("auto", "cpu", "cuda")


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


def configure_threads(threads: int | None = None) -> int:
    """Set torch's intra-op threads to ``threads`` or, when None, to the cores this process may use.

    Returns:
        The thread count now in effect.
    """
    import torch

    if threads is None:
        try:
            threads = len(os.sched_getaffinity(0))
        except AttributeError:  # not on Linux
            threads = os.cpu_count() or 1
    if threads < 1:
        raise ConfigError(f"threads must be at least 1; got {threads}")
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return threads
