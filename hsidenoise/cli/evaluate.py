"""`hsidenoise eval`: full-reference scores (`--ref`) or no-reference figures (`--noisy`) of a denoised cube."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated

import typer

from hsidenoise.cli.options import (
    FrontEnd,
    JsonOpt,
    QuietOpt,
    RandomWeightsOpt,
    SsimMode,
    SureMethodChoice,
    ThreadsOpt,
    VarOpt,
    resolve_model,
    value_of,
)
from hsidenoise.cli.process import thread_count
from hsidenoise.cli.terminal import band_list, errors_as_one_line, print_json, say
from hsidenoise.errors import ConfigError


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
        typer.Option(
            "--peak",
            help="PSNR peak value of the data. Default with --ref: 1 when the reference's valid values lie in "
            "-0.01..1.01, else its maximum, or its max - min when it has negative values (said in the output). "
            "Default without --ref: the noisy input's max - min.",
        ),
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
    random_weights: RandomWeightsOpt = False,
    threads: ThreadsOpt = None,
    var: VarOpt = None,
    quiet: QuietOpt = False,
    json_output: JsonOpt = False,
) -> None:
    """Score a denoised cube: against a reference (--ref: MPSNR, SSIM, SAM, ERGAS), or without one (--noisy:
    noise before / after, whiteness of the removed part, SURE-estimated PSNR with --method)."""
    with errors_as_one_line():
        threads = thread_count(threads)
        if ref is None:
            _evaluate_without_reference(
                denoised,
                noisy,
                out_dir=out_dir,
                peak=peak,
                method=value_of(method),
                model=model,
                spatial=spatial.value,
                crop=crop,
                seed=seed,
                random_weights=random_weights,
                threads=threads,
                var=var,
                json_output=json_output,
                quiet=quiet,
            )
            return
        if method is not None or model is not None or random_weights:
            raise ConfigError(
                "--method, --model and --random-weights are for the no-reference mode; leave them out with --ref"
            )
        from hsidenoise.errors import CubeShapeError
        from hsidenoise.io import read_cube
        from hsidenoise.quality.metrics import evaluate
        from hsidenoise.quality.plots import write_metrics_report

        reference = read_cube(ref, var=var)
        scored = read_cube(denoised, var=var)
        if scored.shape != reference.shape:
            raise CubeShapeError(
                f"{denoised} has shape {scored.shape} (bands, rows, cols) but the reference {ref} has "
                f"{reference.shape}; score cubes of the same scene"
            )
        scale = _peak_of(reference, peak)
        if scale.warning and not quiet:
            say(scale.warning)
        report = _scored(evaluate, scored.data, reference.data, ssim.value, scale)
        noisy_report = None
        if noisy is not None:
            noisy_cube = read_cube(noisy, var=var)
            if noisy_cube.shape != reference.shape:
                raise CubeShapeError(f"{noisy} has shape {noisy_cube.shape}, the reference has {reference.shape}")
            noisy_report = _scored(evaluate, noisy_cube.data, reference.data, ssim.value, scale)
        files = {}
        if out_dir is not None:
            files = write_metrics_report(
                report, out_dir, noisy_report=noisy_report, wavelengths=reference.meta.wavelengths
            )
        document = {
            "denoised": report.to_dict(),
            "peak": {"value": scale.peak, "source": scale.source, "data_range": list(scale.data_range)},
            "files": {k: str(v) for k, v in files.items()},
        }
        if noisy_report is not None:
            document["noisy"] = noisy_report.to_dict()
        if json_output:
            print_json(document)
            return
        if quiet:
            return
        from rich.console import Console
        from rich.markup import escape
        from rich.table import Table

        table = Table(title=escape(f"{denoised.name} vs {ref.name}"))
        for column in ("cube", "MPSNR (dB)", "SSIM", "SAM (rad)", "ERGAS"):
            table.add_column(column)
        rows = [("noisy", noisy_report)] if noisy_report is not None else []
        for name, rep in rows + [("denoised", report)]:
            mpsnr = "identical" if rep.all_identical else f"{rep.mpsnr:.2f}"
            table.add_row(name, mpsnr, f"{rep.mssim:.4f}", f"{rep.sam:.4f}", f"{rep.ergas:.2f}")
        Console().print(table)
        if scale.source == "reference":
            say(scale.note)
        for note in report.notes:
            if note != scale.note:
                say(f"note: {note}")


UNIT_RANGE_SLACK = 0.01
"""A reference within [-0.01, 1.01] is taken as [0, 1] data (peak 1)."""


@dataclass(frozen=True)
class _Peak:
    """The PSNR peak of a full-reference score and where it came from.

    Attributes:
        peak: the value; source: ``"--peak"``, ``"0..1 data"`` or ``"reference"`` (its maximum, or its range
        when it has negative values); data_range: (min, max) of the reference's valid values; note: the
        sentence for the report; warning: one line for stderr, or "" when there is nothing to warn about.
    """

    peak: float
    source: str
    data_range: tuple[float, float]
    note: str
    warning: str = ""


def _peak_of(reference, peak: float | None) -> _Peak:
    """The peak for ``reference`` (a :class:`hsidenoise.cube.Cube`): ``--peak`` when given (with a warning if it
    is 1 on data clearly not in 0..1), else 1 for 0..1 data, else the reference's maximum (its max - min when it
    has negative values), so raw sensor units score sensibly."""
    import numpy as np

    data = np.asarray(reference.data)
    valid = np.isfinite(data) if data.dtype.kind == "f" else np.ones(data.shape, dtype=bool)
    if reference.meta.nodata is not None:
        valid &= data != reference.meta.nodata
    values = data[valid]
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 1.0)
    span = f"{low:.6g}..{high:.6g}"
    if peak is not None:
        clearly_not_unit = high > 2.0 or low < -1.0
        warning = (
            f"warning: --peak 1 but the reference spans {span}, not 0..1: PSNR assumes a peak of 1; "
            "leave --peak out to use the reference's maximum"
            if peak == 1 and clearly_not_unit
            else ""
        )
        return _Peak(peak, "--peak", (low, high), f"peak {peak:g} from --peak (reference spans {span})", warning)
    if low >= -UNIT_RANGE_SLACK and high <= 1 + UNIT_RANGE_SLACK:
        return _Peak(1.0, "0..1 data", (low, high), f"peak 1: the reference spans {span}, 0..1 data")
    value = high if low >= 0 else high - low
    if value <= 0:
        return _Peak(1.0, "0..1 data", (low, high), f"peak 1: the reference spans {span}")
    what = "maximum" if low >= 0 else "range (max - min)"
    return _Peak(
        value,
        "reference",
        (low, high),
        f"peak {value:.6g} is the reference's {what} (it spans {span}, not 0..1; --peak sets another); "
        f"SSIM computed on the cubes divided by {value:.6g}",
    )


def _scored(evaluate, x, ref, ssim_mode: str, scale: _Peak):
    """``evaluate`` with ``scale``: a detected peak divides both cubes by it (SSIM's constants are for a 0..1
    range; PSNR, SAM and ERGAS do not change) and puts RMSE back in data units; a peak from ``--peak`` is
    passed as before."""
    import numpy as np

    if scale.source != "reference":
        return evaluate(x, ref, ssim_mode=ssim_mode, peak=scale.peak)
    factor = 1.0 / scale.peak
    report = evaluate(
        np.asarray(x, dtype=np.float64) * factor, np.asarray(ref, dtype=np.float64) * factor, ssim_mode=ssim_mode
    )
    return replace(report, peak=scale.peak, rmse=report.rmse * scale.peak, notes=(*report.notes, scale.note))


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
    random_weights: bool,
    threads: int,
    var: str | None,
    json_output: bool,
    quiet: bool = False,
) -> None:
    """``eval DENOISED --noisy NOISY`` without ``--ref``: :func:`hsidenoise.quality.noreference.no_reference_quality`."""
    if noisy is None:
        raise ConfigError("eval needs --ref REFERENCE (full-reference scores) or --noisy NOISY (no-reference figures)")
    if model is not None and method != "decsc":
        raise ConfigError("--model needs --method decsc")
    import numpy as np

    from hsidenoise.errors import CubeShapeError
    from hsidenoise.io import read_cube
    from hsidenoise.quality.noreference import no_reference_quality
    from hsidenoise.quality.plots import _json_safe, write_no_reference_report

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

        from hsidenoise.device import configure_threads

        configure_threads(threads)
        if method == "decsc":
            model = resolve_model(model, random_weights=random_weights)
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
        print_json(_json_safe(document))
        return
    if quiet:
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
        + (f" ({band_list(flagged).split(': ', 1)[1]})" if flagged else ""),
    )
    table.add_row("neighbour bands correlated", f"{len(result.flagged_pairs)} pairs")
    if result.has_sure and result.sure_mpsnr is not None:
        table.add_row("SURE MPSNR (estimate)", f"{result.sure_mpsnr:.2f} dB (peak {result.peak:.4g})")
    else:
        table.add_row("SURE", escape(result.sure_note))
    Console().print(table)
