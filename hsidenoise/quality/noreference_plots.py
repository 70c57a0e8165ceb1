"""The no-reference section's table and figure (split from :mod:`hsidenoise.quality.plots`).

:func:`write_no_reference_table` writes the per-band CSV of a
:class:`hsidenoise.quality.noreference.NoReferenceReport`; :func:`plot_no_reference` draws ``no_reference.png``:
the removed/noise ratio per band and the removed part's lag-1 correlation against the input noise's.
matplotlib is imported lazily (through the plots module's helpers).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from hsidenoise.quality.labels import PlotLabels
from hsidenoise.quality.figure_io import _band_axis, _band_label, _margins, _new_figure, _save_figure, _write_atomically

if TYPE_CHECKING:
    from hsidenoise.quality.noreference import NoReferenceReport


def write_no_reference_table(
    report: NoReferenceReport, path: Path | str, wavelengths: np.ndarray | Sequence[float] | None = None
) -> Path:
    """The per-band table of a :class:`hsidenoise.quality.noreference.NoReferenceReport` as CSV (one row per band)."""
    columns = report.per_band()
    if wavelengths is not None:
        x_values, _ = _band_axis(report.band_count, wavelengths)
        columns = {"band": columns.pop("band"), "wavelength": x_values, **columns}
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(list(columns))
    for band in range(report.band_count):
        row = []
        for values in columns.values():
            value = values[band]
            row.append(int(value) if values.dtype.kind in "bi" else f"{float(value):.6g}")
        writer.writerow(row)
    text = buffer.getvalue()
    return _write_atomically(Path(path), lambda stream: stream.write(text.encode("utf-8")))


def plot_no_reference(
    report: NoReferenceReport,
    path: Path | str,
    wavelengths: np.ndarray | Sequence[float] | None = None,
    *,
    labels: PlotLabels | None = None,
) -> Path:
    """The no-reference story per band: what was removed against the input noise, and its calibrated whiteness.

    Panels: the removed/noise std ratio (1 marked; flagged bands as red crosses); the lag-1 correlation of the
    removed part along rows and columns minus that of the input noise (the band-regression residual), with the
    flag tolerance; the coarse-scale (4 x 4-block) energy of the removed part and of the input noise (1: white),
    with the level below which a band is flagged; the removed part's correlation with the next band minus the input
    noise's (their partial correlation), with its one-sided tolerance (a point at band b is the pair b, b + 1). The title gives the MPSNR
    estimate when the report has one (``report.estimated_mpsnr_db``; why not: ``report.estimated_mpsnr_reason``).

    Returns:
        ``path``.
    """
    labels = labels or PlotLabels()
    x_values, x_label = _band_axis(report.band_count, wavelengths, labels.wavelength_units)
    figure = _new_figure(8.0, 10.8)
    ratio_axes, white, coarse, spectral = figure.subplots(4, 1, sharex=True,
                                                         gridspec_kw=_margins(8.0, 10.8, hspace=0.2))
    ratio_axes.plot(x_values, report.removed_ratio, color="C0", marker=".", lw=1.0,
                    label="std(input - output) / input noise sigma")
    ratio_axes.axhline(1.0, color="k", ls="--", lw=1.0, label="1: removed the size of the noise")
    flagged = list(report.flagged_bands)
    if flagged:
        ratio_axes.plot(x_values[flagged], report.removed_ratio[flagged], "x", color="C3", ms=8, mew=2,
                        label=f"flagged ({len(flagged)})")
    finite = report.removed_ratio[np.isfinite(report.removed_ratio) & (report.removed_ratio > 0)]
    if finite.size and finite.max() > 20 * finite.min():
        ratio_axes.set_yscale("log")
    ratio_axes.set_ylabel("removed / noise")
    ratio_axes.set_title("What was removed, in units of the input noise (HySime)", fontsize="medium")
    white.plot(x_values, report.autocorr_rows - report.noise_autocorr_rows, color="C0", marker=".", lw=1.0,
               label="along rows")
    white.plot(x_values, report.autocorr_cols - report.noise_autocorr_cols, color="C1", marker=".", lw=1.0,
               label="along columns")
    white.plot(x_values, report.whiteness_threshold, color="k", ls="--", lw=1.0, label="flag tolerance")
    white.plot(x_values, -report.whiteness_threshold, color="k", ls="--", lw=1.0)
    white.set_ylabel("lag-1 corr: removed - noise")
    white.set_title("Is the removed part spatially correlated unlike the input noise?", fontsize="medium")
    coarse.plot(x_values, report.coarse_energy, color="C4", marker=".", lw=1.0, label="removed part")
    coarse.plot(x_values, report.noise_coarse_energy, color="C7", marker=".", lw=1.0, label="input noise")
    coarse.plot(x_values, np.fmin(report.noise_coarse_energy, 1.0) - report.coarse_threshold, color="k", ls="--",
                lw=1.0, label="flagged below")
    coarse.axhline(1.0, color="k", ls=":", lw=1.0, label="1: white noise")
    coarse.set_ylabel("4 x 4-block energy")
    coarse.set_title("Does the removed part lack the noise's coarse part (as a blur's does)?", fontsize="medium")
    pairs = x_values[:-1]
    spectral.plot(pairs, report.spectral_corr - report.noise_spectral_corr, color="C2", marker=".", lw=1.0,
                  label="with the next band")
    spectral.plot(pairs, report.spectral_threshold, color="k", ls="--", lw=1.0, label="flag tolerance")
    spectral.set_ylabel("band-pair corr: removed - noise")
    spectral.set_title("Does the removed part share more with the next band than the noise does?", fontsize="medium")
    for panel in (ratio_axes, white, coarse, spectral):
        panel.grid(alpha=0.3, which="both")
        panel.legend(loc="best", fontsize="small")
    spectral.set_xlabel(x_label)
    estimate = report.estimated_mpsnr_db
    figure.suptitle(labels.title(
        "No-reference quality (no MPSNR estimate: see report.json)" if estimate is None
        else f"No-reference quality (estimated MPSNR {estimate:.2f} dB, peak {report.peak:.4g})"
    ))  # fmt: skip
    return _save_figure(figure, Path(path))


def plot_removed(
    noisy: np.ndarray,
    denoised: np.ndarray,
    bands: Sequence[int],
    path: Path | str,
    wavelengths: np.ndarray | Sequence[float] | None = None,
    *,
    labels: PlotLabels | None = None,
) -> Path:
    """``removed.png``: input, output and input - output of each band in ``bands``, one row per band.

    All three panels of a row share one grey scale width (data units per grey level): input and output on the
    input's 1st-99th percentile range, the removed part on a range of the same width centred on 0, so its
    contrast compares directly with the scene's.

    Args:
        noisy, denoised: (B, H, W) the two cubes (the report's previews). bands: the bands to show (0-based).
        path: the PNG to write. wavelengths: (B,) for the row titles. labels: file, method and units.

    Returns:
        ``path``.
    """
    labels = labels or PlotLabels()
    bands = [int(band) for band in bands][:3] or [0]
    height = 2.9 * len(bands) + 0.7
    figure = _new_figure(10.5, height)
    room = _margins(10.5, height, left=0.1, right=0.7, top=0.7, bottom=0.1, hspace=0.15, wspace=0.45)
    axes = np.atleast_2d(figure.subplots(len(bands), 3, squeeze=False, gridspec_kw=room))
    for row, band in enumerate(bands):
        before = np.asarray(noisy[band], dtype=np.float64)
        after = np.asarray(denoised[band], dtype=np.float64)
        removed = before - after
        finite = before[np.isfinite(before)]
        low, high = (np.percentile(finite, [1, 99]) if finite.size else (0.0, 1.0))
        if not high > low:
            high = low + 1.0
        half = (high - low) / 2.0
        for column, (image, title, lo, hi, cmap) in enumerate(
            (
                (before, "input", low, high, "gray"),
                (after, labels.after, low, high, "gray"),
                (removed, "input - output", -half, half, "RdBu_r"),
            )
        ):
            panel = axes[row, column]
            shown = panel.imshow(image, cmap=cmap, vmin=lo, vmax=hi, interpolation="nearest")
            panel.set_title(f"{_band_label(band, wavelengths, labels.wavelength_units)}: {title}", fontsize="small")
            panel.set_axis_off()
            figure.colorbar(shown, ax=panel, fraction=0.046, pad=0.02)
    figure.suptitle(labels.title("What was removed") + "\ninput - output on the input's scale width, centred on 0 "
                    "(white); red: the input was higher", fontsize="medium")
    return _save_figure(figure, Path(path))


@dataclass(frozen=True, eq=False)
class PixelSpectrum:
    """One pixel of ``spectra.png``: (row, col) in the full cube (0-based), why it is shown, and its (B,) input and
    output values."""

    row: int
    col: int
    why: str
    input: np.ndarray
    output: np.ndarray

    def to_dict(self) -> dict:
        return {"row": self.row, "col": self.col, "why": self.why, "input": self.input, "output": self.output}


def pick_spectra_pixels(noisy: np.ndarray, denoised: np.ndarray) -> list[tuple[int, int, str]]:
    """(row, col, why) of the brightest, darkest and median pixel (mean over the bands of the input) and the one
    the method changed most (RMS of input - output over the bands), in (B, H, W) cubes; non-finite pixels skipped."""
    with np.errstate(invalid="ignore"):
        brightness = np.nanmean(np.where(np.isfinite(noisy), noisy, np.nan), axis=0)
        change = np.sqrt(np.nanmean((noisy.astype(np.float64) - denoised) ** 2, axis=0))
    finite = np.isfinite(brightness) & np.isfinite(change)
    if not finite.any():
        return []
    flat = np.where(finite, brightness, np.nan).ravel()
    order = np.argsort(np.where(np.isnan(flat), np.inf, flat))[: int(finite.sum())]
    width = noisy.shape[2]
    chosen = [
        (int(order[-1]), "brightest"),
        (int(order[0]), "darkest"),
        (int(order[order.size // 2]), "median brightness"),
        (int(np.nanargmax(np.where(finite, change, np.nan))), "most changed"),
    ]
    return [(index // width, index % width, why) for index, why in chosen]


def preview_spectra(noisy: np.ndarray, denoised: np.ndarray, step: int = 1) -> list[PixelSpectrum]:
    """The :func:`pick_spectra_pixels` of (B, H, W) previews that keep every ``step``-th row and column of the
    cube (from 0), with their coordinates in the full cube."""
    return [
        PixelSpectrum(row * step, col * step, why, noisy[:, row, col], denoised[:, row, col])
        for row, col, why in pick_spectra_pixels(noisy, denoised)
    ]


def plot_spectra(
    spectra: Sequence[PixelSpectrum],
    path: Path | str,
    wavelengths: np.ndarray | Sequence[float] | None = None,
    *,
    labels: PlotLabels | None = None,
    untouched_bands: Sequence[int] = (),
) -> Path:
    """``spectra.png``: input (grey) and output (colour) spectra of each pixel, one panel each, against
    wavelength; the ``untouched_bands`` (bad bands) greyed out. Needs at least one pixel."""
    labels = labels or PlotLabels()
    band_count = int(np.asarray(spectra[0].input).shape[0])
    x_values, x_label = _band_axis(band_count, wavelengths, labels.wavelength_units)
    height = 2.0 * len(spectra) + 0.8
    figure = _new_figure(8.0, height)
    room = _margins(8.0, height, top=0.55, hspace=0.3)
    axes = np.atleast_1d(figure.subplots(len(spectra), 1, sharex=True, squeeze=False, gridspec_kw=room)[:, 0])
    bad = [band for band in untouched_bands if 0 <= band < band_count]
    for panel, pixel in zip(axes, spectra):
        panel.plot(x_values, pixel.input, color="0.55", lw=1.6, label="input")
        panel.plot(x_values, pixel.output, color="C3", lw=1.0, label=labels.after)
        for band in bad:
            panel.axvspan(x_values[band] - 0.5 * _step(x_values, band), x_values[band] + 0.5 * _step(x_values, band),
                          color="0.85", lw=0)
        panel.set_title(f"pixel (row {pixel.row}, col {pixel.col}): {pixel.why}", fontsize="small")
        panel.set_ylabel(labels.values)
        panel.grid(alpha=0.3)
        panel.legend(loc="best", fontsize="small")
    axes[-1].set_xlabel(x_label + ("; grey: bands left untouched" if bad else ""))
    figure.suptitle(labels.title("Pixel spectra before and after"))
    return _save_figure(figure, Path(path))


def _step(x_values: np.ndarray, band: int) -> float:
    """The axis spacing around ``band`` (for the grey span of a bad band)."""
    if x_values.size < 2:
        return 1.0
    neighbour = band + 1 if band + 1 < x_values.size else band - 1
    return float(abs(x_values[neighbour] - x_values[band])) or 1.0
