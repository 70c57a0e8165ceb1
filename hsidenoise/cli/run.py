"""`hsidenoise run`: denoise one cube or a batch, tile by tile (the library side is `hsidenoise.batch`)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Annotated

import typer

from hsidenoise.cli.options import (
    AxesOpt,
    DeviceChoice,
    DtypeOpt,
    FormatOpt,
    FrontEnd,
    JsonOpt,
    MethodChoice,
    OutputDtype,
    OverwriteOpt,
    ProfileBandsOpt,
    QuietOpt,
    RandomWeightsOpt,
    ReportOpt,
    SpectraPixelsOpt,
    ThreadsOpt,
    VarOpt,
    resolve_model,
    value_of,
)
from hsidenoise.cli.process import thread_count
from hsidenoise.cli.terminal import ProgressBars, errors_as_one_line, interruption_exit, print_json, say


def run(
    inputs: Annotated[list[str], typer.Argument(help="Cube files or quoted globs ('scenes/*.hdr').")],
    output: Annotated[
        str,
        typer.Option(
            "--output", "-o", metavar="PATH", help="Output cube; a folder (created) for several inputs, a glob, "
            "a folder of inputs, --shard, or a path ending in /.",
        ),
    ],
    *,
    method: Annotated[
        MethodChoice | None,
        typer.Option(
            "--method",
            help="lowrank (weight-free, fast; the default) or decsc (the shipped DCT-CSC network on top of it: "
            "+0.19 to +0.20 dB MPSNR on average, not on every cube, at 1.1-4.2x the time; see weights/README.md; "
            "the default with --model).",
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
    band_blend: Annotated[
        bool,
        typer.Option(
            "--band-blend/--no-band-blend",
            help="decsc (DCT-CSC weights): per band, keep the share of the model's change to its front end that "
            "SURE chooses (default); --no-band-blend: the model's output as it is.",
        ),
    ] = True,
    component_blend: Annotated[
        bool,
        typer.Option(
            "--component-blend/--no-component-blend",
            help="lowrank and decsc: per band, keep the components nearest the subspace's edge in the share SURE "
            "chooses (default); --no-component-blend: the edge's rank for every band (faster, lower MPSNR).",
        ),
    ] = True,
    dtype: DtypeOpt = OutputDtype.float32,
    report: ReportOpt = None,
    profile_bands: ProfileBandsOpt = None,
    spectra_pixels: SpectraPixelsOpt = None,
    fmt: FormatOpt = None,
    var: VarOpt = None,
    axes: AxesOpt = None,
    overwrite: OverwriteOpt = False,
    shard: Annotated[
        str | None,
        typer.Option(
            "--shard", metavar="K/N", help="Run only the K-th (0 to N-1) of N shares of the sorted inputs, e.g. "
            "--shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT. Under torchrun the ranks share the inputs alike.",
        ),
    ] = None,
    threads: ThreadsOpt = None,
    random_weights: RandomWeightsOpt = False,
    quiet: QuietOpt = False,
    json_output: JsonOpt = False,
) -> None:
    """Denoise cubes: read, tile, denoise, blend and write, streaming tile by tile."""
    if method is None:  # the best measured method, or the network when weights are named
        method = MethodChoice.decsc if model is not None else MethodChoice.lowrank
    with errors_as_one_line():
        cpu_threads = thread_count(threads)  # before numpy and torch load their thread pools
        from hsidenoise.batch import (
            batch_document, convergence_warning, jobs_of, plan_jobs, run_jobs,
        )  # fmt: skip
        from hsidenoise.io.discovery import expand_inputs, several_inputs
        from hsidenoise.methods import build_method
        from hsidenoise.provenance import method_provenance
        from hsidenoise.quality.report_choices import ReportChoices
        from hsidenoise.scaleout import RankGroup, Ranks, Shard
        from hsidenoise.tiling import TileConfig

        config = TileConfig(tile=tile, overlap=overlap, band_window=band_window, band_stride=band_stride)
        choices = ReportChoices.parse(profile_bands, spectra_pixels, report=report)
        share = Shard.parse(shard) if shard is not None else None
        ranks = Ranks.from_env()  # set under torchrun: this process runs its rank's share, on its own GPU
        several = several_inputs(inputs) or share is not None
        jobs = plan_jobs(expand_inputs(inputs), output, overwrite=overwrite, several=several, report=report)
        device_choice = ranks.device(device.value) if ranks is not None else device.value
        solver = {k: v for k, v in {"max_iter": max_iter, "tol": tol}.items() if v is not None}
        talk = not (quiet or json_output)
        provenance: dict[str, str] = {}  # filled when the method is built, recorded in every output

        def make_method():
            if method.value != "identity":  # both methods compute with torch on the CPU
                from hsidenoise.device import configure_threads

                configure_threads(cpu_threads)
            weights = resolve_model(model, random_weights=random_weights) if method.value == "decsc" else model
            provenance.update(method_provenance(method.value, weights, random_weights=random_weights))
            denoiser = build_method(
                method.value, model=weights, device=device_choice, config=config, solver=solver, spatial=spatial.value,
                adapt_seconds=adapt_seconds if adapt else 0.0, band_blend=band_blend, component_blend=component_blend,
            )  # fmt: skip
            if adapt:
                tick = bars.callback("adapting")
                denoiser.adapt_progress = lambda spent, allowed: tick(int(spent), int(allowed))
            if talk and method.value == "decsc":
                facts = denoiser.info()
                say(f"{method.value} ({facts.get('preset', '-')}) on {facts.get('device', 'cpu')}")
            return denoiser

        def done(job, summary) -> None:
            if talk:
                seconds = summary["timings_s"].get("total", 0.0)
                tiles = summary["tiling"]["tiles"]
                say(f"wrote {job.output} ({seconds:.1f} s, {tiles} tile{'' if tiles == 1 else 's'})")
            warning = convergence_warning(summary.get("solver", {}))
            for line in [*summary.get("warnings", []), *([warning] if warning else [])]:
                if not quiet:  # on stderr, so also with --json
                    say(f"{job.source.name}: {line}" if several else line)

        def failed(job, record) -> None:
            if several:  # single-input mode: the error itself is raised and printed as one line
                say(f"failed {job.source}: {record['error']}")
            elif json_output:
                print_json(record)

        shares = [part for part in (share, ranks.shard if ranks else None) if part is not None]
        records: list[dict] = []  # filled as the batch goes: what was done is still known after Ctrl-C or SIGTERM
        with RankGroup(ranks) as group, ProgressBars(talk) as bars, batch_interruption(
            several, records, planned=len(jobs_of(jobs, shares)), json_output=json_output, shard=share,
            main=group.is_main,
        ):  # fmt: skip
            run_jobs(
                jobs,
                make_method,  # built before the first input is read, and not at all when every output exists
                config,
                dtype=dtype.value,
                overwrite=overwrite,
                batch_size=batch_size,
                report=report,
                open_options={"fmt": value_of(fmt), "var": var, "axes": axes},
                progress=bars.callback,
                phase=bars.phase,
                on_done=done,
                on_failed=failed,
                several=several,
                shares=shares,
                provenance=provenance,
                choices=choices,
                records=records,
            )
            records = group.gather(records, order=[job.source for job in jobs])  # rank 0 reports for all
        failures = sum("error" in record for record in records)
        if group.is_main:
            if json_output:
                world_size = ranks.world_size if ranks else None
                print_json(batch_document(records, shard=share, world_size=world_size) if several else records[0])
            if talk:
                for record in records:
                    if "report_note" in record:
                        say(f"{record['output']} exists; wrote its missing report from it, without denoising again")
                skipped = sum("skipped" in record for record in records)
                if skipped:
                    say(f"skipped {skipped} input(s) whose output exists (use --overwrite to redo them)")
            if failures:
                say(f"{failures} of {len(records)} input(s) failed and have no output; see the lines above")
        if failures:
            raise typer.Exit(code=1)


@contextlib.contextmanager
def batch_interruption(
    several: bool, records: list[dict], *, planned: int, json_output: bool, shard, main: bool
) -> Iterator[None]:
    """After Ctrl-C or SIGTERM in several-input mode: print the ``--json`` document of what was done (with the
    ``interrupted`` record, :func:`hsidenoise.batch.batch_document`) and one line saying how far the batch
    got, then exit 130 or 143. Under torchrun each rank knows only its own share: rank 0 prints it."""
    try:
        yield
    except KeyboardInterrupt as stop:
        if not several or not main:
            raise
        from hsidenoise.batch import batch_document

        document = batch_document(records, shard=shard, planned=planned)
        if json_output:
            print_json(document)
        counts = document["summary"]
        stopped = document.get("interrupted")
        if stopped is None:
            where = ""
        elif stopped["output_complete"]:
            where = f"; it stopped after {stopped['output']} was written, before its record"
        else:
            where = f"; it stopped in {stopped['input']}, which left no output"
        detail = (
            f"{counts['written'] + counts['skipped'] + counts['failed']} of {counts['inputs']} input(s) done "
            f"({counts['written']} written, {counts['skipped']} skipped, {counts['failed']} failed){where}; "
            "no output was left half-written: re-run the same command to do the rest"
        )
        raise interruption_exit(stop, detail) from None
