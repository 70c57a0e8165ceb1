"""Step 2 of the pipeline: the whitened signal subspace and the synthesis rows.

:func:`fit_subspace` whitens pixel samples by the per-band noise sigma, eigen-decomposes their covariance and
keeps the components above the Marchenko-Pastur edge (1 + sqrt(B / n))^2 of unit noise (times a margin).
:func:`fit_loadings` then refits, by least absolute deviations, the synthesis row of each band whose
least-squares row is dragged by dense salt-and-pepper noise. Where entries are stuck, the subspace is refitted on
its own imputation of them (:func:`refit_on_own_imputation`). :func:`fit_lowrank` is steps 1-2 in one call.

Shapes: spectra are (n, B) pixel samples; per-band vectors are (B,); the basis is (B, k).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from hsidenoise.errors import CubeShapeError
from hsidenoise.subspace.config import LowRankConfig
from hsidenoise.subspace.noise_estimate import (
    BandRegression,
    as_spectra,
    band_noise,
    clean_entries,
    column_median,
    QUIET_BAND_FRACTION,
    fit_band_regression,
    is_noise_free,
    sigma_bounds,
    subsample,
)
from hsidenoise.subspace.neighbour_noise import NeighbourPairs, spatial_noise
from hsidenoise.subspace.stripes import destripe_sample
from hsidenoise.subspace.stuck_values import StuckValues, find_stuck_values, with_line_pileups

if TYPE_CHECKING:
    from hsidenoise.statistics import PixelPositions

logger = logging.getLogger(__name__)

LOADING_SAMPLE = 4096
"""Pixels used by the least-absolute-deviation refit of the synthesis rows."""
EFFECTIVE_MARGIN = 1.1
"""A band is whitened by its effective noise when that exceeds its Gaussian noise by this factor (see
:func:`whitening_sigma`)."""
HEAVY_TAIL_SIGMAS = 4.0
HEAVY_TAIL_FRACTION = 0.01
"""Only bands with more than this fraction of plain residuals beyond HEAVY_TAIL_SIGMAS robust sigmas are refitted
(a Gaussian band has 6e-5 there; salt and pepper fills the tail): the others would keep their plain row anyway."""
WIDE_SPREAD = 1.5
"""... or whose plain residuals spread wider than this times the band regression's residual scale (dense impulses,
where more than half of the entries are hit and the median itself moves)."""
ROBUST_LOADING_GAIN = 0.9
"""A band keeps its L1 row only when that row's median |residual| is below this fraction of the plain row's."""


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
        stuck: the values at which entries are stuck (impulse, saturation, dead elements), missing in every
            tile; None: no entry is.
        gaussian_sigma: (B,) the Gaussian noise sigma per band (what a sensor model would quote; ``sigma``
            is larger where corruption remains); None: not measured (``sigma`` given by the caller).
        eigenvectors: (B, B) every eigenvector of the whitened sample covariance, in the order of
            ``eigenvalues`` (the first k are ``basis``, signs included); what the fit's own response to the data
            needs (:mod:`~hsidenoise.subspace.fit_divergence`). None: not kept.
        population: how many pixels the fitted sample was drawn from (the sample's size when every pixel was in
            it): one pixel's share in the covariance is 1 / population in expectation. None: not known.
        line_stuck: ``stuck`` plus the values that pile up within one line of the fit's sample
            (:func:`~hsidenoise.subspace.stuck_values.with_line_pileups`: impulses that a stripe shifted); the
            tiles mark them missing once their stripes are removed (:func:`~hsidenoise.subspace.outliers.clean_tile`).
            None: the fit found no such value.
    """

    sigma: np.ndarray
    mean: np.ndarray
    basis: np.ndarray
    eigenvalues: np.ndarray
    edge: float
    regression: BandRegression | None = None
    intercept: np.ndarray | None = None
    loadings: np.ndarray | None = None
    stuck: StuckValues | None = None
    gaussian_sigma: np.ndarray | None = None
    eigenvectors: np.ndarray | None = None
    population: float | None = None
    line_stuck: StuckValues | None = None

    @property
    def rank(self) -> int:
        return self.basis.shape[1]

    @property
    def band_count(self) -> int:
        return self.basis.shape[0]

    @property
    def refitted_rows(self) -> np.ndarray:
        """(B,) bool: the bands whose synthesis row was refitted by least absolute deviations (``loadings`` off
        sigma_b E_b: dense impulses), which SURE's Gaussian model and the fit's divergence do not describe."""
        if self.loadings is None:
            return np.zeros(self.band_count, dtype=bool)
        plain = np.isclose(self.loadings, self.sigma[:, None] * self.basis, rtol=1e-9, atol=0).all(axis=1)
        return ~plain

    @property
    def component_noise(self) -> np.ndarray:
        """(k,) the Gaussian noise std of each eigen-image implied by the noise estimate.

        Component j carries sqrt(sum_b basis[b, j]^2 (gaussian_sigma_b / sigma_b)^2): 1 where every band is
        whitened by its Gaussian sigma, below 1 where corrupted bands are whitened by their larger effective
        sigma. The truth differs where the band sigmas do; the typical band's sigma is unbiased (0.994 to 1.000 of
        the truth on the validation cubes), a quiet band's is an upper bound (:meth:`component_noise_range`).
        Measured on the validation cubes with non-i.i.d. noise (``bench/eigen_noise.py``, bench/README.md): the
        true level is 0.58 to 1.01 per component, within 5 % of this estimate for 9 of 33 components; the
        misses lean on quiet bands (sigma resolved by neither estimator) or on bands whose false stripes the tile
        cleaning removed.
        """
        if self.gaussian_sigma is None:
            return np.ones(self.rank)
        ratio = (self.gaussian_sigma / self.sigma) ** 2
        return np.sqrt(ratio @ self.basis**2)

    def component_noise_range(self) -> tuple[np.ndarray, np.ndarray]:
        """((k,) low, (k,) high): each eigen-image's noise std as far as the band sigmas are resolved.

        The bands' Gaussian sigma intervals (:func:`~hsidenoise.subspace.noise_estimate.sigma_bounds`: the spectral
        and spatial estimates' standard error, or [0, estimate] where they disagree) carried through the whitening
        and projection. Without a band regression the interval is the point :attr:`component_noise`.
        """
        if self.gaussian_sigma is None or self.regression is None:
            return self.component_noise, self.component_noise
        low, high, _ = sigma_bounds(self.gaussian_sigma, band_noise(self.regression), self.regression.sample_count)
        weights = self.basis**2
        return np.sqrt((low / self.sigma) ** 2 @ weights), np.sqrt((high / self.sigma) ** 2 @ weights)


