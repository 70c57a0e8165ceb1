"""No-reference quality of a denoising result: one noise story per band, and the calibrated whiteness of what
was removed.

With a noisy cube y and its denoised version f(y) but no clean reference, per band:

1. **The input noise** sigma_b: :func:`hsidenoise.subspace.estimate_band_noise` (robust HySime, the estimator the
   low-rank method uses) on a seeded sample of the noisy pixel spectra. No noise estimator is applied to the
   output: on a low-rank output HySime is near zero by construction and a spatial estimator measures texture.
2. **What was removed**: the std of R = y - f(y), and the headline ratio std(R_b) / sigma_b (about 1: the
   method removed the size of the noise; well above 1: it removed signal or structured artefacts such as
   stripes or impulses; well below 1: it left noise in).
3. **Calibrated whiteness** of R on the central ``crop`` x ``crop`` window, spatial and spectral, each judged
   against the same statistic of the **input noise**, estimated from the input's leave-one-band-out regression
   residual E on the crop (:func:`regression_residual`):

   * spatial: R's lag-1 autocorrelation along the rows and the columns against E's;
   * coarse scale: R's energy at the scale of 4 x 4 blocks (the variance of the block means times 16, over the
     variance: 1 for white noise) against E's, one-sided: flagged only when R has less coarse-scale energy than the
     noise *and* than white noise. What a blur removes is high-passed noise plus edges; the lag-1 check misses it
     where the two cancel (the noise part is negatively correlated, the edges positively), but the high-passed
     noise has almost no coarse part (0.4-0.6 at 1.5 px), whatever the edges do. The white-noise cap keeps a band
     whose regression residual carries unexplained smooth signal (E's energy well above 1) from being flagged for
     R's being noise-like;
   * spectral: R's correlation between neighbouring bands b, b + 1 against the input noise's. The residuals give
     the noise's *partial* correlation of the two bands given the others, pi = -corr(E_b, E_{b+1}) (E =
     diag(P)^-1 P y with P the inverse band covariance, so corr(E_b, E_c) = P_bc / sqrt(P_bb P_cc) = -pi); the
     removed part's correlation is a plain (marginal) one. The two are put on one footing with the simplest
     model of noise correlated along the spectrum, AR(1) (neighbouring detector elements, resampling), whose
     partial correlation is rho / (1 + rho^2): rho = 2 pi / (1 + sqrt(1 - 4 pi^2)) (:func:`marginal_from_partial`;
     white noise: 0). Only a removed part *more* correlated than the noise is flagged: a method that removes
     signal (edges are in the same place in neighbouring bands) is, a sensor whose noise is spectrally
     correlated is not. Both bands of a flagged pair are flagged. Signal that the other bands do not explain
     raises pi, so on real scenes the check errs towards not flagging.
   A difference beyond :data:`WHITENESS_SIGMAS` sqrt(2 / n) + :data:`CORRELATION_MARGIN` (n pixel pairs; two
   independent estimates; for the spectral check the noise's share of the variance grows with d rho / d pi)
   flags the band, with its reason.
4. **An MPSNR estimate only where it is right**: :mod:`hsidenoise.quality.subspace_mse` estimates each band's
   output MSE in the front end's whitened subspace (SURE with the components' own noise covariance, plus the
   complement's energy beyond its noise) and the interval that the noise estimate's uncertainty leaves.
   ``estimated_mpsnr_db`` (peak ``estimated_mpsnr_peak``: the output's value range over the measured bands) is
   printed only when that interval is within +-:data:`MPSNR_HALF_WIDTH_DB` dB and the front end replaced nothing in
   the window; otherwise it is None and ``estimated_mpsnr_reason`` says why, with the interval. Measured on the
   validation cubes (``bench/noreference.py --mpsnr``): the part of the error outside the subspace dominates
   and is not resolved, so the estimate is withheld there.

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
from hsidenoise.quality.subspace_mse import SubspaceMseEstimate

DEFAULT_CROP = 128
"""Side of the central window on which whiteness and SURE are measured."""
MIN_CROP = 8
"""The smallest crop side (the DCT denoiser's block)."""
NOISE_SAMPLE_PIXELS = 16_384
"""Pixel spectra drawn (seeded) for the noise estimates."""
WHITENESS_SIGMAS = 4.0
"""A band is flagged when its removed part's lag-1 autocorrelation differs from the input noise's by more than
this many sqrt(2 / n) standard deviations (two independent estimates) plus :data:`CORRELATION_MARGIN`."""
CORRELATION_MARGIN = 0.02
"""Absolute tolerance on a correlation difference: the low-rank output keeps a little of the noise and the
regression residual is not exactly the noise. Chosen with bench/noreference.py: lowrank on non-i.i.d. noise
leaves a gap of 0.003-0.004 (median) and 0.012-0.027 (90th percentile) on a 96 x 96 crop; a 1.5-pixel blur
0.08-0.10 (median; its removed part is high-passed noise, negatively correlated)."""
BLOCK_SIDE = 4
"""Side m of the blocks of the coarse-scale check: the variance of the removed part's m x m block means, times m^2,
over its variance (1 for white noise; near 0 for the high-passed noise that a blur removes, 0.4-0.6 at 1.5 px)."""
MIN_BLOCKS = 16
"""Fewest complete blocks for the coarse-scale check (else NaN, no flag)."""
BLOCK_MARGIN = 0.05
"""Absolute tolerance of the coarse-scale check: lowrank keeps a little low-frequency noise in the bands that lean
on its subspace. Chosen with bench/noreference.py (the removed part of lowrank reads 0.98-1.03, median band)."""
RATIO_MEANING = (
    "removed_ratio = std(noisy - denoised) / sigma_before (HySime): about 1, the removed part is the size of "
    "the noise; well above 1, signal or structured artefacts (stripes, impulses) were removed too; well below "
    "1, noise was left in; null where sigma_before sits at the noise estimate's floor (a thousandth of the "
    "median band's): that band's noise is not resolved, so no ratio to it is meaningful"
)
WHITENESS_RULE = (  # noqa: E501
    f"a band is flagged when the lag-1 correlation (along rows or columns) of noisy - denoised differs from "
    f"that of the input noise (each band's regression residual on the other bands) by more than "
    f"{WHITENESS_SIGMAS:g} sqrt(2 / pixel pairs) + {CORRELATION_MARGIN:g}, or when its correlation with a "
    f"neighbouring band's exceeds the input noise's (from the two bands' partial correlation given the others, "
    f"read as AR(1) noise along the spectrum) by more than as much (flagged_band_pairs; both bands of a pair are "
    f"flagged), or when its coarse-scale energy (variance of {BLOCK_SIDE} x {BLOCK_SIDE} block means times "
    f"{BLOCK_SIDE * BLOCK_SIDE}, over its variance) is below the input noise's, and below white noise's 1, by more "
    f"than {WHITENESS_SIGMAS:g} sqrt(2 / blocks) times the two values' root-sum-square + {BLOCK_MARGIN:g}: the "
    f"removed part lacks the noise's coarse part, as what a blur or another low-pass filter removes does"
)
FRONT_END_CLEANED = "front end cleaned the window"
"""``mse_estimate`` of :func:`no_reference_quality` when the estimate stopped early because the front end replaced
entries of the window (``estimate_subspace_mse(..., stop_when_cleaned=True)`` returned None)."""
MPSNR_HALF_WIDTH_DB = 0.5
"""The MPSNR estimate is printed only when its interval (the noise estimate's uncertainty, the part outside the
subspace) is at most this many dB either side of it (issue 18's target accuracy)."""
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
        crop: (row_start, row_stop, col_start, col_stop) of the window for the correlations.
        noise_estimator: the estimator of ``sigma_before``.
        sigma_before: (B,) Gaussian noise sigma of the noisy cube (HySime, as the low-rank method uses it), data units.
        removed_std: (B,) standard deviation of what was removed (noisy - denoised), data units.
        removed_ratio: (B,) removed_std / sigma_before, the headline figure (about 1: removed the noise; well above
            1: removed signal or structured artefacts; well below 1: left noise in).
        autocorr_rows, autocorr_cols: (B,) lag-1 autocorrelation of the removed part along rows / columns.
        noise_autocorr_rows, noise_autocorr_cols: (B,) the same of the input noise (the input's band-regression
            residual): the reference the removed part is judged against.
        whiteness_threshold: (B,) the flag threshold of each band on |removed - noise| correlation.
        coarse_energy, noise_coarse_energy: (B,) the coarse-scale energy (:func:`coarse_energy`) of the removed part
            and of the input noise; coarse_threshold: (B,) the flag threshold on min(noise's, 1) - removed's.
        spectral_corr: (B - 1,) correlation of the removed part between bands b and b + 1.
        noise_spectral_corr: (B - 1,) the input noise's correlation between bands b and b + 1 (from their partial
            correlation given the other bands, :func:`marginal_from_partial`): the reference of ``spectral_corr``.
        spectral_threshold: (B - 1,) the flag threshold of ``spectral_corr - noise_spectral_corr``.
        flagged_bands: bands whose removed part is correlated unlike the input noise (spatially, or with a
            neighbouring band's).
        flag_reasons: one sentence per flagged band (band -> reason).
        flagged_pairs: b of the band pairs (b, b + 1) whose removed parts correlate more than the input noise.
        peak: the output's value range over the measured bands (the peak an MPSNR estimate would use).
        estimated_mpsnr_db: the output's MPSNR estimated without a reference (peak ``peak``), or None; see
            ``estimated_mpsnr_reason``.
        estimated_mpsnr_reason: why there is no MPSNR estimate ("" when there is one).
    """

    band_count: int
    bands: tuple[int, ...]
    crop: tuple[int, int, int, int]
    noise_estimator: str
    sigma_before: np.ndarray
    removed_std: np.ndarray
    removed_ratio: np.ndarray
    autocorr_rows: np.ndarray
    autocorr_cols: np.ndarray
    noise_autocorr_rows: np.ndarray
    noise_autocorr_cols: np.ndarray
    whiteness_threshold: np.ndarray
    coarse_energy: np.ndarray
    noise_coarse_energy: np.ndarray
    coarse_threshold: np.ndarray
    spectral_corr: np.ndarray
    noise_spectral_corr: np.ndarray
    spectral_threshold: np.ndarray
    flagged_bands: tuple[int, ...]
    flag_reasons: dict[int, str]
    flagged_pairs: tuple[int, ...]
    peak: float
    estimated_mpsnr_db: float | None = None
    estimated_mpsnr_reason: str = ""

    def per_band(self) -> dict[str, np.ndarray]:
        """Column name -> (B,) values, for a per-band table (``spectral_corr_next``: the pair (b, b + 1))."""
        band_count = self.band_count
        flagged = np.zeros(band_count, dtype=bool)
        flagged[list(self.flagged_bands)] = True
        measured = np.zeros(band_count, dtype=bool)
        measured[list(self.bands)] = True
        return {
            "band": np.arange(band_count),
            "measured": measured,
            "sigma_before": self.sigma_before,
            "removed_std": self.removed_std,
            "removed_ratio": self.removed_ratio,
            "autocorr_rows": self.autocorr_rows,
            "autocorr_cols": self.autocorr_cols,
            "noise_autocorr_rows": self.noise_autocorr_rows,
            "noise_autocorr_cols": self.noise_autocorr_cols,
            "whiteness_threshold": self.whiteness_threshold,
            "coarse_energy": self.coarse_energy,
            "noise_coarse_energy": self.noise_coarse_energy,
            "coarse_threshold": self.coarse_threshold,
            "spectral_corr_next": np.append(self.spectral_corr, np.nan),
            "noise_spectral_corr_next": np.append(self.noise_spectral_corr, np.nan),
            "flagged": flagged,
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-able (numpy arrays stay arrays; :func:`hsidenoise.quality.plots.write_json` writes NaN as null)."""
        row_start, row_stop, col_start, col_stop = self.crop
        return {
            "band_count": self.band_count,
            "bands_measured": list(self.bands),
            "crop": {"rows": [row_start, row_stop], "cols": [col_start, col_stop]},
            "noise": {
                "estimator": self.noise_estimator,
                "sigma_before": self.sigma_before,
                "removed_std": self.removed_std,
                "removed_ratio": self.removed_ratio,
                "median_sigma_before": _nanmedian(self.sigma_before),
                "median_removed_std": _nanmedian(self.removed_std),
                "median_removed_ratio": _nanmedian(self.removed_ratio),
                "ratio_meaning": RATIO_MEANING,
            },
            "whiteness": {
                "rule": WHITENESS_RULE,
                "autocorr_rows": self.autocorr_rows,
                "autocorr_cols": self.autocorr_cols,
                "noise_autocorr_rows": self.noise_autocorr_rows,
                "noise_autocorr_cols": self.noise_autocorr_cols,
                "threshold": self.whiteness_threshold,
                "coarse_energy": self.coarse_energy,
                "noise_coarse_energy": self.noise_coarse_energy,
                "coarse_threshold": self.coarse_threshold,
                "spectral_corr": self.spectral_corr,
                "noise_spectral_corr": self.noise_spectral_corr,
                "spectral_threshold": self.spectral_threshold,
                "flagged_band_pairs": [[b, b + 1] for b in self.flagged_pairs],
            },
            "flagged_bands": list(self.flagged_bands),
            "flag_reasons": {str(band): reason for band, reason in sorted(self.flag_reasons.items())},
            "estimated_mpsnr_db": self.estimated_mpsnr_db,
            "estimated_mpsnr_peak": self.peak,
            "estimated_mpsnr_reason": self.estimated_mpsnr_reason,
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
        band (or pair) is constant or has fewer than 3 usable pairs. Thresholds follow the module's rule. Also
        ``block`` and ``block_count`` (B,): :func:`coarse_energy`.
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
    block, block_count = coarse_energy(removed, valid)
    return {"rows": rows, "cols": cols, "threshold": threshold, "spectral": spectral,
            "spectral_threshold": spectral_threshold, "block": block, "block_count": block_count}


def coarse_energy(removed: np.ndarray, valid: np.ndarray, side: int = BLOCK_SIDE) -> tuple[np.ndarray, np.ndarray]:
    """Each band's coarse-scale energy: the variance of its ``side`` x ``side`` block means times side^2, over the
    variance of the same entries (1 for white noise, above 1 for noise correlated in space, near 0 for high-passed
    noise). Only complete blocks of valid entries count (the window's last rows and columns that do not fill a
    block are left out).

    Args:
        removed: (B, h, w); valid: (B, h, w) bool.

    Returns:
        energy (B,) (NaN with fewer than :data:`MIN_BLOCKS` complete blocks or a constant band) and the number of
        blocks used (B,).
    """
    bands, height, width = removed.shape
    rows, cols = height // side, width // side
    energy, count = np.full(bands, np.nan), np.zeros(bands, dtype=np.int64)
    if rows == 0 or cols == 0:
        return energy, count
    shape = (bands, rows, side, cols, side)
    blocks = removed[:, : rows * side, : cols * side].reshape(shape)
    complete = valid[:, : rows * side, : cols * side].reshape(shape).all(axis=(2, 4))  # (B, rows, cols)
    for band in range(bands):
        kept = blocks[band].transpose(0, 2, 1, 3)[complete[band]]  # (n, side, side)
        count[band] = kept.shape[0]
        if kept.shape[0] < MIN_BLOCKS:
            continue
        centred = kept - kept.mean()
        variance = float(np.mean(centred**2))
        if variance > 0:
            energy[band] = float(np.mean(centred.mean(axis=(1, 2)) ** 2)) * side * side / variance
    return energy, count


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


def regression_residual(pixels: np.ndarray) -> np.ndarray:
    """Each band's leave-one-band-out linear regression residual (the input noise as HySime sees it).

    Args:
        pixels: (B, n) pixel spectra (columns), finite.

    Returns:
        (B, n) residual: band b minus its least-squares prediction from the other B - 1 bands (and a constant),
        e = diag(P)^-1 P (y - mean) with P the inverse band covariance (one B x B inverse for all bands).
    """
    pixels = np.asarray(pixels, dtype=np.float64)
    centred = pixels - pixels.mean(axis=1, keepdims=True)
    covariance = centred @ centred.T / max(pixels.shape[1], 1)
    ridge = 1e-10 * max(float(np.trace(covariance)) / max(pixels.shape[0], 1), 1e-300)
    precision = np.linalg.pinv(covariance + ridge * np.eye(pixels.shape[0]), hermitian=True)
    diagonal = np.diag(precision)
    with np.errstate(divide="ignore", invalid="ignore"):
        residual = (precision @ centred) / diagonal[:, None]
    return np.where(np.isfinite(residual), residual, 0.0)


def no_reference_quality(
    noisy: np.ndarray,
    denoised: np.ndarray,
    *,
    method: Denoiser | str | None = None,
    crop: int = DEFAULT_CROP,
    seed: int = 0,
    bands: Sequence[int] | np.ndarray | None = None,
    nodata: float | None = None,
    outliers_removed: bool = False,
    sigma: np.ndarray | Sequence[float] | None = None,
    mse_estimate: SubspaceMseEstimate | str | None = None,
) -> NoReferenceReport:
    """Per band: the input noise, what was removed, their ratio and the calibrated whiteness of the removed part.

    Args:
        noisy, denoised: (B, H, W) in the same units, full resolution (a crop of a scene is fine; a decimated
            preview is not, it hides the spatial structure). The input sigma is estimated on a seeded sample of
            the noisy pixels; the removed part's std on every valid entry; the correlations on the central
            ``crop`` x ``crop`` window.
        method: the method (or its name) that made ``denoised``, or None when unknown; only names the reason
            why there is no MPSNR estimate. Nothing is re-run here.
        crop: side of the central window, pixels (>= 8).
        seed: seed of the pixel sample.
        bands: the bands to measure, sorted; None takes every band with a valid value that is not constant.
        nodata: value marking missing pixels; missing and non-finite entries are left out of every figure.
        outliers_removed: the method's front end replaced impulses, dead lines or stripes (reason text only).
        sigma: (B_measured,) the input noise sigma of the measured bands when the caller has it (the method's own
            HySime estimate, ``hsidenoise.subspace.noise_estimate.band_noise``); None estimates it here.
        mse_estimate: the subspace pipeline's MSE estimate per measured band on the same window
            (:func:`hsidenoise.quality.subspace_mse.estimate_subspace_mse`), :data:`FRONT_END_CLEANED` (it stopped
            early: withheld), or None: no MPSNR estimate.

    Returns:
        A :class:`NoReferenceReport`.

    Raises:
        CubeShapeError: the cubes are not 3-D of one shape, or no band can be measured.
        ConfigError: ``crop`` below 8 or ``bands`` out of range.
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

    def per_band(values: np.ndarray) -> np.ndarray:
        full = np.full(band_count, np.nan)
        full[chosen] = values
        return full

    noisy_64 = noisy[chosen].astype(np.float64)
    denoised_64 = denoised[chosen].astype(np.float64)
    sample_valid = valid[chosen]
    output_values = denoised_64[sample_valid]
    peak = float(output_values.max() - output_values.min()) if output_values.size else 1.0
    if sigma is not None and np.asarray(sigma).shape == (chosen.size,):
        before = np.asarray(sigma, dtype=np.float64)
        estimator = "HySime of the method's own fit (hsidenoise.subspace.noise_estimate.band_noise), data units"
    else:
        before, estimator = band_noise(np.where(sample_valid, noisy_64, np.nan), seed=seed)
    removed_all = np.where(sample_valid, noisy_64 - denoised_64, np.nan)
    removed_std = np.nanstd(removed_all, axis=(1, 2)) if removed_all.size else np.full(chosen.size, np.nan)
    from hsidenoise.subspace.noise_estimate import SIGMA_FLOOR

    # a sigma at the estimators' floor (SIGMA_FLOOR times the median band's, that median taken over the fit's
    # bands, which may differ from these by a few: hence 1 %) is not resolved: no ratio to it
    resolved = (before > 0) & (before > 1.01 * SIGMA_FLOOR * np.median(before))
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(resolved, removed_std / before, np.nan)

    crop_valid = sample_valid[:, rows, cols]
    removed = noisy_64[:, rows, cols] - denoised_64[:, rows, cols]
    white = whiteness(removed, crop_valid)
    noise_white = _input_noise_whiteness(noisy_64[:, rows, cols], crop_valid)
    spatial_gap = np.fmax(np.abs(white["rows"] - noise_white["rows"]), np.abs(white["cols"] - noise_white["cols"]))
    threshold = white["threshold"] * math.sqrt(2.0) + CORRELATION_MARGIN
    flagged_local = np.flatnonzero(np.nan_to_num(spatial_gap, nan=0.0) > np.nan_to_num(threshold, nan=np.inf))
    reasons = {}
    for index in flagged_local:
        band = int(chosen[index])
        along = "rows" if abs(white["rows"][index] - noise_white["rows"][index]) >= abs(
            white["cols"][index] - noise_white["cols"][index]) else "cols"
        more = white[along][index] > noise_white[along][index]
        meaning = (
            "structure was removed (signal such as edges, or stripes)" if more else
            "less correlated than the noise: a spatial filter took the finest detail "
            "(signal and noise alike), not the noise as it is"
        )
        reasons[band] = (
            f"removed part's lag-1 correlation along {along} is {white[along][index]:+.3f}, the input noise's "
            f"{noise_white[along][index]:+.3f} (tolerance {threshold[index]:.3f}): {meaning}; removed/noise std "
            f"ratio {ratio[index]:.2f}"
        )
    coarse_threshold = _coarse_flags(white, noise_white, chosen, ratio, reasons)
    spectral, noise_spectral, spectral_threshold, pairs = _spectral_flags(white, noise_white, chosen, band_count)
    spectral_reason: set[int] = set()  # one spectral reason per band, from its first flagged pair
    for pair in pairs:
        for band in {pair, pair + 1} - spectral_reason:
            spectral_reason.add(band)
            index = int(np.searchsorted(chosen, band))
            why = (
                f"removed part's correlation with band {pair + 1 if band == pair else pair}'s is "
                f"{spectral[pair]:+.3f}, the input noise's {noise_spectral[pair]:+.3f} (tolerance "
                f"{spectral_threshold[pair]:.3f}): the two removed parts share more than their noise does, as "
                f"signal removed from both (edges, texture) would; removed/noise std ratio {ratio[index]:.2f}"
            )
            _add_reason(reasons, band, why)
    return NoReferenceReport(
        band_count=band_count,
        bands=tuple(int(b) for b in chosen),
        crop=(rows.start, rows.stop, cols.start, cols.stop),
        noise_estimator=estimator,
        sigma_before=per_band(before),
        removed_std=per_band(removed_std),
        removed_ratio=per_band(ratio),
        autocorr_rows=per_band(white["rows"]),
        autocorr_cols=per_band(white["cols"]),
        noise_autocorr_rows=per_band(noise_white["rows"]),
        noise_autocorr_cols=per_band(noise_white["cols"]),
        whiteness_threshold=per_band(threshold),
        coarse_energy=per_band(white["block"]),
        noise_coarse_energy=per_band(noise_white["block"]),
        coarse_threshold=per_band(coarse_threshold),
        spectral_corr=spectral,
        noise_spectral_corr=noise_spectral,
        spectral_threshold=spectral_threshold,
        flagged_bands=tuple(sorted(reasons)),
        flag_reasons=reasons,
        flagged_pairs=tuple(int(b) for b in pairs),
        peak=peak,
        **mpsnr_estimate(mse_estimate, peak, method, outliers_removed),
    )


def _add_reason(reasons: dict[int, str], band: int, why: str) -> None:
    """Record why ``band`` is flagged, after any reason it already has."""
    reasons[band] = f"{reasons[band]}; also {why}" if band in reasons else why


def _coarse_flags(
    white: dict[str, np.ndarray],
    noise_white: dict[str, np.ndarray],
    chosen: np.ndarray,
    ratio: np.ndarray,
    reasons: dict[int, str],
) -> np.ndarray:
    """The coarse-scale check (module docstring): flags, into ``reasons``, the measured bands whose removed part has
    less 4 x 4-block energy than min(the input noise's, 1) by more than the tolerance; returns that tolerance (over
    the measured bands, like ``white``)."""
    reference = np.fmin(noise_white["block"], 1.0)  # below the noise's and below white noise's
    threshold = (
        WHITENESS_SIGMAS * np.sqrt(2.0 / np.maximum(white["block_count"], 1)) * np.hypot(white["block"], reference)
        + BLOCK_MARGIN
    )
    gap = np.nan_to_num(reference - white["block"], nan=0.0)
    for index in np.flatnonzero(gap > np.nan_to_num(threshold, nan=np.inf)):
        _add_reason(reasons, int(chosen[index]), (
            f"removed part's {BLOCK_SIDE} x {BLOCK_SIDE}-block energy is {white['block'][index]:.2f}, the input "
            f"noise's {noise_white['block'][index]:.2f} (white noise 1; tolerance {threshold[index]:.2f}): "
            f"the removed part lacks the noise's coarse part, as a blur or another low-pass filter leaves it: fine "
            f"detail, signal and noise alike, was taken; removed/noise std ratio {ratio[index]:.2f}"
        ))
    return threshold


def mpsnr_estimate(
    estimate: SubspaceMseEstimate | str | None, peak: float, method: Denoiser | str | None, outliers_removed: bool = False
) -> dict[str, Any]:
    """``estimated_mpsnr_db`` and ``estimated_mpsnr_reason`` from a subspace MSE estimate (module docstring, item 4).

    Args:
        estimate: per measured band, :data:`FRONT_END_CLEANED`, or None (no subspace pipeline to estimate with).
        peak: the output's value range.
        method: names the reason when there is no estimate; outliers_removed: the front end can replace entries
            (stuck values found in the cube).
    """
    if estimate is None:
        return {"estimated_mpsnr_db": None, "estimated_mpsnr_reason": mpsnr_withheld_reason(method, outliers_removed)}
    if estimate is FRONT_END_CLEANED:
        return {"estimated_mpsnr_db": None, "estimated_mpsnr_reason": (
            "withheld: the front end replaced or corrected entries of the window (impulses, dead lines, stripes, "
            "stuck values); SURE scores Gaussian noise only")}  # fmt: skip
    with np.errstate(divide="ignore"):
        point, low, high = (float(np.mean(10.0 * np.log10(peak**2 / mse))) for mse in (
            estimate.mse, estimate.high, estimate.low))  # fmt: skip
    if estimate.cleaned_entries or outliers_removed:
        why = (
            f"the front end replaced or corrected {estimate.cleaned_entries} entries of the window (impulses, dead "
            "lines, stripes, stuck values)" if estimate.cleaned_entries else
            "the front end found stuck values (impulse, saturation, dead elements) in this cube"
        )
        return {"estimated_mpsnr_db": None,
                "estimated_mpsnr_reason": f"withheld: {why}; SURE scores Gaussian noise only"}
    if not (math.isfinite(low) and math.isfinite(high)) or high - low > 2 * MPSNR_HALF_WIDTH_DB:
        unresolved = len(estimate.unresolved_bands)
        upper = f"{high:.1f} dB" if math.isfinite(high) else "unbounded"
        return {"estimated_mpsnr_db": None, "estimated_mpsnr_reason": (
            f"withheld: uncertain, between {low:.1f} dB and {upper} given the uncertainty of the noise estimate "
            f"({unresolved} band(s) whose sigma is only bounded above: quiet, or the spectral and spatial estimates "
            f"disagree) and the signal "
            f"outside the subspace, which the data bound only loosely; a number is printed only within "
            f"+-{MPSNR_HALF_WIDTH_DB:g} dB (on the validation cubes, bench/noreference.py --mpsnr, it never was)"
        )}  # fmt: skip
    return {"estimated_mpsnr_db": point, "estimated_mpsnr_reason": ""}


def mpsnr_withheld_reason(method: Denoiser | str | None, outliers_removed: bool = False) -> str:
    """Why the report prints no MPSNR estimate when there is no subspace estimate to judge."""
    if method is None:
        return "the method is unknown (eval --noisy without --method): no noise model of the output to estimate with"
    name = method if isinstance(method, str) else getattr(method, "name", type(method).__name__)
    reason = (
        f"not estimated: the estimate needs the subspace pipeline's own fit on this cube (run --report with "
        f"--method lowrank or decsc with subspace weights); {name!r} gives none here (eval re-runs nothing, and a "
        f"band-window method has no subspace noise model)"
    )
    if outliers_removed:
        reason += "; besides, the front end removed impulses, dead lines or stripes, which SURE cannot score"
    return reason


def _spectral_flags(
    white: dict[str, np.ndarray], noise_white: dict[str, np.ndarray], chosen: np.ndarray, band_count: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[int]]:
    """The neighbouring-band check: the removed part's correlation between bands b and b + 1 (``white``, over the
    ``chosen`` bands) against the input noise's (``noise_white["spectral_reference"]``), one-sided.

    Returns:
        (B - 1,) removed correlation, noise correlation and threshold (NaN for pairs that are not both measured
        neighbours), and the b of the flagged pairs (b, b + 1), cube numbering.
    """
    removed = np.full(max(band_count - 1, 0), np.nan)
    noise = np.full(max(band_count - 1, 0), np.nan)
    threshold = np.full(max(band_count - 1, 0), np.nan)
    neighbours = np.flatnonzero(np.diff(chosen) == 1)  # pairs of measured bands that are neighbours in the cube
    removed[chosen[neighbours]] = white["spectral"][neighbours]
    reference, slope = marginal_from_partial(noise_white["spectral_reference"][neighbours])
    noise[chosen[neighbours]] = reference
    spread = np.sqrt(1.0 + slope**2)  # the two estimates' errors add; the noise's grows with d rho / d pi
    threshold[chosen[neighbours]] = white["spectral_threshold"][neighbours] * spread + CORRELATION_MARGIN
    gap = np.nan_to_num(removed - noise, nan=0.0)
    pairs = np.flatnonzero(gap > np.nan_to_num(threshold, nan=np.inf))
    return removed, noise, threshold, [int(b) for b in pairs]


MAX_REFERENCE_SLOPE = 4.0
"""Cap on d rho / d pi in the spectral tolerance (reached at rho = 0.68; beyond it the partial correlation says
little)."""


def marginal_from_partial(partial: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The neighbouring-band correlation rho of AR(1) noise along the spectrum from its partial correlation pi
    given the other bands (pi = rho / (1 + rho^2), so |pi| <= 1/2), and d rho / d pi (capped at
    :data:`MAX_REFERENCE_SLOPE`). |pi| >= 1/2 gives rho = +-1. NaN stays NaN.

    Returns:
        (rho, slope), shaped like ``partial``.
    """
    pi = np.clip(np.asarray(partial, dtype=np.float64), -0.5, 0.5)
    rho = 2.0 * pi / (1.0 + np.sqrt(np.maximum(1.0 - 4.0 * pi**2, 0.0)))
    with np.errstate(divide="ignore", invalid="ignore"):
        slope = (1.0 + rho**2) ** 2 / (1.0 - rho**2)
    return rho, np.minimum(np.where(np.isfinite(slope), slope, MAX_REFERENCE_SLOPE), MAX_REFERENCE_SLOPE)


def _input_noise_whiteness(noisy: np.ndarray, valid: np.ndarray) -> dict[str, np.ndarray]:
    """:func:`whiteness` of the input noise: the band-regression residual of the (B, h, w) noisy crop.

    Adds ``spectral_reference`` (B - 1,): the partial correlation of neighbouring bands given the others (minus
    the correlation of their leave-one-band-out residuals); 0 (white) when there are too few bands or pixels for
    the regression.
    """
    pixels_ok = valid.all(axis=0)
    bands, height, width = noisy.shape
    residual = np.zeros_like(noisy, dtype=np.float64)
    if bands >= 2 and pixels_ok.sum() > 2 * bands:
        flat = noisy.reshape(bands, -1)[:, pixels_ok.ravel()]
        residual.reshape(bands, -1)[:, pixels_ok.ravel()] = regression_residual(flat)
    else:  # too few bands or pixels for a regression: the spatial detail (pixel minus its 3x3 mean) stands in
        padded = np.pad(noisy, ((0, 0), (1, 1), (1, 1)), mode="edge")
        local = sum(padded[:, i:i + height, j:j + width] for i in range(3) for j in range(3)) / 9.0
        residual = noisy - local
    found = whiteness(residual, valid & pixels_ok[None])
    regressed = bands >= 2 and pixels_ok.sum() > 2 * bands
    found["spectral_reference"] = -found["spectral"] if regressed else np.zeros_like(found["spectral"])
    return found
