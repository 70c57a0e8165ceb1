"""The `hsidenoise` command line: a thin Typer layer over the library.

Every command parses its options, builds the config dataclasses, calls one library function and prints a
summary. Heavy modules (torch, rasterio, h5py, matplotlib) are imported inside the commands, so
`hsidenoise --help` stays fast. Library errors (`HsiDenoiseError`) become one red line on stderr and exit 1;
usage errors exit 2: Typer's own (an unknown option, a value out of range) and option values the library
rejects (`ConfigError`: tile smaller than the overlap, an unknown preset, ...), the latter as one line too.
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


class FrontEnd(str, Enum):
    dct = "dct"
    bm3d = "bm3d"
    auto = "auto"
    none = "none"


class SsimMode(str, Enum):
    wang = "wang"
    matlab = "matlab"


class FormatChoice(str, Enum):
    """The format names of `hsidenoise.io.FORMATS` (spelled out so that --help imports no I/O code)."""

    envi = "envi"
    geotiff = "geotiff"
    mat = "mat"
    mat73 = "mat73"
    hdf5 = "hdf5"


def _value(choice: Enum | None) -> str | None:
    return None if choice is None else choice.value


FormatOpt = Annotated[
    FormatChoice | None,
    typer.Option("--format", help="Input format when the suffix does not tell."),
]
VarOpt = Annotated[
    str | None,
    typer.Option("--var", "--dataset", help="MAT variable or HDF5 dataset path holding the cube."),
]
AxesOpt = Annotated[
    str | None,
    typer.Option("--axes", help="Axis order of a MAT/HDF5 array, e.g. hwb (rows, cols, bands; the default) or bhw."),
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


def _say(message: str) -> None:
    """One plain line on stderr (no rich markup is read in `message`: paths may hold brackets)."""
    from rich.markup import escape

    _stderr().print(escape(message), soft_wrap=True)


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


@contextlib.contextmanager
def _errors_as_one_line() -> Iterator[None]:
    """Turn library errors into one line on stderr (no traceback): exit 2 for an option value the library
    rejects (`ConfigError`), 1 for bad data or a failed run."""
    from rich.markup import escape

    def fail(label: str, message: str, code: int) -> typer.Exit:
        _stderr().print(f"[bold red]{label}:[/] {escape(_one_line(message))}", soft_wrap=True)
        return typer.Exit(code=code)

    try:
        yield
    except typer.Exit:
        raise
    except ConfigError as error:
        raise fail("error", str(error), 2) from None
    except HsiDenoiseError as error:
        raise fail("error", str(error), 1) from None
    except (OSError, MemoryError) as error:
        raise fail("error", f"{type(error).__name__}: {error}", 1) from None
    except KeyboardInterrupt:
        raise fail("interrupted", "no output was left half-written", 130) from None
    except Exception as error:  # a bug: still one line, the traceback on request
        if os.environ.get("HSIDENOISE_DEBUG"):
            raise
        raise fail(
            "internal error",
            f"{type(error).__name__}: {error} (set HSIDENOISE_DEBUG=1 to see the traceback, and please report it)",
            1,
        ) from None


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
        typer.Option("--recipe", help="gauss, noniid, corr, stripe, deadline, impulse or mixture (DECSC paper cases)."),
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
    quiet: QuietOpt = False,
    json_output: JsonOpt = False,
) -> None:
    """Add synthetic noise to a cube normalised to [0, 1] (reproducible per --seed)."""
    with _errors_as_one_line():
        import numpy as np

        from hsidenoise.batch import cube_files
        from hsidenoise.io import create_cube, read_cube
        from hsidenoise.noise import NoiseSpec, add_noise, normalise_cube

        options: dict[str, Any] = {"recipe": recipe, "disjoint": disjoint}
        if sigma_max is not None:
            options["corr_beta" if recipe == "corr" else "sigma_max"] = sigma_max
        spec = NoiseSpec(**options)
        outputs = [output] + ([write_clean] if write_clean is not None else [])
        if write_clean is not None and {p.resolve() for p in cube_files(output, existing=False)} & {
            p.resolve() for p in cube_files(write_clean, existing=False)
        }:
            raise ConfigError(f"-o {output} and --write-clean {write_clean} name the same cube; give two paths")
        protected = cube_files(cube, existing=True)  # an ENVI input is two files; neither may be written
        source = read_cube(cube, fmt=_value(fmt), var=var, axes=axes)
        clean, low, high = normalise_cube(source.data.astype(np.float32))
        result = add_noise(clean, spec, np.random.default_rng(seed))
        meta = source.meta
        meta.scale_factor = None
        meta.description = f"hsidenoise noise --recipe {recipe} --seed {seed} on {cube.name} (normalised to [0, 1])"
        # Both cubes are staged before either is committed, so a refused second output leaves no first one.
        with contextlib.ExitStack() as stack:
            writers = [
                stack.enter_context(create_cube(path, clean.shape, meta=meta, overwrite=overwrite, inputs=protected))
                for path in outputs
            ]
            for writer, data in zip(writers, (result.noisy, clean), strict=False):
                writer.write(data, slice(0, clean.shape[1]), slice(0, clean.shape[2]))
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
        elif not quiet:
            _say(f"wrote {', '.join(map(str, outputs))} ({recipe}, seed {seed}, bands {source.bands})")


class SureMethodChoice(str, Enum):
    lowrank = "lowrank"
    decsc = "decsc"


@app.command("eval")
def evaluate_command(
    denoised: Annotated[Path, typer.Argument(help="Cube to score.")],
    ref: Annotated[
        Path | None,
        typer.Option("--ref", help="Clean reference cube (same shape); without it: no-reference figures (--noisy)."),
    ] = None,
    *,
    noisy: Annotated[
        Path | None,
        typer.Option("--noisy", help="Noisy input: scored too with --ref; without --ref, the no-reference input."),
    ] = None,
    out_dir: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="Directory for metrics.json/.csv, per_band.png (no-reference: no_reference.json/.csv/.png).",
        ),
    ] = None,
    ssim: Annotated[
        SsimMode, typer.Option("--ssim", help="SSIM convention: wang (skimage, default) or matlab (DECSC).")
    ] = SsimMode.wang,
    peak: Annotated[
        float | None,
        typer.Option("--peak", help="PSNR peak value of the data (default 1; no-reference: the noisy max - min)."),
    ] = None,
    method: Annotated[
        SureMethodChoice | None,
        typer.Option("--method", help="No-reference: the method that denoised, re-run on a crop for SURE."),
    ] = None,
    model: Annotated[
        str | None, typer.Option("--model", help="No-reference, decsc: weights or preset (default: shipped).")
    ] = None,
    spatial: Annotated[
        FrontEnd, typer.Option("--spatial", help="No-reference, lowrank: its eigen-image denoiser, as for run.")
    ] = FrontEnd.auto,
    crop: Annotated[
        int, typer.Option("--crop", min=8, help="No-reference: side of the central window for whiteness and SURE.")
    ] = 128,
    seed: Annotated[int, typer.Option("--seed", help="No-reference: seed of the pixel sample and SURE probes.")] = 0,
    var: VarOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Score a denoised cube: against a reference (--ref: MPSNR, SSIM, SAM, ERGAS), or without one (--noisy:
    noise before / after, whiteness of the removed part, SURE-estimated PSNR with --method)."""
    with _errors_as_one_line():
        if ref is None:
            _evaluate_without_reference(
                denoised,
                noisy,
                out_dir=out_dir,
                peak=peak,
                method=_value(method),
                model=model,
                spatial=spatial.value,
                crop=crop,
                seed=seed,
                var=var,
                json_output=json_output,
            )
            return
        if method is not None or model is not None:
            raise ConfigError("--method and --model are for the no-reference mode; leave them out with --ref")
        peak = 1.0 if peak is None else peak
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
        from rich.markup import escape
        from rich.table import Table

        table = Table(title=escape(f"{denoised.name} vs {ref.name}"))
        for column in ("cube", "MPSNR (dB)", "SSIM", "SAM (rad)", "ERGAS"):
            table.add_column(column)
        rows = [("noisy", noisy_report)] if noisy_report is not None else []
        for name, rep in rows + [("denoised", report)]:
            table.add_row(name, f"{rep.mpsnr:.2f}", f"{rep.mssim:.4f}", f"{rep.sam:.4f}", f"{rep.ergas:.2f}")
        Console().print(table)


