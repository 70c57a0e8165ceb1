"""Step 1 of the pipeline: the robust per-band noise estimate (HySime's band regression).

HySime (Bioucas-Dias and Nascimento, 2008) regresses every band on all the others; what the regression cannot
explain is that band's noise. Made robust here: a ridge keeps duplicate and collinear bands solvable; the
first residual scale is a shortest-quarter (high-breakdown) estimate; entries far outside it (impulse,
dead-line pixels) are treated as missing and imputed, EM-like, over a few passes (:func:`clean_entries`); the
noise that the other bands carry into each prediction is subtracted (non-negative least squares,
:func:`band_noise`). Two scales come out: the Gaussian noise (:func:`estimate_band_noise`, for reports) and
the larger effective noise that includes the corruption not yet removed (what the pipeline whitens by; see
:func:`fit_band_regression`).

Shapes: spectra are (n, B) pixel samples; band-major pixels are (B, m); per-band vectors are (B,).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

from hsidenoise.device import across_threads
from hsidenoise.errors import CubeShapeError, NothingToDenoise
from hsidenoise.subspace.config import LowRankConfig
from hsidenoise.subspace.stuck_values import StuckValues

logger = logging.getLogger(__name__)

SHORTH_FRACTION = 0.25
"""The first residual scale comes from the shortest interval holding this fraction of a band's residuals."""
SHORTH_HALF_WIDTH = 0.31863936396437515
"""Phi^-1((1 + SHORTH_FRACTION) / 2): that interval's half-width in standard deviations of a normal."""
MAX_OUTLIER_FRACTION = 0.5
"""At most this fraction of a pixel's bands is declared missing (beyond it, the pixel is genuine signal)."""
FILL_SWEEPS = 3
"""Gauss-Seidel sweeps that impute missing entries from the other bands."""
IMPLAUSIBLE_OUTLIER_FRACTION = 0.9
"""A band whose entries were nearly all (beyond this fraction) flagged as outliers has a broken scale, not
impulses: its residuals have no core around zero (a two-valued band: two clusters far apart, each narrow), so
the shortest quarter measured one cluster. Its next scale is the plain standard deviation of its residuals,
when the other bands leave at least :data:`UNEXPLAINED_FRACTION` of the band's spread unexplained."""
UNEXPLAINED_FRACTION = 0.1
"""Below it, residuals that are all outliers are the rounding of bands that predict each other exactly (two
spectra, duplicated bands): noise-free data, whose tiny scale must stay tiny."""
PARALLEL_MEDIAN_ENTRIES = 1 << 20
""":func:`column_median` splits its columns among threads from this many entries (n x B)."""
FILL_CHUNK_PIXELS = 2048
"""Pixels whose imputation :func:`fill_missing` runs together (a few MiB of spectra, so they stay in cache)."""
DENSE_GAP_SHARE = 0.3
"""In :func:`fill_missing`, a band missing in more than this share of a chunk's pixels is updated from one product
over the whole chunk instead of a gather of those pixels' rows (measured, 189 bands, 2048 pixels: 0.05 ms against
0.1 ms at half the pixels; a gather is cheaper below about a quarter)."""
SIGMA_FLOOR = 1e-3
"""Sigma is at least this fraction of the median sigma, so a noise-free band stays finite when whitened."""
MAD_RELATIVE_ERROR = 1.1664
"""The normal-consistent median absolute deviation of n normal values has the asymptotic relative standard error
sqrt(1.3605 / n) = this / sqrt(n) (its efficiency is 37 %)."""
QUIET_BAND_FRACTION = 0.1
"""A band whose Gaussian sigma is below this fraction of the median band's is quiet: its band-regression residual
is dominated by the signal that the other bands do not predict, not by its noise, so its sigma is an upper bound
(:func:`sigma_bounds`; the whitening keeps it, :func:`hsidenoise.subspace.signal_subspace.whitening_sigma`)."""
UNRESOLVED_DISAGREEMENT = 0.05
"""A band whose spectral and spatial sigma differ by more than this fraction has a sigma that neither resolves
(:func:`sigma_bounds`)."""
SIGMA_STANDARD_ERRORS = 2.0
"""The other bands' sigma interval is this many standard errors wide on either side (:func:`sigma_bounds`)."""


NOISE_FREE_FRACTION = 2.0**-26
"""A cube is noise-free when every band's sigma is below this fraction of its root mean square: a quarter of a
float32 unit in the last place, noise that storage rounding alone makes (or none: the bands predict each
other exactly). :meth:`hsidenoise.subspace.LowRankDenoiser.prepare` then has nothing to remove
(:class:`NothingToDenoise`)."""


