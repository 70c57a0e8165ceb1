"""The classical pipeline: robust per-band noise estimate, whitening, signal subspace, eigen-image denoising.

This is ``hsidenoise run --method lowrank`` (fast, needs no weights) and the front end of the noise-aware
DECSC model, which builds its initial point from :func:`fit_lowrank` and :func:`project`. The steps:

1. :func:`fit_band_regression`, :func:`band_noise`, :func:`estimate_band_noise`: HySime's estimator
   (Bioucas-Dias and Nascimento, 2008): regress every band on all the others; what the regression cannot
   explain is that band's noise. Made robust: a ridge keeps duplicate and collinear bands solvable; the
   first residual scale is a shortest-quarter (high-breakdown) estimate; entries far outside it (impulse,
   dead-line pixels) are treated as missing and imputed, EM-like, over a few passes; the noise that the
   other bands carry into each prediction is subtracted (non-negative least squares). Two scales come out:
   the Gaussian noise (:func:`estimate_band_noise`, for reports) and the larger effective noise that
   includes the corruption not yet removed (what the pipeline whitens by; see :func:`fit_band_regression`).
2. :func:`fit_subspace`: whiten by sigma, eigen-decompose the covariance, keep the components above the
   Marchenko-Pastur edge (1 + sqrt(B / n))^2 of unit noise (times a margin). :func:`fit_loadings` then refits,
   by least absolute deviations, the synthesis row of each band whose least-squares row is dragged by
   dense salt-and-pepper noise.
3. :func:`remove_outliers` (per tile): constant columns are dead lines (missing); per-band column offsets
   that stand out are stripes (subtracted); entries that the other bands contradict are impulses (missing);
   missing entries are imputed from the other bands. :func:`project` then whitens the cleaned tile and
   projects it on the subspace: k eigen-images with unit noise.
4. :func:`denoise_eigenimages`: BM3D (``bm3d`` package, ``baselines`` extra) or our numpy-only fallback, a
   two-stage sliding-window 8 x 8 DCT denoiser (hard threshold, then empirical Wiener with the first stage as
   pilot; G. Yu and G. Sapiro, "DCT image denoising", IPOL 2011, with BM3D's aggregation weights).
5. :func:`back_project`: X = mean + sigma * (basis @ eigen-images), or the refitted intercept + loadings.

Shapes: spectra are (n, B) pixel samples; tiles and cubes are (B, h, w); per-band vectors are (B,).
Every sigma is a standard deviation in the units of the data it describes.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from hsidenoise.errors import ConfigError, CubeShapeError

logger = logging.getLogger(__name__)

SPATIAL_DENOISERS = ("auto", "bm3d", "dct", "none")
"""Choices of :attr:`LowRankConfig.spatial`; ``auto`` is ``bm3d`` when the package imports, else ``dct``."""

SHORTH_FRACTION = 0.25
"""The first residual scale comes from the shortest interval holding this fraction of a band's residuals."""
SHORTH_HALF_WIDTH = 0.31863936396437515
"""Phi^-1((1 + SHORTH_FRACTION) / 2): that interval's half-width in standard deviations of a normal."""
MAX_OUTLIER_FRACTION = 0.5
"""At most this fraction of a pixel's bands is declared missing (beyond it, the pixel is genuine signal)."""
FILL_SWEEPS = 3
"""Gauss-Seidel sweeps that impute missing entries from the other bands."""
COHERENT_FRACTION = 0.5
"""An outlying entry is protected when its neighbourhood's median residual reaches this share of the threshold."""
LOADING_SAMPLE = 4096
"""Pixels used by the least-absolute-deviation refit of the synthesis rows."""
ROBUST_LOADING_GAIN = 0.9
"""A band keeps its L1 row only when that row's median |residual| is below this fraction of the plain row's."""
SIGMA_FLOOR = 1e-3
"""Sigma is at least this fraction of the median sigma, so a noise-free band stays finite when whitened."""
DCT_BLOCK = 8
"""Block side of the DCT fallback (smaller images are padded symmetrically)."""