def _evaluate_without_reference(
    denoised: Path,
    noisy: Path | None,
    *,
    out_dir: Path | None,
    peak: float | None,
    method: str | None,
    model: str | None,
    spatial: str,
    crop: int,
    seed: int,
    var: str | None,
    json_output: bool,
) -> None:
    """``eval DENOISED --noisy NOISY`` without ``--ref``: :func:`hsidenoise.noreference.no_reference_quality`."""
    if noisy is None:
        raise ConfigError("eval needs --ref REFERENCE (full-reference scores) or --noisy NOISY (no-reference figures)")
    if model is not None and method != "decsc":
        raise ConfigError("--model needs --method decsc")
    import numpy as np

    from hsidenoise.errors import CubeShapeError
    from hsidenoise.io import read_cube
    from hsidenoise.noreference import no_reference_quality
    from hsidenoise.report import _json_safe, write_no_reference_report

    source = read_cube(noisy, var=var)
    scored = read_cube(denoised, var=var)
    if scored.shape != source.shape:
        raise CubeShapeError(
            f"{denoised} has shape {scored.shape} (bands, rows, cols) but the noisy input {noisy} has "
            f"{source.shape}; compare a result with its own input"
        )
    bands = None
    denoiser = None
    if method is not None:
        from hsidenoise.denoise import _ArrayReader
        from hsidenoise.methods import build_method
        from hsidenoise.statistics import compute_statistics

        if method == "decsc":
            from hsidenoise.device import configure_threads

            configure_threads()
            if model is not None:
                _check_model_name(model)
        denoiser = build_method(method, model=model, spatial=spatial)
        stats = compute_statistics(_ArrayReader(source.data, source.meta), nodata=source.meta.nodata)
        if stats.valid_bands.size == 0:
            raise CubeShapeError(f"every band of {noisy} is dead or NaN; there is nothing to measure")
        denoiser.prepare(stats)
        bands = stats.valid_bands
    result = no_reference_quality(
        np.asarray(source.data, dtype=np.float32),
        np.asarray(scored.data, dtype=np.float32),
        method=denoiser,
        crop=crop,
        seed=seed,
        peak=peak,
        bands=bands,
        nodata=source.meta.nodata,
    )
    files = {}
    extra = {"denoised": str(denoised), "noisy": str(noisy), "method": method}
    if out_dir is not None:
        files = write_no_reference_report(result, out_dir, wavelengths=source.meta.wavelengths, extra=extra)
    document = {**extra, "no_reference": result.to_dict(), "files": {k: str(v) for k, v in files.items()}}
    if json_output:
        _print_json(_json_safe(document))
        return
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    facts = result.to_dict()
    table = Table(title=escape(f"{denoised.name} vs its input {noisy.name} (no reference)"), show_header=False)
    noise = facts["noise"]
    table.add_row(
        "noise sigma (median)",
        ", ".join(
            f"{when} {'-' if noise[key] is None else format(noise[key], '.4g')}"
            for when, key in (("before", "median_before"), ("after", "median_after"))
        ),
    )
    flagged = list(result.flagged_bands)
    table.add_row(
        "removed part not white",
        f"{len(flagged)} of {len(result.bands)} bands"
        + (f" ({_band_list(flagged).split(': ', 1)[1]})" if flagged else ""),
    )
    table.add_row("neighbour bands correlated", f"{len(result.flagged_pairs)} pairs")
    if result.has_sure and result.sure_mpsnr is not None:
        table.add_row("SURE MPSNR (estimate)", f"{result.sure_mpsnr:.2f} dB (peak {result.peak:.4g})")
    else:
        table.add_row("SURE", escape(result.sure_note))
    Console().print(table)


