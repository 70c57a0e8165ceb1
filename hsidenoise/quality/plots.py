"""Reports as files: metrics JSON/CSV, per-band plots, row- and column-mean profiles, false-colour quick-looks.

Every function takes arrays, writes one or more files and returns their paths. Files are written
atomically (a temporary name in the target directory, then ``os.replace``), so an interrupted run never
leaves half a report. matplotlib is imported only inside the plotting functions and drives an Agg canvas
directly (no pyplot, no global backend switch), so it works headless and leaves a caller's backend alone.

Numbers: JSON has no inf/NaN, so :func:`write_json` writes every non-finite number as null; the CSV keeps
them as ``inf`` / ``nan``, which spreadsheet and pandas readers parse as numbers.

Plots say what they show: axis units (pixel indices, the data's units when the metadata states them, wavelengths
with their units), the file and the method in the title (:class:`hsidenoise.quality.labels.PlotLabels`), a legend
for before / after.
The bands of the profile plot are the ones with measured artefacts (:mod:`hsidenoise.quality.artefacts`): the strongest
row and column stripes and the strongest noise.
"""

from __future__ import annotations

import csv
import io
import json
import math
import textwrap
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hsidenoise.quality.artefacts import (
    PROFILE_BAND_COUNT,
    STRIPE_MEASURE,
    ProfileBand,
    choose_profile_bands,
    measure_band_artefacts,
    spectral_band_noise,
)
from hsidenoise.errors import ConfigError, CubeShapeError
from hsidenoise.quality.metrics import MetricsReport, estimate_noise_mad
from hsidenoise.quality.figure_io import (  # noqa: F401  (re-exported: tests and callers use them here)
    PNG_DPI,
    _band_axis,
    _band_label,
    _margins,
    _new_figure,
    _save_figure,
    _write_atomically,
)
from hsidenoise.quality.labels import PlotLabels

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from hsidenoise.quality.noreference import NoReferenceReport
    from hsidenoise.quality.noreference_plots import PixelSpectrum

RGB_TARGETS_NM = (650.0, 550.0, 450.0)
"""Band centres (nm) picked for the red, green and blue channels of a quick-look when wavelengths are known."""

STRETCH_PERCENTILES = (2.0, 98.0)
"""Robust contrast stretch of the quick-looks."""

def json_safe(value: Any) -> Any:
    """Numpy scalars/arrays -> Python, paths -> str, non-finite floats -> None, recursively."""
    if isinstance(value, Mapping):
        return {str(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.integer, int)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, Path):
        return str(value)
    return value


def write_json(payload: Mapping[str, Any], path: Path | str) -> Path:
    """Write ``payload`` as indented JSON (numpy values converted, inf/NaN as null); returns the path."""
    text = json.dumps(json_safe(payload), indent=2, allow_nan=False) + "\n"
    return _write_atomically(Path(path), lambda stream: stream.write(text.encode("utf-8")))


