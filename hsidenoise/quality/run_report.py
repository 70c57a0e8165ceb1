"""One run's ``--report`` bundle, from its files: previews of input and output, the no-reference section, the
plots and tables (:func:`hsidenoise.quality.plots.write_run_report`).

Everything here takes the input and output paths (not :class:`hsidenoise.batch.Job`), so the batch runner calls
it and nothing here imports the batch runner back. :func:`write_report` is what ``run --report`` writes after a
run; :func:`write_report_of_output` writes the report of an output made before (a killed run, a full disk);
:func:`check_report_space` refuses, before any work, a run whose output and report do not fit on disk.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hsidenoise.errors import CubeReadError

if TYPE_CHECKING:
    from hsidenoise.denoiser import Denoiser
    from hsidenoise.quality.noreference_plots import PixelSpectrum
    from hsidenoise.quality.report_choices import ReportChoices

PREVIEW_PIXELS = 512 * 512
"""The report reads at most about this many pixels of each cube (every k-th row and column beyond it)."""


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


def read_central_window(path: Path, side: int, **open_options: Any) -> tuple[np.ndarray, tuple[slice, slice]]:
    """The central ``side`` x ``side`` window of a cube at full resolution: (B, h, w) float32 and its slices."""
    from hsidenoise.io import open_cube
    from hsidenoise.quality.noreference import central_crop

    with open_cube(path, **open_options) as reader:
        rows, cols = central_crop(reader.shape, side)
        return np.asarray(reader.read(rows, cols), dtype=np.float32), (rows, cols)


def no_reference_section(
    source: Path,
    output: Path,
    valid: np.ndarray,
    *,
    method: Denoiser | None = None,
    nodata: float | None = None,
    open_options: dict[str, Any] | None = None,
):
    """The report's no-reference figures (:func:`hsidenoise.quality.noreference.no_reference_quality`) of one run
    (``source`` denoised into ``output``).

    Measured on the central :data:`NO_REFERENCE_WINDOW` window of input and output at full resolution
    (correlations on its central :data:`hsidenoise.quality.noreference.DEFAULT_CROP` part), in the bands the
    method saw. The subspace pipeline's eigen-image denoiser is re-run on the input window for the MPSNR
    estimate (:func:`_subspace_mse`); nothing else is re-run.
    """
    from hsidenoise.quality.noreference import no_reference_quality

    noisy, _ = read_central_window(source, NO_REFERENCE_WINDOW, **(open_options or {}))
    denoised, _ = read_central_window(output, NO_REFERENCE_WINDOW)
    sigma, cleaned = _method_noise(method, valid.size)
    return no_reference_quality(
        noisy, denoised, method=method, bands=valid, nodata=nodata, sigma=sigma, outliers_removed=cleaned,
        mse_estimate=_subspace_mse(method, noisy[valid], nodata),
    )


def _subspace_mse(method: Denoiser | None, window: np.ndarray, nodata: float | None):
    """The subspace pipeline's MSE estimate on the central ``DEFAULT_CROP`` part of the (B_valid, h, w) input window
    (:func:`hsidenoise.quality.subspace_mse.estimate_subspace_mse`); ``FRONT_END_CLEANED`` when the front end
    replaced entries there (the denoiser is then not re-run); None: ``method`` is not the prepared subspace
    pipeline of these bands (a band-window method, another tool), or the crop has missing pixels."""
    from hsidenoise.quality.noreference import DEFAULT_CROP, FRONT_END_CLEANED, central_crop, valid_mask
    from hsidenoise.quality.subspace_mse import estimate_subspace_mse
    from hsidenoise.subspace import LowRankDenoiser

    if not isinstance(method, LowRankDenoiser) or method.subspace is None:
        return None
    rows, cols = central_crop(window.shape, DEFAULT_CROP)  # the correlations' crop: a quarter of the time
    window = window[:, rows, cols]
    if method.subspace.band_count != window.shape[0] or not valid_mask(window, nodata).all():
        return None
    estimate = estimate_subspace_mse(window, method, stop_when_cleaned=True)
    return FRONT_END_CLEANED if estimate is None else estimate


def _method_noise(method: Denoiser | None, band_count: int) -> tuple[np.ndarray | None, bool]:
    """The HySime sigma (band_count,) the low-rank front end of ``method`` fitted (None without one), and
    whether it can replace entries (stuck values found)."""
    from hsidenoise.subspace import LowRankDenoiser
    from hsidenoise.subspace.noise_estimate import band_noise

    front = method if isinstance(method, LowRankDenoiser) else getattr(method, "front_end", None)
    subspace = getattr(front, "subspace", None)
    if subspace is None or subspace.regression is None or subspace.band_count != band_count:
        return None, False
    stuck = subspace.stuck is not None and subspace.stuck.any()
    sigma = subspace.gaussian_sigma if subspace.gaussian_sigma is not None else band_noise(subspace.regression)
    return sigma, bool(stuck)


def front_end_cleaning(summary: dict[str, Any], valid: np.ndarray, band_count: int) -> dict[str, Any] | None:
    """Per band, what the low-rank front end treated as outliers and the stripe amplitude it removed, summed over
    the tiles' ``front_end_cleaning`` facts (which are taken out of ``summary["tiles"]``); None without them.

    Returns:
        ``outlier_entries`` (B,) entries replaced (stuck values, dead lines, impulses; an entry in the overlap of
        two tiles counts in each), ``stripe_rms`` (B,) RMS of the subtracted stripe offsets over the entries, data
        units, ``stripe_bands`` (bands with a stripe offset removed) and ``note``; None for untouched bands.
    """
    tiles = summary.get("tiles") or []
    facts = [tile.pop("front_end_cleaning") for tile in tiles if isinstance(tile, dict) and "front_end_cleaning" in tile]
    if not facts or len(facts[0]["outlier_entries"]) != valid.size:
        return None
    outliers = np.sum([f["outlier_entries"] for f in facts], axis=0)
    squares = np.sum([f["stripe_square_sum"] for f in facts], axis=0)
    entries = sum(f["entries"] for f in facts)
    full_outliers: list[int | None] = [None] * band_count
    full_rms: list[float | None] = [None] * band_count
    for index, band in enumerate(valid):
        full_outliers[int(band)] = int(outliers[index])
        full_rms[int(band)] = float(np.sqrt(squares[index] / max(entries, 1)))
    return {
        "outlier_entries": full_outliers,
        "stripe_rms": full_rms,
        "stripe_bands": [int(band) for index, band in enumerate(valid) if squares[index] > 0],
        "note": "summed over the tiles (an entry in a tile overlap counts in each); outlier_entries: entries "
        "replaced by their prediction from the other bands (stuck values, dead lines, impulses); stripe_rms: RMS "
        "of the column and row offsets subtracted, data units; null: a band the method did not see",
    }


NO_REFERENCE_WINDOW = 256
"""Side of the full-resolution central window the report's no-reference section reads."""