@dataclass(frozen=True, eq=False)
class BandRegression:
    """Leave-one-band-out linear predictor: every band predicted from all the others.

    Attributes:
        mean: (B,) band means of the cleaned fitting sample.
        coefficients: (B, B), the precision matrix with each column divided by its diagonal entry, so
            column i of ``(x - mean) @ coefficients`` is band i minus its prediction from the other bands.
        residual_scale: (B,) standard deviation of each band's residual (its noise plus the noise the other
            bands carry into its prediction); outliers are measured against it. See
            :func:`fit_band_regression` for the two ways it is measured.
        effective_scale: (B,) the residuals' truncation-corrected spread (corruption not yet removed
            included), or None.
        sample_count: pixels the coefficients were fitted on (n), or None (unknown): the residuals of a
            regression fitted in-sample are smaller than its errors by the degrees of freedom it spent
            (:func:`degrees_of_freedom_factor`).
    """

    mean: np.ndarray
    coefficients: np.ndarray
    residual_scale: np.ndarray
    effective_scale: np.ndarray | None = None
    sample_count: int | None = None

    @property
    def band_count(self) -> int:
        return self.mean.shape[0]

    def residuals(self, pixels: np.ndarray) -> np.ndarray:
        """Each band minus its prediction from the other bands of the same pixel.

        Args:
            pixels: (B, m) band-major pixels in data units.

        Returns:
            (B, m) float64 residuals.
        """
        return self.coefficients.T @ (pixels - self.mean[:, None])


def as_spectra(spectra: np.ndarray) -> np.ndarray:
    """(n, B) float64 pixel samples without the rows that hold a non-finite value."""
    spectra = np.asarray(spectra)
    if spectra.ndim != 2 or spectra.shape[1] < 1 or spectra.shape[0] < 2:
        raise CubeShapeError(
            f"spectra must be a (pixels, bands) array with at least 2 pixels, got shape {spectra.shape}; "
            "pass cube.reshape(B, -1).T"
        )
    finite = np.isfinite(spectra).all(axis=1)
    if finite.sum() < 2:
        raise CubeShapeError(
            f"spectra hold fewer than 2 pixels that are finite in all {spectra.shape[1]} bands; mask NaN/nodata first"
        )
    return np.asarray(spectra[finite], dtype=np.float64)


def subsample(spectra: np.ndarray, size: int, seed: int) -> np.ndarray:
    """At most ``size`` rows of (n, B) ``spectra``, drawn without replacement, in their original order."""
    if spectra.shape[0] <= size:
        return spectra
    rows = np.random.default_rng(seed).choice(spectra.shape[0], size, replace=False)
    return spectra[np.sort(rows)]


def _shorth_scale(residuals: np.ndarray) -> np.ndarray:
    """(B,) robust standard deviation of each column of (n, B) ``residuals`` from its shortest quarter.

    Consistent for normal data; it stays of the right order while impulses hit up to about half of a band's
    entries (beyond that, least squares has already dragged the clean residuals too wide to be told apart).
    """
    n = residuals.shape[0]
    count = max(2, math.ceil(SHORTH_FRACTION * n))
    if count >= n:
        return residuals.std(axis=0)
    ordered = np.sort(residuals, axis=0)
    return (ordered[count - 1 :] - ordered[: n - count + 1]).min(axis=0) / (2.0 * SHORTH_HALF_WIDTH)


def _masked_shorth_scale(residuals: np.ndarray, missing: np.ndarray) -> np.ndarray:
    """:func:`_shorth_scale` of each column of (n, B) ``residuals`` over its entries not ``missing`` ((n, B) bool).

    A column with fewer than 2 entries left keeps the scale of all its entries.
    """
    if not missing.any():
        return _shorth_scale(residuals)
    scale = _shorth_scale(residuals)
    for band in np.flatnonzero(missing.any(axis=0)):
        kept = residuals[~missing[:, band], band]
        if kept.size >= 2:
            scale[band] = _shorth_scale(kept[:, None])[0]
    return scale


def _mad_scale(residuals: np.ndarray, missing: np.ndarray) -> np.ndarray:
    """(B,) normal-consistent median absolute deviation of each column of (n, B) ``residuals``.

    Args:
        residuals: (n, B); missing: (n, B) bool, entries left out.

    Returns:
        (B,) scale; NaN for a column whose entries are all missing.
    """
    centre = column_median(residuals, missing)
    return 1.4826 * column_median(np.abs(residuals - centre), missing)


def column_median(values: np.ndarray, missing: np.ndarray) -> np.ndarray:
    """(B,) median of each column of (n, B) ``values`` over its entries not ``missing``; NaN for a column without any.

    Args:
        values: (n, B); missing: (n, B) bool, entries left out.

    One contiguous band-major copy, then per column its kept entries and one partition at the lower middle (the
    upper middle of an even count is the smallest value after it). A loop over the B columns in Python, yet
    4.5x faster than one vectorised partition of all columns, which has to place the missing entries at -inf
    and +inf around a common middle first (measured on 16,384 x 224 with 1 to 30 % missing; 1.8x without any).
    From :data:`PARALLEL_MEDIAN_ENTRIES` entries the columns are split among threads
    (:func:`~hsidenoise.device.across_threads`; the same numbers).
    """
    rows, columns = values.shape
    median = np.full(columns, np.nan)
    if rows == 0:
        return median
    band_major = np.ascontiguousarray(values.T, dtype=np.result_type(values.dtype, np.float64))
    kept = ~np.ascontiguousarray(missing.T) if missing.any() else None

    def medians_of(part: slice) -> None:  # the columns of ``part``, written into ``median``
        for column in range(part.start, part.stop):
            entries = band_major[column] if kept is None else band_major[column][kept[column]]
            count = entries.size
            if count == 0:
                continue
            lower = (count - 1) // 2
            parted = np.partition(entries, lower)
            median[column] = parted[lower] if count % 2 else 0.5 * (parted[lower] + parted[lower + 1 :].min())

    across_threads(medians_of, columns, None if rows * columns >= PARALLEL_MEDIAN_ENTRIES else 1)
    return median


