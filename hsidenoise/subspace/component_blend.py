"""Step 6, per band: how much of each component near the Marchenko-Pastur edge to keep, chosen by SURE.

The edge (:func:`~hsidenoise.subspace.signal_subspace.fit_subspace`) keeps a component for every band alike, and
near it that is wrong both ways. Measured on the validation cubes (``bench/quality.py``'s twelve cases, whole
cube as one tile, one component more or fewer for every band; bench/README.md): a component just below the edge
was worth +1.4 dB on one CAVE draw, while dropping the last kept one gained up to +0.2 dB on HYDICE and San Diego,
where single bands moved by -1.6 to +4.6 dB either way. So the choice belongs to each band: component j's term
in band b, L_bj f_j (L the synthesis rows, f_j the denoised eigen-image), helps the bands whose clean signal it
carries and adds a copy of its errors to the others.

For the :data:`WEAK_COMPONENTS` last kept components (never the first; only those within :data:`NEAR_EDGE` times
the edge) and up to :data:`EXTRA_COMPONENTS` below the edge whose eigenvector the sample determines well, band b's
output is

    x_b = front_b + sum_j beta_bj L_bj f_j,

front_b the back-projection of the other components, beta_b in [0, 1]^P chosen by Stein's unbiased risk estimate
of band b's error (:func:`~hsidenoise.subspace.band_blend.blend_weights`: a band moves from its default, 1 for a
kept component and 0 for one below the edge, toward SURE's minimum in proportion to SURE's confidence,
:data:`~hsidenoise.subspace.band_blend.CONFIDENCE_RAMP`; the noise energy cancels, so sigma_b enters only the
divergence term). The divergence of each term follows the band blend's: a Monte-Carlo probe of the tile's kept
entries through the cleaning's imputation and the eigen-image denoiser (one more call, on the offered components
only), and the fit's own response to the data (:mod:`~hsidenoise.subspace.fit_divergence`).

A component below the edge is offered only where its sample eigenvector is reliable: in the spiked covariance
model (Baik, Ben Arous and Peche 2005; Paul 2007; Benaych-Georges and Nadakuditi 2011), a whitened sample
eigenvalue lambda above the bulk edge (1 + sqrt(gamma))^2, gamma = B / n, comes from a population spike l with
lambda = l (1 + gamma / (l - 1)), and the sample eigenvector's squared cosine with the true one is
(1 - gamma / (l - 1)^2) / (1 + gamma / (l - 1)) (:func:`eigenvector_reliability`). Below :data:`RELIABILITY` its
loadings are mostly noise, which SURE (first order in the fit) does not see: offered anyway, such components were
added to bands they hurt (HYDICE and San Diego, where n / B is about 50; on CAVE, n / B = 2000, they are reliable).

Bands whose synthesis row was refitted by least absolute deviations
(:func:`~hsidenoise.subspace.signal_subspace.fit_loadings`: dense impulses, which SURE's Gaussian model does not
describe) keep the default.

Shapes: tiles (B, h, w); eigen-images (k, h, w); parts (P, ...).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from hsidenoise.subspace.band_blend import (
    CONFIDENCE_RAMP,
    DIVERGENCE_STEP,
    band_probe,
    probe_perturbation,
    sure_weights,
)
from hsidenoise.subspace.config import LowRankConfig
from hsidenoise.subspace.eigenimages import EigenImageDenoiser
from hsidenoise.subspace.fit_divergence import component_fit_divergence
from hsidenoise.subspace.outliers import CleanedTile
from hsidenoise.subspace.projection import back_project, synthesis
from hsidenoise.subspace.signal_subspace import Subspace

WEAK_COMPONENTS = 3
"""The last kept components offered to the blend (the first component never is)."""
EXTRA_COMPONENTS = 2
"""At most this many components below the edge are offered (the largest first), where reliable; never more than
``LowRankConfig.max_rank`` components in all."""
NEAR_EDGE = 4.0
"""A kept component is offered only if its whitened eigenvalue is at most this many times the edge. Where the rank
hit ``LowRankConfig.max_rank`` the last kept components are far above the edge: on the Santa Barbara example
(eigenvalues 6.3-7.8 against an edge of 1.45, real spatially correlated noise, which SURE's white-noise model does
not describe) SURE dropped them from 13 bands and the report then flagged one of them for losing 3.3 times its
noise. On the validation cases 4 changed MPSNR by -0.024 to 0.000 dB against no limit, 2 by -0.083 to +0.020."""
RELIABILITY = 0.9
"""Least squared cosine between a component's sample eigenvector and the true one (:func:`eigenvector_reliability`)
for a component below the edge to be offered. Measured on the twelve validation cases (whole cube as one tile,
bench/README.md): with every component below the edge offered, single bands lost up to 2.8 dB and HYDICE and San
Diego gained -0.03 to +0.07 dB; with 0.9, no case lower and CAVE's gains kept."""


