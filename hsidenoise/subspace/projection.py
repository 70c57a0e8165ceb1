"""Steps 3 and 6 of the pipeline: a tile on the signal subspace (eigen-images) and back to bands.

:func:`project` cleans a tile (:func:`hsidenoise.subspace.outliers.clean_tile`), whitens it by the
per-band sigma and projects it on the subspace, each pixel's imputed entries weighted by how well they are known
(:func:`entry_weights`): k eigen-images whose noise std is about 1 (exactly
:attr:`Subspace.component_noise` where the band sigmas are right; components leaning on quiet bands carry less,
:meth:`Subspace.component_noise_range`). :func:`back_project` maps
(denoised) eigen-images back: X = mean + sigma * (basis @ eigen-images), or the refitted intercept + loadings.

Shapes: tiles are (B, h, w); eigen-images are (k, h, w) in whitened units.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from hsidenoise.errors import CubeShapeError
from hsidenoise.subspace.config import LowRankConfig
from hsidenoise.subspace.outliers import CleanedTile, clean_tile
from hsidenoise.subspace.signal_subspace import Subspace


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


def project(
    tile: np.ndarray, subspace: Subspace, config: LowRankConfig | None = None, *, facts: dict | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Clean a tile (:func:`remove_outliers`), whiten it and project it on the signal subspace.

    Args:
        tile: (B, h, w) in data units, finite.
        subspace: the fitted model.
        config: pipeline settings; the defaults when None.
        facts: passed to :func:`remove_outliers` (the tile's outlier and stripe facts), or None.

    Returns:
        (eigen_images (k, h, w) float64 in whitened units, each with noise std about 1
        (:attr:`Subspace.component_noise`);
        projection (B, h, w) float64 in data units, :func:`back_project` of the eigen-images).

    Raises:
        CubeShapeError: the tile is not (B, h, w) with the subspace's B, or holds non-finite values.
    """
    eigen_images = project_eigen_images(tile, subspace, config, facts=facts)
    return eigen_images, back_project(eigen_images, subspace)


def project_eigen_images(
    tile: np.ndarray, subspace: Subspace, config: LowRankConfig | None = None, *, facts: dict | None = None
) -> np.ndarray:
    """The eigen-images of :func:`project` alone, (k, h, w) float64 (what the pipeline denoises).

    The whitening is folded into the projection: basis^T diag(1 / sigma) is one (k, B) matrix, so the tile is
    read once by one matrix product and the mean's projection subtracted from the k images.

    Raises:
        CubeShapeError: as :func:`project`.
    """
    return clean_and_project(tile, subspace, config, facts=facts)[0]


def clean_and_project(
    tile: np.ndarray, subspace: Subspace, config: LowRankConfig | None = None, *, facts: dict | None = None
) -> tuple[np.ndarray, CleanedTile, np.ndarray | None]:
    """:func:`~hsidenoise.subspace.outliers.clean_tile`, then :func:`whiten_and_project` with :func:`entry_weights`.

    Returns:
        eigen-images (k, h, w), the :class:`~hsidenoise.subspace.outliers.CleanedTile` and the entry weights
        (B, h, w) or None (all 1).

    Raises:
        CubeShapeError: as :func:`project`.
    """
    tile = _check_tile(tile, subspace)
    cleaned = clean_tile(tile, subspace, config, facts=facts)
    weights = entry_weights(cleaned.missing, cleaned.known, subspace)
    return whiten_and_project(cleaned.values, subspace, weights), cleaned, weights


DETECTED_ERROR_FACTOR = 4.0
"""The error of an entry imputed because its residual failed the outlier test, in residual scales
(:func:`entry_weights`): a true impulse is imputed to about one residual scale, but an entry flagged falsely (an
unusual feature of the scene) is off by at least the test's threshold. Measured (``bench/mixture.py --seeds 2``,
2026-12-06): 4 (against 1 for an entry known to be missing) raised the Gaussian part of both San Diego draws by
+0.76 and +0.53 dB and the mixture cases by +0.00 to +0.26 dB; 2.4 and 6.3 did no better (bench/README.md)."""


WEIGHT_FLOOR = 1e-6
"""The least weight of an imputed entry: each pixel's normal matrix (basis^T W basis, between the floor and 1 in its
eigenvalues) stays solvable in float64 (measured: a fuzzed 3-band cube whose regression scale was about 10^10 its sigma gave
weights of 10^-22 and non-finite eigen-images)."""