def fit_subspace(spectra: np.ndarray, sigma: np.ndarray, config: LowRankConfig | None = None) -> Subspace:
    """Whiten pixel samples by sigma and keep the components above the unit-noise Marchenko-Pastur edge.

    Args:
        spectra: (n, B) pixel samples in data units.
        sigma: (B,) per-band noise standard deviation in data units, e.g. from :func:`estimate_band_noise`.
        config: pipeline settings; the defaults when None.

    Returns:
        A :class:`Subspace` (no regression, plain synthesis) whose rank k is the number of eigenvalues above
        ``edge_margin * (1 + sqrt(B / n))^2``, clipped to [1, min(B, max_rank, n - 1)] (n pixels span at most
        n - 1 directions around their mean).

    Raises:
        CubeShapeError: sigma does not hold B finite positive values.
    """
    config = config or LowRankConfig()
    spectra = as_spectra(spectra)
    n, bands = spectra.shape
    sigma = np.asarray(sigma, dtype=np.float64)
    if sigma.shape != (bands,) or not (np.isfinite(sigma).all() and (sigma > 0).all()):
        raise CubeShapeError(f"sigma must hold {bands} finite positive values (one per band), got shape {sigma.shape}")
    mean = spectra.mean(axis=0)
    whitened = (spectra - mean) / sigma
    eigenvalues, eigenvectors = np.linalg.eigh(whitened.T @ whitened / n)
    eigenvalues, eigenvectors = eigenvalues[::-1].copy(), eigenvectors[:, ::-1]
    edge = config.edge_margin * (1.0 + math.sqrt(bands / n)) ** 2
    rank = int(np.clip(np.count_nonzero(eigenvalues > edge), 1, max(1, min(bands, config.max_rank, n - 1))))
    eigenvectors = np.ascontiguousarray(eigenvectors)
    # a deterministic sign: each component's largest loading is positive
    signs = np.sign(eigenvectors[np.abs(eigenvectors[:, :rank]).argmax(axis=0), np.arange(rank)])
    eigenvectors[:, :rank] *= np.where(signs == 0, 1.0, signs)
    basis = np.ascontiguousarray(eigenvectors[:, :rank])
    return Subspace(
        sigma=sigma, mean=mean, basis=basis, eigenvalues=eigenvalues, edge=edge, eigenvectors=eigenvectors,
        population=float(n),
    )


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
    observed = subsample(as_spectra(spectra), LOADING_SAMPLE, config.seed + 1)
    regressors = observed
    stuck = subspace.stuck.mask(observed.T).T if subspace.stuck is not None else np.zeros(observed.shape, bool)
    if subspace.regression is not None:
        regressors = clean_entries(observed.T, stuck.T, subspace.regression, config)[0].T
    coefficients = ((regressors - subspace.mean) / subspace.sigma) @ subspace.basis  # (n, k)
    design = np.hstack([np.ones((coefficients.shape[0], 1)), coefficients])  # (n, k + 1)
    size = design.shape[1]
    outer = (design[:, :, None] * design[:, None, :]).reshape(design.shape[0], -1)  # (n, (k + 1)^2)
    plain = np.vstack([subspace.mean, (subspace.sigma[:, None] * subspace.basis).T])  # (k + 1, B)
    plain_residuals = np.abs(observed - design @ plain)
    plain_spread = _median_kept(plain_residuals, stuck)
    # only bands whose plain residuals have heavy tails can gain (Gaussian ones: 6e-5 beyond 4 sigma)
    tail = np.mean((plain_residuals > HEAVY_TAIL_SIGMAS * 1.4826 * plain_spread) & ~stuck, axis=0)
    heavy = tail > HEAVY_TAIL_FRACTION
    if subspace.regression is not None:  # dense impulses widen the whole spread instead (no tail left to see)
        heavy |= 1.4826 * plain_spread > WIDE_SPREAD * subspace.regression.residual_scale
    candidates = np.flatnonzero(heavy)
    rows = plain.copy()
    if candidates.size:
        target, left_out = observed[:, candidates], stuck[:, candidates]
        robust = plain[:, candidates].copy()
        floor = 1e-3 * subspace.sigma[candidates]
        jitter = 1e-9 * np.eye(size)
        for _ in range(config.loading_iterations):
            weights = np.where(left_out, 0.0, 1.0 / np.maximum(np.abs(target - design @ robust), floor))  # (n, c)
            gram = (weights.T @ outer).reshape(-1, size, size) + jitter
            rhs = (design.T @ (weights * target)).T  # (c, k + 1)
            robust = _solve_rows(gram, rhs)
        robust = np.where(np.isfinite(robust).all(axis=0)[None, :], robust, plain[:, candidates])
        robust_spread = _median_kept(np.abs(target - design @ robust), left_out)
        use_robust = robust_spread < ROBUST_LOADING_GAIN * plain_spread[candidates]
        rows[:, candidates[use_robust]] = robust[:, use_robust]
        logger.debug("L1 synthesis rows for %d of %d bands", int(use_robust.sum()), plain.shape[1])
    return dataclasses.replace(subspace, intercept=rows[0].copy(), loadings=np.ascontiguousarray(rows[1:].T))


