"""Terminal plumbing, the only place in the CLI that prints: library errors as one line and an exit code,
JSON on stdout, plain lines and progress bars on stderr."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import typer

from hsidenoise.cli.process import (
    TERMINATED_EXIT_CODE,
    Terminated,
    library_warnings_as_lines,
    terminate_as_interrupt,
    warnings_kept,
)
from hsidenoise.errors import ConfigError, HsiDenoiseError


def stderr_console():
    from rich.console import Console

    return Console(stderr=True, highlight=False)


def say(message: str) -> None:
    """One plain line on stderr (no rich markup is read in `message`: paths may hold brackets)."""
    from rich.markup import escape

    stderr_console().print(escape(message), soft_wrap=True)


def one_line(text: object) -> str:
    return " ".join(str(text).split())


@contextlib.contextmanager
def errors_as_one_line() -> Iterator[None]:
    """Turn library errors into one line on stderr (no traceback): exit 2 for an option value the library
    rejects (`ConfigError`), 1 for bad data or a failed run, 130 after Ctrl-C and 143 after SIGTERM (both
    leave no half-written output). Every command runs inside it, so it also holds the process set-up of
    :mod:`hsidenoise.cli.process`: SIGTERM as an interrupt, and warnings recorded rather than printed."""
    from rich.markup import escape

    def fail(label: str, message: str, code: int) -> typer.Exit:
        stderr_console().print(f"[bold red]{label}:[/] {escape(one_line(message))}", soft_wrap=True)
        return typer.Exit(code=code)

    try:
        with terminate_as_interrupt(), warnings_kept(), library_warnings_as_lines():
            yield
    except typer.Exit:
        raise
    except ConfigError as error:
        raise fail("error", str(error), 2) from None
    except HsiDenoiseError as error:
        raise fail("error", str(error), 1) from None
    except (OSError, MemoryError) as error:
        raise fail("error", f"{type(error).__name__}: {error}", 1) from None
    except KeyboardInterrupt as stop:
        raise interruption_exit(stop, "no output was left half-written") from None
    except Exception as error:  # a bug: still one line, the traceback on request
        if os.environ.get("HSIDENOISE_DEBUG"):
            raise
        raise fail(
            "internal error",
            f"{type(error).__name__}: {error} (set HSIDENOISE_DEBUG=1 to see the traceback, and please report it)",
            1,
        ) from None


def interruption_exit(stop: KeyboardInterrupt, detail: str) -> typer.Exit:
    """Print the one line of a Ctrl-C (``interrupted: <detail>``, exit 130) or a SIGTERM (``terminated: SIGTERM;
    <detail>``, exit 143) on stderr and return the :class:`typer.Exit` to raise."""
    from rich.markup import escape

    if isinstance(stop, Terminated):
        label, message, code = "terminated", f"SIGTERM; {detail}", TERMINATED_EXIT_CODE
    else:
        label, message, code = "interrupted", detail, 130
    stderr_console().print(f"[bold red]{label}:[/] {escape(one_line(message))}", soft_wrap=True)
    return typer.Exit(code=code)


def print_json(document: Any) -> None:
    sys.stdout.write(json.dumps(document, indent=2, default=_json_default) + "\n")
    sys.stdout.flush()


def _json_default(value: Any) -> Any:
    import numpy as np

    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def remaining_seconds(elapsed: float, done: float, total: float | None) -> float | None:
    """Seconds left at the mean pace so far: ``elapsed / done`` per unit, for the ``total - done`` units left.

    None while nothing is done or the total is unknown (no estimate yet); 0 once ``done`` reaches ``total``.
    Unlike rich's own estimate (the speed over its last 30 s of updates), a slow start or a batch of tiles
    longer than that window does not make the estimate collapse to the last burst of updates.
    """
    if total is None or done <= 0:
        return None
    return max(0.0, elapsed * (total - done) / done)


PHASES = {
    "statistics": "reading the cube (statistics)",
    "prepare": "estimating noise, fitting subspace",
    "adapt": "adapting to the cube",
    "tiles": "denoising tiles",
}
"""How the stages :func:`hsidenoise.denoise.denoise` announces (its ``phase`` callback) read on the display."""


def _remaining_column():
    """A rich column with :func:`remaining_seconds`, counted from the start of the task's counting phase."""
    from rich.progress import ProgressColumn
    from rich.text import Text

    class TimeLeftColumn(ProgressColumn):
        def render(self, task) -> Text:
            if task.finished:
                return Text("0:00:00", style="progress.remaining")
            since = task.fields.get("since")
            if since is None:
                since = task.start_time
            seconds = None if since is None else remaining_seconds(task.get_time() - since, task.completed, task.total)
            if seconds is None:
                return Text("-:--:--", style="progress.remaining")
            minutes, secs = divmod(int(round(seconds)), 60)
            hours, minutes = divmod(minutes, 60)
            return Text(f"{hours}:{minutes:02d}:{secs:02d}", style="progress.remaining")

    return TimeLeftColumn()


class ProgressBars:
    """A rich progress bar on an interactive stderr; silent in pipes, with --quiet or --json.

    One task per description: :meth:`callback` counts (tiles, steps, seconds), :meth:`phase` names what the
    task is doing before and while it counts (the long statistics pass and fit of a scene come before its
    first tile). The time left is the mean pace since counting began (:func:`remaining_seconds`).
    """

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled and sys.stderr.isatty()
        self._progress = None
        self._tasks: dict[str, Any] = {}

    def __enter__(self) -> "ProgressBars":
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"),
                TimeElapsedColumn(),
                _remaining_column(),
                console=stderr_console(),
                transient=False,
            )
            self._progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)

    def _task(self, description: str, total: float | None, info: str):
        task = self._tasks.get(description)
        if task is None:
            task = self._progress.add_task(description, total=total, info=info, since=None)
            self._tasks[description] = task
        return task

    def callback(self, description: str):
        """A `callback(done, total, info="")` for library functions; an empty `info` keeps the phase shown."""

        def update(done: int, total: int, info: str = "") -> None:
            if self._progress is None:
                return
            task = self._task(description, total, info)
            fields = {"info": info} if info else {}
            self._progress.update(task, completed=done, total=total, **fields)

        return update

    def phase(self, description: str):
        """A `phase(stage)` callback for :func:`hsidenoise.denoise.denoise`: shows the stage (:data:`PHASES`) as
        the task's info; the time left counts from the ``"tiles"`` stage on."""

        def announce(stage: str) -> None:
            if self._progress is None:
                return
            words = PHASES.get(stage, stage)
            task = self._task(description, None, words)
            fields: dict[str, Any] = {"info": words}
            if stage == "tiles":
                fields["since"] = self._progress.get_time()
            self._progress.update(task, **fields)

        return announce


def band_list(bands: list[int]) -> str:
    if not bands:
        return "none"
    shown = ", ".join(map(str, bands[:20]))
    return f"{len(bands)}: {shown}{' ...' if len(bands) > 20 else ''}"