def entry_weights(missing: np.ndarray, known: np.ndarray, subspace: Subspace) -> np.ndarray | None:
    """Each entry's weight in its pixel's projection: 1 where measured, less where imputed.

    An imputed entry of band b carries the error of its imputation, not the band's noise: about the band
    regression's residual scale s_b for an entry known to be missing (dead line, stuck value), f s_b for one
    detected by its residual (f = :data:`DETECTED_ERROR_FACTOR`). In whitened units (band b divided by sigma_b)
    a measured entry's noise has variance 1 and an imputed one's error (s_b / sigma_b)^2, so the generalised
    least-squares weight of the imputed entry is (sigma_b / max(s_b, sigma_b))^2, (sigma_b / max(f s_b,
    sigma_b))^2 when detected: where the band is quiet and the other bands predict it poorly, the pixel's
    coefficients come from its measured entries instead.

    Args:
        missing, known: (B, h, w) bool (:class:`~hsidenoise.subspace.outliers.CleanedTile`).
        subspace: the fitted model.

    Returns:
        (B, h, w) float64 in [:data:`WEIGHT_FLOOR`, 1], or None when no entry is missing or the model has no regression (then every
        weight is 1).
    """
    if subspace.regression is None or not missing.any():
        return None
    sigma, scale = subspace.sigma, subspace.regression.residual_scale  # (B,) each, sigma > 0
    known_weight = ((sigma / np.maximum(scale, sigma)) ** 2)[:, None, None]
    detected_weight = ((sigma / np.maximum(DETECTED_ERROR_FACTOR * scale, sigma)) ** 2)[:, None, None]
    weights = np.where(missing, np.where(known, known_weight, detected_weight), 1.0)
    return np.maximum(weights, WEIGHT_FLOOR)


def whiten_and_project(cleaned: np.ndarray, subspace: Subspace, weights: np.ndarray | None = None) -> np.ndarray:
    """Eigen-images (k, h, w) of an already cleaned (B, h, w) tile.

    Each pixel's coefficients z minimise sum_b weights_b (w_b - (basis z)_b)^2 over its whitened entries
    w = (x - mean) / sigma: z = basis^T w where every weight is 1 (the basis is orthonormal), else
    z = (basis^T W basis)^-1 basis^T W w with W = diag(weights of the pixel).

    Args:
        cleaned: (B, h, w) data units; subspace: the fitted model; weights: (B, h, w) from :func:`entry_weights`,
            or None (all 1).
    """
    bands, height, width = cleaned.shape
    projector = subspace.basis.T / subspace.sigma[None, :]  # (k, B)
    eigen_images = projector @ cleaned.reshape(bands, -1)
    eigen_images -= (projector @ subspace.mean)[:, None]
    if weights is not None:
        flat = cleaned.reshape(bands, -1)

        def whitened(pixels: np.ndarray) -> np.ndarray:
            return (flat[:, pixels] - subspace.mean[:, None]) / subspace.sigma[:, None]

        reweight(eigen_images, whitened, weights.reshape(bands, -1), subspace.basis)
    return eigen_images.reshape(subspace.rank, height, width)


WEIGHTED_PIXELS = 4096
"""Pixels per batch of :func:`reweight` (its k x k systems take pixels k^2 float64 values)."""


def reweight(
    coefficients: np.ndarray,
    whitened: Callable[[np.ndarray], np.ndarray],
    weights: np.ndarray,
    basis: np.ndarray,
) -> None:
    """Replace, in place, the plain coefficients basis^T w of the pixels with a weight below 1 by the weighted fit.

    With D = I - W, basis^T W basis = I - basis^T D basis and basis^T W w = basis^T w - basis^T D w, so only the
    pixels with an entry whose weight is below 1 are gathered, and only they are whitened.

    Args:
        coefficients: (k, m) basis^T w, updated; whitened: pixel indices (m',) -> their whitened entries w,
            (B, m'); weights: (B, m); basis: (B, k) orthonormal.
    """
    bands, rank = basis.shape
    pixels = np.flatnonzero((weights < 1.0).any(axis=0))
    outer = (basis[:, :, None] * basis[:, None, :]).reshape(bands, rank * rank)  # (B, k^2)
    for first in range(0, pixels.size, WEIGHTED_PIXELS):
        chosen = pixels[first : first + WEIGHTED_PIXELS]
        drop = 1.0 - weights[:, chosen]  # (B, m')
        normal = np.eye(rank) - (drop.T @ outer).reshape(-1, rank, rank)
        rhs = coefficients[:, chosen] - basis.T @ (drop * whitened(chosen))
        coefficients[:, chosen] = np.linalg.solve(normal, rhs.T[:, :, None])[:, :, 0].T


def back_project(eigen_images: np.ndarray, subspace: Subspace) -> np.ndarray:
    """Map eigen-images back to bands: mean + sigma * (basis @ eigen_images), or intercept + loadings @ them.

    Args:
        eigen_images: (k, h, w) in whitened units.
        subspace: the fitted model.

    Returns:
        (B, h, w) float64 in data units.
    """
    rank, height, width = eigen_images.shape
    offset, loadings = synthesis(subspace)
    data = loadings @ eigen_images.reshape(rank, -1)
    data += offset[:, None]
    return data.reshape(subspace.band_count, height, width)


def synthesis(subspace: Subspace) -> tuple[np.ndarray, np.ndarray]:
    """The affine map :func:`back_project` applies: data = offset + loadings @ eigen_images.

    Returns:
        offset (B,) and loadings (B, k), data units: (intercept, loadings) where the subspace has them, else
        (mean, sigma * basis).
    """
    if subspace.loadings is not None and subspace.intercept is not None:
        return subspace.intercept, subspace.loadings
    return subspace.mean, subspace.sigma[:, None] * subspace.basis