def _median_kept(values: np.ndarray, left_out: np.ndarray) -> np.ndarray:
    """(B,) median of each column of (n, B) ``values`` over the entries not ``left_out``; a column left out
    entirely (a band stuck everywhere) takes the median of all its entries."""
    median = column_median(values, left_out)
    return np.where(np.isnan(median), np.median(values, axis=0), median)


def _solve_rows(gram: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """Each band's weighted normal equations: (B, s, s) matrices, (B, s) right-hand sides -> (s, B) rows.

    A matrix that is singular to working precision (pixels with too few distinct eigen-coefficients, e.g. a
    two-valued cube, or fewer pixels than components) gets its minimum-norm least-squares solution.
    """
    try:
        return np.linalg.solve(gram, rhs[:, :, None])[:, :, 0].T
    except np.linalg.LinAlgError:
        return np.stack([np.linalg.lstsq(matrix, vector, rcond=None)[0] for matrix, vector in zip(gram, rhs)]).T


def noise_sigmas(
    regression: BandRegression,
    pairs: NeighbourPairs | None = None,
    config: LowRankConfig | None = None,
    stuck: StuckValues | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Each band's Gaussian and effective noise sigma, refined by the spatial neighbours when given.

    Args:
        regression: the robust band regression (with its ``effective_scale``).
        pairs: pixels with their neighbours' mean (:mod:`hsidenoise.subspace.neighbour_noise`), in the bands of
            ``regression``; None: the band regression's sigmas alone.
        config: pipeline settings; stuck: the stuck values (missing in the pairs too).

    Returns:
        (Gaussian sigma (B,), effective sigma (B,)), data units; effective >= Gaussian.
    """
    gaussian = band_noise(regression)
    effective = gaussian
    if regression.effective_scale is not None:
        effective_regression = dataclasses.replace(regression, residual_scale=regression.effective_scale)
        effective = np.maximum(band_noise(effective_regression), gaussian)
    if pairs is not None:
        refined = spatial_noise(pairs, regression, gaussian, effective, config, stuck)
        if refined is not None:
            gaussian, effective = refined[0], np.maximum(refined[1], refined[0])
    return gaussian, effective


def whitening_sigma(gaussian: np.ndarray, effective: np.ndarray) -> np.ndarray:
    """The per-band sigma that whitens: the Gaussian noise, or the effective noise where corruption inflates it.

    The Gaussian sigma (median absolute deviation of the residuals not imputed) is what a clean band carries;
    whitening by anything larger over-smooths it (measured: -1.1 dB on a CAVE cube with non-i.i.d. noise, where
    the trimmed scale inflated the quietest bands' sigma up to 4x). A band whose stripes or impulses are not
    all removed carries more: whitened by its Gaussian sigma it would dominate the covariance and spread its
    corruption over every band. So a band whose effective sigma (the truncation-corrected scale of the residuals
    within the outlier threshold) exceeds its Gaussian sigma by more than :data:`EFFECTIVE_MARGIN` is whitened
    by the effective one, unless the band is quiet (:data:`~hsidenoise.subspace.noise_estimate.QUIET_BAND_FRACTION`:
    its residuals are dominated by the signal that the other bands do not predict, which inflates its effective
    sigma, measured 10x the true sigma of a CAVE band with sigma 0.3/255, -2.2 dB, not by corruption).

    Args:
        gaussian, effective: (B,) from :func:`noise_sigmas`.

    Returns:
        (B,) float64 sigma in data units.
    """
    quiet = gaussian < QUIET_BAND_FRACTION * np.median(gaussian)
    return np.where((effective > EFFECTIVE_MARGIN * gaussian) & ~quiet, effective, gaussian)


def with_imputed_share(sigma: np.ndarray, share: np.ndarray, prediction_scale: np.ndarray) -> np.ndarray:
    """The whitening sigma of bands whose entries are partly stuck, hence imputed from the other bands.

    An imputed entry carries the error of its prediction from the other bands (about the band regression's
    residual scale), not the band's own noise; whitened by its small sigma, a quiet band with most of its entries
    imputed weighs as if every entry were measured, and its imputation errors spread over every component. The
    band is whitened instead by the root mean square over its entries of what they carry:
    sqrt((1 - q) sigma^2 + q max(s, sigma)^2), q the share of stuck entries in the fit's sample, s the residual
    scale. Measured (``bench/mixture.py --seeds 2``, 2026-12-05): CAVE mixture seed 0 -4.63 -> -4.43 dB against its
    Gaussian part (a band with sigma 2.7/255 and 70 % of its entries stuck), San Diego seed 1 -2.57 -> -2.50, the
    others within 0.02 dB; a cube without stuck values is unchanged.

    Args:
        sigma: (B,) whitening sigma; share: (B,) q in [0, 1]; prediction_scale: (B,) s. Data units.

    Returns:
        (B,) float64.
    """
    return np.sqrt((1 - share) * sigma**2 + share * np.maximum(prediction_scale, sigma) ** 2)


SUBSPACE_IMPUTATION_ROWS = 4096
"""Pixels per batch of :func:`impute_in_subspace` (its k x k systems take rows k^2 float64 values)."""
EM_REFITS = 10
"""At most this many refits of the subspace on its own imputation of the sample's stuck entries
(:func:`refit_on_own_imputation`). One refit left the synthesis rows of noisy bands with dense impulses far from
their fixed point (CAVE apples, mixture seed 1: bands with sigma 90/255 and half their entries impulses kept a third
of their loading on the weakest component, -4 to -7 dB against their Gaussian part); the imputed entries still move
by 0.4 % of sigma (rms) at the tenth."""
MAX_IMPUTED_LEVERAGE = 0.25
"""The refits stop before a component rests more than this share on the sample's stuck entries
(:func:`imputed_leverage`). Measured: 0.08 to 0.2 on four other validation mixture draws, but 0.49 on CAVE apples
seed 0 after the first refit. There band 13 (70 % impulses) alone carries the colour chart, each further refit
pulled the first component further onto that band (0.66), and the tiles, which can only impute that band from the
other bands, lost 2.15 dB for it. On the held-out mixture draws the limit stopped the refits on 2 of 34."""


def impute_in_subspace(spectra: np.ndarray, missing: np.ndarray, subspace: Subspace) -> np.ndarray:
    """Missing entries replaced by the subspace's fit to each pixel's observed entries.

    Each pixel's eigen-coefficients are the weighted least-squares fit, in whitened units, of its observed
    entries only: z = (E_O^T E_O)^-1 E_O^T w_O; the missing entries become mean + sigma * (E z). Unlike the band
    regression's prediction (a linear combination of the pixel's other, noisy bands), this is a point of the
    signal subspace, and refitting the subspace on it is one step of expectation-maximisation for the low-rank
    model (:func:`refit_on_own_imputation` takes several). Measured on the quality bench's mixture cases (impulse,
    dead lines and stripes on thirds of the bands): one step +0.42 dB on average (-0.11 to +1.12) over fitting on
    the band regression's imputation alone; a noise-corrected covariance measured no better.

    Args:
        spectra: (n, B) pixel samples in data units; missing: (n, B) bool.
        subspace: a fitted subspace of the same bands.

    Returns:
        (n, B) float64 copy of ``spectra`` with the missing entries imputed.
    """
    basis = subspace.basis
    rank = basis.shape[1]
    outer = (basis[:, :, None] * basis[:, None, :]).reshape(basis.shape[0], rank * rank)  # (B, k^2)
    imputed = np.array(spectra, dtype=np.float64)
    for first in range(0, spectra.shape[0], SUBSPACE_IMPUTATION_ROWS):
        rows = slice(first, first + SUBSPACE_IMPUTATION_ROWS)
        gaps = missing[rows]
        if not gaps.any():
            continue
        observed = (~gaps).astype(np.float64)
        whitened = np.where(gaps, 0.0, (imputed[rows] - subspace.mean) / subspace.sigma)
        normal = (observed @ outer).reshape(-1, rank, rank) + 1e-9 * np.eye(rank)
        coefficients = np.linalg.solve(normal, (whitened @ basis)[:, :, None])[:, :, 0]
        fitted = subspace.mean + (coefficients @ basis.T) * subspace.sigma
        imputed[rows] = np.where(gaps, fitted, imputed[rows])
    return imputed


def imputed_leverage(subspace: Subspace, stuck_share: np.ndarray) -> np.ndarray:
    """(k,) how much each component rests on entries the sample does not measure: sum over the bands of its
    squared (unit-norm, whitened) loading times the band's share of stuck entries, in [0, 1].

    Args:
        subspace: a fitted subspace; stuck_share: (B,) each band's share of stuck entries in the sample.
    """
    return (subspace.basis**2 * np.asarray(stuck_share, dtype=np.float64)[:, None]).sum(axis=0)


def refit_on_own_imputation(
    spectra: np.ndarray, missing: np.ndarray, subspace: Subspace, sigma: np.ndarray, config: LowRankConfig
) -> Subspace:
    """Expectation-maximisation for the low-rank model: impute the missing entries by the subspace
    (:func:`impute_in_subspace`), refit it on that, up to :data:`EM_REFITS` times.

    A band whose entries are mostly missing gets its synthesis row from its imputed entries as much as from its
    measured ones, and one refit moves that row only part of the way from where the first imputation put it (by
    about the band's measured share). Measured (``bench/mixture.py --seeds 2``, against one refit): CAVE apples
    mixture seed 1 -1.27 -> -0.45 dB against its Gaussian part, San Diego +0.14 / +0.23, HYDICE -0.01 / -0.11.
    The first refit is always taken. Each later one is taken only while no component, of the current fit or of the
    new one, rests more than :data:`MAX_IMPUTED_LEVERAGE` on the missing entries (:func:`imputed_leverage`): such
    a component is made by the imputation itself.

    Args:
        spectra: (n, B) pixel samples in data units; missing: (n, B) bool, at least one entry True.
        subspace: the fit to start from (e.g. on the band regression's imputation).
        sigma: (B,) whitening sigma; config: pipeline settings.

    Returns:
        The last refit whose components all stay within the leverage limit (at least the first refit).
    """
    share = missing.mean(axis=0)

    def leans(fit: Subspace) -> bool:
        return bool(imputed_leverage(fit, share).max() > MAX_IMPUTED_LEVERAGE)

    subspace = fit_subspace(impute_in_subspace(spectra, missing, subspace), sigma, config)
    if leans(subspace):
        return subspace
    for _ in range(EM_REFITS - 1):
        candidate = fit_subspace(impute_in_subspace(spectra, missing, subspace), sigma, config)
        if leans(candidate):
            break
        subspace = candidate
    return subspace


def _imputed(spectra: np.ndarray, stuck: StuckValues, regression: BandRegression, config: LowRankConfig) -> np.ndarray:
    """(n, B) ``spectra`` with their stuck entries imputed from the other bands (so they bend no subspace)."""
    known = stuck.mask(spectra.T)
    if not known.any():
        return spectra
    return clean_entries(spectra.T, known, regression, config)[0].T


SIGMA_AFTER_DESTRIPING_FLOOR = 0.9
"""After the sample is destriped, a band's sigma may fall to this fraction of the one before, no further. The
refitted regression's leakage correction can under-estimate a quiet band next to an over-estimated one (measured:
San Diego seed 0, a band with sigma 1.2/255 went from 0.63 to 0.36 of its truth, -0.6 dB), and an under-estimated
band dominates the whitened covariance; stripes only ever add to a band's residual, so the drop they explain is
small."""


def fit_lowrank(
    spectra: np.ndarray,
    config: LowRankConfig | None = None,
    pairs: NeighbourPairs | None = None,
    positions: PixelPositions | None = None,
) -> Subspace:
    """Steps 1-2 in one call: stuck values, robust band regression, noise sigma, whitened subspace, synthesis rows.

    Entries held at a stuck value (:func:`find_stuck_values`: impulse, saturation, dead elements) are missing
    for the band regression and imputed from the other bands before the subspace is fitted, so that they bend
    neither the noise estimate nor the subspace; the subspace is then refitted on its own imputation of them
    (:func:`refit_on_own_imputation`, up to :data:`EM_REFITS` times). The bands are whitened by
    :func:`whitening_sigma`, from the band regression's sigmas refined by the pixels' spatial neighbours when
    ``pairs`` are given (:mod:`hsidenoise.subspace.neighbour_noise`: without them, a band whose noise is near zero
    gets a sigma several times too high).

    With the sample's ``positions``, the values that pile up within one column or row of a band that has stuck
    values are stuck in the sample too (:func:`~hsidenoise.subspace.stuck_values.with_line_pileups`: impulses that a stripe
    shifted), and its column stripes are subtracted first
    (:func:`~hsidenoise.subspace.stripes.destripe_sample`): left in, each striped band becomes a component of its
    own (measured on San Diego with stripes alone: rank 5 -> 12). The noise sigma is then taken from a regression
    refitted on the destriped sample (at least :data:`SIGMA_AFTER_DESTRIPING_FLOOR` of the sigma before), and the
    subspace from the destriped sample; the tiles keep the first regression, fitted on data like theirs (their
    stripes are removed per tile). A noise-free sample (:func:`~hsidenoise.subspace.noise_estimate.is_noise_free`)
    is not destriped.

    Args:
        spectra: (n, B) pixel samples in data units, e.g. ``CubeStatistics.sample_spectra``.
        config: pipeline settings; the defaults when None.
        pairs: pixels of the same cube with their neighbours' mean, in the same bands
            (``CubeStatistics.neighbour_pairs``, :func:`~hsidenoise.subspace.neighbour_noise.neighbour_pairs`);
            None: the band regression's sigmas alone.
        positions: where each sampled pixel lies (``CubeStatistics.sample_positions``); None: no destriping.

    Returns:
        The :class:`Subspace`, carrying its band regression (for per-tile cleaning).
    """
    config = config or LowRankConfig()
    spectra = as_spectra(spectra)
    stuck = find_stuck_values(spectra) if config.robust_passes > 0 else None
    band_stuck = stuck  # what the tiles mark; the fit's sample also marks the impulses that stripes shifted
    if stuck is not None and stuck.any() and positions is not None:
        stuck = with_line_pileups(stuck, spectra, positions.rows, positions.cols)
    regression = fit_band_regression(spectra, config, stuck=stuck)
    gaussian, effective = noise_sigmas(regression, pairs, config, stuck)
    if (
        positions is not None
        and config.robust_passes > 0
        and spectra.shape[1] >= 2
        and not is_noise_free(spectra, gaussian)  # nothing to destripe: rounding is not a stripe
    ):
        destriped, subtracted = destripe_sample(spectra, positions, regression, stuck, config.stripe_threshold)
        if subtracted.any():
            logger.debug("lowrank model: %d striped band(s) in the sample", int(subtracted.any(axis=0).sum()))
            spectra = destriped
            refitted = fit_band_regression(spectra, config, stuck=stuck)
            refitted_gaussian, refitted_effective = noise_sigmas(refitted, pairs, config, stuck)
            gaussian = np.maximum(refitted_gaussian, SIGMA_AFTER_DESTRIPING_FLOOR * gaussian)
            effective = np.maximum(refitted_effective, gaussian)
    sigma = whitening_sigma(gaussian, effective)
    if stuck is not None and stuck.any():
        stuck_entries = stuck.mask(spectra.T)  # (B, n)
        sigma = with_imputed_share(sigma, stuck_entries.mean(axis=1), regression.residual_scale)
        # first the band regression's imputation, then refits on the imputation by the subspace itself
        subspace = fit_subspace(_imputed(spectra, stuck, regression, config), sigma, config)
        subspace = refit_on_own_imputation(spectra, stuck_entries.T, subspace, sigma, config)
    else:
        subspace = fit_subspace(spectra, sigma, config)
    line_stuck = None  # the fit's own values, where the line pile-ups added some
    if stuck is not None and band_stuck is not None and any(
        line.size > band.size for line, band in zip(stuck.values, band_stuck.values)
    ):
        line_stuck = stuck
    subspace = dataclasses.replace(
        subspace, regression=regression, stuck=band_stuck, gaussian_sigma=gaussian, line_stuck=line_stuck
    )
    if config.loading_iterations > 0:
        subspace = fit_loadings(spectra, subspace, config)
    logger.debug("lowrank model: %d bands, rank %d, edge %.3f", subspace.band_count, subspace.rank, subspace.edge)
    return subspace
