"""Training losses, by the names of :data:`hsidenoise.training.config.LOSSES`.

- ``mse``: mean squared error (band-window models: over the normalised window; subspace models: of the
  eigen-images in whitened units, :func:`eigen_mse`).
- ``logmse`` (band-window models): mean over examples of log(MSE_n).
- ``mpsnr``: minus the users' metric. MPSNR averages 10 log10(peak² / MSE_b) over bands, so its gradient weighs
  each band's error by 1 / MSE_b: the clean bands count far more than in a plain MSE. The whitened eigen-image
  MSE weighs band b's data-unit error by 1 / sigma_b² instead (the back-projection multiplies by sigma_b), a
  different weighting, which is why eigen-image gains of a few per cent came with MPSNR losses
  (``shared/reference/learned-eigenimage-notes.md``; issue 17 item 3). For a subspace model the eigen-images are
  mapped back to data units exactly as the pipeline does (:func:`hsidenoise.subspace.synthesis`) and compared
  with the clean crop, including what lies outside the subspace (:func:`back_projected_mpsnr`). The value is the
  mean over examples of the patch's -MPSNR in dB at peak 1; a band's peak only shifts its term by a constant.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from hsidenoise.training.subspace_pairs import EigenBatch

BAND_MSE_FLOOR = 1e-10
"""Added to every band's MSE (data units, squared) before the logarithm: a band the model gets exactly right
(a constant band, padding) neither gives -inf nor dominates the gradient (1e-10 is 100 dB at peak 1)."""


def eigen_mse(corrected: torch.Tensor, batch: EigenBatch) -> torch.Tensor:
    """Masked MSE of the eigen-images against the clean projection, whitened units, mean over real components
    and pixels.

    Args:
        corrected: (N, k, p, p) the model's eigen-images.
    """
    weights = batch.mask[:, :, None, None]
    pixels = corrected.shape[-1] * corrected.shape[-2]
    return ((corrected.float() - batch.target).square() * weights).sum() / (weights.sum() * pixels)


def band_mse(corrected: torch.Tensor, batch: EigenBatch) -> torch.Tensor:
    """Each band's MSE in data units after the pipeline's back-projection.

    Args:
        corrected: (N, k, p, p) the model's eigen-images (whitened units).

    Returns:
        (N, B) mean over the patch's pixels of (offset_b + loadings_b · corrected - clean_b)²; padded bands 0.
    """
    import torch

    predicted = torch.einsum("nbk,nkhw->nbhw", batch.loadings, corrected.float())
    return (predicted - batch.bands).square().mean(dim=(-2, -1)) * batch.band_mask


def back_projected_mpsnr(corrected: torch.Tensor, batch: EigenBatch) -> torch.Tensor:
    """The ``mpsnr`` loss of a subspace model: mean over examples of mean over real bands of 10 log10(MSE_b).

    Args:
        corrected: (N, k, p, p) the model's eigen-images (whitened units).

    Returns:
        A scalar: minus the mean patch MPSNR in dB at peak 1.
    """
    import torch

    per_band = 10.0 * torch.log10(band_mse(corrected, batch) + BAND_MSE_FLOOR)
    per_example = (per_band * batch.band_mask).sum(dim=1) / batch.band_mask.sum(dim=1)
    return per_example.mean()


def window_loss(name: str, output: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
    """A band-window model's loss.

    Args:
        name: ``mse``, ``logmse`` (mean over examples of log(MSE_n + 1e-10)) or ``mpsnr`` (mean over examples
            and bands of 10 log10(MSE_nb + :data:`BAND_MSE_FLOOR`); the window's normalisation is one affine map
            for all its bands, so this is -MPSNR up to a constant).
        output, clean: (N, B, H, W).
    """
    import torch

    if name == "mse":
        return torch.nn.functional.mse_loss(output, clean)
    if name == "mpsnr":
        per_band = (output - clean).square().mean(dim=(-2, -1))
        return (10.0 * torch.log10(per_band + BAND_MSE_FLOOR)).mean()
    per_example = (output - clean).square().flatten(1).mean(dim=1)
    return torch.log(per_example + 1e-10).mean()
