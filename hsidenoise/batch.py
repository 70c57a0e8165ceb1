"""Batch runs: many inputs into one output directory, resumable, with an optional report per cube.

``hsidenoise run a.hdr b.hdr 'scenes/*.tif' -o clean/`` pairs every input with ``clean/<name><suffix>`` and
skips pairs whose output already exists (unless ``overwrite``), so a killed batch resumes where it stopped:
outputs are written to a temporary file and renamed, so an existing output is always a complete one.

Several inputs, a glob or a folder make a batch (:func:`~hsidenoise.io.discovery.several_inputs`) whatever they match, even one cube:
``-o`` is then a folder (created), a cube that fails is recorded and the batch goes on, and the ``--json``
document always has the shape of :func:`batch_document`. :func:`hsidenoise.io.discovery.expand_inputs` turns the command line into
cube files, :func:`plan_jobs` pairs them with outputs and refuses, before any work, an output that is an input
(also through a symlink, or the other file of an ENVI pair) or, for a single cube, an output that exists;
:func:`run_jobs` runs the plan, or one share of it (:mod:`hsidenoise.scaleout`: ``--shard``, torchrun ranks),
and returns one JSON-able record per input (with the ``--report`` bundle when asked).
"""

from __future__ import annotations

import contextlib
import os
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hsidenoise.errors import ConfigError, CubeWriteError, HsiDenoiseError
from hsidenoise.io.discovery import cube_files
from hsidenoise.io.staging import same_file, unfinished_commit
from hsidenoise.quality.run_report import (
    REPORT_FROM_OUTPUT_NOTE,
    check_report_space,
    write_report,
    write_report_of_output,
)

if TYPE_CHECKING:
    from hsidenoise.denoise import RunResult
    from hsidenoise.quality.report_choices import ReportChoices
    from hsidenoise.denoiser import Denoiser
    from hsidenoise.scaleout import Shard
    from hsidenoise.tiling import TileConfig

@dataclass(frozen=True)
class Job:
    """One input and where its output goes.

    Attributes:
        source: the input cube (the ``.hdr`` of an ENVI pair).
        output: the cube to write.
        skip: True when ``output`` exists and the batch does not overwrite.
    """

    source: Path
    output: Path
    skip: bool


