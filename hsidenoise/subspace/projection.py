"""Steps 3 and 6 of the pipeline: a tile on the signal subspace (eigen-images) and back to bands.

:func:`project` cleans a tile (:func:`hsidenoise.subspace.outliers.remove_outliers`), whitens it by the
per-band sigma and projects it on the subspace: k eigen-images whose noise std is about 1 (exactly
:attr:`Subspace.component_noise` where the band sigmas are right; components leaning on quiet bands carry less,
:meth:`Subspace.component_noise_range`). :func:`back_project` maps
(denoised) eigen-images back: X = mean + sigma * (basis @ eigen-images), or the refitted intercept + loadings.

Shapes: tiles are (B, h, w); eigen-images are (k, h, w) in whitened units.
"""

from __future__ import annotations

import numpy as np

from hsidenoise.errors import CubeShapeError
from hsidenoise.subspace.config import LowRankConfig
from hsidenoise.subspace.outliers import remove_outliers
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
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`remove_outliers`, then :func:`whiten_and_project`.

    Returns:
        eigen-images (k, h, w), the cleaned tile (B, h, w) float64 and the entries replaced by their prediction
        (B, h, w) bool.

    Raises:
        CubeShapeError: as :func:`project`.
    """
    tile = _check_tile(tile, subspace)
    cleaned, missing = remove_outliers(tile, subspace, config, facts=facts)
    return whiten_and_project(cleaned, subspace), cleaned, missing


def whiten_and_project(cleaned: np.ndarray, subspace: Subspace) -> np.ndarray:
    """Eigen-images (k, h, w) of an already cleaned (B, h, w) tile: basis^T diag(1 / sigma) (x - mean)."""
    bands, height, width = cleaned.shape
    weights = subspace.basis.T / subspace.sigma[None, :]  # (k, B)
    eigen_images = weights @ cleaned.reshape(bands, -1)
    eigen_images -= (weights @ subspace.mean)[:, None]
    return eigen_images.reshape(subspace.rank, height, width)


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

