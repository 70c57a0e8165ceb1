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


# ---------------------------------------------------------------------------------------------------------
# noise / eval
# ---------------------------------------------------------------------------------------------------------


@app.command()
def noise(
    cube: Annotated[Path, typer.Argument(help="Clean cube to corrupt (any supported format).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Noisy cube to write (format from suffix).")],
    *,
    recipe: Annotated[
        str,
        typer.Option(
            "--recipe", help="gauss, noniid, corr, stripe, deadline, impulse or mixture (DECSC paper cases)."
        ),
    ],
    sigma_max: Annotated[
        float | None,
        typer.Option(
            "--sigma-max", min=0, help="Gaussian level on the 0-255 scale (default 95; the peak for corr: 23.08)."
        ),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Random seed; the same seed gives the same noise.")] = 0,
    disjoint: Annotated[
        bool, typer.Option("--disjoint", help="mixture: impulse, stripe, deadline on disjoint thirds.")
    ] = False,
    write_clean: Annotated[
        Path | None, typer.Option("--write-clean", help="Also write the normalised [0, 1] reference used.")
    ] = None,
    fmt: FormatOpt = None,
    var: VarOpt = None,
    axes: AxesOpt = None,
    overwrite: OverwriteOpt = False,
    json_output: JsonOpt = False,
) -> None:
    """Add synthetic noise to a cube normalised to [0, 1] (reproducible per --seed)."""
    with _errors_as_one_line():
        import numpy as np

        from hsidenoise.io import read_cube, write_cube
        from hsidenoise.noise import NoiseSpec, add_noise, normalise_cube

        options: dict[str, Any] = {"recipe": recipe, "disjoint": disjoint}
        if sigma_max is not None:
            options["corr_beta" if recipe == "corr" else "sigma_max"] = sigma_max
        spec = NoiseSpec(**options)
        source = read_cube(cube, fmt=fmt, var=var, axes=axes)
        clean, low, high = normalise_cube(source.data.astype(np.float32))
        result = add_noise(clean, spec, np.random.default_rng(seed))
        meta = source.meta
        meta.scale_factor = None
        meta.description = f"hsidenoise noise --recipe {recipe} --seed {seed} on {cube.name} (normalised to [0, 1])"
        outputs = [output] + ([write_clean] if write_clean is not None else [])
        from hsidenoise.cube import Cube

        write_cube(output, Cube(result.noisy, meta), overwrite=overwrite, inputs=[cube])
        if write_clean is not None:
            write_cube(write_clean, Cube(clean, meta), overwrite=overwrite, inputs=[cube])
        summary = {
            "input": str(cube),
            "outputs": [str(p) for p in outputs],
            "recipe": recipe,
            "seed": seed,
            "spec": {k: getattr(spec, k) for k in ("sigma_max", "disjoint", "corr_beta")},
            "normalisation": {"min": low, "max": high},
            "sigma_per_band": result.sigma,
            "structured_bands": {k: v for k, v in result.bands.items()},
        }
        if json_output:
            _print_json(summary)
        else:
            _stderr().print(f"wrote {output} ({recipe}, seed {seed}, bands {source.bands})")


@app.command("eval")
def evaluate_command(
    denoised: Annotated[Path, typer.Argument(help="Cube to score.")],
    ref: Annotated[Path, typer.Option("--ref", help="Clean reference cube (same shape).")],
    *,
    noisy: Annotated[Path | None, typer.Option("--noisy", help="Noisy input, scored too for comparison.")] = None,
    out_dir: Annotated[
        Path | None, typer.Option("--output", "-o", help="Directory for metrics.json, metrics.csv, per_band.png.")
    ] = None,
    ssim: Annotated[
        SsimMode, typer.Option("--ssim", help="SSIM convention: wang (skimage, default) or matlab (DECSC).")
    ] = SsimMode.wang,
    peak: Annotated[float, typer.Option("--peak", help="PSNR peak value of the data.")] = 1.0,
    var: VarOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Score a denoised cube against a reference: MPSNR, SSIM, SAM, ERGAS, per band and mean."""
    with _errors_as_one_line():
        from hsidenoise.errors import CubeShapeError
        from hsidenoise.io import read_cube
        from hsidenoise.metrics import evaluate
        from hsidenoise.report import write_metrics_report

        reference = read_cube(ref, var=var)
        scored = read_cube(denoised, var=var)
        if scored.shape != reference.shape:
            raise CubeShapeError(
                f"{denoised} has shape {scored.shape} (bands, rows, cols) but the reference {ref} has "
                f"{reference.shape}; score cubes of the same scene"
            )
        report = evaluate(scored.data, reference.data, ssim_mode=ssim.value, peak=peak)
        noisy_report = None
        if noisy is not None:
            noisy_cube = read_cube(noisy, var=var)
            if noisy_cube.shape != reference.shape:
                raise CubeShapeError(f"{noisy} has shape {noisy_cube.shape}, the reference has {reference.shape}")
            noisy_report = evaluate(noisy_cube.data, reference.data, ssim_mode=ssim.value, peak=peak)
        files = {}
        if out_dir is not None:
            files = write_metrics_report(
                report, out_dir, noisy_report=noisy_report, wavelengths=reference.meta.wavelengths
            )
        document = {"denoised": report.to_dict(), "files": {k: str(v) for k, v in files.items()}}
        if noisy_report is not None:
            document["noisy"] = noisy_report.to_dict()
        if json_output:
            _print_json(document)
            return
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"{denoised.name} vs {ref.name}")
        for column in ("cube", "MPSNR (dB)", "SSIM", "SAM (rad)", "ERGAS"):
            table.add_column(column)
        rows = [("noisy", noisy_report)] if noisy_report is not None else []
        for name, rep in rows + [("denoised", report)]:
            table.add_row(name, f"{rep.mpsnr:.2f}", f"{rep.mssim:.4f}", f"{rep.sam:.4f}", f"{rep.ergas:.2f}")
        Console().print(table)