def plan_jobs(
    inputs: Sequence[Path],
    output: str | Path,
    *,
    overwrite: bool = False,
    several: bool | None = None,
    report: Path | None = None,
) -> list[Job]:
    """Pair inputs with outputs, and refuse before any work the outputs that cannot be written.

    Single-input mode: ``output`` is the output file, or, when it is an existing directory or ends with a
    slash (``-o clean/``), the folder of ``output/<name>``; an output that exists is refused unless
    ``overwrite``. Several-input mode (:func:`~hsidenoise.io.discovery.several_inputs`; default: more than one input): ``output`` is a
    directory (created when the first cube is written) and each input writes ``output/<name>`` under its own
    file name, so formats are kept; an output that exists is skipped unless ``overwrite``, so a killed batch
    resumes.

    Args:
        inputs: the cube files (:func:`~hsidenoise.io.discovery.expand_inputs`).
        output: ``-o`` as typed (a string keeps its trailing slash).
        overwrite: replace outputs that exist.
        several: several-input mode, as :func:`~hsidenoise.io.discovery.several_inputs` tells from the command line (a glob that
            matched one cube is still a batch); None: more than one input.
        report: the ``--report`` folder. A single output that exists while this folder holds no complete
            report (the run was done, its report was not: a full disk, a kill) is then a skip, whose report
            :func:`run_jobs` writes from the existing output, instead of an error.

    Raises:
        ConfigError: several inputs but ``output`` is a file or looks like one, or two inputs with the same name.
        UnsupportedFormatError: an output suffix that no format claims.
        CubeWriteError: an output that is one of the inputs (also through a symlink or the other file of an
            ENVI pair), or the single output exists without ``overwrite``.
    """
    from hsidenoise.io import format_for

    if not inputs:
        raise ConfigError("no input cube given; pass one or more cube files or a quoted glob")
    folder = str(output).endswith(("/", os.sep))
    output = Path(output)
    several = len(inputs) > 1 if several is None else several
    if not several:
        target = output / inputs[0].name if folder or output.is_dir() else output
        files = cube_files(target, existing=False)
        finish_report = (
            report is not None
            and not overwrite
            and all(path.is_file() for path in files)
            and not unfinished_commit(files[::-1])
            and not _report_complete(report)
        )
        jobs = [Job(inputs[0], target, skip=finish_report)]
    else:
        what = f"{len(inputs)} inputs" if len(inputs) > 1 else "a batch (a glob, a folder or --shard)"
        if output.exists() and not output.is_dir():
            raise ConfigError(f"{what} need a directory for -o, but {output} is a file")
        if not output.exists() and output.suffix and not folder:
            raise ConfigError(
                f"{what} need a directory for -o; got {output}, which looks like a file name "
                "(end it with / to mean a folder)"
            )
        jobs = []
        names: dict[str, Path] = {}
        for source in inputs:
            name = source.name
            if name in names:
                raise ConfigError(f"{source} and {names[name]} would both write {output / name}; run them separately")
            names[name] = source
            target = output / name
            done = all(path.exists() for path in cube_files(target, existing=False))
            jobs.append(Job(source, target, skip=done and not overwrite))
    input_files = [path for source in inputs for path in cube_files(source, existing=True)]
    for job in jobs:
        files = cube_files(job.output, existing=False)
        for path in files:  # also for skipped jobs: a batch into its own input folder must not "skip" its inputs
            for source in input_files:
                if same_file(path, source):
                    where = "; write into another folder" if several else "; choose another output path"
                    raise CubeWriteError(f"refusing to write {path}: it is the input {source}{where}")
        if job.skip:
            continue
        format_for(job.output)  # an output suffix no format claims is refused before any work
        interrupted = unfinished_commit(files[::-1])  # a kill between the ENVI renames: the data file is no output
        for path in files:
            if not several and not overwrite and not interrupted and (path.exists() or path.is_symlink()):
                raise CubeWriteError(f"{path} already exists; use --overwrite to replace it")
    return jobs


def run_summary(result: RunResult, job: Job, *, method_info: dict[str, Any] | None = None) -> dict[str, Any]:
    """The JSON facts of one run: paths, shape, method, timings, tile plan, untouched bands, solver work."""
    records = result.tile_records
    evaluations = [r.info["evaluations"] for r in records if "evaluations" in r.info]
    summary: dict[str, Any] = {
        "input": str(job.source),
        "output": str(job.output),
        "shape": {"bands": result.shape[0], "rows": result.shape[1], "cols": result.shape[2]},
        "method": result.method,
        "method_info": method_info or {},
        "timings_s": {k: round(v, 3) for k, v in result.timings.items()},
        "tiling": {
            "tile": result.config.tile,
            "overlap": result.config.overlap,
            "band_window": result.config.band_window,
            "band_stride": result.config.band_stride,
            "tiles": len(result.tiles),
            "batch_size": result.batch_size,
        },
        "untouched_bands": {"dead": result.dead_bands, "nan_or_nodata": result.nan_bands},
        "clipped_values": result.clipped_values,
        "underflowed_values": result.underflowed_values,
        "warnings": list(result.warnings),
        "passed_through": result.passed_through,
        "value_scale": result.value_scale,
        "tiles": [
            {
                "rows": [r.tile.row_start, r.tile.row_stop],
                "cols": [r.tile.col_start, r.tile.col_stop],
                "seconds": round(r.seconds, 4),
                **r.info,
            }
            for r in records
        ],
    }
    if evaluations:
        summary["solver"] = {
            "evaluations_mean": float(np.mean(evaluations)),
            "evaluations_max": float(np.max(evaluations)),
            **solver_convergence(records),
        }
    return summary


