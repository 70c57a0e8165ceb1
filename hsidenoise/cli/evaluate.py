"""`hsidenoise eval`: full-reference scores (`--ref`) or no-reference figures (`--noisy`) of a denoised cube."""

from __future__ import annotations

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
        typer.Option("--method", help="No-reference: the method that denoised (named in the report; not re-run)."),
    ] = None,
    model: Annotated[
        str | None, typer.Option("--model", help="No-reference, decsc: weights or preset (default: shipped).")
    ] = None,
    spatial: Annotated[
        FrontEnd, typer.Option("--spatial", help="No-reference, lowrank: its eigen-image denoiser, as for run.")
    ] = FrontEnd.auto,
    crop: Annotated[
        int, typer.Option("--crop", min=8, help="No-reference: side of the central window for the correlations.")
    ] = 128,
    seed: Annotated[int, typer.Option("--seed", help="No-reference: seed of the pixel sample.")] = 0,
    random_weights: RandomWeightsOpt = False,
    threads: ThreadsOpt = None,
    var: VarOpt = None,
    quiet: QuietOpt = False,
    json_output: JsonOpt = False,
) -> None:
    """Score a denoised cube: against a reference (--ref: MPSNR, SSIM, SAM, ERGAS), or without one (--noisy:
    input noise, removed std and their ratio, calibrated whiteness of the removed part)."""
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
        from hsidenoise.api import evaluate

        found = evaluate(denoised, ref=ref, noisy=noisy, out_dir=out_dir, ssim=ssim.value, peak=peak, var=var)
        scale, report, noisy_report = found.peak, found.denoised, found.noisy
        if scale.warning and not quiet:
            say(scale.warning)
        if json_output:
            print_json(found.to_dict())
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
    """``eval DENOISED --noisy NOISY`` without ``--ref``: :func:`hsidenoise.api.evaluate`, printed."""
    if noisy is None:
        raise ConfigError("eval needs --ref REFERENCE (full-reference scores) or --noisy NOISY (no-reference figures)")
    if model is not None and method != "decsc":
        raise ConfigError("--model needs --method decsc")
    if method is not None:
        from hsidenoise.device import configure_threads

        configure_threads(threads)
        if method == "decsc":
            model = resolve_model(model, random_weights=random_weights)
    from hsidenoise.api import evaluate

    found = evaluate(
        denoised, noisy=noisy, out_dir=out_dir, peak=peak, method=method, model=model, spatial=spatial, crop=crop,
        seed=seed, var=var,
    )  # fmt: skip
    if json_output:
        print_json(found.to_dict())
        return
    if quiet:
        return
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    result = found.result
    facts = result.to_dict()
    table = Table(title=escape(f"{denoised.name} vs its input {noisy.name} (no reference)"), show_header=False)
    noise = facts["noise"]
    for label, key in (("input noise sigma (median, HySime)", "median_sigma_before"),
                       ("removed std (median)", "median_removed_std"),
                       ("removed / noise ratio (median)", "median_removed_ratio")):
        table.add_row(label, "-" if noise[key] is None else format(noise[key], ".4g"))
    flagged = list(result.flagged_bands)
    table.add_row(
        "removed part correlated unlike the input noise",
        f"{len(flagged)} of {len(result.bands)} bands"
        + (f" ({band_list(flagged).split(': ', 1)[1]})" if flagged else ""),
    )
    table.add_row("of which: shared with a neighbouring band more than the noise", f"{len(result.flagged_pairs)} pairs")
    table.add_row("MPSNR estimate", escape(f"none: {result.estimated_mpsnr_reason}"))
    Console().print(table)
