"""Batch runs: many inputs into one output directory, resumable, with an optional report per cube.

``hsidenoise run a.hdr b.hdr 'scenes/*.tif' -o clean/`` pairs every input with ``clean/<name><suffix>`` and
skips pairs whose output already exists (unless ``overwrite``), so a killed batch resumes where it stopped:
outputs are written to a temporary file and renamed, so an existing output is always a complete one.

:func:`expand_inputs` turns the command line into cube files, :func:`plan_jobs` pairs them with outputs and
refuses, before any work, an output that is an input (also through a symlink, or the other file of an ENVI
pair) or, for a single cube, an output that exists; :func:`run_jobs` runs the plan and returns one JSON-able
summary per input (with the ``--report`` bundle when asked).
"""

from __future__ import annotations

import glob
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hsidenoise.errors import ConfigError, CubeReadError, CubeWriteError
from hsidenoise.io.base import same_file

if TYPE_CHECKING:
    from hsidenoise.denoise import RunResult
    from hsidenoise.methods import Denoiser
    from hsidenoise.tiling import TileConfig

PREVIEW_PIXELS = 512 * 512
"""The report reads at most about this many pixels of each cube (every k-th row and column beyond it)."""


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


def expand_inputs(patterns: Iterable[str | Path]) -> list[Path]:
    """Expand globs (``scenes/*.hdr``) and keep plain paths; the order is kept, duplicates dropped.

    A glob keeps only the files whose suffix a format claims (so ``scenes/*`` skips ``README.txt`` and GDAL's
    ``.aux.xml`` side files) and, of an ENVI pair, only the header (``a.img`` is dropped when ``a.hdr`` is
    next to it). Plain paths are kept as given: an unknown suffix is then an error when the cube is opened.

    Raises:
        CubeReadError: a plain path that does not exist, or a glob that matches no cube file.
    """
    found: list[Path] = []
    for pattern in map(str, patterns):
        if glob.has_magic(pattern):
            matches = [Path(p) for p in sorted(glob.glob(pattern, recursive=True)) if Path(p).is_file()]
            cubes = [path for path in matches if _is_cube_file(path)]
            if not cubes:
                what = f"{len(matches)} file(s), none of them a cube" if matches else "nothing"
                raise CubeReadError(
                    f"{pattern!r} matches {what}; check the pattern (quote it to stop the shell expanding it)"
                )
            found.extend(cubes)
        else:
            path = Path(pattern)
            if not path.exists() and not path.is_symlink():
                raise CubeReadError(f"input {path} does not exist; pass an existing cube file")
            found.append(path)
    return list(dict.fromkeys(found))


def _is_cube_file(path: Path) -> bool:
    """Whether a glob match is a cube to run: a known suffix, and not the data file of an ENVI header."""
    from hsidenoise.io import FORMATS
    from hsidenoise.io.envi import DATA_SUFFIXES

    suffix = path.suffix.lower()
    if not any(suffix in format_.suffixes for format_ in FORMATS.values()):
        return False
    if suffix != ".hdr" and suffix in FORMATS["envi"].suffixes + DATA_SUFFIXES:
        return not any(candidate.is_file() for candidate in _envi_headers(path))
    return True


def _envi_headers(data_path: Path) -> list[Path]:
    return [data_path.with_suffix(".hdr"), data_path.with_name(data_path.name + ".hdr"), data_path.with_suffix(".HDR")]


def cube_files(path: Path, *, existing: bool) -> list[Path]:
    """The files a cube path stands for: both files of an ENVI pair, else the path itself.

    Args:
        path: a cube path (ENVI: header or data file).
        existing: True for an input (the data file is looked up as the reader would), False for an output
            (the files the writer would create).
    """
    from hsidenoise.errors import HsiDenoiseError
    from hsidenoise.io import format_for

    try:
        is_envi = format_for(path).name == "envi"
    except HsiDenoiseError:
        return [path]
    if not is_envi:
        return [path]
    from hsidenoise.io.envi import header_and_data_paths, output_paths

    if existing:
        try:
            return list(header_and_data_paths(path))
        except HsiDenoiseError:  # the reader reports a missing half later, with the full message
            return [path]
    header, data, _ = output_paths(path)
    return [header, data]