def write_report(
    report_dir: Path,
    source: Path,
    output: Path,
    summary: dict[str, Any],
    *,
    open_options: dict[str, Any] | None = None,
    method: Denoiser | None = None,
    nodata: float | None = None,
    choices: ReportChoices | None = None,
) -> dict[str, Path]:
    """Write the ``run --report`` bundle of one run, ``source`` denoised into ``output`` (decimated previews of both).

    ``spectra.png`` shows the pixels of ``choices.spectra_pixels`` at full resolution when given, else the
    brightest, darkest, median and most changed pixels of the preview. The row- and column-mean profiles show
    ``choices.profile_bands`` when given, else the bands with the strongest
    measured stripes and noise among those the method denoised (:func:`hsidenoise.quality.artefacts.choose_profile_bands`:
    the dead and NaN bands of ``summary["untouched_bands"]`` are left out; they are listed in the JSON). The
    no-reference section (:func:`no_reference_section`) is added when some
    band was denoised.
    """
    from hsidenoise.io import open_cube
    from hsidenoise.quality.labels import value_units_of
    from hsidenoise.quality.plots import write_run_report

    open_options = open_options or {}
    noisy, step = read_preview(source, **open_options)
    denoised, _ = read_preview(output)
    with open_cube(source, **open_options) as reader:
        meta = reader.meta
    wavelengths = None if meta.wavelengths is None else np.asarray(meta.wavelengths, dtype=np.float64)
    untouched = sorted({band for bands in summary.get("untouched_bands", {}).values() for band in bands})
    valid = np.setdiff1d(np.arange(noisy.shape[0]), untouched)
    summary = dict(summary)
    cleaning = front_end_cleaning(summary, valid, noisy.shape[0])
    if cleaning is not None:
        summary["front_end_cleaning"] = cleaning
    section = None
    # Not measured: a cube passed through unchanged (no method ran), or one the method saw scaled (value_scale).
    if valid.size and not summary.get("passed_through") and summary.get("value_scale", 1.0) == 1.0:
        section = no_reference_section(source, output, valid, method=method, nodata=nodata, open_options=open_options)
    return write_run_report(
        report_dir,
        noisy,
        denoised,
        summary={**summary, "preview_step": step},
        wavelengths=wavelengths,
        wavelength_units=meta.wavelength_units,
        value_units=value_units_of(meta),
        profile_bands=None if choices is None else choices.profile_bands,
        untouched_bands=untouched,
        no_reference=section,
        spectra=None if choices is None else pixel_spectra(source, output, choices.spectra_pixels, open_options),
    )


