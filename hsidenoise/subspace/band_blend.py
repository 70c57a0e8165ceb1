"""Step 6, guarded: per band, how much of a learned eigen-image denoiser's change to keep, chosen by SURE.

A learned eigen-image denoiser (the DCT-CSC of ``--method decsc``) returns the front end it starts from (FE,
inside the model), its change x* - FE, and how that change responds to a small move of its input. Back in bands, the
change of band b is delta_b = L_b (x* - FE) (L the synthesis rows, :func:`~hsidenoise.subspace.projection.synthesis`)
and the output is FE_b + beta_b delta_b with the beta_b in [0, :data:`BETA_MAX`] that minimises Stein's unbiased
risk estimate of the band's mean squared error, over the entries n_b of the tile that the front end did not
replace or destripe (where the noise is the Gaussian noise of sigma_b):

    SURE_b(beta) = ||FE_b + beta delta_b - y_b||^2 - n_b sigma_b^2 + 2 sigma_b^2 div_b(FE_b + beta delta_b),

quadratic in beta, so

    beta_b = clip(-(<delta_b, FE_b - y_b> + sigma_b^2 div_b(delta_b)) / ||delta_b||^2, 0, BETA_MAX).

The noise energy cancels between the two outputs, so unlike an MPSNR estimate (which needs sigma_b to a few
hundredths of a per cent, ``bench/README.md``) this choice needs sigma_b only in the divergence term, where a
sigma_b too high (the quiet bands) only makes it keep less of the change. div_b(delta_b) = sum_p d delta_b(p) /
d y_b(p) over the kept entries, the derivative of the band's change with respect to its own input, is estimated by
Monte Carlo in band space (Ramani, Blu and Unser 2008): the kept entries of every band move by h sigma_b probe_b (a
Rademacher probe, :func:`band_probe`), the model runs again on the eigen-images so moved
(:func:`probe_perturbation`; its hard thresholds free to move too), and sum_p probe_b(p) (L r)_b(p) / (h sigma_b),
r the change's response, estimates div_b (without bias up to the finite step h, for the model given the cleaned
tile: the paths through the tile cleaning, imputed entries and stripe offsets, are left out), every cross-component
term of the coupling and the hard thresholds' jumps included (:func:`band_divergence`). A per-band blend matches
MPSNR, the mean of the bands' PSNR: every band's own error is what is minimised. Measured (``bench/README.md``):
the shipped weights' gain held or raised on the cubes where the change helps, the cases where it hurt turned into
gains or nothing, and no band far below the front end.

Shapes: tiles (B, h, w); eigen-images (k, h, w); per-band vectors (B,).
"""

from __future__ import annotations

import numpy as np

from hsidenoise.subspace.projection import reweight, synthesis
from hsidenoise.subspace.signal_subspace import Subspace

DIVERGENCE_STEP = 1e-2
"""Finite-difference step of the divergence, in noise sigmas (small against the noise, large against float32's
rounding of the noise-sized change)."""
PROBE_SEED = 20261205
"""Seed of the Rademacher probe (the same for every tile: reproducible runs)."""
BETA_MAX = 1.0
"""The most of the change a band keeps: a blend between the two outputs, never an extrapolation beyond the
model's (measured: allowing 2 gains +0.02 to +0.04 dB on average in a whole-cube probe, but single bands lose
more)."""


def band_probe(kept: np.ndarray, seed: int = PROBE_SEED) -> np.ndarray:
    """A Rademacher probe of a tile's kept entries: (B, h, w) float64, +-1 where ``kept``, 0 elsewhere."""
    signs = np.random.default_rng(seed).integers(0, 2, kept.shape) * 2.0 - 1.0
    return np.where(kept, signs, 0.0)


def probe_perturbation(
    probe: np.ndarray, subspace: Subspace, step: float = DIVERGENCE_STEP, weights: np.ndarray | None = None
) -> np.ndarray:
    """How the eigen-images move (k, h, w) when each band b of the tile moves by step sigma_b probe_b.

    Whitening divides band b by sigma_b, so they move by step basis^T probe (``step`` noise sigmas per
    component), or, where the projection weighted the pixel's imputed entries (``weights``, :func:`entry_weights
    <hsidenoise.subspace.projection.entry_weights>`), by the same weighted fit of step probe.
    """
    bands, height, width = probe.shape
    flat = probe.reshape(bands, -1)
    moved = step * (subspace.basis.T @ flat)
    if weights is not None:
        reweight(moved, lambda pixels: step * flat[:, pixels], weights.reshape(bands, -1), subspace.basis)
    return moved.reshape(subspace.rank, height, width)


def band_divergence(
    response: np.ndarray, subspace: Subspace, probe: np.ndarray, step: float = DIVERGENCE_STEP
) -> np.ndarray:
    """div_b(delta_b) (B,): one Monte-Carlo estimate of sum_p d delta_b(p) / d y_b(p) over the probe's entries.

    With the tile moved by step sigma_b probe_b in each band (:func:`probe_perturbation`) and the eigen-images'
    change responding by r, the bands' change moves by L r, and sum_p probe_b(p) (L r)_b(p) / (step sigma_b)
    estimates band b's divergence without bias: over the probe, the terms of other bands and other pixels
    average out.

    Args:
        response: (k, h, w) the eigen-images' change's response to :func:`probe_perturbation`'s move.
        subspace: the fitted model (its synthesis rows L and band sigma).
        probe: (B, h, w) :func:`band_probe`.
    """
    _, loadings = synthesis(subspace)  # (B, k)
    bands = probe.shape[0]
    moved = loadings @ response.reshape(response.shape[0], -1)  # (B, h w)
    return np.einsum("bp,bp->b", moved, probe.reshape(bands, -1)) / (step * subspace.sigma)


def blend_weights(
    noisy: np.ndarray,
    kept: np.ndarray,
    front: np.ndarray,
    change: np.ndarray,
    change_divergence: np.ndarray,
    sigma: np.ndarray,
    beta_max: float = BETA_MAX,
) -> np.ndarray:
    """beta_b (B,) minimising each band's SURE over its kept entries (module docstring).

    Args:
        noisy: (B, h, w) the tile as read; kept: (B, h, w) bool, the entries SURE may use.
        front: (B, h, w) the front end's output; change: (B, h, w) the model's output minus it.
        change_divergence: (B,) :func:`band_divergence`. sigma: (B,) Gaussian noise sigma, data units.

    Returns:
        (B,) float64 in [0, beta_max]; 0 where the change is zero on the kept entries.
    """
    bands = noisy.shape[0]
    kept = kept.reshape(bands, -1)
    delta = np.where(kept, change.reshape(bands, -1), 0.0)
    energy = np.einsum("bp,bp->b", delta, delta)
    cross = np.einsum("bp,bp->b", delta, front.reshape(bands, -1) - noisy.reshape(bands, -1))
    numerator = -(cross + np.asarray(sigma, dtype=np.float64) ** 2 * change_divergence)
    with np.errstate(divide="ignore", invalid="ignore"):
        beta = np.where(energy > 0, numerator / energy, 0.0)
    return np.clip(np.nan_to_num(beta, nan=0.0, posinf=beta_max, neginf=0.0), 0.0, beta_max)
