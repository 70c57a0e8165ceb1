"""Step 6, guarded: per band, how much of a learned eigen-image denoiser's change to keep, chosen by SURE.

A learned eigen-image denoiser (the DCT-CSC of ``--method decsc``) returns, besides its output x*, the front end
it starts from (FE, inside the model) and the divergence of its change x* - FE per component. Back in bands, the
change of band b is delta_b = L_b (x* - FE) (L the synthesis rows, :func:`~hsidenoise.subspace.projection.synthesis`)
and the output is FE_b + beta_b delta_b with the beta_b in [0, :data:`BETA_MAX`] that minimises Stein's unbiased
risk estimate of the band's mean squared error, over the entries n_b of the tile that the front end did not
replace or destripe (where the noise is the Gaussian noise of sigma_b):

    SURE_b(beta) = ||FE_b + beta delta_b - y_b||^2 - n_b sigma_b^2 + 2 sigma_b^2 div_b(FE_b + beta delta_b),

quadratic in beta, so

    beta_b = clip(-(<delta_b, FE_b - y_b> + sigma_b^2 div_b(delta_b)) / ||delta_b||^2, 0, BETA_MAX).

The noise energy cancels between the two outputs, so unlike an MPSNR estimate (which needs sigma_b to a few
hundredths of a per cent, ``bench/README.md``) this choice needs sigma_b only in the divergence term, where a
sigma_b too high (the quiet bands) only makes it keep less of the change. div_b(delta_b), the derivative of the
band's change with respect to its own input, is the mean-field sum of the components' divergences,
sum_i L_bi W_ib div_i (W = basis^T / sigma the whitening projection; div_i from one Monte-Carlo probe of the
model, :meth:`hsidenoise.model.dct_csc.DCTCSC.solve_with_divergence`), scaled by the band's share of kept entries;
it leaves out the cross-component terms that the coupling adds. A per-band blend matches MPSNR, the mean of the
bands' PSNR: every band's own error is what is minimised. Measured (``bench/README.md``): the shipped weights'
gain held or raised on the cubes where the change helps, the cases where it hurt turned into gains, and no band
far below the front end.

Shapes: tiles (B, h, w); eigen-images (k, h, w); per-band vectors (B,); per-component vectors (k,).
"""

from __future__ import annotations

import numpy as np

from hsidenoise.subspace.projection import synthesis
from hsidenoise.subspace.signal_subspace import Subspace

BETA_MAX = 1.0
"""The most of the change a band keeps: a blend between the two outputs, never an extrapolation beyond the
model's (measured: allowing 2 gains +0.02 to +0.04 dB on average in a whole-cube probe, but single bands lose
more)."""


def band_divergence(component_divergence: np.ndarray, subspace: Subspace, kept_share: np.ndarray) -> np.ndarray:
    """div_b(delta_b) (B,): sum_i L_bi W_ib div_i times the band's share of kept entries.

    Args:
        component_divergence: (k,) divergence of each eigen-image's change (over the whole tile).
        subspace: the fitted model (its synthesis rows L and whitening W).
        kept_share: (B,) fraction of the tile's entries in each band that enter SURE.
    """
    _, loadings = synthesis(subspace)  # (B, k)
    projection_rows = subspace.basis / subspace.sigma[:, None]  # (B, k): W^T
    return (loadings * projection_rows) @ np.asarray(component_divergence, dtype=np.float64) * kept_share


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
