"""The fit's share of the band blend's divergence: how the subspace, fitted on the very pixels it denoises, follows
their noise.

The band blend's Monte-Carlo divergence (:func:`~hsidenoise.subspace.band_blend.subspace_divergence`) moves a
tile's entries with the fitted model held: its basis E, fitted on a sample of the same cube, does not move. But a
pixel in that sample moves E too, and with it the synthesis rows L_b = sigma_b E_b that carry the learned change d
(k eigen-images) back to band b: delta_b = L_b d. Left out, SURE's divergence read too high on the equilibrium's change
(``bench/README.md``: +0.18 +- 0.04 of its standard error over 12 noise draws, gone when the fit came from an
independent draw), so the blend kept too little of it.

First-order perturbation of a symmetric eigenproblem (e.g. Magnus and Neudecker, *Matrix Differential Calculus*,
ch. 8): with the whitened sample covariance C = (1 / n) sum_p w_p w_p^T, eigenpairs (lambda_j, e_j), a move of
pixel p's whitened entry w_bp moves C by (u_b w_p^T + w_p u_b^T) / n (u_b the unit vector of band b) and
eigenvector i by

    d e_i = sum_{j != i} e_j (e_j^T dC e_i) / (lambda_i - lambda_j),

so band b's row moves by d E_bi / d w_bp = (1 / n) sum_{j != i} e_jb (e_jb z_ip + e_ib z_jp) / (lambda_i - lambda_j),
with z_jp = e_j^T w_p the pixel's coordinate on eigenvector j. Summed over the tile's pixels against the change
(the divergence's trace, sum_p d delta_bp / d y_bp, y_bp = sigma_b w_bp):

    T_b = (1 / N) sum_{i < k} sum_{j >= k} [e_jb^2 <z_i, P d_i> + e_jb e_ib <z_j, P d_i>] / (lambda_i - lambda_j),

N the number of pixels the sample was drawn from (a tile pixel is in the sample with probability n / N, and its
share in C is then 1 / n), P the blend's centring along columns (:func:`~hsidenoise.subspace.band_blend.centre_lines`,
here over all of the tile's pixels). Only j outside the subspace enters: a rotation within the subspace moves the
rows and the eigen-images together and leaves delta as it was for a model that treats the components alike (measured:
with those terms too, the same MPSNR to 0.001 dB). Also left out: what the eigen-images' own move through the moved
basis makes the model do (its first-order expectation, from each component's own divergence, moved MPSNR by
0.001 dB), the noise estimate's share (not estimated) and the mean's (zero to first order: the covariance is
centred). Bands whose synthesis row was refitted by least absolute deviations
(:func:`~hsidenoise.subspace.signal_subspace.fit_loadings`) get no term: their row does not follow E.

Measured against a refit on the probed sample (rank held, a finite difference through the whole fit): the two
shift SURE's Stein statistic alike, and the analytic term has no probe noise of its own (``bench/README.md``).

Shapes: tiles (B, h, w); eigen-images (k, h, w); parts (P, k, h, w) -> (P, B).
"""

from __future__ import annotations

import numpy as np

from hsidenoise.subspace.band_blend import centre_columns
from hsidenoise.subspace.signal_subspace import Subspace

GAP_FLOOR = 1e-9
"""Eigenvalue gaps below this (relative to lambda_i) are left out: the derivative of a degenerate pair is not
defined (only possible where the rank was clipped inside a cluster of equal eigenvalues)."""