def plan_jobs(inputs: Sequence[Path], output: Path, *, overwrite: bool = False) -> list[Job]:
    """Pair inputs with outputs, and refuse before any work the outputs that cannot be written.

    One input: ``output`` is the output file (or, when it is an existing directory, ``output/<name>``).
    Several inputs: ``output`` is a directory (created when the first cube is written) and each input writes
    ``output/<name>`` under its own file name, so formats are kept; an output that exists is skipped unless
    ``overwrite``.

    Raises:
        ConfigError: several inputs but ``output`` is a file or looks like one, or two inputs with the same name.
        UnsupportedFormatError: an output suffix that no format claims.
        CubeWriteError: an output that is one of the inputs (also through a symlink or the other file of an
            ENVI pair), or the single output exists without ``overwrite``.
    """
    from hsidenoise.io import format_for

    if not inputs:
        raise ConfigError("no input cube given; pass one or more cube files or a quoted glob")
    if len(inputs) == 1 and not output.is_dir():
        jobs = [Job(inputs[0], output, skip=False)]
    else:
        if output.exists() and not output.is_dir():
            raise ConfigError(f"{len(inputs)} inputs need a directory for -o, but {output} is a file")
        if not output.exists() and output.suffix:
            raise ConfigError(
                f"{len(inputs)} inputs need a directory for -o; got {output}, which looks like a file name"
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
        if job.skip:
            continue
        format_for(job.output)  # an output suffix no format claims is refused before any work
        for path in cube_files(job.output, existing=False):
            for source in input_files:
                if same_file(path, source):
                    raise CubeWriteError(
                        f"refusing to write {path}: it is the input {source}; choose another output path"
                    )
            if len(jobs) == 1 and not overwrite and (path.exists() or path.is_symlink()):
                raise CubeWriteError(f"{path} already exists; pass --overwrite to replace it")
    return jobs


def read_preview(path: Path, *, max_pixels: int = PREVIEW_PIXELS, **open_options: Any) -> tuple[np.ndarray, int]:
    """A decimated copy of a cube for reports: every k-th row and column, k as small as fits ``max_pixels``.

    Reads one row at a time, so the preview of a huge scene costs only the preview's memory.

    Returns:
        (B, ceil(H / k), ceil(W / k)) float32 and the step k.
    """
    from hsidenoise.io import open_cube

    with open_cube(path, **open_options) as reader:
        _, height, width = reader.shape
        step = max(1, int(np.ceil(np.sqrt(height * width / max_pixels))))
        if step == 1:
            return np.asarray(reader.read(), dtype=np.float32), 1
        rows = [
            np.asarray(reader.read(rows=slice(r, r + 1), cols=slice(0, width, step)), dtype=np.float32)
            for r in range(0, height, step)
        ]
    return np.concatenate(rows, axis=1), step


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
            "converged_fraction": float(np.mean([r.info.get("converged", 0.0) for r in records])),
        }
    return summary


def read_central_window(path: Path, side: int, **open_options: Any) -> tuple[np.ndarray, tuple[slice, slice]]:
    """The central ``side`` x ``side`` window of a cube at full resolution: (B, h, w) float32 and its slices."""
    from hsidenoise.io import open_cube
    from hsidenoise.noreference import central_crop

    with open_cube(path, **open_options) as reader:
        rows, cols = central_crop(reader.shape, side)
        return np.asarray(reader.read(rows, cols), dtype=np.float32), (rows, cols)


def no_reference_section(
    job: Job,
    valid: np.ndarray,
    *,
    method: Denoiser | None = None,
    nodata: float | None = None,
    open_options: dict[str, Any] | None = None,
):
    """The report's no-reference figures (:func:`hsidenoise.noreference.no_reference_quality`) of one job.

    Measured on the central :data:`NO_REFERENCE_WINDOW` window of input and output at full resolution
    (whiteness and SURE on its central :data:`hsidenoise.noreference.DEFAULT_CROP` part), in the bands the
    method saw; SURE re-runs ``method`` (still prepared for this cube) on the crop.
    """
    from hsidenoise.noreference import no_reference_quality

    noisy, _ = read_central_window(job.source, NO_REFERENCE_WINDOW, **(open_options or {}))
    denoised, _ = read_central_window(job.output, NO_REFERENCE_WINDOW)
    return no_reference_quality(noisy, denoised, method=method, bands=valid, nodata=nodata)


NO_REFERENCE_WINDOW = 256
"""Side of the full-resolution central window the report's no-reference section reads."""


def write_report(
    report_dir: Path,
    job: Job,
    summary: dict[str, Any],
    *,
    open_options: dict[str, Any] | None = None,
    method: Denoiser | None = None,
    nodata: float | None = None,
) -> dict[str, Path]:
    """Write the ``run --report`` bundle for one job (decimated previews of input and output).

    The row-mean profiles show bands the method denoised: the dead and NaN bands of
    ``summary["untouched_bands"]`` are left out of that plot (they are listed in the JSON). The no-reference
    section (:func:`no_reference_section`, with SURE when ``method`` is given) is added when some band was
    denoised.
    """
    from hsidenoise.metrics import estimate_noise_mad
    from hsidenoise.report import default_profile_bands, write_run_report

    open_options = open_options or {}
    noisy, step = read_preview(job.source, **open_options)
    denoised, _ = read_preview(job.output)
    wavelengths = read_wavelengths(job.source, **open_options)
    untouched = sorted({band for bands in summary.get("untouched_bands", {}).values() for band in bands})
    valid = np.setdiff1d(np.arange(noisy.shape[0]), untouched)
    section = None
    if valid.size:
        section = no_reference_section(job, valid, method=method, nodata=nodata, open_options=open_options)
    profile_bands = None
    if valid.size and untouched:
        sigma = np.asarray(estimate_noise_mad(noisy[valid]), dtype=np.float64)
        profile_bands = [int(valid[i]) for i in default_profile_bands(sigma)]
    return write_run_report(
        report_dir,
        noisy,
        denoised,
        summary={**summary, "preview_step": step},
        wavelengths=wavelengths,
        profile_bands=profile_bands,
        no_reference=section,
    )