def pixel_spectra(
    source: Path, output: Path, pixels: Sequence[tuple[int, int]] | None, open_options: dict[str, Any]
) -> list[PixelSpectrum] | None:
    """The input and output spectra of ``pixels`` ((row, col) in the full cube, 0-based), read at full resolution;
    None without pixels."""
    if not pixels:
        return None
    from hsidenoise.io import open_cube
    from hsidenoise.quality.noreference_plots import PixelSpectrum

    found = []
    with open_cube(source, **open_options) as noisy, open_cube(output) as denoised:
        for row, col in pixels:
            where = {"rows": slice(row, row + 1), "cols": slice(col, col + 1)}
            found.append(PixelSpectrum(
                row, col, "asked for", np.asarray(noisy.read(**where), dtype=np.float32)[:, 0, 0],
                np.asarray(denoised.read(**where), dtype=np.float32)[:, 0, 0],
            ))  # fmt: skip
    return found


REPORT_FROM_OUTPUT_NOTE = (
    "written from the existing output (its run was done before, but not its report): the run's timings, tile "
    "plan and SURE are not known; untouched bands are those the output has unchanged"
)
"""The ``report_note`` of a skipped run whose report :func:`write_report_of_output` wrote."""


def write_report_of_output(
    report_dir: Path,
    source: Path,
    output: Path,
    *,
    open_options: dict[str, Any] | None = None,
    choices: ReportChoices | None = None,
) -> dict[str, Path]:
    """Write the ``--report`` bundle of a run whose output exists but whose report does not (a full disk or a
    kill after the commit): from the input and the existing output, without denoising again.

    The run's own facts are gone; the summary has the input, output, shape, the method the output's provenance
    names, :data:`REPORT_FROM_OUTPUT_NOTE`, and as untouched bands those the output has unchanged from the
    input (the dead and NaN bands a run passes through). No SURE (it needs the method prepared for the cube).
    """
    from hsidenoise.io import open_cube

    open_options = open_options or {}
    noisy, _ = read_preview(source, **open_options)
    denoised, _ = read_preview(output)
    with open_cube(output) as reader:
        provenance = dict(reader.meta.provenance)
        shape = reader.shape
    if noisy.shape != denoised.shape:
        raise CubeReadError(
            f"cannot write the report of {source} from {output}: their shapes differ "
            f"({noisy.shape[0]} x {noisy.shape[1]} x {noisy.shape[2]} against {denoised.shape[0]} x "
            f"{denoised.shape[1]} x {denoised.shape[2]} in the preview); re-run with --overwrite"
        )
    same = np.all((noisy == denoised) | (np.isnan(noisy) & np.isnan(denoised)), axis=(1, 2))
    unchanged = [int(band) for band in np.flatnonzero(same)]
    summary = {
        "input": str(source),
        "output": str(output),
        "shape": {"bands": shape[0], "rows": shape[1], "cols": shape[2]},
        "method": provenance.get("method"),
        "provenance": provenance,
        "report_note": REPORT_FROM_OUTPUT_NOTE,
        "untouched_bands": {"unchanged": unchanged},
        "passed_through": len(unchanged) == shape[0],
    }
    return write_report(report_dir, source, output, summary, open_options=open_options, choices=choices)


def check_report_space(output: Path, report_dir: Path, shape: Sequence[int], dtype: np.dtype, tiles: int = 1) -> None:
    """Refuse, before any work, a run whose output and ``--report`` bundle do not fit on disk together.

    The output's own check (:func:`hsidenoise.io.staging.check_output`) counts only the cube; the report
    (:func:`hsidenoise.quality.plots.estimated_report_size`, a few MB) comes after the commit, so a disk that holds
    the cube but not the report would end in a committed cube and a failed report. When the report folder is
    on another file system, only the report is counted there.

    Raises:
        ResourceError: less free space than needed.
    """
    import shutil

    from hsidenoise.errors import ResourceError
    from hsidenoise.io.staging import estimated_size
    from hsidenoise.quality.plots import estimated_report_size

    report_bytes = estimated_report_size(shape[0], tiles)
    cube_bytes = estimated_size(shape, dtype)
    where = _nearest_existing(report_dir)
    output_folder = _nearest_existing(output.parent)
    try:
        same_device = os.stat(where).st_dev == os.stat(output_folder).st_dev
        free = shutil.disk_usage(where).free
    except OSError:  # the writers report what is wrong with the folders
        return
    needed = report_bytes + (cube_bytes if same_device else 0)
    if free < needed:
        mib = 2**20
        what = f"{output} and its report in {report_dir}" if same_device else f"the report in {report_dir}"
        parts = f" (cube {cube_bytes / mib:.1f} + report about {report_bytes / mib:.1f})" if same_device else ""
        raise ResourceError(
            f"not enough disk space for {what}: need {needed / mib:.1f} MiB{parts}, {free / mib:.1f} MiB free; "
            "free space, write elsewhere or leave out --report"
        )


def _nearest_existing(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path(".")