def sample_ratio(subspace: Subspace, config: LowRankConfig) -> float:
    """gamma = B / n of the fit's sample, from its edge: edge = edge_margin (1 + sqrt(gamma))^2."""
    return max(math.sqrt(max(subspace.edge, 0.0) / config.edge_margin) - 1.0, 0.0) ** 2


def eigenvector_reliability(eigenvalue: float, gamma: float) -> float:
    """Squared cosine between the sample eigenvector of a whitened ``eigenvalue`` and its population eigenvector, in
    the spiked covariance model with unit noise and ratio ``gamma`` = B / n (module docstring); 0 at or below the
    bulk edge (1 + sqrt(gamma))^2, where no spike is detectable, and 1 for ``gamma`` = 0."""
    if gamma <= 0:
        return 1.0
    if not eigenvalue > (1.0 + math.sqrt(gamma)) ** 2:
        return 0.0
    # lambda = l (1 + gamma / (l - 1)): x = l - 1 solves x^2 - (lambda - 1 - gamma) x + gamma = 0, the larger root
    middle = eigenvalue - 1.0 - gamma
    spike = 0.5 * (middle + math.sqrt(max(middle * middle - 4.0 * gamma, 0.0)))
    return max(0.0, (1.0 - gamma / spike**2) / (1.0 + gamma / spike))


def offered_components(subspace: Subspace, config: LowRankConfig) -> tuple[list[int], list[int]]:
    """(kept, extra): the kept components offered to the blend (the last ones, near the edge) and the reliable ones
    below the edge, by index."""
    rank = subspace.rank
    near = NEAR_EDGE * subspace.edge
    kept = [j for j in range(max(1, rank - WEAK_COMPONENTS), rank) if subspace.eigenvalues[j] <= near]
    if subspace.eigenvectors is None:
        return kept, []
    gamma = sample_ratio(subspace, config)
    available = min(subspace.eigenvectors.shape[1], len(subspace.eigenvalues), config.max_rank)  # max_rank holds
    extra = []
    for index in range(rank, min(rank + EXTRA_COMPONENTS, available)):
        if eigenvector_reliability(float(subspace.eigenvalues[index]), gamma) < RELIABILITY:
            break  # eigenvalues descend: the next one is less reliable still
        extra.append(index)
    return kept, extra


def extended(subspace: Subspace, extra: list[int]) -> Subspace:
    """``subspace`` with the ``extra`` eigenvectors appended to its basis (each signed so that its largest loading is
    positive, as :func:`~hsidenoise.subspace.signal_subspace.fit_subspace` signs the kept ones) and plain synthesis
    rows sigma_b E_bj for them where the subspace has refitted rows."""
    if not extra:
        return subspace
    vectors = np.array(subspace.eigenvectors[:, extra], dtype=np.float64)
    signs = np.sign(vectors[np.abs(vectors).argmax(axis=0), np.arange(len(extra))])
    vectors *= np.where(signs == 0, 1.0, signs)
    basis = np.ascontiguousarray(np.concatenate([subspace.basis, vectors], axis=1))
    eigenvectors = np.array(subspace.eigenvectors, dtype=np.float64)
    eigenvectors[:, extra] = vectors
    loadings = subspace.loadings
    if loadings is not None:
        loadings = np.concatenate([loadings, subspace.sigma[:, None] * vectors], axis=1)
    return dataclasses.replace(subspace, basis=basis, eigenvectors=eigenvectors, loadings=loadings)