def solver_convergence(records: Sequence[Any]) -> dict[str, Any]:
    """How many tiles the solver left above its tolerance, from the tiles' ``converged`` (fraction of the
    tile's solves below ``tol``), ``max_residual`` and ``tol`` facts.

    Returns:
        ``converged_fraction`` (mean over the tiles), ``tiles`` (tiles with a solve), ``tiles_not_converged``
        (tiles with ``converged < 1``), ``max_residual`` (the largest over the tiles) and ``tol``; empty when
        no tile reports convergence.
    """
    solved = [record.info for record in records if "converged" in record.info]
    if not solved:
        return {}
    residuals = [info["max_residual"] for info in solved if "max_residual" in info]
    tolerances = [info["tol"] for info in solved if "tol" in info]
    return {
        "converged_fraction": float(np.mean([info["converged"] for info in solved])),
        "tiles": len(solved),
        "tiles_not_converged": sum(float(info["converged"]) < 1.0 for info in solved),
        "max_residual": float(max(residuals)) if residuals else None,
        "tol": float(max(tolerances)) if tolerances else None,
    }


ProgressFactory = Callable[[str], Callable[[int, int], None] | None]
"""Given an input's name, the progress callback ``(done, total)`` for its run (or None)."""

PhaseFactory = Callable[[str], Callable[[str], None] | None]
"""Given an input's name, the callback told each stage of its run (:data:`hsidenoise.denoise.PhaseCallback`)."""


def report_dirs(jobs: Sequence[Job], report: Path, *, several: bool | None = None) -> dict[Path, Path]:
    """Where each input's ``--report`` bundle goes: ``report`` itself in single-input mode, else one folder per
    input named after its stem (``report/a``), or after its name when two inputs share a stem (``report/a_hdr``).

    ``several`` as for :func:`plan_jobs` (None: more than one job); ``jobs`` is the whole plan, also when a
    process runs only a share of it, so that every share names the folders as one process would.
    """
    if not (len(jobs) > 1 if several is None else several):
        return {job.source: report for job in jobs}
    stems = Counter(job.source.stem for job in jobs)
    return {
        job.source: report / (job.source.stem if stems[job.source.stem] == 1 else job.source.name.replace(".", "_"))
        for job in jobs
    }


def convergence_warning(solver: dict[str, Any]) -> str | None:
    """The one line about tiles whose solver stopped above its tolerance (:func:`run_summary`'s ``solver``), or
    None; the CLI prints it."""
    missed = solver.get("tiles_not_converged") or 0
    if not missed:
        return None
    residual, tol = solver.get("max_residual"), solver.get("tol")
    why = f" (residual {residual:.2g} > tol {tol:.2g})" if residual is not None and tol is not None else ""
    evaluations = solver.get("evaluations_max")
    after = f" after {evaluations:.0f} evaluations" if evaluations is not None else ""
    return (
        f"{missed} of {solver.get('tiles', missed)} tiles did not converge{why}{after}; "
        "the output is the solver's best iterate, as in training (--max-iter sets the budget)"
    )


