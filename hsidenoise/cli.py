"""The `hsidenoise` command line: a thin Typer layer over the library.

Every command parses its options, builds the config dataclasses, calls one library function and prints a
summary. Heavy modules (torch, rasterio, h5py, matplotlib) are imported inside the commands, so
`hsidenoise --help` stays fast. Library errors (`HsiDenoiseError`) become one red line on stderr and exit 1;
usage errors exit 2 (Typer's convention).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from hsidenoise import __version__
from hsidenoise.errors import ConfigError, HsiDenoiseError

app = typer.Typer(
    name="hsidenoise",
    help="Denoise hyperspectral cubes (ENVI, GeoTIFF, MAT, HDF5) with DECSC or a fast low-rank method.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


# ---------------------------------------------------------------------------------------------------------
# Shared option types (one definition each, rasterio `rio/options.py` style)
# ---------------------------------------------------------------------------------------------------------


class OutputDtype(str, Enum):
    float32 = "float32"
    same = "same"


class DeviceChoice(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class SsimMode(str, Enum):
    wang = "wang"
    matlab = "matlab"


FormatOpt = Annotated[
    str | None,
    typer.Option("--format", help="Input format when the suffix does not tell: envi, geotiff, mat, hdf5."),
]
VarOpt = Annotated[
    str | None,
    typer.Option("--var", "--dataset", help="MAT variable or HDF5 dataset path holding the cube."),
]
AxesOpt = Annotated[
    str | None,
    typer.Option(
        "--axes", help="Axis order of a MAT/HDF5 array, e.g. hwb (rows, cols, bands; the default) or bhw."
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout and nothing else.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or summaries.")]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace outputs that already exist.")]
DtypeOpt = Annotated[
    OutputDtype,
    typer.Option("--dtype", help="Output data type: float32, or the input's own type (rounded and clipped)."),
]


# ---------------------------------------------------------------------------------------------------------
# Terminal plumbing: the only place that prints
# ---------------------------------------------------------------------------------------------------------


def _stderr():
    from rich.console import Console

    return Console(stderr=True, highlight=False)


@contextlib.contextmanager
def _errors_as_one_line() -> Iterator[None]:
    """Turn library errors into one line on stderr and exit code 1 (no traceback)."""
    try:
        yield
    except typer.Exit:
        raise
    except HsiDenoiseError as error:
        _stderr().print(f"[bold red]error:[/] {error}", soft_wrap=True)
        raise typer.Exit(code=1) from None
    except (OSError, MemoryError) as error:
        _stderr().print(f"[bold red]error:[/] {type(error).__name__}: {error}", soft_wrap=True)
        raise typer.Exit(code=1) from None
    except KeyboardInterrupt:
        _stderr().print("[bold red]interrupted[/]: no output was left half-written.")
        raise typer.Exit(code=130) from None
    except Exception as error:  # a bug: still one line, the traceback on request
        if os.environ.get("HSIDENOISE_DEBUG"):
            raise
        _stderr().print(
            f"[bold red]internal error:[/] {type(error).__name__}: {error} "
            "(set HSIDENOISE_DEBUG=1 to see the traceback, and please report it)",
            soft_wrap=True,
        )
        raise typer.Exit(code=1) from None


def _print_json(document: Any) -> None:
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


class _Progress:
    """A rich progress bar on an interactive stderr; silent in pipes, with --quiet or --json."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled and sys.stderr.isatty()
        self._progress = None
        self._tasks: dict[str, Any] = {}

    def __enter__(self) -> "_Progress":
        if self.enabled:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=_stderr(),
                transient=False,
            )
            self._progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)

    def callback(self, description: str):
        """A `callback(done, total, info="")` for library functions."""

        def update(done: int, total: int, info: str = "") -> None:
            if self._progress is None:
                return
            task = self._tasks.get(description)
            if task is None:
                task = self._progress.add_task(description, total=total, info=info)
                self._tasks[description] = task
            self._progress.update(task, completed=done, total=total, info=info)

        return update


def _version_callback(value: bool) -> None:
    if value:
        sys.stdout.write(f"hsidenoise {__version__}\n")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool,
        typer.Option("--version", "-V", callback=_version_callback, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """Denoise hyperspectral cubes with DECSC (deep-equilibrium convolutional sparse coding)."""