def blend_components(
    tile: np.ndarray,
    eigen_images: np.ndarray,
    denoised: np.ndarray,
    cleaned: CleanedTile,
    weights: np.ndarray | None,
    subspace: Subspace,
    config: LowRankConfig,
    eigen_denoiser: EigenImageDenoiser,
    *,
    perturbation: np.ndarray | None = None,
) -> tuple[np.ndarray, dict]:
    """The tile back in bands with the components near the edge weighted per band (module docstring).

    Args:
        tile: (B, h, w) the tile as read; eigen_images, denoised: (k, h, w) its eigen-images and the eigen-image
            denoiser's output for them; cleaned, weights: :func:`~hsidenoise.subspace.projection.clean_and_project`'s.
        subspace: the fitted model; config: the pipeline's settings; eigen_denoiser: what denoised the eigen-images
            (run again on the offered components: the probe, and the eigen-images below the edge).
        perturbation: (k + e, h, w) the band probe's move of the eigen-images and of the plain projections on the
            offered directions below the edge (:func:`~hsidenoise.subspace.band_blend.probe_perturbation` with
            ``extra`` the :func:`extended` basis's columns from the rank on), when the caller has it; None: made here.

    Returns:
        (B, h, w) float64 in data units, and facts: ``offered`` (component indices, P), ``beta`` (P, B).
    """
    kept_components, extra = offered_components(subspace, config)
    if not kept_components and not extra:
        return back_project(denoised, subspace), {}
    bands, height, width = tile.shape
    model = extended(subspace, extra)
    offered = kept_components + list(range(subspace.rank, subspace.rank + len(extra)))
    directions = model.basis[:, subspace.rank :] / subspace.sigma[:, None]  # (B, e): whitening folded in
    below = directions.T @ cleaned.values.reshape(bands, -1) - (directions.T @ subspace.mean)[:, None]
    below = below.reshape(len(extra), height, width)  # the plain projection of the cleaned tile
    kept = cleaned.untouched(tile)
    if perturbation is None:
        perturbation = probe_perturbation(
            band_probe(kept), subspace, weights=weights, cleaned=cleaned, extra=model.basis[:, subspace.rank :]
        )  # (k + e, h, w)
    images = np.concatenate([eigen_images[kept_components], below])  # (P, h, w)
    if extra:
        below_denoised = np.asarray(eigen_denoiser.denoise(below, 1.0), dtype=np.float64)
        outputs = np.concatenate([denoised[kept_components], below_denoised])
    else:
        outputs = np.asarray(denoised[kept_components], dtype=np.float64)
    responses = np.asarray(eigen_denoiser.denoise(images + perturbation[offered], 1.0), dtype=np.float64) - outputs
    _, loadings = synthesis(model)  # (B, k + e)
    # Hutchinson's trace of each offered eigen-image's own map (a per-image denoiser: no cross-component term)
    traces = np.einsum("ap,ap->a", perturbation[offered].reshape(len(offered), -1),
                       responses.reshape(len(offered), -1)) / DIVERGENCE_STEP**2  # fmt: skip
    divergence = (loadings[:, offered] * model.basis[:, offered] / model.sigma[:, None]).T * traces[:, None]  # (P, B)
    divergence += component_fit_divergence(cleaned.values, outputs, offered, model, centre=False)
    front_images = np.array(denoised, dtype=np.float64)
    front_images[kept_components] = 0.0
    front = back_project(front_images, subspace)
    # band b's part p is L_bp f_p: SURE's sums over the kept entries from the eigen-images' own (blend_weights' sums
    # without materialising the (P, B, h, w) parts)
    images_flat = outputs.reshape(len(offered), -1)  # (P, h w)
    rows = loadings[:, offered]  # (B, P)
    kept_flat = kept.reshape(bands, -1).astype(np.float64)
    products = (images_flat[:, None, :] * images_flat[None, :, :]).reshape(len(offered) ** 2, -1)
    gram = (kept_flat @ products.T).reshape(bands, len(offered), len(offered)) * rows[:, :, None] * rows[:, None, :]
    residual = np.subtract(front, tile).reshape(bands, -1)
    residual *= kept_flat  # only the kept entries
    sigma = subspace.gaussian_sigma if subspace.gaussian_sigma is not None else subspace.sigma
    linear = (residual @ images_flat.T) * rows + (np.asarray(sigma, dtype=np.float64) ** 2)[:, None] * divergence.T
    default = [1.0] * len(kept_components) + [0.0] * len(extra)
    beta = sure_weights(gram, linear, sigma, default=default, ramp=CONFIDENCE_RAMP)  # (P, B)
    beta[:, subspace.refitted_rows] = np.asarray(default)[:, None]  # dense impulses: outside SURE's model
    front += ((beta.T * rows) @ images_flat).reshape(bands, height, width)
    return front, {"offered": offered, "beta": beta}
