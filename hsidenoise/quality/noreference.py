"""No-reference quality of a denoising result: noise before and after, whiteness of what was removed, SURE.

With a noisy cube y and its denoised version f(y) but no clean reference, three things can still be measured,
per band:

1. **Noise before and after**: the Gaussian noise sigma of ``noisy`` and of ``denoised`` with one estimator,
   :func:`hsidenoise.subspace.estimate_band_noise` (robust HySime) on a seeded sample of pixel spectra. HySime
   counts as noise what the other bands cannot predict, so the output of a low-rank method, whose spectra lie
   in a few components, scores close to zero: "after" says that no spectrally independent noise is left, not
   that the result is right. With fewer than 2 bands the spatial :func:`hsidenoise.quality.metrics.estimate_noise_mad`
   is used instead.
2. **Whiteness of the removed part** R = noisy - denoised, on the central ``crop`` x ``crop`` window: the lag-1
   spatial autocorrelation of each band (along the rows: pixel (i, j) with (i + 1, j); along the columns: (i, j)
   with (i, j + 1)) and the correlation of R between neighbouring bands. If only noise was removed, R is white.
   Rule: for white noise (any distribution with a finite fourth moment) the sample lag-1 autocorrelation over n
   pixel pairs is about N(0, 1/n), so a band is **flagged** when |r| > :data:`WHITENESS_SIGMAS` / sqrt(n) in
   either direction: white noise exceeds 6 standard deviations with probability 2e-9 per test, so a flag on a
   1000-band cube is practically never a false alarm. A flag means structure in what was removed: lost signal
   (edges, texture), or structured noise the method removed on purpose (stripes, dead lines show as column
   structure). Neighbouring-band pairs are flagged by the same rule (spectrally correlated noise also flags).
3. **SURE** (Stein's unbiased risk estimate) of each band's MSE, when the denoiser itself is given (an object
   with the :class:`hsidenoise.denoiser.Denoiser` protocol, already prepared): on the crop y (B, c, c),
   SURE_b = mean((f(y) - y)_b^2) - sigma_b^2 + 2 sigma_b^2 div_b / n_b, with the divergence div_b estimated by
   Monte-Carlo (Ramani, Blu and Unser, 2008): a Rademacher probe b, a step eps * sigma_b per band, and
   div_b = sum_pixels b * (f(y + eps sigma b) - f(y))_b / (eps sigma_b), averaged over :data:`SURE_PROBES`
   probes. sigma_b is the Gaussian noise estimate (item 1's estimator) of the noisy crop, unless the caller
   knows it.
   SURE assumes y = x + Gaussian noise. Entries where that is false (impulses, dead lines, stripes) would count
   as huge errors, so they are left out of the estimate: the entries that the low-rank front end of the method
   (``LowRankDenoiser``, or a method's ``front_end``) replaces or corrects; for other methods, the entries
   whose residual y - f(y) lies beyond :data:`SURE_OUTLIER_SIGMAS` robust scales. The estimate then covers the
   remaining entries only (their share is reported); the error made on the excluded ones is not measured.
   SURE can come out at or below zero on a band where the method is very good or sigma is overestimated; it is
   clamped below at :data:`SURE_FLOOR` times sigma_b^2 (and at 1e-12 peak^2) and those bands are listed.
   The estimated PSNR is 10 log10(peak^2 / SURE_b), the estimated MPSNR its mean over the bands.

Per band, SURE is a noisy estimate: even with the exact sigma, its spread over noise draws is about
sigma_b^2 sqrt(2 / n) from the noise energy of the n crop pixels alone (1.5 % of sigma^2 for a 96 x 96 crop),
so bands where the method removes most of the noise (MSE of a few % of sigma^2) get large errors in dB, and
PSNR, a logarithm, turns them into a bias of the MPSNR. It is sensitive to sigma too: an error of 1 % in sigma_b moves SURE_b by 2 % of sigma_b^2, which is a large
share of the MSE when the method gains a lot (a 15 dB gain means MSE = 3 % of sigma^2). Pass ``sigma`` when
the noise is known.

Shapes: cubes are (B, H, W); per-band vectors are (B,) with NaN for the bands left out (dead, NaN, or not in
``bands``); neighbouring-band vectors are (B - 1,), entry b for the pair (b, b + 1).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hsidenoise.denoiser import Denoiser
from hsidenoise.errors import ConfigError, CubeShapeError

DEFAULT_CROP = 128
"""Side of the central window on which whiteness and SURE are measured."""
MIN_CROP = 8
"""The smallest crop side (the DCT denoiser's block)."""
NOISE_SAMPLE_PIXELS = 16_384
"""Pixel spectra drawn (seeded) for the noise estimates."""
WHITENESS_SIGMAS = 6.0
"""A band is flagged when its |lag-1 autocorrelation| exceeds this many 1/sqrt(n) standard deviations."""
SURE_EPS = 1e-3
"""Finite-difference step of the divergence, in noise sigmas of each band."""
SURE_PROBES = 2
"""Rademacher probes averaged per divergence (one denoiser call each)."""
SURE_FLOOR = 1e-4
"""SURE_b is clamped below at this fraction of sigma_b^2 (a 40 dB gain over the noise)."""
SURE_OUTLIER_SIGMAS = 6.0
"""Without a front end, entries whose residual is beyond this many robust scales are left out of SURE."""


@dataclass(frozen=True, eq=False)
class NoReferenceReport:
    """No-reference figures of one (noisy, denoised) pair.

    Attributes:
        band_count: B.
        bands: the bands measured (the valid bands the method sees), sorted.
        crop: (row_start, row_stop, col_start, col_stop) of the window for whiteness and SURE.
        noise_estimator: the estimator of ``sigma_before`` / ``sigma_after``.
        sigma_before, sigma_after: (B,) Gaussian noise sigma of the noisy and the denoised cube, data units.
        autocorr_rows, autocorr_cols: (B,) lag-1 autocorrelation of the removed part along rows / columns.
        whiteness_threshold: (B,) the flag threshold of each band, WHITENESS_SIGMAS / sqrt(pixel pairs).
        spectral_corr: (B - 1,) correlation of the removed part between bands b and b + 1.
        spectral_threshold: (B - 1,) the same rule for the neighbouring-band pairs.
        flagged_bands: bands whose removed part is not white (spatially).
        flagged_pairs: b of the band pairs (b, b + 1) whose removed parts are correlated.
        sure_note: why SURE is missing, or remarks on it.
        peak: the PSNR peak.
        sure_sigma: (B,) the sigma SURE used, or None without SURE.
        sure_mse: (B,) SURE of the MSE per band in data units (clamped), or None.
        sure_psnr: (B,) estimated PSNR in dB, or None.
        sure_mpsnr: mean of ``sure_psnr`` over ``bands``, or None.
        sure_excluded_fraction: (B,) share of the crop's entries left out of SURE, or None.
        sure_exclusion: how the excluded entries were chosen.
        sure_clamped_bands: bands whose SURE was raised to the floor.
    """

    band_count: int
    bands: tuple[int, ...]
    crop: tuple[int, int, int, int]
    noise_estimator: str
    sigma_before: np.ndarray
    sigma_after: np.ndarray
    autocorr_rows: np.ndarray
    autocorr_cols: np.ndarray
    whiteness_threshold: np.ndarray
    spectral_corr: np.ndarray
    spectral_threshold: np.ndarray
    flagged_bands: tuple[int, ...]
    flagged_pairs: tuple[int, ...]
    sure_note: str
    peak: float
    sure_sigma: np.ndarray | None = None
    sure_mse: np.ndarray | None = None
    sure_psnr: np.ndarray | None = None
    sure_mpsnr: float | None = None
    sure_excluded_fraction: np.ndarray | None = None
    sure_exclusion: str = ""
    sure_clamped_bands: tuple[int, ...] = field(default_factory=tuple)

    @property
    def has_sure(self) -> bool:
        return self.sure_mse is not None

    def per_band(self) -> dict[str, np.ndarray]:
        """Column name -> (B,) values, for a per-band table (``spectral_corr_next``: the pair (b, b + 1))."""
        band_count = self.band_count
        flagged = np.zeros(band_count, dtype=bool)
        flagged[list(self.flagged_bands)] = True
        measured = np.zeros(band_count, dtype=bool)
        measured[list(self.bands)] = True
        columns: dict[str, np.ndarray] = {
            "band": np.arange(band_count),
            "measured": measured,
            "sigma_before": self.sigma_before,
            "sigma_after": self.sigma_after,
            "autocorr_rows": self.autocorr_rows,
            "autocorr_cols": self.autocorr_cols,
            "whiteness_threshold": self.whiteness_threshold,
            "spectral_corr_next": np.append(self.spectral_corr, np.nan),
            "flagged": flagged,
        }
        if self.has_sure:
            columns["sure_mse"] = self.sure_mse
            columns["sure_psnr"] = self.sure_psnr
            columns["sure_excluded_fraction"] = self.sure_excluded_fraction
        return columns

    def to_dict(self) -> dict[str, Any]:
        """JSON-able (numpy arrays stay arrays; :func:`hsidenoise.quality.plots.write_json` writes NaN as null)."""
        row_start, row_stop, col_start, col_stop = self.crop
        return {
            "band_count": self.band_count,
            "bands_measured": list(self.bands),
            "crop": {"rows": [row_start, row_stop], "cols": [col_start, col_stop]},
            "noise": {
                "estimator": self.noise_estimator,
                "before": self.sigma_before,
                "after": self.sigma_after,
                "median_before": _nanmedian(self.sigma_before),
                "median_after": _nanmedian(self.sigma_after),
            },
            "whiteness": {
                "rule": (
                    f"a band is flagged when |lag-1 autocorrelation| of noisy - denoised exceeds "
                    f"{WHITENESS_SIGMAS:g} / sqrt(pixel pairs) along rows or columns (white noise: N(0, 1/n))"
                ),
                "autocorr_rows": self.autocorr_rows,
                "autocorr_cols": self.autocorr_cols,
                "threshold": self.whiteness_threshold,
                "spectral_corr": self.spectral_corr,
                "spectral_threshold": self.spectral_threshold,
                "flagged_bands": list(self.flagged_bands),
                "flagged_band_pairs": [[b, b + 1] for b in self.flagged_pairs],
            },
            "sure": {
                "available": self.has_sure,
                "note": self.sure_note,
                "peak": self.peak,
                "mpsnr": self.sure_mpsnr,
                "mse": self.sure_mse,
                "psnr": self.sure_psnr,
                "sigma": self.sure_sigma,
                "excluded_fraction": self.sure_excluded_fraction,
                "exclusion": self.sure_exclusion,
                "clamped_bands": list(self.sure_clamped_bands),
                "probes": SURE_PROBES,
                "eps_sigmas": SURE_EPS,
            },
        }


def _nanmedian(values: np.ndarray) -> float | None:
    finite = values[np.isfinite(values)]
    return float(np.median(finite)) if finite.size else None


@dataclass(frozen=True, eq=False)
class SureEstimate:
    """SURE of one crop.

    Attributes:
        mse: (B_c,) SURE of the MSE per band, clamped below (see ``clamped``).
        excluded_fraction: (B_c,) share of the entries left out.
        clamped: (B_c,) bool, where the floor was applied.
        exclusion: how the excluded entries were chosen.
    """

    mse: np.ndarray
    excluded_fraction: np.ndarray
    clamped: np.ndarray
    exclusion: str


def central_crop(shape: Sequence[int], crop: int) -> tuple[slice, slice]:
    """The central ``crop`` x ``crop`` window of a (B, H, W) shape (the whole extent along a shorter side)."""
    if isinstance(crop, bool) or not isinstance(crop, (int, np.integer)) or crop < MIN_CROP:
        raise ConfigError(f"crop must be a whole number >= {MIN_CROP} (pixels), got {crop!r}")
    _, height, width = shape
    top, left = max(0, (height - crop) // 2), max(0, (width - crop) // 2)
    return slice(top, top + min(crop, height)), slice(left, left + min(crop, width))


def valid_mask(cube: np.ndarray, nodata: float | None = None) -> np.ndarray:
    """(B, H, W) bool: finite and not ``nodata``."""
    from hsidenoise.statistics import invalid_mask

    return ~invalid_mask(np.asarray(cube), nodata)


def measured_bands(noisy: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Bands with a valid value that are not constant (what :class:`CubeStatistics` calls valid bands)."""
    keep = []
    for band in range(noisy.shape[0]):
        values = noisy[band][valid[band]]
        if values.size and values.min() < values.max():
            keep.append(band)
    return np.asarray(keep, dtype=np.int64)


def band_noise(cube: np.ndarray, *, seed: int = 0) -> tuple[np.ndarray, str]:
    """Per-band Gaussian noise sigma of a cube from a seeded sample of its pixel spectra.

    Args:
        cube: (B, H, W) in data units; pixels with a non-finite value in some band are not sampled.
        seed: seed of the pixel sample.

    Returns:
        ((B,) sigma in data units, the estimator's name). HySime (:func:`hsidenoise.subspace.estimate_band_noise`)
        with 2 bands or more and enough finite pixels, else the spatial Immerkaer + MAD estimate.
    """
    from hsidenoise.subspace import LowRankConfig, estimate_band_noise, sample_pixels
    from hsidenoise.quality.metrics import estimate_noise_mad

    cube = np.asarray(cube)
    spectra = sample_pixels(cube, NOISE_SAMPLE_PIXELS, seed)
    if cube.shape[0] >= 2 and spectra.shape[0] >= max(2 * cube.shape[0], 16):
        sigma = estimate_band_noise(spectra, LowRankConfig(seed=seed))
        return sigma, "HySime (robust band regression, hsidenoise.subspace.estimate_band_noise), data units"
    return estimate_noise_mad(cube), "Immerkaer residual + MAD (hsidenoise.quality.metrics.estimate_noise_mad), data units"


def _correlation(a: np.ndarray, b: np.ndarray, valid: np.ndarray) -> tuple[float, int]:
    """Correlation of two equally shaped arrays over ``valid`` entries, and the entry count."""
    count = int(valid.sum())
    if count < 3:
        return math.nan, count
    x, y = a[valid], b[valid]
    x, y = x - x.mean(), y - y.mean()
    norm = math.sqrt(float((x * x).sum()) * float((y * y).sum()))
    return (float((x * y).sum()) / norm if norm > 0 else math.nan), count


def whiteness(removed: np.ndarray, valid: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Lag-1 spatial autocorrelation of each band and correlation between neighbouring bands.

    Args:
        removed: (B, h, w) the removed part noisy - denoised.
        valid: (B, h, w) bool, the entries to use; all finite entries when None.

    Returns:
        ``rows``, ``cols``, ``threshold`` (B,) and ``spectral``, ``spectral_threshold`` (B - 1,); NaN where a
        band (or pair) is constant or has fewer than 3 usable pairs. Thresholds follow the module's rule.
    """
    removed = np.asarray(removed, dtype=np.float64)
    valid = np.isfinite(removed) if valid is None else (valid & np.isfinite(removed))
    bands = removed.shape[0]
    rows, cols, threshold = np.full(bands, np.nan), np.full(bands, np.nan), np.full(bands, np.nan)
    for band in range(bands):
        r, m = removed[band], valid[band]
        rows[band], n_rows = _correlation(r[:-1, :], r[1:, :], m[:-1, :] & m[1:, :])
        cols[band], n_cols = _correlation(r[:, :-1], r[:, 1:], m[:, :-1] & m[:, 1:])
        pairs = min(n_rows, n_cols)
        if pairs >= 3:
            threshold[band] = WHITENESS_SIGMAS / math.sqrt(pairs)
    spectral = np.full(max(bands - 1, 0), np.nan)
    spectral_threshold = np.full(max(bands - 1, 0), np.nan)
    for band in range(bands - 1):
        spectral[band], count = _correlation(removed[band], removed[band + 1], valid[band] & valid[band + 1])
        if count >= 3:
            spectral_threshold[band] = WHITENESS_SIGMAS / math.sqrt(count)
    return {"rows": rows, "cols": cols, "threshold": threshold, "spectral": spectral,
            "spectral_threshold": spectral_threshold}


def _front_end_changes(method: Denoiser, tile: np.ndarray) -> np.ndarray | None:
    """(B, h, w) bool: entries the method's low-rank front end replaces or corrects; None without one."""
    from hsidenoise.subspace import LowRankDenoiser, remove_outliers

    front = method if isinstance(method, LowRankDenoiser) else method.front_end
    if not isinstance(front, LowRankDenoiser) or front.subspace is None:
        return None
    if front.subspace.band_count != tile.shape[0]:
        return None
    cleaned, missing = remove_outliers(tile, front.subspace, front.config)
    return missing | (cleaned != tile.astype(np.float64))


def _residual_outliers(residual: np.ndarray, sigma: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(B, h, w) bool: |residual - median| beyond SURE_OUTLIER_SIGMAS * max(sigma_b, MAD scale of the band)."""
    outliers = np.zeros(residual.shape, dtype=bool)
    for band in range(residual.shape[0]):
        values = residual[band][valid[band]]
        if values.size == 0:
            continue
        centre = float(np.median(values))
        scale = max(float(sigma[band]), 1.4826 * float(np.median(np.abs(values - centre))))
        if scale > 0:
            outliers[band] = np.abs(residual[band] - centre) > SURE_OUTLIER_SIGMAS * scale
    return outliers


def sure_mse(
    noisy: np.ndarray,
    method: Denoiser,
    sigma: np.ndarray,
    *,
    valid: np.ndarray | None = None,
    peak: float = 1.0,
    seed: int = 0,
    probes: int = SURE_PROBES,
) -> SureEstimate:
    """Monte-Carlo SURE of the per-band MSE of ``method.denoise_tile`` on one crop (see the module docstring).

    Args:
        noisy: (B, h, w) finite crop, in the bands and units the (prepared) method expects.
        method: the denoiser; ``denoise_tile`` is called 1 + ``probes`` times.
        sigma: (B,) Gaussian noise sigma of each band of ``noisy``, data units.
        valid: (B, h, w) bool, entries to score (filled-in entries excluded); all when None.
        peak: the data's peak, for the absolute floor 1e-12 peak^2.
        seed: seed of the probes.
        probes: Rademacher probes averaged.

    Returns:
        The estimate; SURE is clamped below at max(SURE_FLOOR sigma_b^2, 1e-12 peak^2).
    """
    y = np.asarray(noisy, dtype=np.float32)
    sigma = np.asarray(sigma, dtype=np.float64)
    if y.ndim != 3 or sigma.shape != (y.shape[0],):
        raise CubeShapeError(f"SURE needs a (B, h, w) crop and (B,) sigma, got {y.shape} and {sigma.shape}")
    if probes < 1:
        raise ConfigError(f"probes must be at least 1, got {probes}")
    valid = np.ones(y.shape, dtype=bool) if valid is None else np.asarray(valid, dtype=bool)
    y64 = y.astype(np.float64)
    f0 = np.asarray(method.denoise_tile(y), dtype=np.float64)
    if f0.shape != y.shape:
        raise CubeShapeError(f"method {method.name!r} returned shape {f0.shape} for a crop of shape {y.shape}")
    residual = y64 - f0
    changed = _front_end_changes(method, y)
    if changed is not None:
        exclusion = "entries the low-rank front end replaces or corrects (impulses, dead lines, stripes)"
    else:
        changed = _residual_outliers(residual, sigma, valid)
        exclusion = f"entries whose residual is beyond {SURE_OUTLIER_SIGMAS:g} robust scales"
    keep = valid & ~changed
    count = keep.sum(axis=(1, 2))
    step = SURE_EPS * np.maximum(sigma, 1e-9 * max(peak, 1e-30))[:, None, None]
    rng = np.random.default_rng(seed)
    divergence = np.zeros(y.shape[0])
    for _ in range(probes):
        probe = rng.integers(0, 2, size=y.shape).astype(np.float64) * 2.0 - 1.0
        probe[~valid] = 0.0
        shifted = (y64 + step * probe).astype(np.float32)
        actual = (shifted.astype(np.float64) - y64) / step  # the probe as float32 rounding left it
        change = np.asarray(method.denoise_tile(shifted), dtype=np.float64) - f0
        divergence += np.where(keep, actual * change / step, 0.0).sum(axis=(1, 2))
    divergence /= probes
    with np.errstate(invalid="ignore", divide="ignore"):
        data_term = np.where(keep, residual**2, 0.0).sum(axis=(1, 2)) / count
        estimate = data_term - sigma**2 + 2.0 * sigma**2 * divergence / count
    floor = np.maximum(SURE_FLOOR * sigma**2, 1e-12 * peak**2)
    clamped = np.isfinite(estimate) & (estimate < floor)
    estimate = np.where(clamped, floor, estimate)
    estimate = np.where(count > 0, estimate, np.nan)
    excluded = 1.0 - count / np.maximum(valid.sum(axis=(1, 2)), 1)
    return SureEstimate(mse=estimate, excluded_fraction=excluded, clamped=clamped, exclusion=exclusion)


def no_reference_quality(
    noisy: np.ndarray,
    denoised: np.ndarray,
    *,
    sigma: np.ndarray | Sequence[float] | None = None,
    method: Denoiser | None = None,
    crop: int = DEFAULT_CROP,
    seed: int = 0,
    peak: float | None = None,
    bands: Sequence[int] | np.ndarray | None = None,
    nodata: float | None = None,
) -> NoReferenceReport:
    """Noise before / after, whiteness of the removed part and (with ``method``) SURE, per band.

    Args:
        noisy, denoised: (B, H, W) in the same units, full resolution (a crop of a scene is fine; a decimated
            preview is not, it hides the spatial structure). Noise is estimated on a seeded sample of all their
            pixels; whiteness and SURE on the central ``crop`` x ``crop`` window.
        sigma: (B,) known Gaussian noise sigma of ``noisy`` for SURE; None estimates it on the noisy crop.
        method: the denoiser that made ``denoised``, prepared for this cube (``method.prepare(stats)``); its
            ``denoise_tile`` gets the crop in ``bands``. None: no SURE.
        crop: side of the central window, pixels (>= 8).
        seed: seed of the pixel sample and the SURE probes.
        peak: PSNR peak; None takes max - min of the valid values of ``noisy`` (pass 1.0 for [0, 1] data).
        bands: the bands to measure, sorted (the valid bands the method was prepared for); None takes every
            band with a valid value that is not constant.
        nodata: value marking missing pixels; missing and non-finite entries are filled with the band mean
            of the crop for the method and left out of every figure.

    Returns:
        A :class:`NoReferenceReport`.

    Raises:
        CubeShapeError: the cubes are not 3-D of one shape, ``sigma`` is not (B,), or no band can be measured.
        ConfigError: ``crop`` below 8, ``bands`` out of range, or ``peak`` not a positive number.
    """
    noisy, denoised = np.asarray(noisy), np.asarray(denoised)
    if noisy.ndim != 3 or noisy.shape != denoised.shape:
        raise CubeShapeError(
            f"expected a noisy and a denoised (bands, rows, cols) cube of one shape, got {noisy.shape} and "
            f"{denoised.shape}; compare a result with its own input"
        )
    band_count = noisy.shape[0]
    rows, cols = central_crop(noisy.shape, crop)
    valid = valid_mask(noisy, nodata) & np.isfinite(denoised)
    if bands is None:
        chosen = measured_bands(noisy, valid)
    else:
        chosen = np.asarray(sorted({int(b) for b in bands}), dtype=np.int64)
        if chosen.size and (chosen[0] < 0 or chosen[-1] >= band_count):
            raise ConfigError(f"bands must be indices in [0, {band_count - 1}], got {list(bands)}")
    if chosen.size == 0:
        raise CubeShapeError("no band of the noisy cube has valid, non-constant values; nothing to measure")
    if peak is None:
        values = noisy[chosen][valid[chosen]]
        peak = float(values.max() - values.min()) if values.size else 1.0
    if not (math.isfinite(peak) and peak > 0):
        raise ConfigError(f"peak must be a finite number > 0, got {peak}")

    def per_band(values: np.ndarray) -> np.ndarray:
        full = np.full(band_count, np.nan)
        full[chosen] = values
        return full

    noisy_64 = noisy[chosen].astype(np.float64)
    denoised_64 = denoised[chosen].astype(np.float64)
    sample_valid = valid[chosen]
    before, estimator = band_noise(np.where(sample_valid, noisy_64, np.nan), seed=seed)
    after, _ = band_noise(np.where(sample_valid, denoised_64, np.nan), seed=seed)

    crop_valid = sample_valid[:, rows, cols]
    removed = noisy_64[:, rows, cols] - denoised_64[:, rows, cols]
    white = whiteness(removed, crop_valid)
    spatial = np.maximum(np.abs(white["rows"]), np.abs(white["cols"]))
    flagged = chosen[np.nan_to_num(spatial, nan=0.0) > np.nan_to_num(white["threshold"], nan=np.inf)]
    spectral = np.full(max(band_count - 1, 0), np.nan)
    spectral_threshold = np.full(max(band_count - 1, 0), np.nan)
    neighbours = np.flatnonzero(np.diff(chosen) == 1)  # pairs of measured bands that are neighbours in the cube
    spectral[chosen[neighbours]] = white["spectral"][neighbours]
    spectral_threshold[chosen[neighbours]] = white["spectral_threshold"][neighbours]
    pairs = np.flatnonzero(np.abs(np.nan_to_num(spectral)) > np.nan_to_num(spectral_threshold, nan=np.inf))

    report: dict[str, Any] = {
        "band_count": band_count,
        "bands": tuple(int(b) for b in chosen),
        "crop": (rows.start, rows.stop, cols.start, cols.stop),
        "noise_estimator": estimator,
        "sigma_before": per_band(before),
        "sigma_after": per_band(after),
        "autocorr_rows": per_band(white["rows"]),
        "autocorr_cols": per_band(white["cols"]),
        "whiteness_threshold": per_band(white["threshold"]),
        "spectral_corr": spectral,
        "spectral_threshold": spectral_threshold,
        "flagged_bands": tuple(int(b) for b in flagged),
        "flagged_pairs": tuple(int(b) for b in pairs),
        "peak": float(peak),
        "sure_note": "SURE needs the denoiser: pass the method (eval --method lowrank|decsc)",
    }
    if method is None:
        return NoReferenceReport(**report)

    crop_noisy = noisy_64[:, rows, cols]
    if sigma is None:
        sure_sigma, _ = band_noise(np.where(crop_valid, crop_noisy, np.nan), seed=seed)
        note = "sigma: the Gaussian noise estimate of the noisy crop"
    else:
        given = np.asarray(sigma, dtype=np.float64)
        if given.shape != (band_count,):
            raise CubeShapeError(f"sigma must hold one value per band ({band_count}), got shape {given.shape}")
        sure_sigma = given[chosen]
        note = "sigma: given by the caller"
    counts = crop_valid.sum(axis=(1, 2))
    means = np.where(crop_valid, crop_noisy, 0.0).sum(axis=(1, 2)) / np.maximum(counts, 1)
    filled = np.where(crop_valid, crop_noisy, means[:, None, None])
    estimate = sure_mse(filled, method, sure_sigma, valid=crop_valid, peak=peak, seed=seed)
    with np.errstate(divide="ignore", invalid="ignore"):
        psnr = 10.0 * np.log10(peak**2 / estimate.mse)
    finite = psnr[np.isfinite(psnr)]
    clamped = chosen[estimate.clamped]
    if clamped.size:
        note += f"; SURE raised to the floor ({SURE_FLOOR:g} sigma^2) in {clamped.size} band(s)"
    report.update(
        sure_note=note,
        sure_sigma=per_band(sure_sigma),
        sure_mse=per_band(estimate.mse),
        sure_psnr=per_band(psnr),
        sure_mpsnr=float(finite.mean()) if finite.size else None,
        sure_excluded_fraction=per_band(estimate.excluded_fraction),
        sure_exclusion=estimate.exclusion,
        sure_clamped_bands=tuple(int(b) for b in clamped),
    )
    return NoReferenceReport(**report)