@dataclass(frozen=True)
class LowRankConfig:
    """Every knob of the classical pipeline, with its default, once.

    Attributes:
        spatial: eigen-image denoiser: ``"auto"`` (BM3D if the ``bm3d`` package imports, else ``"dct"``),
            ``"bm3d"`` (an error if missing), ``"dct"`` (numpy only) or ``"none"`` (the projection alone).
        sample_size: pixels drawn (seeded) from a whole array by :func:`lowrank_denoise` to fit the model.
        regression_sample: at most this many of those pixels fit the band regression (cost per pass n B^2).
        regression_iterations: EM-like passes of the robust band regression.
        ridge: added to each diagonal entry of the band Gram matrix, relative to the band's variance.
        outlier_threshold: an entry is an outlier beyond this many residual scales of its band.
        edge_margin: components are kept when their whitened eigenvalue exceeds
            edge_margin * (1 + sqrt(B / n))^2; the margin absorbs a few per cent of error in sigma.
        max_rank: at most this many components.
        robust_passes: stripe-estimation passes per tile; 0 switches every per-tile robust step off.
        stripe_threshold: a column offset is a stripe beyond this many spreads of the band's column medians.
        dead_line_fraction: a column whose standard deviation along its rows is below this fraction of the
            band's sigma is a dead line.
        coherence_window: side of the window in which an outlying residual shared by its neighbours is
            taken as genuine signal (0 or 1 disables the check).
        loading_iterations: IRLS iterations of the L1 refit of the synthesis rows (0 disables it).
        dct_threshold: hard threshold of the DCT fallback's first stage, in noise sigmas.
        seed: seed of every pixel sample the pipeline draws.
    """

    spatial: str = "auto"
    sample_size: int = 65_536
    regression_sample: int = 16_384
    regression_iterations: int = 8
    ridge: float = 1e-6
    outlier_threshold: float = 6.0
    edge_margin: float = 1.1
    max_rank: int = 32
    robust_passes: int = 2
    stripe_threshold: float = 5.0
    dead_line_fraction: float = 0.2
    coherence_window: int = 5
    loading_iterations: int = 20
    dct_threshold: float = 2.7
    seed: int = 0

    def __post_init__(self) -> None:
        if self.spatial not in SPATIAL_DENOISERS:
            raise ConfigError(f"spatial must be one of {', '.join(SPATIAL_DENOISERS)}, got {self.spatial!r}")
        for name in ("sample_size", "regression_sample", "regression_iterations", "max_rank"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be an integer >= 1, got {getattr(self, name)}")
        for name in ("robust_passes", "coherence_window", "loading_iterations"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be an integer >= 0, got {getattr(self, name)}")
        for name in ("ridge", "outlier_threshold", "edge_margin", "stripe_threshold", "dct_threshold"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"{name} must be a finite number > 0, got {value}")
        if not 0 <= self.dead_line_fraction < 1:
            raise ConfigError(f"dead_line_fraction must be in [0, 1), got {self.dead_line_fraction}")


# ----------------------------------------------------------------------------------------------------------
# 1. Band regression and noise estimate
# ----------------------------------------------------------------------------------------------------------


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
    """

    mean: np.ndarray
    coefficients: np.ndarray
    residual_scale: np.ndarray

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


def _as_spectra(spectra: np.ndarray) -> np.ndarray:
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


def _subsample(spectra: np.ndarray, size: int, seed: int) -> np.ndarray:
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


def _mad_scale(residuals: np.ndarray, missing: np.ndarray) -> np.ndarray:
    """(B,) normal-consistent median absolute deviation of each column of (n, B) ``residuals``.

    Args:
        residuals: (n, B); missing: (n, B) bool, entries left out.

    Returns:
        (B,) scale; NaN for a column whose entries are all missing.
    """
    values = np.where(missing, np.nan, residuals)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns
        centre = np.nanmedian(values, axis=0)
        return 1.4826 * np.nanmedian(np.abs(values - centre), axis=0)


def _trimmed_scale(residuals: np.ndarray, inliers: np.ndarray, threshold: float) -> np.ndarray:
    """(B,) standard deviation of each column's inliers, corrected for their truncation at ``threshold`` sigmas.

    Args:
        residuals: (n, B); inliers: (n, B) bool, the entries within ``threshold`` times the current scale.

    Returns:
        (B,) scale; NaN for a column without inliers.
    """
    import math

    count = inliers.sum(axis=0)
    squares = np.where(inliers, residuals * residuals, 0.0).sum(axis=0)
    # Variance of a standard normal truncated to [-t, t]: 1 - 2 t phi(t) / (2 Phi(t) - 1), with 2 Phi(t) - 1 =
    # erf(t / sqrt 2) (math instead of scipy.stats, whose import alone costs about a second per process).
    density = math.exp(-0.5 * threshold * threshold) / math.sqrt(2.0 * math.pi)
    truncated_variance = 1.0 - 2.0 * threshold * density / math.erf(threshold / math.sqrt(2.0))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.sqrt(squares / count / truncated_variance)


def _regression_coefficients(
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
    import scipy.linalg

    n, bands = centred.shape
    gram = centred.T @ centred
    if imputed_variance is not None:
        gram[np.diag_indices(bands)] += imputed_variance
    gram /= n
    diagonal = np.diag(gram).copy()
    largest = float(diagonal.max(initial=0.0))
    floor = 1e-12 * largest if largest > 0 else 1.0  # keeps constant bands (zero variance) invertible
    gram[np.diag_indices(bands)] = diagonal + ridge * np.maximum(diagonal, floor) + floor
    precision = scipy.linalg.inv(gram, check_finite=False, overwrite_a=True)
    precision = 0.5 * (precision + precision.T)
    return precision / np.diag(precision)[None, :]


def _fill_missing(values: np.ndarray, missing: np.ndarray, regression: BandRegression, sweeps: int) -> None:
    """Impute missing entries, in place, by Gauss-Seidel sweeps over the bands.

    Each band's missing entries are set to their prediction from the other bands; the sweeps converge to
    the conditional mean of the missing entries given the observed ones (Gauss-Seidel on a positive
    definite system; Jacobi diverges on strongly correlated bands).

    Args:
        values: (B, m) pixels, modified in place; missing: (B, m) bool.
    """
    centre = regression.mean[:, None]
    for _ in range(sweeps):
        for band in np.flatnonzero(missing.any(axis=1)):
            pixels = np.flatnonzero(missing[band])
            values[band, pixels] -= regression.coefficients[:, band] @ (values[:, pixels] - centre)


def clean_entries(
    observed: np.ndarray,
    known_missing: np.ndarray,
    regression: BandRegression,
    config: LowRankConfig | None = None,
    protected: np.ndarray | None = None,
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
        protected: (B, m) bool, entries never flagged (see :func:`remove_outliers`), or None.

    Returns:
        (cleaned (B, m) float64, missing (B, m) bool: the known and the detected entries).
    """
    config = config or LowRankConfig()
    bands, count = observed.shape
    missing = known_missing.copy()
    cleaned = np.where(missing, regression.mean[:, None], observed).astype(np.float64)
    if bands < 2 or count == 0:
        return cleaned, missing
    _fill_missing(cleaned, missing, regression, 1)
    residuals = regression.residuals(cleaned)
    inverse_scale = 1.0 / regression.residual_scale[:, None]
    active = np.arange(count)
    for _ in range(int(MAX_OUTLIER_FRACTION * bands)):
        standardised = np.abs(residuals[:, active]) * inverse_scale
        standardised[missing[:, active]] = 0.0
        if protected is not None:
            standardised[protected[:, active]] = 0.0
        worst = standardised.argmax(axis=0)
        outlying = standardised[worst, np.arange(active.size)] > config.outlier_threshold
        active, worst = active[outlying], worst[outlying]
        if active.size == 0:
            break
        correction = residuals[worst, active]
        cleaned[worst, active] -= correction
        residuals[:, active] -= regression.coefficients[worst, :].T * correction
        missing[worst, active] = True
    _fill_missing(cleaned, missing, regression, FILL_SWEEPS)
    return cleaned, missing


def fit_band_regression(
    spectra: np.ndarray, config: LowRankConfig | None = None, effective: bool = False
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

    Returns:
        The fitted :class:`BandRegression`.

    Raises:
        CubeShapeError: ``spectra`` is not (n >= 2, B >= 2) or has fewer than 2 finite rows.
    """
    config = config or LowRankConfig()
    observed = _subsample(_as_spectra(spectra), config.regression_sample, config.seed)
    if observed.shape[1] < 2:
        raise CubeShapeError(
            f"the band regression needs at least 2 bands to tell noise from signal, got {observed.shape[1]}; "
            "use a spatial denoiser for single-band images"
        )
    cleaned = observed.copy()
    missing = np.zeros(observed.shape, bool)
    scale: np.ndarray | None = None
    imputed_variance = None
    for iteration in range(config.regression_iterations):
        mean = cleaned.mean(axis=0)
        coefficients = _regression_coefficients(cleaned - mean, config.ridge, imputed_variance)
        # each observed entry minus its prediction from the cleaned other bands of its pixel
        residuals = (cleaned - mean) @ coefficients + (observed - cleaned)
        if scale is None:
            scale = _shorth_scale(residuals)
        elif effective:
            inliers = ~missing & (np.abs(residuals) <= config.outlier_threshold * scale)
            refined = _trimmed_scale(residuals, inliers, config.outlier_threshold)
            scale = np.where(np.isfinite(refined) & (refined > 0), refined, scale)
        else:
            refined = _mad_scale(residuals, missing)
            scale = np.where(np.isfinite(refined) & (refined > 0), refined, scale)
        scale = np.maximum(scale, np.finfo(np.float64).tiny)
        regression = BandRegression(mean=mean, coefficients=coefficients, residual_scale=scale)
        cleaned_t, missing_t = clean_entries(observed.T, np.zeros(observed.T.shape, bool), regression, config)
        cleaned, missing = cleaned_t.T, missing_t.T
        imputed_variance = missing.sum(axis=0) * scale**2
        logger.debug("band regression pass %d: %.3f %% of entries imputed", iteration, 100.0 * missing.mean())
    mean = cleaned.mean(axis=0)
    coefficients = _regression_coefficients(cleaned - mean, config.ridge, imputed_variance)
    return BandRegression(mean=mean, coefficients=coefficients, residual_scale=scale)


def band_noise(regression: BandRegression) -> np.ndarray:
    """Per-band noise sigma from a fitted band regression.

    A band's residual variance is its own noise variance plus the noise that the other bands carry into
    its prediction: s_i^2 = sigma_i^2 + sum_k beta_ik^2 sigma_k^2, with beta_ik = -coefficients[k, i].
    The system is solved for sigma^2 >= 0 by non-negative least squares.

    Args:
        regression: the output of :func:`fit_band_regression`.

    Returns:
        (B,) float64 sigma in data units, at least :data:`SIGMA_FLOOR` times the median sigma.
    """
    import scipy.optimize

    scale = regression.residual_scale
    leakage = regression.coefficients.T ** 2  # [i, k] = beta_ik^2
    np.fill_diagonal(leakage, 1.0)
    sigma = np.sqrt(scipy.optimize.nnls(leakage, scale**2)[0])
    floor = SIGMA_FLOOR * float(np.median(sigma))
    if not floor > 0:  # noise-free (e.g. constant) data: any small positive sigma whitens it
        floor = 1e-12 * max(float(np.abs(regression.mean).max()), 1.0)
    return np.maximum(sigma, floor)


def estimate_band_noise(spectra: np.ndarray, config: LowRankConfig | None = None) -> np.ndarray:
    """Per-band Gaussian noise standard deviation of pixel samples (the robust HySime estimator above).

    This is the noise a sensor model would quote. The pipeline itself whitens by the larger effective noise
    (``fit_band_regression(..., effective=True)``), which is what :attr:`Subspace.sigma` holds.

    Args:
        spectra: (n, B) pixel samples in data units, e.g. ``CubeStatistics.sample_spectra``.
        config: pipeline settings; the defaults when None.

    Returns:
        (B,) float64 sigma in data units.
    """
    return band_noise(fit_band_regression(spectra, config))


# ----------------------------------------------------------------------------------------------------------
# 2. Whitened signal subspace
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Subspace:
    """The spectral model of one cube: noise, mean, whitened signal subspace and synthesis rows.

    Attributes:
        sigma: (B,) noise standard deviation per band (data units) that whitens the bands; from
            :func:`fit_lowrank` it is the effective noise (Gaussian noise plus corruption not yet removed).
        mean: (B,) mean spectrum (data units).
        basis: (B, k) orthonormal columns in whitened units ((x - mean) / sigma); k is the rank.
        eigenvalues: (B,) whitened covariance eigenvalues, descending (unit noise lies below the edge).
        edge: the eigenvalue threshold that set the rank.
        regression: the band predictor that cleans tiles (:func:`remove_outliers`); None skips cleaning.
        intercept: (B,) and loadings: (B, k): the synthesis X = intercept + loadings @ eigen_images in data
            units; None means the plain back-projection X = mean + sigma * basis @ eigen_images.
    """

    sigma: np.ndarray
    mean: np.ndarray
    basis: np.ndarray
    eigenvalues: np.ndarray
    edge: float
    regression: BandRegression | None = None
    intercept: np.ndarray | None = None
    loadings: np.ndarray | None = None

    @property
    def rank(self) -> int:
        return self.basis.shape[1]

    @property
    def band_count(self) -> int:
        return self.basis.shape[0]


def fit_subspace(spectra: np.ndarray, sigma: np.ndarray, config: LowRankConfig | None = None) -> Subspace:
    """Whiten pixel samples by sigma and keep the components above the unit-noise Marchenko-Pastur edge.

    Args:
        spectra: (n, B) pixel samples in data units.
        sigma: (B,) per-band noise standard deviation in data units, e.g. from :func:`estimate_band_noise`.
        config: pipeline settings; the defaults when None.

    Returns:
        A :class:`Subspace` (no regression, plain synthesis) whose rank k is the number of eigenvalues above
        ``edge_margin * (1 + sqrt(B / n))^2``, clipped to [1, min(B, max_rank)].

    Raises:
        CubeShapeError: sigma does not hold B finite positive values.
    """
    config = config or LowRankConfig()
    spectra = _as_spectra(spectra)
    n, bands = spectra.shape
    sigma = np.asarray(sigma, dtype=np.float64)
    if sigma.shape != (bands,) or not (np.isfinite(sigma).all() and (sigma > 0).all()):
        raise CubeShapeError(f"sigma must hold {bands} finite positive values (one per band), got shape {sigma.shape}")
    mean = spectra.mean(axis=0)
    whitened = (spectra - mean) / sigma
    eigenvalues, eigenvectors = np.linalg.eigh(whitened.T @ whitened / n)
    eigenvalues, eigenvectors = eigenvalues[::-1].copy(), eigenvectors[:, ::-1]
    edge = config.edge_margin * (1.0 + math.sqrt(bands / n)) ** 2
    rank = int(np.clip(np.count_nonzero(eigenvalues > edge), 1, min(bands, config.max_rank)))
    basis = np.ascontiguousarray(eigenvectors[:, :rank])
    # a deterministic sign: each component's largest loading is positive
    signs = np.sign(basis[np.abs(basis).argmax(axis=0), np.arange(rank)])
    basis *= np.where(signs == 0, 1.0, signs)
    return Subspace(sigma=sigma, mean=mean, basis=basis, eigenvalues=eigenvalues, edge=edge)


def fit_loadings(spectra: np.ndarray, subspace: Subspace, config: LowRankConfig | None = None) -> Subspace:
    """Refit the synthesis row of each band that dense impulses drag, by least absolute deviations.

    The plain back-projection mean + sigma * basis is each band's least-squares regression on the
    eigen-coefficients. Salt-and-pepper noise drags a band's least-squares mean and shrinks its loadings by
    the hit fraction. The conditional median does not move: with salt above and pepper below every clean
    value, the median of the band given the eigen-coefficients is the clean value even when most pixels
    are hit. Each band's row is refitted by iteratively reweighted least squares for the L1 loss and kept
    where it fits the bulk of the band clearly better (median |residual| below :data:`ROBUST_LOADING_GAIN`
    times the plain row's); clean bands keep the exact plain row.

    Args:
        spectra: (n, B) raw pixel samples in data units.
        subspace: the fitted subspace; its regression, when present, cleans the regressors.
        config: pipeline settings; the defaults when None.

    Returns:
        A copy of ``subspace`` with ``intercept`` (B,) and ``loadings`` (B, k) set.
    """
    config = config or LowRankConfig()
    observed = _subsample(_as_spectra(spectra), LOADING_SAMPLE, config.seed + 1)
    regressors = observed
    if subspace.regression is not None:
        regressors = clean_entries(observed.T, np.zeros(observed.T.shape, bool), subspace.regression, config)[0].T
    coefficients = ((regressors - subspace.mean) / subspace.sigma) @ subspace.basis  # (n, k)
    design = np.hstack([np.ones((coefficients.shape[0], 1)), coefficients])  # (n, k + 1)
    size = design.shape[1]
    outer = (design[:, :, None] * design[:, None, :]).reshape(design.shape[0], -1)  # (n, (k + 1)^2)
    plain = np.vstack([subspace.mean, (subspace.sigma[:, None] * subspace.basis).T])  # (k + 1, B)
    robust = plain.copy()
    floor = 1e-3 * subspace.sigma
    jitter = 1e-9 * np.eye(size)
    for _ in range(config.loading_iterations):
        weights = 1.0 / np.maximum(np.abs(observed - design @ robust), floor)  # (n, B)
        gram = (weights.T @ outer).reshape(-1, size, size) + jitter
        rhs = (design.T @ (weights * observed)).T  # (B, k + 1)
        robust = np.linalg.solve(gram, rhs[:, :, None])[:, :, 0].T
    robust_spread = np.median(np.abs(observed - design @ robust), axis=0)
    plain_spread = np.median(np.abs(observed - design @ plain), axis=0)
    use_robust = robust_spread < ROBUST_LOADING_GAIN * plain_spread
    rows = np.where(use_robust[None, :], robust, plain)
    logger.debug("L1 synthesis rows for %d of %d bands", int(use_robust.sum()), use_robust.size)
    return dataclasses.replace(subspace, intercept=rows[0].copy(), loadings=np.ascontiguousarray(rows[1:].T))


def fit_lowrank(spectra: np.ndarray, config: LowRankConfig | None = None) -> Subspace:
    """Steps 1-2 in one call: robust band regression, noise sigma, whitened subspace, synthesis rows.

    Args:
        spectra: (n, B) pixel samples in data units, e.g. ``CubeStatistics.sample_spectra``.
        config: pipeline settings; the defaults when None.

    Returns:
        The :class:`Subspace`, carrying its band regression (for per-tile cleaning).
    """
    config = config or LowRankConfig()
    regression = fit_band_regression(spectra, config, effective=True)
    subspace = dataclasses.replace(fit_subspace(spectra, band_noise(regression), config), regression=regression)
    if config.loading_iterations > 0:
        subspace = fit_loadings(spectra, subspace, config)
    logger.debug("lowrank model: %d bands, rank %d, edge %.3f", subspace.band_count, subspace.rank, subspace.edge)
    return subspace


# ----------------------------------------------------------------------------------------------------------
# 3. Robust projection of a tile
# ----------------------------------------------------------------------------------------------------------


def _stripe_offsets(
    residuals: np.ndarray, missing: np.ndarray, regression: BandRegression, config: LowRankConfig
) -> np.ndarray:
    """Per-band column offsets (stripes) that explain the column structure of a tile's residuals.

    Each band's column medians (over rows not missing) are compared with the band's typical column (median
    over columns), with a spread that is the larger of the MAD over columns and the noise of a column
    median. As with entries, an offset in band j echoes, weaker in units of the residual scale, into the
    bands predicted from j; so per column the band with the largest deviation in those units is taken, its
    offset is removed from every band's deviation (rank-one update), and so on while the band taken stands
    out by more than ``stripe_threshold`` spreads.

    Args:
        residuals: (B, h, w); missing: (B, h, w) bool.

    Returns:
        (B, w) offsets to subtract from each column of each band (zero where there is no stripe).
    """
    bands, _, width = residuals.shape
    valid = ~missing
    counts = valid.sum(axis=1)  # (B, w)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a fully missing column has no median
        medians = np.nanmedian(np.where(valid, residuals, np.nan), axis=1)
    medians = np.where(counts > 0, medians, 0.0)
    deviation = medians - np.median(medians, axis=1, keepdims=True)
    spread = 1.4826 * np.median(np.abs(deviation), axis=1, keepdims=True)
    spread = np.maximum(spread, 1.2533 * regression.residual_scale[:, None] / np.sqrt(np.maximum(counts, 1)))
    inverse_scale = 1.0 / regression.residual_scale[:, None]
    offsets = np.zeros((bands, width))
    found = counts == 0
    columns = np.arange(width)
    for _ in range(bands):
        score = np.where(found, 0.0, np.abs(deviation) * inverse_scale)
        worst = score.argmax(axis=0)
        stands_out = np.abs(deviation[worst, columns]) > config.stripe_threshold * spread[worst, columns]
        striped = (score[worst, columns] > 0) & stands_out
        if not striped.any():
            break
        band, column = worst[striped], columns[striped]
        offset = deviation[band, column]
        offsets[band, column] += offset
        found[band, column] = True
        deviation[:, column] -= regression.coefficients[band, :].T * offset
    return offsets


def _coherent_residuals(
    tile: np.ndarray, dead: np.ndarray, regression: BandRegression, config: LowRankConfig
) -> np.ndarray:
    """Outlying entries whose neighbourhood shares their residual: unusual signal, not noise.

    Impulses are isolated and dead lines and stripes are one column wide, so the median residual of a
    ``coherence_window`` square around them stays small. A region that the other bands predict poorly (a
    material seen in few pixels, a chromatic edge) keeps a large median of the same sign; replacing it by
    its prediction would erase real signal.

    Args:
        tile: (B, h, w) data; dead: (B, h, w) bool, known missing entries.

    Returns:
        (B, h * w) bool, True where an entry is beyond ``outlier_threshold`` but the median of its
        neighbourhood's standardised residuals has its sign and at least :data:`COHERENT_FRACTION` of it.
    """
    from numpy.lib.stride_tricks import sliding_window_view

    bands, height, width = tile.shape
    protected = np.zeros((bands, height * width), bool)
    window = config.coherence_window
    if window < 2:
        return protected
    values = tile.reshape(bands, -1).copy()
    missing = dead.reshape(bands, -1)
    values[missing] = np.broadcast_to(regression.mean[:, None], values.shape)[missing]
    _fill_missing(values, missing, regression, 1)
    standardised = regression.residuals(values) / regression.residual_scale[:, None]
    standardised[missing] = 0.0
    band, pixel = np.nonzero(np.abs(standardised) > config.outlier_threshold)
    if band.size == 0:
        return protected
    half = window // 2
    padded = np.pad(standardised.reshape(bands, height, width), ((0, 0), (half, half), (half, half)), mode="symmetric")
    windows = sliding_window_view(padded, (window, window), axis=(1, 2))  # (B, h', w', window, window)
    local = np.median(windows[band, pixel // width, pixel % width].reshape(band.size, -1), axis=1)
    centre = standardised[band, pixel]
    keep = (np.sign(local) == np.sign(centre)) & (np.abs(local) >= COHERENT_FRACTION * config.outlier_threshold)
    protected[band[keep], pixel[keep]] = True
    return protected


def remove_outliers(
    tile: np.ndarray, subspace: Subspace, config: LowRankConfig | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Undo dead-line, stripe and impulse corruption of a tile with the help of the other bands.

    Dead lines: a column whose standard deviation along the rows is below ``dead_line_fraction`` of the
    band's sigma is missing. Stripes (:func:`_stripe_offsets`, ``robust_passes`` times): column medians of
    the residuals, which impulses do not move, give the offsets to subtract. Impulses
    (:func:`clean_entries`): entries the other bands contradict are missing, except where the whole
    neighbourhood agrees with them (:func:`_coherent_residuals`). Missing entries are imputed.

    Args:
        tile: (B, h, w) in data units.
        subspace: the fitted model; without a regression (or with ``robust_passes == 0``) nothing changes.
        config: pipeline settings; the defaults when None.

    Returns:
        (cleaned (B, h, w) float64, missing (B, h, w) bool: the entries replaced by their prediction).
    """
    config = config or LowRankConfig()
    bands, height, width = tile.shape
    regression = subspace.regression
    if regression is None or config.robust_passes == 0 or bands < 2:
        return tile.astype(np.float64), np.zeros(tile.shape, bool)
    dead = np.zeros(tile.shape, bool)
    if height > 2:
        column_spread = tile.std(axis=1, dtype=np.float64)  # (B, w)
        dead |= (column_spread < config.dead_line_fraction * subspace.sigma[:, None])[:, None, :]
    known = dead.reshape(bands, -1)
    destriped = tile.astype(np.float64)
    for _ in range(config.robust_passes if height >= 4 and width >= 5 else 0):
        values = np.where(known, regression.mean[:, None], destriped.reshape(bands, -1))
        _fill_missing(values, known, regression, 1)
        offsets = _stripe_offsets(regression.residuals(values).reshape(tile.shape), dead, regression, config)
        if not offsets.any():
            break
        destriped -= offsets[:, None, :]
    protected = _coherent_residuals(destriped, dead, regression, config)
    cleaned, missing = clean_entries(destriped.reshape(bands, -1), known, regression, config, protected)
    return cleaned.reshape(tile.shape), missing.reshape(tile.shape)


def _check_tile(tile: np.ndarray, subspace: Subspace) -> np.ndarray:
    tile = np.asarray(tile)
    if tile.ndim != 3 or tile.shape[0] != subspace.band_count:
        raise CubeShapeError(
            f"expected a ({subspace.band_count}, rows, cols) tile like the cube the model was fitted on, got shape "
            f"{tile.shape}; fit (prepare) the model on the same valid bands the tiles carry"
        )
    if not np.isfinite(tile).all():
        raise CubeShapeError(
            "the tile holds NaN or infinite values; fill invalid pixels (e.g. with the band mean) first"
        )
    return tile


def project(tile: np.ndarray, subspace: Subspace, config: LowRankConfig | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Clean a tile (:func:`remove_outliers`), whiten it and project it on the signal subspace.

    Args:
        tile: (B, h, w) in data units, finite.
        subspace: the fitted model.
        config: pipeline settings; the defaults when None.

    Returns:
        (eigen_images (k, h, w) float64 in whitened units, each with unit noise;
        projection (B, h, w) float64 in data units, :func:`back_project` of the eigen-images).

    Raises:
        CubeShapeError: the tile is not (B, h, w) with the subspace's B, or holds non-finite values.
    """
    tile = _check_tile(tile, subspace)
    cleaned, _ = remove_outliers(tile, subspace, config)
    bands, height, width = tile.shape
    whitened = (cleaned.reshape(bands, -1) - subspace.mean[:, None]) / subspace.sigma[:, None]
    eigen_images = (subspace.basis.T @ whitened).reshape(subspace.rank, height, width)
    return eigen_images, back_project(eigen_images, subspace)


def back_project(eigen_images: np.ndarray, subspace: Subspace) -> np.ndarray:
    """Map eigen-images back to bands: mean + sigma * (basis @ eigen_images), or intercept + loadings @ them.

    Args:
        eigen_images: (k, h, w) in whitened units.
        subspace: the fitted model.

    Returns:
        (B, h, w) float64 in data units.
    """
    rank, height, width = eigen_images.shape
    flat = eigen_images.reshape(rank, -1)
    if subspace.loadings is not None and subspace.intercept is not None:
        data = subspace.intercept[:, None] + subspace.loadings @ flat
    else:
        data = subspace.mean[:, None] + subspace.sigma[:, None] * (subspace.basis @ flat)
    return data.reshape(subspace.band_count, height, width)


# ----------------------------------------------------------------------------------------------------------
# 4. Spatial denoising of the eigen-images
# ----------------------------------------------------------------------------------------------------------


def bm3d_available() -> bool:
    """Whether the optional ``bm3d`` package (``baselines`` extra) is installed."""
    return importlib.util.find_spec("bm3d") is not None


def resolve_spatial(spatial: str) -> str:
    """The denoiser that ``spatial`` selects here: ``"auto"`` becomes ``"bm3d"`` or ``"dct"``.

    Raises:
        ConfigError: ``"bm3d"`` was asked for but the package is not installed.
    """
    if spatial == "auto":
        return "bm3d" if bm3d_available() else "dct"
    if spatial == "bm3d" and not bm3d_available():
        raise ConfigError(
            "spatial='bm3d' needs the bm3d package: pip install 'hsidenoise[baselines]', or use spatial='dct'"
        )
    return spatial


def _pad_to(image: np.ndarray, size: int) -> np.ndarray:
    """Symmetric padding at the bottom and right until both sides are at least ``size``."""
    while image.shape[0] < size or image.shape[1] < size:
        rows, cols = max(0, size - image.shape[0]), max(0, size - image.shape[1])
        image = np.pad(image, ((0, min(rows, image.shape[0])), (0, min(cols, image.shape[1]))), mode="symmetric")
    return image


def bm3d_denoise(image: np.ndarray, sigma: float, config: LowRankConfig) -> np.ndarray:
    """BM3D (Dabov et al. 2007; the ``bm3d`` package) on one image with white noise of std ``sigma``.

    Args:
        image: (h, w); sigma: noise standard deviation in the image's units.

    Returns:
        (h, w) float64.
    """
    import bm3d

    height, width = image.shape
    padded = _pad_to(np.asarray(image, dtype=np.float64), 2 * DCT_BLOCK)
    low = float(padded.min())
    span = max(float(padded.max()) - low, sigma, np.finfo(np.float64).tiny)
    # BM3D's block-matching thresholds were tuned for images in [0, 1]: map the image there and back
    estimate = np.asarray(bm3d.bm3d((padded - low) / span, sigma / span), dtype=np.float64)
    return estimate[:height, :width] * span + low


def _dct_matrix(size: int) -> np.ndarray:
    """(size, size) orthonormal DCT-II matrix D: D @ v is the DCT of v."""
    import scipy.fft

    return scipy.fft.dct(np.eye(size), norm="ortho", axis=0)


def dct_denoise(image: np.ndarray, sigma: float, config: LowRankConfig) -> np.ndarray:
    """The numpy-only fallback: two-stage sliding-window 2-D DCT denoising of one image.

    Args:
        image: (h, w); sigma: noise standard deviation in the image's units.

    Returns:
        (h, w) float64. See :func:`dct_denoise_stack`.
    """
    return dct_denoise_stack(np.asarray(image)[None], sigma, config)[0]


def dct_denoise_stack(images: np.ndarray, sigma: float, config: LowRankConfig) -> np.ndarray:
    """Two-stage sliding-window 2-D DCT denoising of a stack of images with the same noise level, in one call.

    Every overlapping :data:`DCT_BLOCK` x :data:`DCT_BLOCK` block (stride 1) is transformed. Stage 1 keeps
    the coefficients above ``dct_threshold * sigma`` (and the DC) and averages the blocks with weights
    1 / (kept coefficients). Stage 2 shrinks the noisy coefficients by the empirical Wiener factor
    P^2 / (P^2 + sigma^2), P being stage 1's coefficients, with weights 1 / sum of squared factors.
    Each image is denoised independently (the same result as one :func:`dct_denoise` call per image).

    Args:
        images: (n, h, w); sigma: noise standard deviation in the images' units.

    Returns:
        (n, h, w) float64.
    """
    import torch
    import torch.nn.functional as F

    count, height, width = images.shape
    padded = np.stack([_pad_to(np.asarray(image, dtype=np.float64), DCT_BLOCK) for image in images])
    padded_t = torch.from_numpy(padded)[:, None]
    transform = torch.from_numpy(_dct_matrix(DCT_BLOCK))
    # Coefficient (u, v) of every stride-1 block is a correlation with the basis image T[u] T[v]^T, so the
    # sliding DCT is one convolution with 64 output channels and the weighted average of the inverse blocks
    # one transposed convolution (2x faster than batched 8 x 8 matrix products, same float64 result).
    basis = torch.einsum("ua,vb->uvab", transform, transform).reshape(DCT_BLOCK * DCT_BLOCK, 1, DCT_BLOCK, DCT_BLOCK)
    ones = torch.ones(1, 1, DCT_BLOCK, DCT_BLOCK, dtype=torch.float64)

    def aggregate(coefficients: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """Weighted average of the overlapping inverse blocks: (n, 64, h', w'), (n, 1, h', w') -> (n, 1, h, w)."""
        return F.conv_transpose2d(coefficients * weights, basis) / F.conv_transpose2d(weights, ones)

    with torch.inference_mode():
        noisy = F.conv2d(padded_t, basis)  # (n, 64, h - 7, w - 7)
        keep = noisy.abs() > config.dct_threshold * sigma
        keep[:, 0] = True
        pilot = aggregate(torch.where(keep, noisy, 0.0), 1.0 / keep.sum(dim=1, keepdim=True).double())
        power = F.conv2d(pilot, basis) ** 2
        shrink = power / (power + sigma * sigma)
        weights = 1.0 / (shrink**2).sum(dim=1, keepdim=True).clamp_min(1e-12)
        estimate = aggregate(shrink * noisy, weights)
    return estimate[:, 0, :height, :width].numpy().copy()


def _identity(image: np.ndarray, sigma: float, config: LowRankConfig) -> np.ndarray:
    return np.asarray(image, dtype=np.float64)


SpatialDenoiser = Callable[[np.ndarray, float, LowRankConfig], np.ndarray]
SPATIAL: dict[str, SpatialDenoiser] = {"bm3d": bm3d_denoise, "dct": dct_denoise, "none": _identity}
"""Resolved spatial denoiser name -> function (image (h, w), noise sigma, config) -> (h, w)."""


def denoise_eigenimages(
    eigen_images: np.ndarray, config: LowRankConfig | None = None, noise: np.ndarray | None = None
) -> tuple[np.ndarray, str]:
    """Denoise each eigen-image with the configured spatial denoiser.

    Args:
        eigen_images: (k, h, w) in whitened units.
        config: pipeline settings; the defaults when None.
        noise: (k,) noise std of each eigen-image; 1 (unit noise after whitening) when None.

    Returns:
        (denoised (k, h, w) float64, the denoiser that ran: ``"bm3d"``, ``"dct"`` or ``"none"``).
    """
    config = config or LowRankConfig()
    name = resolve_spatial(config.spatial)
    denoiser = SPATIAL[name]
    noise = np.ones(eigen_images.shape[0]) if noise is None else np.asarray(noise, dtype=np.float64)
    if name == "dct" and eigen_images.shape[0] and np.all(noise == noise[0]):
        return dct_denoise_stack(eigen_images, float(noise[0]), config), name  # one batched call
    denoised = np.empty(eigen_images.shape, dtype=np.float64)
    for index, image in enumerate(eigen_images):
        denoised[index] = denoiser(image, float(noise[index]), config)
    return denoised, name


# ----------------------------------------------------------------------------------------------------------
# 5. The whole pipeline
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LowRankInfo:
    """What the pipeline found, for the run report.

    Attributes:
        sigma: (B,) noise sigma per band, data units.
        rank: number of components kept.
        eigenvalues: the leading whitened eigenvalues (max(8, 2 * rank) of them at most).
        edge: the eigenvalue threshold.
        spatial: the eigen-image denoiser that ran (``"bm3d"``, ``"dct"`` or ``"none"``).
    """

    sigma: tuple[float, ...]
    rank: int
    eigenvalues: tuple[float, ...]
    edge: float
    spatial: str

    @classmethod
    def from_subspace(cls, subspace: Subspace, spatial: str) -> LowRankInfo:
        shown = max(8, 2 * subspace.rank)
        return cls(
            sigma=tuple(float(value) for value in subspace.sigma),
            rank=subspace.rank,
            eigenvalues=tuple(float(value) for value in subspace.eigenvalues[:shown]),
            edge=float(subspace.edge),
            spatial=spatial,
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "sigma": list(self.sigma),
            "rank": self.rank,
            "eigenvalues": list(self.eigenvalues),
            "edge": self.edge,
            "spatial": self.spatial,
        }


def denoise_with_subspace(
    tile: np.ndarray, subspace: Subspace, config: LowRankConfig | None = None
) -> tuple[np.ndarray, str]:
    """Steps 3-5 on one tile: robust projection, eigen-image denoising, back-projection.

    Args:
        tile: (B, h, w) in data units.
        subspace: the fitted model.
        config: pipeline settings; the defaults when None.

    Returns:
        (denoised (B, h, w) float32, the spatial denoiser that ran).
    """
    config = config or LowRankConfig()
    eigen_images, _ = project(tile, subspace, config)
    denoised, name = denoise_eigenimages(eigen_images, config)
    return back_project(denoised, subspace).astype(np.float32), name


def sample_pixels(cube: np.ndarray, size: int, seed: int) -> np.ndarray:
    """Up to ``size`` distinct random pixels of a cube, among those finite in every band.

    Args:
        cube: (B, H, W).

    Returns:
        (n, B) float64 spectra, n = min(size, number of finite pixels), in raster order.
    """
    pixels = cube.reshape(cube.shape[0], -1)
    valid = np.flatnonzero(np.isfinite(pixels).all(axis=0))
    if valid.size > size:
        valid = np.sort(np.random.default_rng(seed).choice(valid, size, replace=False))
    return pixels[:, valid].T.astype(np.float64)


def lowrank_denoise(cube: np.ndarray, config: LowRankConfig | None = None) -> tuple[np.ndarray, LowRankInfo]:
    """Denoise a whole in-memory cube with the classical pipeline.

    Args:
        cube: (B, H, W) float, finite.
        config: pipeline settings; the defaults when None.

    Returns:
        (denoised (B, H, W) float32, :class:`LowRankInfo`).

    Raises:
        CubeShapeError: ``cube`` is not 3-D or holds non-finite values.
    """
    config = config or LowRankConfig()
    cube = np.asarray(cube)
    if cube.ndim != 3:
        raise CubeShapeError(f"lowrank_denoise expects a (bands, rows, cols) cube, got shape {cube.shape}")
    if not np.isfinite(cube).all():
        raise CubeShapeError(
            "lowrank_denoise needs finite values; fill NaN/nodata pixels (e.g. with the band mean) first"
        )
    subspace = fit_lowrank(sample_pixels(cube, config.sample_size, config.seed), config)
    denoised, spatial = denoise_with_subspace(cube, subspace, config)
    return denoised, LowRankInfo.from_subspace(subspace, spatial)


class _PixelSample(Protocol):
    @property
    def sample_spectra(self) -> np.ndarray: ...


def _valid_spectra(stats: _PixelSample) -> np.ndarray:
    """The pixel sample in the bands the tiles will carry.

    A ``CubeStatistics`` samples every band and names the valid ones (``valid_sample_spectra``); a lighter
    object (the training front end's) holds only those bands in ``sample_spectra``.
    """
    valid = getattr(stats, "valid_sample_spectra", None)
    return np.asarray(valid if valid is not None else stats.sample_spectra)


class LowRankDenoiser:
    """``--method lowrank``: this pipeline behind the ``Denoiser`` protocol of ``hsidenoise.methods``.

    ``prepare`` fits noise, subspace and band regression once per cube from the statistics' pixel sample;
    ``denoise_tile`` is then deterministic and independent of the other tiles.
    """

    name = "lowrank"

    def __init__(self, config: LowRankConfig | None = None) -> None:
        self.config = config or LowRankConfig()
        self.spatial = resolve_spatial(self.config.spatial)
        self.subspace: Subspace | None = None

    def prepare(self, stats: _PixelSample) -> None:
        """Fit the model on the cube's pixel sample.

        Args:
            stats: a ``CubeStatistics`` (its ``valid_sample_spectra`` are used: the bands the tiles carry), or
                any object whose ``sample_spectra`` is (n, B_valid).
        """
        subspace = self.subspace = fit_lowrank(_valid_spectra(stats), self.config)
        logger.info("lowrank: rank %d of %d bands, spatial %s", subspace.rank, subspace.band_count, self.spatial)

    def denoise_tile(self, tile: np.ndarray) -> np.ndarray:
        """Denoise one tile.

        Args:
            tile: (B_valid, h, w) float32 in data units.

        Returns:
            (B_valid, h, w) float32.

        Raises:
            ConfigError: ``prepare`` has not been called.
            CubeShapeError: the tile does not match the prepared band count or is not finite.
        """
        if self.subspace is None:
            raise ConfigError(
                "LowRankDenoiser.denoise_tile was called before prepare(stats); call prepare once per cube first"
            )
        denoised, _ = denoise_with_subspace(tile, self.subspace, self.config)
        return denoised

    def info(self) -> dict[str, Any]:
        """Sigma, rank, eigenvalues and spatial denoiser for the run report (only the denoiser before prepare)."""
        if self.subspace is None:
            return {"spatial": self.spatial}
        return LowRankInfo.from_subspace(self.subspace, self.spatial).as_dict()
