"""What a command sets up for its process: SIGTERM as an interrupt, warnings kept off stderr, CPU threads.

* ``timeout``, Slurm and ``kill`` send SIGTERM, whose default action kills the process where it stands and
  leaves the staged outputs (``.<name>.<random>.tmp``) behind. :func:`terminate_as_interrupt` turns it into
  the same :class:`KeyboardInterrupt` as Ctrl-C, so the writers' clean-up runs and the command exits 143.
* Python and numpy warnings (``RuntimeWarning: invalid value encountered ...``) are not for the user of a
  command line: :func:`warnings_kept` records them instead of printing; ``HSIDENOISE_DEBUG=1`` shows them.
* The library's own warnings (``logging``, logger ``hsidenoise``: "MAT variable 'wavelengths' has 5 entries for 1
  bands; ignored") are for the user: :func:`library_warnings_as_lines` prints each as one ``warning: ...`` line
  on stderr, instead of Python's bare last-resort output.
* :func:`thread_count` sizes the CPU thread pools (``--threads``, ``OMP_NUM_THREADS``, a capped default).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import signal
import threading
import warnings
from collections.abc import Iterator

TERMINATED_EXIT_CODE = 128 + signal.SIGTERM
"""Exit status after SIGTERM (143), the shell's convention for a process ended by that signal."""

THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
"""The environment variables that size the thread pools of OpenMP and the BLAS libraries."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the main thread is, so that everything a Ctrl-C cleans up is cleaned up."""


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """While the block runs, SIGTERM raises :class:`Terminated`; the previous handler comes back after it.

    A no-op outside the main thread (only the main thread may set signal handlers).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        raise Terminated(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def warnings_kept() -> Iterator[list[warnings.WarningMessage]]:
    """Record every warning raised in the block instead of printing it on stderr (yields the records).

    With ``HSIDENOISE_DEBUG`` set, warnings print as Python prints them, for whoever is debugging.
    """
    if os.environ.get("HSIDENOISE_DEBUG"):
        yield []
        return
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")  # once per place, so a warning in a tile loop is not recorded per tile
        yield caught


class _OneLineHandler(logging.Handler):
    """``warning: <message on one line>`` on stderr for each record."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = " ".join(self.format(record).split())
            sys.stderr.write(f"{record.levelname.lower()}: {message}\n")
        except Exception:  # noqa: BLE001 - logging must never break a command (logging's own rule)
            self.handleError(record)


@contextlib.contextmanager
def library_warnings_as_lines() -> Iterator[None]:
    """While the block runs, the ``hsidenoise`` logger's warnings print as one line each on stderr."""
    logger = logging.getLogger("hsidenoise")
    handler = _OneLineHandler(level=logging.WARNING)
    previous = logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.propagate = previous


def thread_count(threads: int | None) -> int:
    """The CPU threads of this command: ``threads``, else :func:`hsidenoise.device.default_threads`.

    The count also goes to :data:`THREAD_VARIABLES` (an explicit ``threads`` over what the environment says,
    the default only where a variable is unset), so that the BLAS libraries loaded after this call use as
    many. Call it before the heavy imports; torch is set later with :func:`hsidenoise.device.configure_threads`.
    """
    from hsidenoise.device import default_threads

    count = default_threads() if threads is None else threads
    for name in THREAD_VARIABLES:
        if threads is not None or not os.environ.get(name):
            os.environ[name] = str(count)
    return count