def read_wavelengths(path: Path, **open_options: Any) -> np.ndarray | None:
    """The wavelengths recorded in a cube's metadata, or None."""
    from hsidenoise.io import open_cube

    with open_cube(path, **open_options) as reader:
        wavelengths = reader.meta.wavelengths
    return None if wavelengths is None else np.asarray(wavelengths, dtype=np.float64)


ProgressFactory = Callable[[str], Callable[[int, int], None] | None]
"""Given an input's name, the progress callback ``(done, total)`` for its run (or None)."""


def report_dirs(jobs: Sequence[Job], report: Path) -> dict[Path, Path]:
    """Where each input's ``--report`` bundle goes: ``report`` itself for one input, else one folder per input
    named after its stem (``report/a``), or after its name when two inputs share a stem (``report/a_hdr``)."""
    if len(jobs) == 1:
        return {jobs[0].source: report}
    stems = Counter(job.source.stem for job in jobs)
    return {
        job.source: report / (job.source.stem if stems[job.source.stem] == 1 else job.source.name.replace(".", "_"))
        for job in jobs
    }


def run_jobs(
    jobs: Sequence[Job],
    method: Denoiser | Callable[[], Denoiser],
    config: TileConfig,
    *,
    dtype: str = "float32",
    overwrite: bool = False,
    batch_size: int = 1,
    report: Path | None = None,
    open_options: dict[str, Any] | None = None,
    progress: ProgressFactory | None = None,
    on_done: Callable[[Job, dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Run a plan of :func:`plan_jobs`: denoise every job that is not skipped, in order, stopping at the first error.

    Args:
        jobs: the plan.
        method: the denoiser, or a function that builds it (called once, only when some job runs, so a batch
            whose outputs all exist does not load a model).
        config: the tiling.
        dtype, overwrite, batch_size: as for :func:`hsidenoise.denoise.denoise`.
        report: write the ``--report`` bundle of each run under this folder (:func:`report_dirs`).
        open_options: ``fmt``, ``var``, ``axes`` for :func:`hsidenoise.io.open_cube`.
        progress: gives the progress callback of each input.
        on_done: called after each run with its job and summary (for the CLI's one line per cube).

    Returns:
        One JSON-able summary per job, in order: :func:`run_summary` without the per-tile list (that goes to
        the report), plus ``report`` (file paths) when written; ``{"input", "output", "skipped"}`` for a skip.
    """
    from hsidenoise.denoise import denoise
    from hsidenoise.io import open_cube

    open_options = open_options or {}
    folders = report_dirs(jobs, report) if report is not None else {}
    denoiser: Denoiser | None = None if callable(method) and not hasattr(method, "denoise_tile") else method
    documents: list[dict[str, Any]] = []
    for job in jobs:
        if job.skip:
            documents.append({"input": str(job.source), "output": str(job.output), "skipped": "output exists"})
            continue
        if denoiser is None:
            denoiser = method()
        created = _make_parent(job.output)
        try:
            with open_cube(job.source, **open_options) as reader:
                result = denoise(
                    reader,
                    job.output,
                    denoiser,
                    config,
                    dtype=dtype,
                    overwrite=overwrite,
                    batch_size=batch_size,
                    progress=progress(job.source.name) if progress is not None else None,
                )
        except BaseException:
            if created is not None and not any(created.iterdir()):
                created.rmdir()
            raise
        info = denoiser.info() if hasattr(denoiser, "info") else {}
        summary = run_summary(result, job, method_info=info)
        if report is not None:
            files = write_report(
                folders[job.source],
                job,
                summary,
                open_options=open_options,
                method=denoiser,
                nodata=result.statistics.nodata,
            )
            summary["report"] = {key: str(value) for key, value in files.items()}
        summary.pop("tiles")
        documents.append(summary)
        if on_done is not None:
            on_done(job, summary)
    return documents


def _make_parent(path: Path) -> Path | None:
    """Create the output's directory (`-o out/clean.hdr` or a batch folder); return it when this call created it (to remove it if the run fails)."""
    directory = path.parent
    if directory.is_dir():
        return None
    directory.mkdir(parents=True)
    return directory