# ---------------------------------------------------------------------------------------------------------
# info / convert
# ---------------------------------------------------------------------------------------------------------


@app.command()
def info(
    cube: Annotated[Path, typer.Argument(help="Cube file (ENVI .hdr, GeoTIFF, MAT, HDF5).")],
    *,
    fmt: FormatOpt = None,
    var: VarOpt = None,
    axes: AxesOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Shape, data type, layout, wavelengths, dead / NaN / nodata bands, per-band noise, memory needed."""
    with _errors_as_one_line():
        from hsidenoise.describe import describe_cube

        facts = describe_cube(cube, fmt=_value(fmt), var=var, axes=axes)
        if json_output:
            _print_json(facts)
            return
        from rich.console import Console
        from rich.markup import escape
        from rich.table import Table

        shape = facts["shape"]
        table = Table(title=escape(str(cube)), show_header=False)
        table.add_row("format", f"{facts['format']} ({facts['interleave'] or 'n/a'} interleave)")
        table.add_row("shape", f"{shape['bands']} bands x {shape['rows']} rows x {shape['cols']} cols")
        table.add_row("data type", f"{facts['dtype']} ({facts['size_bytes'] / 2**20:.1f} MiB)")
        wl = facts["wavelength_range"]
        table.add_row(
            "wavelengths", "none" if wl is None else f"{wl[0]:g} - {wl[1]:g} {facts['wavelength_units'] or ''}"
        )
        table.add_row("nodata / scale", f"{facts['nodata']} / {facts['scale_factor']}")
        table.add_row("dead bands", _band_list(facts["dead_bands"]))
        table.add_row("NaN / nodata bands", _band_list(facts["nan_or_nodata_bands"]))
        table.add_row("bad-band list (bbl=0)", _band_list(facts["bad_band_list_zeros"]))
        noise_facts = facts["noise_sigma"]
        if noise_facts["relative_to_range_median"] is not None:
            table.add_row(
                "noise sigma",
                f"median {100 * noise_facts['relative_to_range_median']:.2f} % of band range; "
                f"noisiest bands {noise_facts['noisiest_bands']}",
            )
        else:
            table.add_row("noise sigma", escape(noise_facts["method"]))
        table.add_row("memory for run", f"{facts['memory_needed_bytes']['run_pipeline'] / 2**20:.0f} MiB (+ the model)")
        Console().print(table)


def _band_list(bands: list[int]) -> str:
    if not bands:
        return "none"
    shown = ", ".join(map(str, bands[:20]))
    return f"{len(bands)}: {shown}{' ...' if len(bands) > 20 else ''}"


@app.command()
def convert(
    cube: Annotated[Path, typer.Argument(help="Input cube (any supported format).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Output cube; its suffix picks the format.")],
    *,
    fmt: FormatOpt = None,
    to: Annotated[
        FormatChoice | None,
        typer.Option(
            "--to", help="Output format when the suffix does not tell, or mat73 to force MAT v7.3 (HDF5-based)."
        ),
    ] = None,
    var: VarOpt = None,
    axes: AxesOpt = None,
    dtype: DtypeOpt = OutputDtype.float32,
    overwrite: OverwriteOpt = False,
    quiet: QuietOpt = False,
    json_output: JsonOpt = False,
) -> None:
    """Convert between ENVI, GeoTIFF, MAT and HDF5, block by block, keeping the metadata."""
    with _errors_as_one_line():
        from hsidenoise.io import convert_cube

        with _Progress(not (quiet or json_output)) as bars:
            written = convert_cube(
                cube,
                output,
                source_fmt=_value(fmt),
                fmt=_value(to),
                var=var,
                axes=axes,
                dtype=dtype.value,
                overwrite=overwrite,
                progress=bars.callback("converting"),
            )
        if json_output:
            _print_json({"input": str(cube), "output": str(written), "dtype": dtype.value})
        elif not quiet:
            _say(f"wrote {written}")


# ---------------------------------------------------------------------------------------------------------
# run
# ---------------------------------------------------------------------------------------------------------


class MethodChoice(str, Enum):
    decsc = "decsc"
    lowrank = "lowrank"
    identity = "identity"


@app.command()
def run(
    inputs: Annotated[list[str], typer.Argument(help="Cube files or quoted globs ('scenes/*.hdr').")],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Output cube, or a directory when there are several inputs.")
    ],
    *,
    method: Annotated[
        MethodChoice | None,
        typer.Option(
            "--method",
            help="lowrank (weight-free, fast; the default because it measured best: the shipped DECSC weights are "
            "level with it, see weights/README.md) or decsc (the network on top of it; the default with --model).",
        ),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            "--model", help="DECSC weights (.safetensors) or a preset name; default: the shipped default weights."
        ),
    ] = None,
    device: Annotated[DeviceChoice, typer.Option("--device", help="auto picks CUDA when present.")] = DeviceChoice.auto,
    tile: Annotated[int, typer.Option("--tile", min=8, help="Spatial tile side in pixels.")] = 256,
    overlap: Annotated[int, typer.Option("--overlap", min=0, help="Overlap between tiles, pixels.")] = 32,
    band_window: Annotated[int, typer.Option("--band-window", min=1, help="Bands per model window.")] = 31,
    band_stride: Annotated[int, typer.Option("--band-stride", min=1, help="Bands between windows.")] = 16,
    batch_size: Annotated[
        int, typer.Option("--batch-size", min=1, help="Tiles per model call (halved on out-of-memory).")
    ] = 4,
    max_iter: Annotated[
        int | None, typer.Option("--max-iter", min=1, help="Solver evaluations per window (default: the model's).")
    ] = None,
    tol: Annotated[float | None, typer.Option("--tol", min=0, help="Solver tolerance (default: the model's).")] = None,
    spatial: Annotated[
        FrontEnd,
        typer.Option(
            "--spatial", help="lowrank: eigen-image denoiser; auto = BM3D when installed, else DCT (3-7x faster)."
        ),
    ] = FrontEnd.auto,
    adapt: Annotated[
        bool,
        typer.Option(
            "--adapt",
            help="Before denoising, fine-tune a copy of the model on the cube itself (self-supervised, SURE); "
            "kept only if it lowers the held-out SURE. Subspace DECSC weights only.",
        ),
    ] = False,
    adapt_seconds: Annotated[
        float, typer.Option("--adapt-seconds", min=0, help="Time budget of --adapt per cube, seconds.")
    ] = 60.0,
    dtype: DtypeOpt = OutputDtype.float32,
    report: Annotated[
        Path | None, typer.Option("--report", help="Write report.json and PNG plots here (one folder per input).")
    ] = None,
    fmt: FormatOpt = None,
    var: VarOpt = None,
    axes: AxesOpt = None,
    overwrite: OverwriteOpt = False,
    quiet: QuietOpt = False,
    json_output: JsonOpt = False,
) -> None:
    """Denoise cubes: read, tile, denoise, blend and write, streaming tile by tile."""
    if method is None:  # the best measured method, or the network when weights are named
        method = MethodChoice.decsc if model is not None else MethodChoice.lowrank
    with _errors_as_one_line():
        from hsidenoise.batch import expand_inputs, plan_jobs, run_jobs
        from hsidenoise.methods import build_method
        from hsidenoise.tiling import TileConfig

        config = TileConfig(tile=tile, overlap=overlap, band_window=band_window, band_stride=band_stride)
        jobs = plan_jobs(expand_inputs(inputs), output, overwrite=overwrite)
        solver = {k: v for k, v in {"max_iter": max_iter, "tol": tol}.items() if v is not None}
        talk = not (quiet or json_output)

        def make_method():
            if method.value == "decsc":
                from hsidenoise.device import configure_threads

                configure_threads()  # one torch thread per core this process may use
            if method.value == "decsc" and model is not None:
                _check_model_name(model)
            denoiser = build_method(
                method.value, model=model, device=device.value, config=config, solver=solver, spatial=spatial.value,
                adapt_seconds=adapt_seconds if adapt else 0.0,
            )  # fmt: skip
            if adapt and hasattr(denoiser, "adapt_progress"):
                tick = bars.callback("adapting")
                denoiser.adapt_progress = lambda spent, allowed: tick(int(spent), int(allowed))
            if talk and method.value == "decsc":
                facts = denoiser.info()
                _say(f"{method.value} ({facts.get('preset', '-')}) on {facts.get('device', 'cpu')}")
            return denoiser

        def done(job, summary) -> None:
            if talk:
                seconds = summary["timings_s"].get("total", 0.0)
                _say(f"wrote {job.output} ({seconds:.1f} s, {summary['tiling']['tiles']} tiles)")

        with _Progress(talk) as bars:
            documents = run_jobs(
                jobs,
                make_method,  # built before the first input is read, and not at all when every output exists
                config,
                dtype=dtype.value,
                overwrite=overwrite,
                batch_size=batch_size,
                report=report,
                open_options={"fmt": _value(fmt), "var": var, "axes": axes},
                progress=bars.callback,
                on_done=done,
            )
        if json_output:
            _print_json(documents[0] if len(jobs) == 1 else {"runs": documents})
        elif not quiet:
            skipped = sum(job.skip for job in jobs)
            if skipped:
                _say(f"skipped {skipped} input(s) whose output exists (use --overwrite to redo them)")


def _check_model_name(model: str) -> None:
    """A bare ``--model`` name (no suffix, no folder) that is no preset and no file is a usage error."""
    path = Path(model)
    if path.suffix or len(path.parts) > 1 or path.exists() or path.with_suffix(".safetensors").exists():
        return  # a path: the weights loader says what is wrong with it
    from hsidenoise.model import PRESETS

    if model not in PRESETS:
        raise ConfigError(
            f"--model {model!r} is neither a preset ({', '.join(sorted(PRESETS))}) nor a weights file; "
            "pass a preset name or the path of a .safetensors file"
        )


# ---------------------------------------------------------------------------------------------------------
# train / finetune / models
# ---------------------------------------------------------------------------------------------------------

DataOpt = Annotated[
    list[Path], typer.Option("--data", help="Cube files or directories of cubes (any format); repeat for more.")
]
OutDirOpt = Annotated[Path, typer.Option("--out", help="Directory for checkpoint.pt, the weights and the card.")]
NoiseMixOpt = Annotated[
    str,
    typer.Option("--noise", help="Noise recipes and weights drawn per cube, e.g. noniid or noniid:0.5,mixture:0.5."),
]


def _train_config(
    *,
    model: str,
    data: list[Path],
    validation: list[Path],
    out: Path,
    noise: str,
    sigma_max: float | None,
    patch_size: int,
    patches_per_cube: int,
    front_end: str,
    batch_size: int,
    lr: float | None,
    lr_step_epochs: int,
    epochs: int | None,
    time_budget: float | None,
    steps_per_epoch: int,
    seed: int,
    checkpoint_every: float,
    loss: str,
    self_supervised: bool = False,
):
    from hsidenoise.data import SamplerConfig, parse_noise_mix
    from hsidenoise.lowrank import LowRankConfig
    from hsidenoise.train import TrainConfig

    sampler: Any = SamplerConfig(
        noise=parse_noise_mix(noise, sigma_max=sigma_max),
        patch_size=patch_size,
        patches_per_cube=patches_per_cube,
        front_end=LowRankConfig(spatial=front_end),
    )
    if self_supervised:  # the data are the user's noisy cubes: no synthetic noise, SURE in whitened units
        from dataclasses import replace

        from hsidenoise.subspace_training import subspace_sampler_config

        sampler = replace(subspace_sampler_config(sampler), self_supervised=True, real_fraction=1.0)
    return TrainConfig(
        model=model,
        data=tuple(data),
        validation=tuple(validation),
        out_dir=out,
        sampler=sampler,
        batch_size=batch_size,
        lr=lr,
        lr_step_epochs=lr_step_epochs,
        epochs=None if time_budget is not None and epochs is None else (epochs if epochs is not None else 30),
        time_budget_s=time_budget,
        steps_per_epoch=steps_per_epoch,
        seed=seed,
        checkpoint_every_s=checkpoint_every,
        loss=loss,
    )


def _train_progress(bars: _Progress, quiet: bool):
    update = bars.callback("training")
    stderr = _stderr()

    def on_event(event) -> None:
        total = event.total_steps or 0
        loss = "" if event.loss is None else f"loss {event.loss:.4g}"
        speed = "" if event.steps_per_s is None else f"{event.steps_per_s:.2f} step/s"
        update(event.step, total or event.step + 1, f"epoch {event.epoch} {loss} {speed} lr {event.lr:.2g}")
        if event.event == "epoch" and event.validation is not None and not quiet:
            v = event.validation
            stderr.print(
                f"epoch {event.epoch}: validation MPSNR {v.mpsnr:.2f} dB "
                f"(front end {v.init_mpsnr:.2f}, noisy {v.noisy_mpsnr:.2f})"
            )

    return on_event


def _train_document(result) -> dict[str, Any]:
    v = result.validation
    return {
        "weights": None if result.weights is None else str(result.weights),
        "checkpoint": str(result.checkpoint),
        "steps": result.steps,
        "epochs": result.epochs,
        "wall_time_s": round(result.wall_time_s, 1),
        "validation": None
        if v is None
        else {"mpsnr": v.mpsnr, "front_end_mpsnr": v.init_mpsnr, "noisy_mpsnr": v.noisy_mpsnr, "per_case": v.per_case},
    }


def _training_command(finetuning: bool):
    def command(
        data: DataOpt,
        out: OutDirOpt,
        *,
        validation: Annotated[
            list[Path] | None, typer.Option("--validation", help="Cubes scored each epoch, never trained on.")
        ] = None,
        preset: Annotated[str, typer.Option("--preset", help="Model preset (train only): subspace, lite or paper.")] = "subspace",
        from_weights: Annotated[
            Path | None, typer.Option("--from", help="Weights to start from (finetune; default: the shipped ones).")
        ] = None,
        noise: NoiseMixOpt = "noniid",
        sigma_max: Annotated[
            float | None, typer.Option("--sigma-max", min=0, help="Gaussian level, 0-255 scale (default 95).")
        ] = None,
        patch_size: Annotated[int, typer.Option("--patch-size", min=8, help="Training crop side.")] = 64,
        patches_per_cube: Annotated[
            int, typer.Option("--patches-per-cube", min=1, help="Crops per cube per noise draw.")
        ] = 256,
        front_end: Annotated[
            FrontEnd, typer.Option("--front-end", help="Spatial denoiser of the low-rank front end.")
        ] = FrontEnd.dct,
        batch_size: Annotated[int, typer.Option("--batch-size", min=1)] = 8,
        lr: Annotated[
            float | None, typer.Option("--lr", help="Adam learning rate (default 1e-4 train, 2e-5 finetune).")
        ] = None,
        lr_step_epochs: Annotated[int, typer.Option("--lr-step-epochs", min=1, help="Halve the rate every N.")] = 10,
        epochs: Annotated[int | None, typer.Option("--epochs", min=1, help="Epochs (default 30).")] = None,
        time_budget: Annotated[
            float | None, typer.Option("--time-budget", min=1, help="Stop after this many seconds of training.")
        ] = None,
        steps_per_epoch: Annotated[int, typer.Option("--steps-per-epoch", min=1)] = 250,
        seed: Annotated[int, typer.Option("--seed")] = 0,
        checkpoint_every: Annotated[
            float, typer.Option("--checkpoint-every", min=0, help="Seconds between checkpoints.")
        ] = 300.0,
        loss: Annotated[str, typer.Option("--loss", help="mse or logmse (mean -PSNR per example).")] = "mse",
        resume: Annotated[bool, typer.Option("--resume", help="Continue from OUT/checkpoint.pt.")] = False,
        self_supervised: Annotated[
            bool,
            typer.Option(
                "--self-supervised",
                help="The --data cubes are real noisy data with no clean version: no synthetic noise is added "
                "(--noise is ignored) and the loss is SURE in whitened units. Subspace weights only. Without it, "
                "--data must be clean cubes, on which noise is synthesised.",
            ),
        ] = False,
        quiet: QuietOpt = False,
        json_output: JsonOpt = False,
    ) -> None:
        with _errors_as_one_line():
            from hsidenoise import train as training

            cfg = _train_config(
                model=preset,
                data=data,
                validation=validation or [],
                out=out,
                noise=noise,
                sigma_max=sigma_max,
                patch_size=patch_size,
                patches_per_cube=patches_per_cube,
                front_end=front_end.value,
                batch_size=batch_size,
                lr=lr,
                lr_step_epochs=lr_step_epochs,
                epochs=epochs,
                time_budget=time_budget,
                steps_per_epoch=steps_per_epoch,
                seed=seed,
                checkpoint_every=checkpoint_every,
                loss=loss,
                self_supervised=self_supervised,
            )
            with _Progress(not (quiet or json_output)) as bars:
                progress = _train_progress(bars, quiet or json_output)
                if finetuning:
                    source = from_weights
                    if source is None:
                        from hsidenoise.model import find_default_weights

                        source = find_default_weights()
                        if source is None:
                            raise ConfigError("no shipped weights in weights/ to finetune; pass --from WEIGHTS")
                    result = training.finetune(cfg, source, progress=progress, resume=resume)
                else:
                    result = training.fit(cfg, progress=progress, resume=resume)
            document = _train_document(result)
            if json_output:
                _print_json(document)
            elif not quiet:
                _say(f"wrote {document['weights']} ({result.steps} steps, {result.wall_time_s:.0f} s)")

    return command


train = app.command(
    "train", help="Train DECSC on your cubes with synthetic noise; checkpoints, --resume, torchrun-ready."
)(_training_command(finetuning=False))
finetune = app.command(
    "finetune", help="Continue training existing weights (default: the shipped ones) on your own sensor's cubes."
)(_training_command(finetuning=True))


@app.command()
def models(json_output: JsonOpt = False) -> None:
    """List the DECSC presets, their parameter counts and the weights found in weights/."""
    with _errors_as_one_line():
        from hsidenoise.model import list_presets, weights_dir

        presets = list_presets()
        found = []
        for path in sorted(weights_dir().glob("*.safetensors")) if weights_dir().is_dir() else []:
            card_path = path.with_suffix(".json")
            card: dict[str, Any] = {}
            if card_path.is_file():
                try:
                    card = json.loads(card_path.read_text(encoding="utf-8"))
                except (OSError, json.JSONDecodeError):
                    card = {}
            found.append({"path": str(path), "card": card})
        document = {"presets": presets, "weights": found}
        if json_output:
            _print_json(document)
            return
        from rich.console import Console
        from rich.markup import escape
        from rich.table import Table

        table = Table(title="DECSC presets")
        for column in ("preset", "parameters", "noise-aware", "prior", "shipped weights"):
            table.add_column(column)
        for item in presets:
            table.add_row(
                item["name"], f"{item['parameters']:,}", str(item["noise_aware"]), item["prior"], item["weights"] or "-"
            )
        Console().print(table)
        if not found:
            Console().print("no weights in weights/")
        for item in found:
            meta = item["card"]
            card = {**meta, **meta.get("card", {})}  # the training card sits under "card"
            score = (card.get("validation") or {}).get("mpsnr")
            line = (
                f"weights: {item['path']} (preset {card.get('preset', '?')}, {card.get('steps', '?')} steps, "
                f"noise {card.get('noise', '?')}, validation MPSNR {score if score is None else round(score, 2)})"
            )
            Console().print(escape(line), soft_wrap=True)
            measured = meta.get("measured") or {}
            if measured:
                Console().print(
                    escape(
                        f"  measured against its front end ({measured.get('front_end', 'lowrank')}): "
                        f"{measured['mean_gain_db']:+.2f} dB MPSNR on average, {measured['min_gain_db']:+.2f} dB at "
                        f"worst, over {measured['cases']} validation cases ({measured['command']})"
                    ),
                    soft_wrap=True,
                )