def run_jobs(
    jobs: Sequence[Job],
    method: Callable[[], Denoiser],
    config: TileConfig,
    *,
    dtype: str = "float32",
    overwrite: bool = False,
    batch_size: int = 1,
    report: Path | None = None,
    open_options: dict[str, Any] | None = None,
    progress: ProgressFactory | None = None,
    on_done: Callable[[Job, dict[str, Any]], None] | None = None,
    on_failed: Callable[[Job, dict[str, Any]], None] | None = None,
    several: bool | None = None,
    shares: Sequence[Shard] = (),
    provenance: dict[str, str] | None = None,
    choices: ReportChoices | None = None,
    phase: PhaseFactory | None = None,
    records: list[dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Run a plan of :func:`plan_jobs`: denoise every job that is not skipped, in order.

    In several-input mode a job that fails (a cube that cannot be read, an output that cannot be written, a
    bug) is recorded (:func:`failure_record`) and the batch goes on with the next one; in single-input mode
    the error is raised (after ``on_failed``). Either way the failed job leaves no output.

    Args:
        jobs: the plan.
        method: a function that builds the denoiser (called once, only when some job runs, so a batch whose
            outputs all exist does not load a model).
        config: the tiling.
        dtype, overwrite, batch_size: as for :func:`hsidenoise.denoise.denoise`.
        report: write the ``--report`` bundle of each run under this folder (:func:`report_dirs`).
        open_options: ``fmt``, ``var``, ``axes`` for :func:`hsidenoise.io.open_cube`.
        progress: gives the progress callback of each input.
        on_done: called after each run with its job and summary (for the CLI's one line per cube).
        on_failed: called after each failed job with its job and :func:`failure_record`.
        several: several-input mode, as for :func:`plan_jobs` (None: more than one job).
        shares: run only the jobs of these nested shares (``--shard K/N``, then the torchrun rank within it,
            :class:`hsidenoise.scaleout.Shard`). Other processes then write into the same folder at the same
            time, so a folder this call creates is kept even when its job fails.
        provenance: recorded in every output's metadata (`CubeMeta.provenance`,
            :func:`hsidenoise.provenance.run_provenance`); None records nothing new.
        choices: the bands of each report's profile plot and the pixels of its spectra (``--profile-bands``,
            ``--spectra-pixels``); None: measured (:func:`write_report`). Checked against every input first.
        phase: gives the stage callback of each input (statistics, prepare, tiles), called from when the
            job starts, before its cube is read.
        records: the list the records are appended to as they are made (and returned); a caller that passes
            one still has them when Ctrl-C or SIGTERM (:class:`KeyboardInterrupt`) stops the batch, which is
            re-raised with the job it stopped last in the list as :func:`interrupted_record`.

    Returns:
        One JSON-able record per job run by this call, in order: :func:`run_summary` without the per-tile list
        (that goes to the report), plus ``report`` (file paths) when written; ``{"input", "output",
        "skipped"}`` for a skip; :func:`failure_record` for a failure.
    """
    open_options = open_options or {}
    several = len(jobs) > 1 if several is None else several
    folders = report_dirs(jobs, report, several=several) if report is not None else {}
    mine = jobs_of(jobs, shares)
    if choices is not None and report is not None:  # before any work, not after the first cube's run
        check_report_choices([job for job in mine if not job.skip], choices, open_options)
    denoiser: Denoiser | None = None
    documents: list[dict[str, Any]] = [] if records is None else records
    current: Job | None = None
    try:
        for job in mine:
            current = job
            if not job.skip and denoiser is None:
                denoiser = method()
            try:
                if job.skip:
                    summary = _skipped_job(job, folders.get(job.source), open_options, choices)
                else:
                    summary = _run_job(
                        job,
                        denoiser,
                        config,
                        dtype=dtype,
                        overwrite=overwrite,
                        batch_size=batch_size,
                        report=folders.get(job.source),
                        open_options=open_options,
                        progress=progress(job.source.name) if progress is not None else None,
                        phase=phase(job.source.name) if phase is not None else None,
                        keep_folder=bool(shares),
                        provenance=provenance,
                        choices=choices,
                    )
            except Exception as error:  # one bad cube is recorded and the batch goes on; Ctrl-C still stops it
                record = failure_record(job, error)
                documents.append(record)
                current = None
                if on_failed is not None:
                    on_failed(job, record)
                if not several:
                    raise
                continue
            documents.append(summary)
            current = None
            if on_done is not None and not job.skip:
                on_done(job, summary)
    except KeyboardInterrupt as stop:  # Ctrl-C or SIGTERM: the caller still reports what was done
        if current is not None:
            documents.append(interrupted_record(current, stop))
        raise
    return documents


def _skipped_job(
    job: Job, report: Path | None, open_options: dict[str, Any], choices: ReportChoices | None
) -> dict[str, Any]:
    """The record of a job whose output exists; with ``report`` and no complete report there (the run was done
    but its report was not: a full disk, a kill), the report is written from the existing output first."""
    record: dict[str, Any] = {"input": str(job.source), "output": str(job.output), "skipped": "output exists"}
    if report is not None and not _report_complete(report):
        files = write_report_of_output(
            report, job.source, job.output, open_options=open_options, choices=choices
        )
        record["report"] = {key: str(value) for key, value in files.items()}
        record["report_note"] = REPORT_FROM_OUTPUT_NOTE
    return record


def interrupted_record(job: Job, stop: BaseException) -> dict[str, Any]:
    """The JSON record of the job that Ctrl-C or SIGTERM stopped: ``{"input", "output", "signal",
    "output_complete"}``. ``signal`` is ``"SIGTERM"`` or ``"SIGINT"``; ``output_complete`` is True when the
    stop came after the job's output was committed (a re-run skips it), False when it left no output (a
    re-run does it)."""
    from hsidenoise.io.staging import unfinished_commit

    files = cube_files(job.output, existing=False)
    complete = all(path.exists() for path in files) and not unfinished_commit(files)
    signal_name = "SIGTERM" if type(stop).__name__ == "Terminated" else "SIGINT"
    return {"input": str(job.source), "output": str(job.output), "signal": signal_name, "output_complete": complete}



def jobs_of(jobs: Sequence[Job], shares: Sequence[Shard] = ()) -> list[Job]:
    """The jobs of a plan that these nested shares (``--shard``, then the torchrun rank) select, in order."""
    mine = list(jobs)
    for share in shares:
        mine = share.select(mine, key=lambda job: str(job.source))
    return mine


def check_report_choices(jobs: Sequence[Job], choices: ReportChoices, open_options: dict[str, Any]) -> None:
    """Refuse report choices (profile bands, spectra pixels; 0-based, as the report numbers them) that some input
    does not have (:meth:`ReportChoices.check`).

    Only the headers are read; an input that cannot be opened is left to its job, which records the reader's
    own message.

    Raises:
        ConfigError: no profile band, or a band or pixel outside an input.
    """
    from hsidenoise.io import open_cube

    if choices.profile_bands is not None and not choices.profile_bands:
        raise ConfigError("no profile band given; pass band numbers (from 0, as the report shows them), e.g. 3,103")
    for job in jobs:
        try:
            with open_cube(job.source, **open_options) as reader:
                shape = reader.shape
        except HsiDenoiseError:
            continue
        choices.check(job.source.name, shape)


def _run_job(
    job: Job,
    denoiser: Denoiser,
    config: TileConfig,
    *,
    dtype: str,
    overwrite: bool,
    batch_size: int,
    report: Path | None,
    open_options: dict[str, Any],
    progress: Callable[[int, int], None] | None,
    keep_folder: bool,
    phase: Callable[[str], None] | None = None,
    provenance: dict[str, str] | None = None,
    choices: ReportChoices | None = None,
) -> dict[str, Any]:
    """Denoise one job (and write its report); the summary of :func:`run_jobs`."""
    from hsidenoise.denoise import denoise
    from hsidenoise.io import open_cube

    created = _make_parent(job.output)
    try:
        with open_cube(job.source, **open_options) as reader:
            if report is not None:
                out_dtype = reader.dtype if str(dtype) == "same" else np.dtype(dtype)
                check_report_space(job.output, report, reader.shape, out_dtype, tiles=_tile_count(reader.shape, config))
            if provenance:  # the output's metadata is the reader's (hsidenoise.denoise.denoise)
                reader.meta.provenance = dict(provenance)
            result = denoise(
                reader,
                job.output,
                denoiser,
                config,
                dtype=dtype,
                overwrite=overwrite,
                batch_size=batch_size,
                progress=progress,
                phase=phase,
            )
    except BaseException:
        if created is not None and not keep_folder and not any(created.iterdir()):
            with contextlib.suppress(OSError):  # another process may have put a file there meanwhile
                created.rmdir()
        raise
    info = denoiser.info()
    summary = run_summary(result, job, method_info=info)
    if report is not None:
        files = write_report(
            report,
            job.source,
            job.output,
            summary,
            open_options=open_options,
            method=denoiser,
            nodata=result.statistics.nodata,
            choices=choices,
        )
        summary["report"] = {key: str(value) for key, value in files.items()}
    summary.pop("tiles")
    return summary


def _tile_count(shape: Sequence[int], config: TileConfig) -> int:
    """About how many tiles a run makes (for the report's size): the tile grid with its overlap."""
    step = max(1, config.tile - config.overlap)
    return int(np.ceil(max(1, shape[1] - config.overlap) / step) * np.ceil(max(1, shape[2] - config.overlap) / step))


def failure_message(error: BaseException) -> str:
    """One line for a failed job: the message of an hsidenoise error, else the exception type and message."""
    text = str(error) if isinstance(error, HsiDenoiseError) else f"{type(error).__name__}: {error}"
    return " ".join(text.split())


def failure_record(job: Job, error: BaseException) -> dict[str, Any]:
    """The JSON record of a failed job: ``{"input", "output", "error"}`` (:func:`failure_message`)."""
    return {"input": str(job.source), "output": str(job.output), "error": failure_message(error)}


def batch_document(
    records: Sequence[dict[str, Any]],
    *,
    shard: Shard | None = None,
    world_size: int | None = None,
    planned: int | None = None,
) -> dict[str, Any]:
    """The several-input ``--json`` document, the same shape however many cubes matched (none included).

    Args:
        records: the records of :func:`run_jobs`, in order; after Ctrl-C or SIGTERM the last one may be the
            :func:`interrupted_record` of the job it stopped.
        shard, world_size: recorded in the summary when given.
        planned: the inputs this process had to do (to count those an interruption left unstarted); None:
            ``len(records)``.

    Returns:
        ``{"runs": [...], "failed": [...], "summary": {...}}``: ``runs`` the written and skipped records in
        order, ``failed`` the :func:`failure_record` ones, ``summary`` the counts (``inputs``, ``written``,
        ``skipped``, ``failed``) and, when given, the ``shard`` (``"K/N"``) and the ``ranks`` (world size).
        After an interruption, also ``"interrupted"``: the :func:`interrupted_record` (its input is in
        neither ``runs`` nor ``failed``), and ``summary`` has ``"interrupted": 1`` and ``"not_started"``.
    """
    stopped = [record for record in records if "signal" in record]
    finished = [record for record in records if "signal" not in record]
    runs = [record for record in finished if "error" not in record]
    failed = [record for record in finished if "error" in record]
    skipped = sum("skipped" in record for record in runs)
    inputs = len(records) if planned is None else max(planned, len(records))
    summary: dict[str, Any] = {
        "inputs": inputs,
        "written": len(runs) - skipped,
        "skipped": skipped,
        "failed": len(failed),
    }
    if stopped:
        summary["interrupted"] = len(stopped)
        summary["not_started"] = inputs - len(records)
    if shard is not None:
        summary["shard"] = str(shard)
    if world_size is not None:
        summary["ranks"] = world_size
    document: dict[str, Any] = {"runs": runs, "failed": failed}
    if stopped:
        document["interrupted"] = stopped[-1]
    document["summary"] = summary
    return document


def _report_complete(report_dir: Path) -> bool:
    from hsidenoise.quality.plots import report_complete  # lazily: matplotlib's writer module

    return report_complete(report_dir)


def _make_parent(path: Path) -> Path | None:
    """Create the output's directory (`-o out/clean.hdr` or a batch folder); return it when this call created it
    (to remove it if the run fails). Safe when other processes (shards, ranks) create it at the same time."""
    from hsidenoise.io.staging import make_output_folder

    directory = path.parent
    if directory.is_dir():
        return None
    make_output_folder(path)  # one-line errors for a file in the way, permissions, a read-only file system
    return directory
