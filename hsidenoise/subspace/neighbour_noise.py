"""Step 1, refined: the noise estimate that also predicts each band from the pixel's spatial neighbours.

HySime's band regression (:mod:`hsidenoise.subspace.noise_estimate`) predicts a band from the other bands of the
same pixel. Its residual is the band's noise, the noise the other bands carry into the prediction (subtracted
exactly by :func:`~hsidenoise.subspace.noise_estimate.band_noise`), **and the band's signal that the other,
noisy bands cannot predict**. On a band whose own noise is near zero that last term dominates: measured on
the validation cubes with sigma_b ~ U(0, 95)/255, sigma was 2 to 35 times too high on such bands, the whitening
down-weighted exactly the cleanest bands, the subspace lost components (rank 3 -> 2 on a CAVE cube, -2.6 dB),
and every eigen-image leaning on those bands carried less than the unit noise the eigen-image denoiser assumes.

The remedy is Roger and Arnold's spectral-spatial decorrelation (SSDC; R. E. Roger and J. F. Arnold,
"Reliably estimating the noise in AVIRIS hyperspectral images", Int. J. Remote Sens. 17(10), 1996; compared in
L. Gao et al., "A comparative study on linear regression-based noise estimation for hyperspectral imagery",
IEEE JSTARS 6(2), 2013): the band is also predicted from its spatial neighbours. Here each sampled pixel comes
with the mean of its left and right neighbours in the same row (:class:`hsidenoise.statistics.NeighbourPairs`,
drawn by the statistics pass), and one regression
predicts every band of the pixel from all its other bands and all bands of that neighbour mean. A quiet band's
own neighbours predict its signal almost without noise, so what is left is its noise. The neighbours' noise
is independent of the pixel's (for noise that is white in space) with half its variance, which the leakage
system accounts for.

Noise that is correlated in space is partly predicted by the neighbours, which would under-estimate it (by
43 % on every band for a lag-one correlation of 0.5), and an under-estimated sigma is far worse than an
over-estimated one (the band then dominates the whitened covariance and spreads its noise over every
component). Two guards: the typical band, whose signal the other bands predict well and whose spectral
estimate is therefore right, calibrates the spatial one (the median ratio of the two over the bands divides
the spatial estimate: 0.98 to 0.99 on the validation and real cubes, 0.57 with that correlated noise); and the
estimate only ever lowers the band regression's sigma, at most by :data:`MAX_REDUCTION` and never below its
floor (:data:`~hsidenoise.subspace.noise_estimate.SIGMA_FLOOR` times the median sigma: bands that the others
predict exactly, such as three interpolated bands of the AVIRIS examples, stay at that floor).

Shapes: pixel samples are (n, B); per-band vectors are (B,).
"""

from __future__ import annotations

import logging
import numpy as np

from hsidenoise.statistics import NeighbourPairs
from hsidenoise.subspace.config import LowRankConfig
from hsidenoise.subspace.noise_estimate import (
    SIGMA_FLOOR,
    BandRegression,
    clean_entries,
    column_median,
    degrees_of_freedom_factor,
    leakage_solve,
    regression_coefficients,
    trimmed_scale,
)
from hsidenoise.subspace.stuck_values import StuckValues

logger = logging.getLogger(__name__)

NEIGHBOUR_VARIANCE = 0.5
"""Noise variance of the mean of the two neighbours, relative to one pixel's (white noise in space)."""
MIN_PAIRS_PER_PREDICTOR = 4
"""The regression has 2B - 1 predictors per band; with fewer than this many pairs per predictor the estimate
falls back to the band regression's."""
MAX_REDUCTION = 8.0
"""The spatial predictors lower a band's sigma by at most this factor (the guard against noise that is
correlated in space). Measured need: 2 to 4 on the validation cubes; a band that would gain more stays at the
band regression's sigma divided by it."""