def trimmed_scale(residuals: np.ndarray, inliers: np.ndarray, threshold: float) -> np.ndarray:
    """(B,) standard deviation of each column's inliers, corrected for their truncation at ``threshold`` sigmas.

    Args:
        residuals: (n, B); inliers: (n, B) bool, the entries within ``threshold`` times the current scale.

    Returns:
        (B,) scale; NaN for a column without inliers.
    """
    count = inliers.sum(axis=0)
    squares = np.where(inliers, residuals * residuals, 0.0).sum(axis=0)
    # Variance of a standard normal truncated to [-t, t]: 1 - 2 t phi(t) / (2 Phi(t) - 1), with 2 Phi(t) - 1 =
    # erf(t / sqrt 2) (math instead of scipy.stats, whose import alone costs about a second per process).
    density = math.exp(-0.5 * threshold * threshold) / math.sqrt(2.0 * math.pi)
    truncated_variance = 1.0 - 2.0 * threshold * density / math.erf(threshold / math.sqrt(2.0))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.sqrt(squares / count / truncated_variance)


def regression_coefficients(
    centred: np.ndarray, ridge: float, imputed_variance: np.ndarray | None = None
) -> np.ndarray:
    """(B, B) leave-one-band-out coefficients (see :class:`BandRegression`) of (n, B) centred pixels.

    Args:
        centred: (n, B) pixels minus their mean.
        ridge: added to each diagonal entry, relative to that band's variance.
        imputed_variance: (B,) summed conditional variance of each band's imputed entries, added to the Gram
            diagonal (the E-step of EM); without it imputed entries look noise-free and the passes collapse
            onto their own predictions.
    """
    n, bands = centred.shape
    gram = centred.T @ centred
    if not np.isfinite(gram).all():
        raise CubeShapeError(
            "the band regression's squares overflow float64 (values beyond about 1e154); scale the data down "
            "by a power of two first (hsidenoise run does this itself)"
        )
    if imputed_variance is not None:
        gram[np.diag_indices(bands)] += imputed_variance
    gram /= n
    diagonal = np.diag(gram).copy()
    largest = float(diagonal.max(initial=0.0))
    floor = 1e-12 * largest if largest > 0 else 1.0  # keeps constant bands (zero variance) invertible
    gram[np.diag_indices(bands)] = diagonal + ridge * np.maximum(diagonal, floor) + floor
    try:
        precision = np.linalg.inv(gram)
    except np.linalg.LinAlgError:  # singular to working precision despite the ridge: the pseudo-inverse
        precision = np.linalg.pinv(gram, hermitian=True)
    precision = 0.5 * (precision + precision.T)
    return precision / np.diag(precision)[None, :]


def fill_missing(values: np.ndarray, missing: np.ndarray, regression: BandRegression, sweeps: int) -> None:
    """Impute missing entries, in place, by Gauss-Seidel sweeps over the bands.

    Each band's missing entries are set to their prediction from the other bands; the sweeps converge to
    the conditional mean of the missing entries given the observed ones (Gauss-Seidel on a positive
    definite system; Jacobi diverges on strongly correlated bands).

    Args:
        values: (B, m) pixels, modified in place; missing: (B, m) bool.
    """
    touched = np.flatnonzero(missing.any(axis=0))
    if touched.size == 0:
        return
    # pixel-major copy of the pixels with a missing entry: each band's update gathers whole rows (contiguous)
    centred = np.ascontiguousarray(values[:, touched].T) - regression.mean  # (t, B)
    gaps = missing[:, touched]
    # Each pixel's sweeps depend on that pixel alone, so pixels go through in chunks, all sweeps at once: the
    # rows a band's update gathers then come from cache, not memory (the same numbers, several times faster).
    for first in range(0, touched.size, FILL_CHUNK_PIXELS):
        chunk = centred[first : first + FILL_CHUNK_PIXELS]  # a view: updated in place
        chunk_gaps = gaps[:, first : first + FILL_CHUNK_PIXELS]
        bands = np.flatnonzero(chunk_gaps.any(axis=1))
        rows = [np.flatnonzero(chunk_gaps[band]) for band in bands]
        dense = [pixels.size > DENSE_GAP_SHARE * chunk.shape[0] for pixels in rows]
        for _ in range(sweeps):
            for band, pixels, whole in zip(bands, rows, dense):
                column = regression.coefficients[:, band]
                # where most of the chunk's pixels miss the band, one product over the whole (contiguous) chunk is
                # cheaper than gathering their rows first
                chunk[pixels, band] -= (chunk @ column)[pixels] if whole else chunk[pixels] @ column
    values[:, touched] = (centred + regression.mean).T