def _check_pair(noisy: np.ndarray, denoised: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    noisy, denoised = np.asarray(noisy), np.asarray(denoised)
    if noisy.ndim != 3 or noisy.shape != denoised.shape:
        raise CubeShapeError(
            "expected a noisy and a denoised (bands, rows, cols) cube of one shape, "
            f"got {noisy.shape} and {denoised.shape}"
        )
    return noisy, denoised


def _check_bands(bands: Sequence[int], band_count: int) -> list[int]:
    chosen = [int(band) for band in bands]
    if not chosen or any(not 0 <= band < band_count for band in chosen):
        raise ConfigError(
            f"profile bands must be indices in [0, {band_count - 1}], got {list(bands)}; pick bands the cube has"
        )
    return chosen


def write_metrics_report(
    report: MetricsReport,
    out_dir: Path | str,
    *,
    noisy_report: MetricsReport | None = None,
    wavelengths: np.ndarray | Sequence[float] | None = None,
    labels: PlotLabels | None = None,
) -> dict[str, Path]:
    """Write ``metrics.json``, ``metrics.csv`` (one row per band) and ``per_band.png`` into ``out_dir``.

    Args:
        report: metrics of the denoised cube against the reference.
        out_dir: created if missing.
        noisy_report: metrics of the noisy input against the same reference, shown alongside.
        wavelengths: (B,) band centres for the plot's x axis and the CSV; band indices when None.
        labels: file, method and wavelength units for the plot's title and axis.

    Returns:
        ``{"json": path, "csv": path, "plot": path}``.
    """
    out_dir = Path(out_dir)
    band_count = report.band_count
    if noisy_report is not None and noisy_report.band_count != band_count:
        raise CubeShapeError(
            f"the noisy report has {noisy_report.band_count} bands, the denoised one {band_count}; "
            "evaluate the same cube"
        )
    labels = labels or PlotLabels()
    x_values, x_label = _band_axis(band_count, wavelengths, labels.wavelength_units)

    payload: dict[str, Any] = {"denoised": report.to_dict()}
    if noisy_report is not None:
        payload["noisy"] = noisy_report.to_dict()
    if wavelengths is not None:
        payload["wavelengths"] = x_values
    paths = {"json": write_json(payload, out_dir / "metrics.json")}

    columns = ["band"] + (["wavelength"] if wavelengths is not None else []) + ["psnr", "ssim", "rmse"]
    if noisy_report is not None:
        columns += ["noisy_psnr", "noisy_ssim", "noisy_rmse"]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for band in range(band_count):
        row: list[Any] = [band] + ([f"{x_values[band]:g}"] if wavelengths is not None else [])
        for source in (report, noisy_report):
            if source is not None:
                row += [f"{source.psnr[band]:.6g}", f"{source.ssim[band]:.6g}", f"{source.rmse[band]:.6g}"]
        writer.writerow(row)
    text = buffer.getvalue()
    paths["csv"] = _write_atomically(out_dir / "metrics.csv", lambda stream: stream.write(text.encode("utf-8")))

    figure = _new_figure(8.0, 6.0)
    psnr_axes, ssim_axes = figure.subplots(2, 1, sharex=True, gridspec_kw=_margins(8.0, 6.0, hspace=0.08))
    for source, name, style in ((report, "denoised", "-"), (noisy_report, "noisy", "--")):
        if source is None:
            continue
        psnr = np.where(np.isfinite(source.psnr), source.psnr, np.nan)  # inf (identical) is not drawable
        psnr_axes.plot(x_values, psnr, style, marker=".", label=f"{name} (MPSNR {source.mpsnr:.2f} dB)")
        ssim_axes.plot(x_values, source.ssim, style, marker=".", label=f"{name} (MSSIM {source.mssim:.4f})")
    psnr_axes.set_ylabel("PSNR (dB)")
    ssim_axes.set_ylabel(f"SSIM ({report.ssim_mode})")
    ssim_axes.set_xlabel(x_label)
    for axes in (psnr_axes, ssim_axes):
        axes.grid(alpha=0.3)
        axes.legend(loc="best", fontsize="small")
    figure.suptitle(labels.title(f"Per-band quality (SAM {report.sam:.4f} rad, ERGAS {report.ergas:.3g})"))
    paths["plot"] = _save_figure(figure, out_dir / "per_band.png")
    return paths


def plot_row_mean_profiles(
    noisy: np.ndarray,
    denoised: np.ndarray,
    bands: Sequence[int],
    path: Path | str,
    wavelengths: np.ndarray | Sequence[float] | None = None,
    clean: np.ndarray | None = None,
    *,
    reasons: Sequence[str] | None = None,
    labels: PlotLabels | None = None,
) -> Path:
    """The DECSC paper's row-mean profile figure, with the column-mean profile beside it.

    For each chosen band (one row of panels), left: the mean of each row over the columns against the row
    index; right: the mean of each column over the rows against the column index. Row stripes make the left
    curve jagged, column stripes the right one, random noise makes both fuzzy, a band-wide offset shifts them.
    Non-finite pixels are left out of a mean.

    Args:
        noisy, denoised: (B, H, W) of one shape. bands: indices of the bands to draw, one row of panels each.
        path: the PNG to write. wavelengths: (B,) for the panel titles. clean: (B, H, W) reference, drawn too.
        reasons: one short text per band (why it is shown), added to its panel title.
        labels: file, method and units for the titles and axes.

    Returns:
        ``path``.
    """
    noisy, denoised = _check_pair(noisy, denoised)
    if clean is not None:
        _check_pair(noisy, clean)
    chosen = _check_bands(bands, noisy.shape[0])
    if reasons is not None and len(reasons) != len(chosen):
        raise ConfigError(f"expected one reason per profile band ({len(chosen)}), got {len(reasons)}")
    labels = labels or PlotLabels()
    step = max(1, int(labels.pixel_step))
    positions = {"row": np.arange(noisy.shape[1]) * step, "column": np.arange(noisy.shape[2]) * step}
    height = 3.4 * len(chosen) + 1.0
    figure = _new_figure(11.0, height)
    # one subfigure per band between a title strip and a caption strip (subfigures ignore a grid's margins)
    rows = figure.add_gridspec(len(chosen) + 2, 1, height_ratios=[0.45] + [3.4] * len(chosen) + [0.55], hspace=0.0)
    series = [("before (input)", noisy, "0.62", 2.4), (labels.after, denoised, "C3", 1.1)]  # before under after
    if clean is not None:
        series.insert(0, ("clean (reference)", clean, "k", 1.0))
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN row is a gap in the curve, as it should be
        for index, band in enumerate(chosen):
            panel = figure.add_subfigure(rows[index + 1])
            heading = _band_label(band, wavelengths, labels.wavelength_units)
            if reasons is not None:
                heading = "\n".join(textwrap.wrap(f"{heading}: {reasons[index]}", 120))
            panel.suptitle(heading, fontsize="medium")
            room = _margins(11.0, 3.4, top=0.2 + 0.2 * (heading.count("\n") + 1), bottom=0.5, left=0.9, wspace=0.22)
            for axes, (what, axis) in zip(panel.subplots(1, 2, gridspec_kw=room), (("row", 1), ("column", 0))):
                for legend, cube, colour, width in series:
                    profile = np.nanmean(np.asarray(cube[band], dtype=np.float64), axis=axis)
                    axes.plot(positions[what], profile, color=colour, lw=width, label=legend)
                axes.set_xlabel(labels.pixel_axis(what), fontsize="small")
                axes.set_ylabel(f"{what} mean ({labels.values})", fontsize="small")
                axes.grid(alpha=0.3)
                axes.legend(loc="best", fontsize="x-small")
    figure.suptitle(labels.title("Row- and column-mean profiles"))
    figure.supxlabel(
        "bands numbered from 0; row stripes make the row means (left) jagged, column stripes the column means "
        "(right); random noise makes both fuzzy",
        fontsize="small", color="0.35",
    )
    return _save_figure(figure, Path(path))


def _no_profile_figure(path: Path, labels: PlotLabels, why: str) -> Path:
    """The profile PNG when there is no band to draw: a titled figure that says why."""
    figure = _new_figure(8.0, 2.0)
    figure.suptitle(labels.title("Row- and column-mean profiles"))
    figure.text(0.5, 0.45, why, ha="center", va="center")
    return _save_figure(figure, path)


def pick_rgb_bands(band_count: int, wavelengths: np.ndarray | Sequence[float] | None = None) -> tuple[int, int, int]:
    """Bands for a false-colour (red, green, blue) composite.

    With wavelengths: the bands nearest to 650, 550 and 450 nm (values below 100 are taken as micrometres),
    which falls back gracefully to the nearest edge bands for a sensor that misses the visible range.
    Without: three bands spread over the spectrum, at 3/4, 1/2 and 1/4 of it.
    """
    if band_count < 1:
        raise CubeShapeError("a quick-look needs at least one band, got 0")
    if wavelengths is not None:
        centres, _ = _band_axis(band_count, wavelengths)
        if np.isfinite(centres).any():
            nanometres = centres * 1000.0 if np.nanmax(centres) < 100 else centres
            distance = np.abs(nanometres[None, :] - np.asarray(RGB_TARGETS_NM)[:, None])
            distance[:, ~np.isfinite(nanometres)] = np.inf
            red, green, blue = (int(i) for i in distance.argmin(axis=1))
            return red, green, blue
    last = band_count - 1
    return round(0.75 * last), round(0.5 * last), round(0.25 * last)


def _stretch(rgb: np.ndarray, lows: np.ndarray, highs: np.ndarray) -> np.ndarray:
    """(3, H, W) -> (H, W, 3) in [0, 1]; non-finite pixels black."""
    span = np.where(highs > lows, highs - lows, 1.0)
    scaled = (rgb - lows[:, None, None]) / span[:, None, None]
    scaled = np.where(np.isfinite(scaled), np.clip(scaled, 0.0, 1.0), 0.0)
    return np.moveaxis(scaled, 0, -1)


def write_quicklook(
    noisy: np.ndarray,
    denoised: np.ndarray,
    path: Path | str,
    rgb_bands: Sequence[int] | None = None,
    wavelengths: np.ndarray | Sequence[float] | None = None,
    *,
    labels: PlotLabels | None = None,
) -> Path:
    """False-colour before / after, side by side, with one robust 2-98 % stretch per channel.

    The stretch is taken from the denoised cube and applied to both halves, so brightness is comparable and
    noise in the "before" half shows as it is (outliers saturate) instead of being stretched away.

    Args:
        noisy, denoised: (B, H, W) of one shape. path: the PNG to write.
        rgb_bands: (red, green, blue) band indices; default :func:`pick_rgb_bands`.
        wavelengths: (B,) band centres in nm (or micrometres) for the default pick and the caption.
        labels: file, method and wavelength units for the titles.

    Returns:
        ``path``.
    """
    noisy, denoised = _check_pair(noisy, denoised)
    labels = labels or PlotLabels()
    band_count, height, width = noisy.shape
    chosen = _check_bands(rgb_bands if rgb_bands is not None else pick_rgb_bands(band_count, wavelengths), band_count)
    if len(chosen) != 3:
        raise ConfigError(f"rgb_bands needs exactly three band indices (red, green, blue), got {len(chosen)}")
    after = np.asarray(denoised[chosen], dtype=np.float64)
    before = np.asarray(noisy[chosen], dtype=np.float64)
    lows, highs = np.empty(3), np.empty(3)
    for channel in range(3):
        values = after[channel][np.isfinite(after[channel])]
        lows[channel], highs[channel] = np.percentile(values, STRETCH_PERCENTILES) if values.size else (0.0, 1.0)

    panel_width = 5.0
    panel_height = float(np.clip(panel_width * height / max(width, 1), 1.0, 12.0))
    figure = _new_figure(2 * panel_width, panel_height + 0.9)
    room = _margins(2 * panel_width, panel_height + 0.9, left=0.1, right=0.1, top=0.8, bottom=0.1, wspace=0.05)
    halves = zip(figure.subplots(1, 2, gridspec_kw=room), (before, after), ("before (input)", labels.after))
    for axes, cube, name in halves:
        axes.imshow(_stretch(cube, lows, highs), interpolation="nearest")
        axes.set_title(name)
        axes.set_axis_off()
    caption = ", ".join(_band_label(band, wavelengths, labels.wavelength_units) for band in chosen)
    figure.suptitle(f"{labels.title('False colour')}\nR, G, B = {caption}", fontsize="medium")
    return _save_figure(figure, Path(path))


def plot_noise_before_after(
    sigma_before: np.ndarray,
    sigma_after: np.ndarray,
    path: Path | str,
    wavelengths: np.ndarray | Sequence[float] | None = None,
    *,
    labels: PlotLabels | None = None,
    marked: Sequence[ProfileBand] = (),
    estimator: str = "spatial robust estimate",
) -> Path:
    """Per-band input noise estimate and the std of what was removed (input - output), on one axis.

    No noise estimator is applied to the output: on a low-rank output any such estimate says nothing.

    Args:
        sigma_before, sigma_after: (B,) the input noise sigma and the removed part's std, one unit
            (``labels.value_units``).
        path: the PNG to write. wavelengths: (B,) for the x axis; band indices when None.
        labels: file, method and units for the title and axes.
        marked: the profile plot's bands, marked on the curve.

    Returns:
        ``path``.
    """
    before = np.asarray(sigma_before, dtype=np.float64)
    after = np.asarray(sigma_after, dtype=np.float64)
    if before.ndim != 1 or before.shape != after.shape:
        raise CubeShapeError(f"expected two (bands,) noise vectors of one length, got {before.shape} and {after.shape}")
    labels = labels or PlotLabels()
    x_values, x_label = _band_axis(before.size, wavelengths, labels.wavelength_units)
    positive = np.concatenate([before, after])
    positive = positive[np.isfinite(positive) & (positive > 0)]
    figure = _new_figure(8.0, 4.0)
    axes = figure.subplots(gridspec_kw=_margins(8.0, 4.0, top=0.4))
    axes.plot(x_values, before, color="0.5", marker=".", lw=1.0, label="before (input)")
    axes.plot(x_values, after, color="C3", marker=".", lw=1.0, label="std of what was removed (input - output)")
    shown = [item.band for item in marked if 0 <= item.band < before.size]
    if shown:
        axes.plot(x_values[shown], before[shown], "o", mfc="none", mec="C0", ms=9, mew=1.5, label="profile bands")
    if positive.size and positive.max() > 20 * positive.min():
        axes.set_yscale("log")
    axes.set_xlabel(x_label)
    axes.set_ylabel(f"noise std ({labels.values})")
    axes.set_title(labels.title(f"Input noise ({estimator}) and what was removed"), fontsize="medium")
    axes.grid(alpha=0.3, which="both")
    axes.legend(loc="best", fontsize="small")
    return _save_figure(figure, Path(path))



def write_no_reference_report(
    report: NoReferenceReport,
    out_dir: Path | str,
    *,
    wavelengths: np.ndarray | Sequence[float] | None = None,
    extra: Mapping[str, Any] | None = None,
    labels: PlotLabels | None = None,
) -> dict[str, Path]:
    """Write ``no_reference.json`` (``extra`` plus the report under ``no_reference``), ``no_reference.csv`` and
    ``no_reference.png`` into ``out_dir`` (``hsidenoise eval --noisy`` without ``--ref``); ``labels`` for the plot.

    Returns:
        ``{"json", "csv", "plot"}`` -> path.
    """
    out_dir = Path(out_dir)
    from hsidenoise.quality.noreference_plots import plot_no_reference, write_no_reference_table

    payload = {**(extra or {}), "no_reference": report.to_dict()}
    return {
        "json": write_json(payload, out_dir / "no_reference.json"),
        "csv": write_no_reference_table(report, out_dir / "no_reference.csv", wavelengths),
        "plot": plot_no_reference(report, out_dir / "no_reference.png", wavelengths, labels=labels),
    }


def _destriped_bands(cleaning: Mapping[str, Any] | None, sigma: np.ndarray, count: int = 2) -> list[ProfileBand]:
    """The bands where the front end removed the strongest stripes (``front_end_cleaning``), with the reason."""
    if not cleaning or not cleaning.get("stripe_bands"):
        return []
    rms = np.array([np.nan if v is None else v for v in cleaning["stripe_rms"]], dtype=np.float64)
    bands = sorted(cleaning["stripe_bands"], key=lambda band: -rms[band])[:count]
    return [
        ProfileBand(int(band), f"front end removed stripes: RMS offset {rms[band]:.3g}"
                    + (f" ({rms[band] / sigma[band]:.2g}x the noise)" if sigma[band] > 0 else ""))
        for band in bands
    ]


def write_run_report(
    out_dir: Path | str,
    noisy: np.ndarray,
    denoised: np.ndarray,
    *,
    summary: Mapping[str, Any],
    wavelengths: np.ndarray | Sequence[float] | None = None,
    wavelength_units: str | None = None,
    value_units: str | None = None,
    profile_bands: Sequence[int] | None = None,
    untouched_bands: Sequence[int] = (),
    rgb_bands: Sequence[int] | None = None,
    no_reference: NoReferenceReport | None = None,
    spectra: Sequence[PixelSpectrum] | None = None,
) -> dict[str, Path]:
    """The ``run --report DIR`` bundle: ``report.json`` plus five PNGs (profiles, quick-look, noise, spectra,
    removed; and ``no_reference.csv`` and ``.png`` with ``no_reference``).

    ``report.json`` holds ``summary`` (timings, tile plan, untouched bands: whatever the caller measured),
    the per-band noise estimate before and after, the profile bands (``profile_bands``) and, under
    ``profile_band_choice``, why each was chosen with its stripe and noise measures before and after. For
    scenes too large for memory pass a decimated preview of both cubes (every k-th row and column, k in
    ``summary["preview_step"]``): the estimates and plots only need a sample. With ``no_reference``
    (computed by the caller on full-resolution data), ``report.json`` also holds it under ``no_reference``,
    and ``no_reference.csv`` and ``no_reference.png`` are written. The plots' titles name the file
    (``summary["input"]``) and the method (``summary["method"]``) when the summary has them.

    Args:
        out_dir: created if missing.
        noisy, denoised: (B, H, W) input and output, same units. summary: JSON-able facts about the run.
        wavelengths: (B,) band centres, in ``wavelength_units`` (e.g. ``"Nanometers"``) when known.
        value_units: the data's units for the axes (:func:`hsidenoise.quality.labels.value_units_of`), None when
            unknown.
        profile_bands: the bands of the profile plot; default :func:`hsidenoise.quality.artefacts.choose_profile_bands`
            on the input.
        untouched_bands: bands the method left alone (dead, NaN), never chosen by default.
        rgb_bands: default :func:`pick_rgb_bands`. no_reference: the no-reference section, or None.
        spectra: the pixels of ``spectra.png`` (``run --spectra-pixels``); default: the brightest, darkest,
            median and most changed pixels of the preview
            (:func:`hsidenoise.quality.noreference_plots.preview_spectra`).

    Returns:
        ``{"json", "profiles", "quicklook", "noise", "spectra", "removed"}`` -> path, plus ``no_reference_csv``
        and ``no_reference_plot`` with ``no_reference``.

    Raises:
        ConfigError: a profile band outside the cube.
    """
    noisy, denoised = _check_pair(noisy, denoised)
    out_dir = Path(out_dir)
    sigma_before = estimate_noise_mad(noisy)
    removed_std = np.nanstd(noisy.astype(np.float64) - denoised.astype(np.float64), axis=(1, 2))
    asked = None if profile_bands is None else _check_bands(profile_bands, noisy.shape[0])
    if wavelengths is not None:
        _band_axis(noisy.shape[0], wavelengths)  # one wavelength per band, before anything is written
    before = measure_band_artefacts(noisy, sigma_before)
    after = measure_band_artefacts(denoised, sigma_before)  # stripes before / after, in units of the input noise
    # the noisiest bands are ranked by the texture-blind spectral estimate of the input (stripes keep the spatial one)
    if no_reference is not None:  # the same HySime sigma, already measured (full resolution): not twice
        spectral = np.where(np.isfinite(no_reference.sigma_before), no_reference.sigma_before, np.nan)
    else:
        spectral = spectral_band_noise(noisy, exclude=[int(band) for band in untouched_bands])
    ranking = before if spectral is None else before.with_noise(spectral)
    if asked is not None:
        choice = [ProfileBand(band, "asked for") for band in asked]
    else:
        choice = _destriped_bands(summary.get("front_end_cleaning"), sigma_before)
        choice += [item for item in choose_profile_bands(ranking, exclude=[int(band) for band in untouched_bands])
                   if item.band not in {c.band for c in choice}]
        choice = choice[:PROFILE_BAND_COUNT]
    source = summary.get("input")
    labels = PlotLabels(
        source=None if source is None else Path(str(source)).name,
        method=None if summary.get("method") is None else str(summary["method"]),
        value_units=value_units,
        wavelength_units=wavelength_units,
        pixel_step=int(summary.get("preview_step", 1) or 1),
    )
    bands = [item.band for item in choice]
    payload = {
        **summary,
        "noise_estimate": {
            "method": "Immerkaer residual + MAD (hsidenoise.quality.metrics.estimate_noise_mad) of the input, data "
            "units; removed_std: std of input - output on the preview (no noise estimate of the output)",
            "before": sigma_before,
            "removed_std": removed_std,
        },
        "profile_bands": bands,
        "profile_band_choice": {
            "measure": STRIPE_MEASURE,
            "bands": [
                {
                    "band": item.band,
                    "wavelength": None if wavelengths is None else float(np.asarray(wavelengths)[item.band]),
                    "wavelength_units": wavelength_units,
                    "reason": item.reason,
                    "before": before.of_band(item.band),
                    "after": after.of_band(item.band),
                    "spectral_noise_before": None if spectral is None else float(ranking.noise[item.band]),
                }
                for item in choice
            ],
        },
    }
    if no_reference is not None:
        payload["no_reference"] = no_reference.to_dict()
    profiles_path = out_dir / "row_mean_profiles.png"
    created = _first_missing(out_dir)
    paths: dict[str, Path] = {}
    try:  # the plots first and report.json last, naming them: a folder with it holds a complete report
        if bands:
            paths["profiles"] = plot_row_mean_profiles(
                noisy, denoised, bands, profiles_path, wavelengths, reasons=[item.reason for item in choice],
                labels=labels,
            )  # fmt: skip
        else:
            paths["profiles"] = _no_profile_figure(
                profiles_path, labels, "no band with a measurable profile (all dead or NaN)"
            )
        from hsidenoise.quality.noreference_plots import PixelSpectrum, plot_removed, plot_spectra, preview_spectra

        step = int(summary.get("preview_step", 1) or 1)
        shown = list(spectra) if spectra else preview_spectra(noisy, denoised, step)
        if not shown:  # no pixel with finite values: the first one, so the bundle always has its spectra plot
            shown = [PixelSpectrum(0, 0, "first pixel (none has finite values)", noisy[:, 0, 0], denoised[:, 0, 0])]
        payload["spectra"] = {
            "note": "row and col in the full cube, numbered from 0; input and output values per band, data units",
            "pixels": [pixel.to_dict() for pixel in shown],
        }
        paths["spectra"] = plot_spectra(
            shown, out_dir / "spectra.png", wavelengths, labels=labels, untouched_bands=list(untouched_bands)
        )

        paths["removed"] = plot_removed(
            noisy, denoised, bands or [0], out_dir / "removed.png", wavelengths, labels=labels
        )
        paths["quicklook"] = write_quicklook(
            noisy, denoised, out_dir / "quicklook.png", rgb_bands, wavelengths, labels=labels
        )
        if no_reference is not None:  # one noise story: the HySime sigma the method uses, as in no_reference.png
            paths["noise"] = plot_noise_before_after(
                no_reference.sigma_before, no_reference.removed_std, out_dir / "noise_before_after.png",
                wavelengths, labels=labels, marked=choice, estimator="HySime, as the method uses it",
            )
        else:
            paths["noise"] = plot_noise_before_after(
                sigma_before, removed_std, out_dir / "noise_before_after.png", wavelengths, labels=labels,
                marked=choice,
            )
        if no_reference is not None:
            from hsidenoise.quality.noreference_plots import plot_no_reference, write_no_reference_table

            paths["no_reference_csv"] = write_no_reference_table(
                no_reference, out_dir / "no_reference.csv", wavelengths
            )
            paths["no_reference_plot"] = plot_no_reference(
                no_reference, out_dir / "no_reference.png", wavelengths, labels=labels
            )
        payload[REPORT_FILES_KEY] = sorted(path.name for path in paths.values())
        paths = {"json": write_json(payload, out_dir / "report.json"), **paths}
    except BaseException:  # a full disk, a kill: no half report (the files this call wrote go, and its folder)
        for path in paths.values():
            path.unlink(missing_ok=True)
        if created is not None:
            for folder in (out_dir, *out_dir.parents):
                try:
                    folder.rmdir()  # only empty folders go
                except OSError:
                    break
                if folder == created:
                    break
        raise
    return paths


REPORT_FILES_KEY = "report_files"
"""The key of ``report.json`` that names the report's other files, written last: see :func:`report_complete`."""


def report_complete(out_dir: Path | str) -> bool:
    """Whether ``out_dir`` holds a complete :func:`write_run_report` bundle: a readable ``report.json`` whose
    :data:`REPORT_FILES_KEY` files all exist (``report.json`` is written last, after them)."""
    out_dir = Path(out_dir)
    try:
        payload = json.loads((out_dir / "report.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    names = payload.get(REPORT_FILES_KEY) if isinstance(payload, dict) else None
    if not isinstance(names, list) or not all(isinstance(name, str) and name for name in names):
        return False
    return all((out_dir / name).is_file() for name in names)


REPORT_PLOT_BYTES = 2**20
"""Bytes to have free per PNG of a report: the measured plots are 60-350 kB at :data:`PNG_DPI`."""


def estimated_report_size(bands: int, tiles: int = 1) -> int:
    """Bytes to have free before writing the ``run --report`` bundle of a cube of ``bands`` bands denoised in
    ``tiles`` tiles: six plots at :data:`REPORT_PLOT_BYTES`, and the JSON and CSV, which grow with the bands
    (noise before and after, no-reference figures) and the tiles (one record each)."""
    return 6 * REPORT_PLOT_BYTES + 4096 * int(bands) + 512 * int(tiles) + 65536


def _first_missing(folder: Path) -> Path | None:
    """The topmost folder of ``folder`` and its parents that does not exist yet (what a write would create)."""
    missing = None
    for candidate in (folder, *folder.parents):
        if candidate.exists():
            break
        missing = candidate
    return missing