def fit_path_divergence(
    cleaned: np.ndarray, changes: np.ndarray, subspace: Subspace, component_weights: np.ndarray | None = None
) -> np.ndarray:
    """T (P, B): each part's divergence through the fitted basis (module docstring), to add to the band blend's
    Monte-Carlo divergence (:func:`~hsidenoise.subspace.band_blend.subspace_divergence`).

    Args:
        cleaned: (B, h, w) the tile after the cleaning, data units (what the projection whitened).
        changes: (P, k, h, w) the parts of the eigen-image denoiser's change, whitened units.
        subspace: the fitted model; without its ``eigenvectors`` and ``population`` the term is 0.
        component_weights: (B, k) the share of each component's change that each band keeps (the component blend's
            weights, :mod:`~hsidenoise.subspace.component_blend`), or None (all 1).

    Returns:
        (P, B) float64.
    """
    parts, rank = changes.shape[:2]
    bands = cleaned.shape[0]
    if subspace.eigenvectors is None or not subspace.population or rank >= bands:
        return np.zeros((parts, bands))
    whitened = (cleaned.reshape(bands, -1) - subspace.mean[:, None]) / subspace.sigma[:, None]  # (B, pixels)
    flat = centre_columns(changes).reshape(parts, rank, -1)  # P d
    # a[j, i] = <z_j, P d_i> for every eigenvector j: V^T (w (P d)^T), (B, k)
    inner = np.stack([subspace.eigenvectors.T @ (whitened @ flat[part].T) for part in range(parts)])
    return _through_basis(inner, subspace, component_weights)


def component_fit_divergence(
    cleaned: np.ndarray, images: np.ndarray, components: list[int], subspace: Subspace, *, centre: bool = True
) -> np.ndarray:
    """:func:`fit_path_divergence` for parts that each hold one component's image alone: part a is ``images[a]`` in
    component ``components[a]`` and zero in the others (the terms of :mod:`~hsidenoise.subspace.component_blend`),
    without building the (P, k, h, w) array.

    Args:
        cleaned: (B, h, w) data units; images: (P, h, w) whitened units; components: P indices below the rank.
        subspace: the fitted model. centre: the images centred along columns first (as the band blend's sums).

    Returns:
        (P, B) float64.
    """
    parts, rank = len(components), subspace.rank
    bands = cleaned.shape[0]
    if subspace.eigenvectors is None or not subspace.population or rank >= bands:
        return np.zeros((parts, bands))
    whitened = (cleaned.reshape(bands, -1) - subspace.mean[:, None]) / subspace.sigma[:, None]
    centred = (centre_columns(images) if centre else images).reshape(parts, -1)
    inner = np.zeros((parts, bands, rank))
    for part, component in enumerate(components):
        inner[part, :, component] = subspace.eigenvectors.T @ (whitened @ centred[part])
    return _through_basis(inner, subspace)


def _through_basis(inner: np.ndarray, subspace: Subspace, component_weights: np.ndarray | None = None) -> np.ndarray:
    """T (P, B) from a[j, i] = <z_j, P d_i> (P, B, k): the module docstring's sum over i < k <= j, each band's
    term of component i weighted by ``component_weights[b, i]`` (B, k) when given."""
    parts, bands, rank = inner.shape
    vectors, eigenvalues = subspace.eigenvectors, np.asarray(subspace.eigenvalues, dtype=np.float64)
    # gap[i, j] = 1 / (lambda_i - lambda_j) for i < k <= j, 0 where degenerate
    gap = eigenvalues[:rank, None] - eigenvalues[None, rank:]
    usable = np.abs(gap) > GAP_FLOOR * np.abs(eigenvalues[:rank, None])
    inverse = np.where(usable, 1.0 / np.where(usable, gap, 1.0), 0.0)  # (k, B - k)
    outside = vectors[:, rank:]  # (B, B - k)
    inside = vectors[:, :rank]  # (B, k)
    weighted_inside = inside if component_weights is None else inside * component_weights
    total = np.zeros((parts, bands))
    for part in range(parts):
        own = np.diagonal(inner[part, :rank])  # <z_i, P d_i>, (k,)
        cross = inner[part, rank:]  # <z_j, P d_i>, j outside, (B - k, k)
        own_terms = outside**2 @ (inverse * own[:, None]).T  # (B, k)
        if component_weights is not None:
            own_terms = own_terms * component_weights
        total[part] = own_terms.sum(axis=1)
        total[part] += np.einsum("bi,bj,ij->b", weighted_inside, outside, inverse * cross.T)
    total[:, subspace.refitted_rows] = 0.0  # rows refitted by least absolute deviations do not follow E
    return total / float(subspace.population)