def spatial_noise(
    pairs: NeighbourPairs,
    regression: BandRegression,
    spectral_sigma: np.ndarray,
    spectral_effective: np.ndarray,
    config: LowRankConfig | None = None,
    stuck: StuckValues | None = None,
) -> tuple[np.ndarray, np.ndarray] | None:
    """Gaussian and effective sigma per band from the spectral-spatial regression.

    The pairs are cleaned first by the robust band regression (stuck values missing, impulses flagged and
    imputed, :func:`~hsidenoise.subspace.noise_estimate.clean_entries`), both halves alike. One ridge
    regression predicts each column of [pixel, neighbour mean] from all the others; the pixel's residual scale
    is measured as in the band regression (median absolute deviation of the entries not imputed, and the
    truncation-corrected spread within the outlier threshold), the noise leaked from the predictors is
    subtracted (:func:`~hsidenoise.subspace.noise_estimate.leakage_solve`), and the result is calibrated on
    the typical band (module docstring).

    Args:
        pairs: the cube's pixel-neighbour pairs, in the bands of ``regression``.
        regression: the robust band regression of the same cube.
        spectral_sigma, spectral_effective: (B,) the band regression's Gaussian and effective sigma; the
            result never exceeds them and is at least them divided by :data:`MAX_REDUCTION`.
        config: pipeline settings; the defaults when None.
        stuck: stuck values of the cube, missing in both halves.

    Returns:
        (Gaussian sigma (B,), effective sigma (B,)), or None when there are too few finite pairs.
    """
    config = config or LowRankConfig()
    pairs = pairs.finite()
    bands = regression.band_count
    if pairs.pixels.shape[1] != bands or pairs.count < MIN_PAIRS_PER_PREDICTOR * 2 * bands:
        return None
    halves = []
    for values in (pairs.pixels, pairs.neighbours):
        known = stuck.mask(values.T) if stuck is not None and stuck.any() else np.zeros(values.T.shape, bool)
        cleaned, missing = clean_entries(values.T, known, regression, config)
        halves.append((cleaned.T, missing.T))
    (pixels, missing), (neighbours, neighbour_missing) = halves
    joined = np.concatenate([pixels, neighbours], axis=1)
    centred = joined - joined.mean(axis=0)
    imputed_variance = np.concatenate([missing, neighbour_missing], axis=1).sum(axis=0) * np.tile(
        regression.residual_scale**2, 2
    )
    coefficients = regression_coefficients(centred, config.ridge, imputed_variance)[:, :bands]  # (2B, B)
    residuals = centred @ coefficients + (pairs.pixels - pixels)
    centre = column_median(residuals, missing)
    gaussian_scale = 1.4826 * column_median(np.abs(residuals - centre), missing)
    inliers = ~missing & (np.abs(residuals) <= config.outlier_threshold * gaussian_scale)
    effective_scale = trimmed_scale(residuals, inliers, config.outlier_threshold)
    if not (np.isfinite(gaussian_scale).all() and np.isfinite(effective_scale).all()):
        return None
    # residual variance = own noise + sum over the other pixel bands beta^2 sigma^2 + over the neighbours' bands
    # gamma^2 sigma^2 / 2; the squared coefficients of the neighbours' columns fold onto the same unknowns
    squares = coefficients.T**2  # [i, j], j over the 2B columns
    leakage = squares[:, :bands] + NEIGHBOUR_VARIANCE * squares[:, bands:]
    np.fill_diagonal(leakage, 1.0 + NEIGHBOUR_VARIANCE * np.diag(squares[:, bands:]))
    inflation = degrees_of_freedom_factor(pairs.count, 2 * bands)  # 2B - 1 predictors and the mean, in-sample
    gaussian = leakage_solve(leakage, gaussian_scale * inflation)
    effective = np.maximum(leakage_solve(leakage, effective_scale * inflation), gaussian)
    # noise correlated in space shows on the typical band, whose spectral estimate is right: calibrate on it
    typical = float(np.median(gaussian / spectral_sigma))
    if 0 < typical < 1:
        gaussian, effective = gaussian / typical, effective / typical
    # a band already at the band regression's floor (predicted exactly by the others) stays there
    floor = np.maximum(spectral_sigma / MAX_REDUCTION, SIGMA_FLOOR * float(np.median(spectral_sigma)))
    gaussian = np.clip(gaussian, np.minimum(floor, spectral_sigma), spectral_sigma)
    effective = np.clip(effective, np.minimum(floor, spectral_effective), spectral_effective)
    lowered = int(np.count_nonzero(gaussian < 0.9 * spectral_sigma))
    logger.debug("spatial noise estimate: %d of %d bands below 0.9x the band regression's sigma", lowered, bands)
    return gaussian, effective