def clean_entries(
    observed: np.ndarray,
    known_missing: np.ndarray,
    regression: BandRegression,
    config: LowRankConfig | None = None,
    protected: np.ndarray | None = None,
    *,
    residuals: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Declare missing the entries that the other bands contradict, and impute every missing entry.

    Residuals are standardised by each band's residual scale. With one corrupted entry in a pixel, the
    largest standardised residual is the corrupted band's own (Cauchy-Schwarz on the precision matrix);
    the bands predicted from it only show weaker echoes. So each step flags, in every pixel, only the largest
    standardised residual above ``outlier_threshold``, moves that entry to its prediction and corrects the
    pixel's residuals (a rank-one update), until no pixel has an outlier left or
    :data:`MAX_OUTLIER_FRACTION` of its bands are flagged. Gauss-Seidel sweeps then impute all missing entries.

    Args:
        observed: (B, m) band-major pixels in data units.
        known_missing: (B, m) bool, entries known to be missing beforehand (dead lines).
        regression: the band predictor.
        config: pipeline settings; the defaults when None.
        protected: (B, m) bool, entries never flagged (see :func:`remove_outliers`), or None; their echoes in
            the other bands are taken out of the residuals first (:func:`_remove_protected_echoes`).
        residuals: when given, ``observed`` already has its known missing entries imputed by one sweep
            (:func:`fill_missing`) and these are its residuals, (B, m) float64 (overwritten): neither is
            computed again.

    Returns:
        (cleaned (B, m) float64, missing (B, m) bool: the known and the detected entries).
    """
    config = config or LowRankConfig()
    bands, count = observed.shape
    missing = known_missing.copy()
    if residuals is not None and bands >= 2 and count > 0:
        cleaned = np.array(observed, dtype=np.float64)
    else:
        cleaned = np.where(missing, regression.mean[:, None], observed).astype(np.float64)
        if bands < 2 or count == 0:
            return cleaned, missing
        fill_missing(cleaned, missing, regression, 1)
        residuals = regression.residuals(cleaned)
    inverse_scale = 1.0 / regression.residual_scale[:, None]
    if protected is not None:
        _remove_protected_echoes(residuals, protected, missing, regression, inverse_scale, config.outlier_threshold)
    active = np.arange(count)
    for step in range(int(MAX_OUTLIER_FRACTION * bands)):
        columns = slice(None) if step == 0 else active  # the first step sees every pixel: views, not copies
        with np.errstate(over="ignore"):  # against a near-zero scale a residual is an outlier, also as inf
            standardised = np.abs(residuals[:, columns])
            standardised *= inverse_scale
        np.copyto(standardised, 0.0, where=missing[:, columns])
        if protected is not None:
            np.copyto(standardised, 0.0, where=protected[:, columns])
        # the pixels whose largest entry is beyond the threshold (a max over bands is a fast reduction; the
        # position of that largest entry, a slow strided argmax, is needed in those pixels only)
        outlying = standardised.max(axis=0) > config.outlier_threshold
        active, worst = active[outlying], standardised[:, outlying].argmax(axis=0)
        if active.size == 0:
            break
        cleaned[worst, active] -= _move_to_prediction(residuals, regression, worst, active)
        missing[worst, active] = True
    fill_missing(cleaned, missing, regression, FILL_SWEEPS)
    return cleaned, missing


def _remove_protected_echoes(
    residuals: np.ndarray,
    protected: np.ndarray,
    missing: np.ndarray,
    regression: BandRegression,
    inverse_scale: np.ndarray,
    threshold: float,
) -> None:
    """Take the echo of each protected outlying entry out of its pixel's other residuals, in place.

    A protected entry (genuine signal that the other bands mispredict) keeps its value, but the bands predicted from
    it carry its unexplained part as an echo, and the outlier test would flag their entries in its place (the
    imputation that replaces them then carries the misprediction: ``bench/README.md``, "The echoes of protected
    entries"). So, largest first in each pixel, as :func:`clean_entries` does for the entries it flags, the residuals
    are corrected as if the protected entry stood at its prediction (:func:`_move_to_prediction`); the entry itself
    is not moved. The entries corrected are those beyond the threshold before any correction.

    Args:
        residuals: (B, m) the pixels' residuals, corrected in place; protected, missing: (B, m) bool;
        inverse_scale: (B, 1) one over each band's residual scale; threshold: the outlier test's, in scales.
    """
    pixels = np.flatnonzero(protected.any(axis=0))
    if pixels.size == 0:
        return
    with np.errstate(over="ignore"):  # against a near-zero scale a residual is an outlier, also as inf
        standardised = np.abs(residuals[:, pixels]) * inverse_scale
    standardised[~protected[:, pixels] | missing[:, pixels]] = 0.0
    for _ in range(residuals.shape[0]):
        outlying = standardised.max(axis=0) > threshold
        if not outlying.any():
            return
        worst = standardised[:, outlying].argmax(axis=0)
        _move_to_prediction(residuals, regression, worst, pixels[outlying])
        standardised[worst, outlying] = 0.0


def _move_to_prediction(
    residuals: np.ndarray, regression: BandRegression, worst: np.ndarray, pixels: np.ndarray
) -> np.ndarray:
    """The pixels' residuals, in place, as if entry ``worst`` of each stood at its prediction (a rank-one update
    per pixel: the entry's own residual becomes 0, the bands predicted from it lose its echo).

    Args:
        residuals: (B, m), corrected in place; worst, pixels: (p,) band and pixel of each entry.

    Returns:
        (p,) what each entry had to move by (its residual before).
    """
    correction = residuals[worst, pixels]
    residuals[:, pixels] -= regression.coefficients[worst, :].T * correction
    return correction


def fit_band_regression(
    spectra: np.ndarray,
    config: LowRankConfig | None = None,
    effective: bool = False,
    stuck: StuckValues | None = None,
) -> BandRegression:
    """Fit the robust leave-one-band-out predictor (HySime's regression) to pixel samples.

    Each pass fits all bands at once (one ridge-regularised precision matrix) on the current cleaned sample,
    measures each band's residual scale, and re-cleans the observed sample with :func:`clean_entries`. The
    first pass takes the scale from the shortest quarter of the residuals; later passes measure it in one of
    two ways:

    - ``effective=False``: the median absolute deviation of the entries not imputed, i.e. the band's
      Gaussian noise, unmoved by impulses that hit up to about half of its pixels (:func:`estimate_band_noise`).
    - ``effective=True``: the truncation-corrected standard deviation of the entries within
      ``outlier_threshold`` scales. Corruption that spreads continuously from the clean core (stripe offsets,
      impulses near the clean value, dense impulses) is absorbed, so the scale grows to the noise the band
      effectively carries. Whitening needs this one: with the Gaussian sigma, a quiet band whose stripes or
      impulses are not perfectly removed dominates the whitened covariance and spreads its corruption over
      every band (measured: -9 dB on a CAVE cube with mixture noise, +0.4 dB without corruption).

    Args:
        spectra: (n, B) pixel samples in data units; rows with a non-finite value are dropped.
        config: pipeline settings; the defaults when None.
        effective: which scale the later passes measure (see above).
        stuck: the values at which entries are stuck (:mod:`hsidenoise.subspace.stuck_values`); those entries
            are missing from the start: imputed, and left out of every scale. None: no entry is.

    Returns:
        The fitted :class:`BandRegression`.

    Raises:
        NothingToDenoise: one band (a :class:`CubeShapeError`).
        CubeShapeError: ``spectra`` is not (n >= 2, B >= 1) or has fewer than 2 finite rows.
    """
    config = config or LowRankConfig()
    sample = subsample(as_spectra(spectra), config.regression_sample, config.seed)  # (n, B)
    if sample.shape[1] < 2:
        raise NothingToDenoise(
            f"the band regression needs at least 2 bands to tell noise from signal, got {sample.shape[1]}; "
            "use a spatial denoiser for single-band images"
        )
    # Band-major (B, n) arrays: the per-band reductions and the cleaning read contiguous rows; the (n, B)
    # helpers get transposed views (column reductions over contiguous memory).
    observed_bands = np.ascontiguousarray(sample.T)
    known_bands = stuck.mask(observed_bands) if stuck is not None and stuck.any() else np.zeros(observed_bands.shape, bool)
    observed, known = observed_bands.T, known_bands.T  # (n, B) views
    known_any = bool(known_bands.any())
    observed_std = _kept_std(observed, known)  # (B,) the bands' own spread, for bands whose residuals have no core
    missing_bands = known_bands.copy()
    cleaned_bands = np.ascontiguousarray(_impute_columns(sample, known).T)
    scale: np.ndarray | None = None
    previous_scale: np.ndarray | None = None
    imputed_variance = None
    residuals = None
    for iteration in range(config.regression_iterations):
        mean = cleaned_bands.mean(axis=1)
        centred = cleaned_bands - mean[:, None]
        coefficients = regression_coefficients(centred.T, config.ridge, imputed_variance)
        # each observed entry minus its prediction from the cleaned other bands of its pixel
        residual_bands = coefficients.T @ centred + (observed_bands - cleaned_bands)
        del centred
        residuals, missing = residual_bands.T, missing_bands.T  # (n, B) views
        if scale is None:
            scale = _masked_shorth_scale(residuals, known)
        elif effective:
            inliers = ~missing & (np.abs(residuals) <= config.outlier_threshold * scale)
            refined = trimmed_scale(residuals, inliers, config.outlier_threshold)
            scale = np.where(np.isfinite(refined) & (refined > 0), refined, scale)
        else:
            refined = _mad_scale(residuals, missing)
            scale = np.where(np.isfinite(refined) & (refined > 0), refined, scale)
        if iteration > 0:
            plain = _kept_std(residuals, known)
            detected = (missing & ~known).sum(axis=0) / np.maximum((~known).sum(axis=0), 1)
            broken = (detected > IMPLAUSIBLE_OUTLIER_FRACTION) & (
                plain > UNEXPLAINED_FRACTION * observed_std
            )
            if broken.any():
                scale = np.where(broken, plain, scale)
                logger.debug("band regression pass %d: %d band(s) without a core, plain scale", iteration, broken.sum())
        scale = np.maximum(scale, np.finfo(np.float64).tiny)
        regression = BandRegression(mean=mean, coefficients=coefficients, residual_scale=scale)
        if known_any:
            cleaned_next, missing_next = clean_entries(observed_bands, known_bands, regression, config)
        else:  # the observed entries' residuals from this pass's: they differ only on the imputed entries
            change = cleaned_bands - observed_bands  # (B, n), non-zero on the entries imputed so far
            pixels = np.flatnonzero(change.any(axis=0))
            observed_residuals = residual_bands.copy()
            observed_residuals[:, pixels] += change[:, pixels] - coefficients.T @ change[:, pixels]
            cleaned_next, missing_next = clean_entries(
                observed_bands, known_bands, regression, config, residuals=observed_residuals
            )
        if previous_scale is not None and logger.isEnabledFor(logging.DEBUG):
            moved = np.abs(scale / previous_scale - 1.0)
            top = np.argsort(-moved)[:4]
            logger.debug(
                "band regression pass %d: %.5f %% of entries changed their flag; scale moved most in bands %s by %s; "
                "flagged share there %s",
                iteration, 100.0 * np.count_nonzero(missing_next != missing_bands) / missing_bands.size,
                top.tolist(), np.round(moved[top], 3).tolist(), np.round(missing_next[top].mean(axis=1), 3).tolist(),
            )
        repeated = (
            iteration > 1
            and np.array_equal(missing_next, missing_bands)
            and np.array_equal(cleaned_next, cleaned_bands)
            and np.array_equal(scale, previous_scale)
        )
        cleaned_bands, missing_bands, previous_scale = cleaned_next, missing_next, scale
        missing = missing_bands.T
        imputed_variance = missing_bands.sum(axis=1) * scale**2
        if repeated:  # a fixed point: every further pass would repeat this one exactly
            logger.debug("band regression: fixed point after pass %d", iteration)
            break
        logger.debug("band regression pass %d: %.3f %% of entries imputed", iteration, 100.0 * missing_bands.mean())
    effective_scale = None
    if not effective and residuals is not None:
        inliers = ~missing & (np.abs(residuals) <= config.outlier_threshold * scale)
        refined = trimmed_scale(residuals, inliers, config.outlier_threshold)
        effective_scale = np.where(np.isfinite(refined) & (refined > scale), refined, scale)
    mean = cleaned_bands.mean(axis=1)
    coefficients = regression_coefficients((cleaned_bands - mean[:, None]).T, config.ridge, imputed_variance)
    return BandRegression(
        mean=mean,
        coefficients=coefficients,
        residual_scale=scale,
        effective_scale=effective_scale,
        sample_count=int(observed.shape[0]),
    )


def _kept_std(values: np.ndarray, known: np.ndarray) -> np.ndarray:
    """(B,) standard deviation of each column of (n, B) ``values`` over the entries not ``known`` missing."""
    if not known.any():
        return values.std(axis=0)
    count = np.maximum((~known).sum(axis=0), 1)
    kept = np.where(known, 0.0, values)
    mean = kept.sum(axis=0) / count
    return np.sqrt(np.where(known, 0.0, (values - mean) ** 2).sum(axis=0) / count)


def _impute_columns(observed: np.ndarray, known: np.ndarray) -> np.ndarray:
    """(n, B) float64 copy of ``observed`` with the ``known`` missing entries set to their band's mean of the rest."""
    cleaned = observed.copy()
    if known.any():
        kept = np.where(known, 0.0, observed)
        count = np.maximum((~known).sum(axis=0), 1)
        cleaned[known] = np.broadcast_to(kept.sum(axis=0) / count, observed.shape)[known]
    return cleaned


def band_noise(regression: BandRegression) -> np.ndarray:
    """Per-band noise sigma from a fitted band regression.

    A band's residual variance is its own noise variance plus the noise that the other bands carry into
    its prediction: s_i^2 = sigma_i^2 + sum_k beta_ik^2 sigma_k^2, with beta_ik = -coefficients[k, i]
    (:func:`leakage_solve`). Both sides are fitted in-sample: s_i is corrected for the degrees of freedom the fit
    spent (:func:`degrees_of_freedom_factor`) and the squared fitted coefficients for their sampling variance
    (:func:`coefficient_variance`). Measured (``bench/eigen_noise.py``, the median band's sigma / truth on the
    HYDICE and San Diego validation cubes, 8000-10000 pixels and 162-189 bands, non-i.i.d. noise): 0.978-0.983
    without either, 0.988-0.993 with the first, 0.994-0.998 with both (CAVE, 65536 pixels and 31 bands:
    0.998-1.007 throughout).

    Args:
        regression: the output of :func:`fit_band_regression`.

    Returns:
        (B,) float64 sigma in data units, at least :data:`SIGMA_FLOOR` times the median sigma.
    """
    inflation = degrees_of_freedom_factor(regression.sample_count, regression.band_count)
    scale = regression.residual_scale * inflation
    leakage = regression.coefficients.T ** 2  # [i, k] = beta_ik^2
    if regression.sample_count:
        leakage -= coefficient_variance(
            regression.coefficients, regression.residual_scale, scale, regression.sample_count
        )
        np.maximum(leakage, 0.0, out=leakage)  # an unbiased beta^2 may come out negative; the leakage may not
    np.fill_diagonal(leakage, 1.0)
    sigma = leakage_solve(leakage, scale)
    floor = SIGMA_FLOOR * float(np.median(sigma))
    if not floor > 0:  # noise-free (e.g. constant) data: any small positive sigma whitens it
        floor = 1e-12 * max(float(np.abs(regression.mean).max()), 1.0)
    return np.maximum(sigma, floor)


def coefficient_variance(
    coefficients: np.ndarray, in_sample_scale: np.ndarray, error_scale: np.ndarray, samples: int
) -> np.ndarray:
    """(B, B) [i, k]: the sampling variance of the fitted coefficient beta_ik (band k in band i's prediction).

    The squared fitted coefficient overstates beta^2 by its sampling variance, so the leakage it implies is
    too large and the sigma left after subtracting it too small. For least squares,
    Var(beta_ik) = s_i^2 / n [(X_-i^T X_-i / n)^-1]_kk = s_i^2 / n (P_kk - P_ki^2 / P_ii), with P the inverse
    covariance of all bands, P_kk = 1 / (in-sample residual variance of band k) and P_ki / P_ii = -beta_ik.

    Args:
        coefficients: (B, B) as :class:`BandRegression` (column i: band i minus its prediction).
        in_sample_scale: (B,) the residual scales as measured; error_scale: (B,) corrected for the degrees of
            freedom (s_i); samples: n.
    """
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        precision_diagonal = 1.0 / in_sample_scale**2  # (B,)
        beta = coefficients.T  # [i, k]
        variance = (error_scale[:, None] ** 2 / samples) * (
            precision_diagonal[None, :] - beta**2 * precision_diagonal[:, None]
        )
    # a band without residual (noise-free, constant) has no coefficient noise to speak of
    return np.where(np.isfinite(variance), np.maximum(variance, 0.0), 0.0)


def degrees_of_freedom_factor(samples: int | None, parameters: int) -> float:
    """sqrt(n / (n - p)): what an in-sample residual scale is multiplied by to estimate the error's scale.

    A least-squares fit with p parameters (here the other bands and the mean: p = B for the band regression,
    2B for the regression that adds the neighbours' bands) absorbs p of the n residuals' degrees of freedom,
    so their mean square is (n - p) / n of the error variance. Measured where it matters
    (``bench/eigen_noise.py``): with 8000 pixels and 162 bands (the HYDICE validation cube) the median band's
    sigma came out 0.978-0.980 of the truth without this factor, 0.988-0.990 with it (see :func:`band_noise`
    for the rest of the gap). 1 when n is unknown or not above 2p (the regression
    is then too short of pixels for the correction to be trusted).

    Args:
        samples: n, the pixels the regression was fitted on (None: unknown).
        parameters: p, the coefficients fitted per band, intercept included.
    """
    if samples is None or samples <= 2 * parameters:
        return 1.0
    return math.sqrt(samples / (samples - parameters))


def leakage_solve(leakage: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """The noise sigma behind residual scales: solve ``leakage @ sigma^2 = scale^2`` for ``sigma^2 >= 0``.

    Args:
        leakage: (B, B), [i, k] the share of band k's noise variance in band i's residual (1 on the diagonal
            for the band's own noise).
        scale: (B,) residual standard deviations.

    Returns:
        (B,) sigma; the exact solution when it is non-negative, else non-negative least squares.
    """
    target = scale**2
    try:  # a non-negative exact solution of the square system is the NNLS solution (zero residual)
        variance = np.linalg.solve(leakage, target)
    except np.linalg.LinAlgError:
        variance = np.full(scale.shape, -1.0)
    if not (np.isfinite(variance).all() and (variance >= 0).all()):
        start = np.isfinite(variance) & (variance > 0)
        variance = nonnegative_least_squares(leakage, target, start)
    return np.sqrt(variance)


def sigma_bounds(
    gaussian: np.ndarray,
    spectral: np.ndarray,
    samples: int | None,
    *,
    disagreement: float = UNRESOLVED_DISAGREEMENT,
    standard_errors: float = SIGMA_STANDARD_ERRORS,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per band, the interval in which the Gaussian noise sigma lies as far as the two estimates tell.

    Where the band regression (spectral) and the regression that adds the spatial neighbours agree, the truth is
    within their standard error (:data:`MAD_RELATIVE_ERROR` / sqrt(n)) of them. Where they disagree, or the band
    is quiet (:data:`QUIET_BAND_FRACTION`), its residual is mostly signal that the predictors miss, the neighbours
    removed only part of it or none, and the truth may be anywhere below the lower of the two: measured on the
    validation cubes' non-i.i.d. draws, 0.03 to 0.9 times the spatial estimate on such bands (a San Diego band at
    0.22 where the two agree). Their interval is [0, that estimate].

    Args:
        gaussian: (B,) the sigma the front end uses (spatially refined); spectral: (B,) the band regression's.
        samples: the band regression's pixels (None: a 1 % standard error).
        disagreement: relative difference beyond which a band is unresolved; standard_errors: the interval's
            half-width in standard errors.

    Returns:
        ((B,) low, (B,) high, (B,) bool unresolved), data units.
    """
    relative = MAD_RELATIVE_ERROR / math.sqrt(samples) if samples else 0.01
    spread = standard_errors * relative
    with np.errstate(divide="ignore", invalid="ignore"):
        unresolved = ~(np.abs(gaussian / spectral - 1.0) <= disagreement)
    unresolved |= gaussian < QUIET_BAND_FRACTION * np.median(gaussian)
    # both estimates of an unresolved band are too high (signal in the residual): the lower is the bound
    low = np.where(unresolved, 0.0, np.minimum(gaussian, spectral) * (1.0 - spread))
    high = np.where(unresolved, np.minimum(gaussian, spectral), np.maximum(gaussian, spectral)) * (1.0 + spread)
    return low, high, unresolved


PIVOT_ROUNDS = 50
"""Most rounds of :func:`nonnegative_least_squares`'s pivoting before it hands the problem to SciPy."""


def nonnegative_least_squares(matrix: np.ndarray, target: np.ndarray, free: np.ndarray) -> np.ndarray:
    """argmin ||matrix @ x - target|| over x >= 0, by principal pivoting from a guess of the free variables.

    Each round solves least squares on the free variables (the others at 0) and checks the optimality
    (KKT) conditions: free variables non-negative, and the gradient matrix^T (matrix x - target) non-negative
    on the bound ones. Infeasible variables swap sides, all at once while their count falls, else the last one
    only (Judice and Pires' safeguard, as in Kim and Park's NNLS, SIAM J. Sci. Comput. 2011). Started from the
    variables that the unconstrained solution keeps positive, the leakage systems of the noise estimate need
    one or two rounds. For a matrix of full column rank the solution is unique, so this returns what
    ``scipy.optimize.nnls`` returns, without importing scipy.optimize (a third of a second per process),
    which stays the fallback when the rounds run out.

    Args:
        matrix: (m, n) of full column rank. target: (m,). free: (n,) bool, the starting guess.

    Returns:
        (n,) the non-negative least-squares solution.
    """
    n = matrix.shape[1]
    free = free.copy()
    scale = float(np.abs(matrix).max() * max(np.abs(target).max(), 1e-300))
    tolerance = 1e-12 * scale
    fewest, chances = n + 1, 3
    for _ in range(PIVOT_ROUNDS):
        x = np.zeros(n)
        if free.any():
            x[free] = np.linalg.lstsq(matrix[:, free], target, rcond=None)[0]
        gradient = matrix.T @ (matrix @ x - target)
        infeasible = (free & (x < 0)) | (~free & (gradient < -tolerance))
        count = int(infeasible.sum())
        if count == 0:
            return x
        if count < fewest:
            fewest, chances = count, 3
        elif chances > 0:
            chances -= 1
        else:  # the block swaps cycle: swap only the last infeasible variable
            infeasible = np.zeros(n, dtype=bool)
            infeasible[np.flatnonzero((free & (x < 0)) | (~free & (gradient < -tolerance)))[-1]] = True
        free ^= infeasible
    import scipy.optimize  # no optimum within the rounds (not seen on the noise estimate's systems)

    return scipy.optimize.nnls(matrix, target)[0]


def estimate_band_noise(
    spectra: np.ndarray, config: LowRankConfig | None = None, stuck: StuckValues | None = None
) -> np.ndarray:
    """Per-band Gaussian noise standard deviation of pixel samples (the robust HySime estimator above).

    This is the noise a sensor model would quote. The pipeline itself whitens by the larger effective noise
    (``fit_band_regression(..., effective=True)``), which is what :attr:`Subspace.sigma` holds.

    Args:
        spectra: (n, B) pixel samples in data units, e.g. ``CubeStatistics.sample_spectra``.
        config: pipeline settings; the defaults when None.
        stuck: entries left out (see :func:`fit_band_regression`).

    Returns:
        (B,) float64 sigma in data units.
    """
    return band_noise(fit_band_regression(spectra, config, stuck=stuck))


def is_noise_free(spectra: np.ndarray, sigma: np.ndarray) -> bool:
    """Whether every band's sigma is below :data:`NOISE_FREE_FRACTION` of the root mean square of its values.

    Args:
        spectra: (n, B) pixel sample; sigma: (B,) its fitted noise.
    """
    finite = np.asarray(spectra[np.isfinite(spectra).all(axis=1)], dtype=np.float64)
    peak = np.abs(finite).max(axis=0)
    peak = np.where(peak > 0, peak, 1.0)
    root_mean_square = peak * np.sqrt(np.mean((finite / peak) ** 2, axis=0))  # squares that cannot overflow
    return bool(np.all(sigma <= NOISE_FREE_FRACTION * root_mean_square))
