"""Batch runs: many inputs into one output directory, resumable, with an optional report per cube.

``hsidenoise run a.hdr b.hdr 'scenes/*.tif' -o clean/`` pairs every input with ``clean/<name><suffix>`` and
skips pairs whose output already exists (unless ``overwrite``), so a killed batch resumes where it stopped:
outputs are written to a temporary file and renamed, so an existing output is always a complete one.
"""

from __future__ import annotations

import glob
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hsidenoise.errors import ConfigError, CubeReadError

if TYPE_CHECKING:
    from hsidenoise.denoise import RunResult

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

    Raises:
        CubeReadError: a plain path that does not exist, or a glob that matches nothing.
    """
    found: list[Path] = []
    for pattern in map(str, patterns):
        if glob.has_magic(pattern):
            matches = sorted(Path(p) for p in glob.glob(pattern, recursive=True) if Path(p).is_file())
            if not matches:
                raise CubeReadError(f"no file matches {pattern!r}; check the pattern (quote it to stop the shell)")
            found.extend(matches)
        else:
            path = Path(pattern)
            if not path.exists():
                raise CubeReadError(f"input {path} does not exist; pass an existing cube file")
            found.append(path)
    return list(dict.fromkeys(found))


def plan_jobs(inputs: Sequence[Path], output: Path, *, overwrite: bool = False) -> list[Job]:
    """Pair inputs with outputs.

    One input: ``output`` is the output file. Several inputs (or ``output`` an existing directory): ``output``
    is a directory (created if missing) and each input writes ``output/<stem><suffix>`` where the suffix is the
    input's (``.hdr`` for ENVI), so formats are kept.

    Raises:
        ConfigError: several inputs but ``output`` has a suffix of a file, or two inputs with the same name.
    """
    if not inputs:
        raise ConfigError("no input cube given; pass one or more cube files or a quoted glob")
    if len(inputs) == 1 and not output.is_dir():
        return [Job(inputs[0], output, skip=False)]
    if output.exists() and not output.is_dir():
        raise ConfigError(f"{len(inputs)} inputs need a directory for -o, but {output} is a file")
    if not output.exists() and output.suffix:
        raise ConfigError(f"{len(inputs)} inputs need a directory for -o; got {output}, which looks like a file name")
    jobs: list[Job] = []
    names: dict[str, Path] = {}
    for source in inputs:
        name = source.name
        if name in names:
            raise ConfigError(f"{source} and {names[name]} would both write {output / name}; run them separately")
        names[name] = source
        target = output / name
        jobs.append(Job(source, target, skip=target.exists() and not overwrite))
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


def write_report(
    report_dir: Path, job: Job, summary: dict[str, Any], *, open_options: dict[str, Any] | None = None
) -> dict[str, Path]:
    """Write the ``run --report`` bundle for one job (decimated previews of input and output)."""
    from hsidenoise.report import write_run_report

    open_options = open_options or {}
    noisy, step = read_preview(job.source, **open_options)
    denoised, _ = read_preview(job.output)
    wavelengths = read_wavelengths(job.source, **open_options)
    return write_run_report(
        report_dir, noisy, denoised, summary={**summary, "preview_step": step}, wavelengths=wavelengths
    )


def read_wavelengths(path: Path, **open_options: Any) -> np.ndarray | None:
    """The wavelengths recorded in a cube's metadata, or None."""
    from hsidenoise.io import open_cube

    with open_cube(path, **open_options) as reader:
        wavelengths = reader.meta.wavelengths
    return None if wavelengths is None else np.asarray(wavelengths, dtype=np.float64)
