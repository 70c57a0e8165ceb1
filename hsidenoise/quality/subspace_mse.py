"""The output's mean squared error per band, estimated without a reference in the front end's whitened subspace.

The subspace pipeline's output in band b is x_b = intercept_b + sum_j A_bj f_j(z), z the k eigen-images of the
(whitened, projected) input and f_j the eigen-image denoiser acting on eigen-image j alone. Its error splits in
two:

1. **Inside the subspace**: sum_j A_bj (f_j - c_j), c the clean cube's eigen-images. The eigen-images' noise
   n = z - c is Gaussian with the (k, k) covariance Sigma = W diag(sigma^2) W^T (W the projection rows, sigma the
   bands' Gaussian noise), and f_j depends on z_j only, so Stein's lemma gives, per pixel and pair (j, j'),
   E[(f_j - c_j)(f_j' - c_j')] = E[(f_j - z_j)(f_j' - z_j')] + Sigma_jj' (d_j + d_j' - 1), d_j the mean
   divergence of f_j (Monte-Carlo, Rademacher probes): SURE with the components' own noise levels and their
   covariance. The band's part is A_b M A_b^T.
2. **Outside the subspace**: the clean signal the projection drops. Its only trace in the data is the
   complement's energy beyond its noise, mean((y_b - Pi y_b)^2) - v_b(sigma^2): a small difference of two
   numbers of the size of sigma_b^2.

Both parts are linear in the bands' noise variances, so the uncertainty of sigma gives an interval
(:func:`hsidenoise.subspace.noise_estimate.sigma_bounds`: a quiet band, or one whose spectral and spatial
estimates disagree, has a sigma that no estimator here resolves and is bounded by [0, its estimate]; the others
by their standard error). Both mean squares also carry their sampling error over the window's pixels
(2 sqrt(2 / n) of the noise energy they average, the floor of any SURE). Measured on the validation cubes
(``bench/noreference.py --mpsnr``, bench/README.md): the part outside the subspace is most of the output's error
(its median share per band 0.5 to 1.0) at 0.1 to 0.4 % of sigma_b^2, far below what a 2 % uncertainty in sigma_b
resolves, so the interval spans many dB there and the estimate is withheld
(:func:`hsidenoise.quality.noreference.no_reference_quality` prints a number only when the interval is narrow).

Shapes: tiles are (B, h, w); eigen-images (k, h, w); per-band vectors (B,); per-component (k,).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from hsidenoise.errors import ConfigError, CubeShapeError


@dataclass(frozen=True)
class MseEstimateConfig:
    """Settings of :func:`estimate_subspace_mse`.

    Attributes:
        probes: Rademacher probes of the Monte-Carlo divergence (one eigen-image denoiser call each).
        step: finite-difference step of the divergence, in eigen-image noise sigmas.
        seed: seed of the probes.
    """

    probes: int = 2
    step: float = 1e-2
    seed: int = 0

    def __post_init__(self) -> None:
        if self.probes < 1:
            raise ConfigError(f"probes must be at least 1, got {self.probes}")
        if not (math.isfinite(self.step) and self.step > 0):
            raise ConfigError(f"step must be a finite number > 0, got {self.step}")


@dataclass(frozen=True, eq=False)
class SubspaceMseEstimate:
    """The output's MSE per band in a window, with the interval the noise estimate's uncertainty allows.

    Attributes:
        mse: (B,) point estimate, data units squared (inside + outside).
        low, high: (B,) the interval's ends (low may be 0: unbounded PSNR).
        inside: (B,) the part inside the subspace (SURE), point estimate.
        outside: (B,) the part outside it (complement energy beyond its noise, clipped at 0), point estimate.
        component_noise: (k,) each eigen-image's noise std implied by the band sigmas (sqrt of Sigma's diagonal).
        divergence: (k,) the eigen-image denoiser's mean divergence per component.
        unresolved_bands: bands whose sigma is only bounded by [0, estimate].
        cleaned_entries: entries of the window the front end replaced or corrected (impulses, dead lines, stuck
            values, and every entry of a band whose stripes it subtracted); SURE does not score those.
    """

    mse: np.ndarray
    low: np.ndarray
    high: np.ndarray
    inside: np.ndarray
    outside: np.ndarray
    component_noise: np.ndarray
    divergence: np.ndarray
    unresolved_bands: tuple[int, ...]
    cleaned_entries: int


def estimate_subspace_mse(
    tile: np.ndarray, front_end, config: MseEstimateConfig | None = None, *, stop_when_cleaned: bool = False
) -> SubspaceMseEstimate | None:
    """SURE inside the subspace plus the complement's excess energy, per band, on one window of the input.

    Args:
        tile: (B, h, w) the noisy window in the bands and units the prepared front end takes.
        front_end: a prepared :class:`hsidenoise.subspace.LowRankDenoiser` (``--method lowrank`` or the subspace
            ``decsc``); its eigen-image denoiser is run 1 + ``config.probes`` times on the window.
        config: settings; the defaults when None.
        stop_when_cleaned: return None, before the eigen-image denoiser runs, when the front end replaces or
            corrects entries of the window (the estimate would be withheld anyway; the report saves the time).

    Returns:
        The :class:`SubspaceMseEstimate` (None: see ``stop_when_cleaned``).

    Raises:
        ConfigError: the front end is not prepared.
        CubeShapeError: the window does not have the front end's bands.
    """
    from hsidenoise.subspace.noise_estimate import band_noise, sigma_bounds
    from hsidenoise.subspace.projection import back_project, clean_and_project

    config = config or MseEstimateConfig()
    subspace = front_end.subspace
    if subspace is None:
        raise ConfigError("the front end is not prepared: call prepare(stats) first")
    tile = np.asarray(tile, dtype=np.float32)
    bands, height, width = tile.shape
    if bands != subspace.band_count:
        raise CubeShapeError(f"the window has {bands} bands, the front end was fitted on {subspace.band_count}")
    facts: dict = {}
    eigen, cleaned_tile, _ = clean_and_project(tile, subspace, front_end.config, facts=facts)
    cleaned = cleaned_tile.values.reshape(bands, -1)
    weights = subspace.basis.T / subspace.sigma[None, :]  # (k, B): eigen-images = W (y - mean) where nothing is imputed
    # entries treated as outliers, and every entry of a band whose stripes were subtracted
    cleaned_entries = int(np.sum(facts.get("outlier_entries", 0))) + int(
        np.count_nonzero(np.asarray(facts.get("stripe_square_sum", 0.0)) > 0) * height * width
    )
    if stop_when_cleaned and cleaned_entries:
        return None
    denoiser = front_end.eigen_denoiser
    denoised = np.asarray(denoiser.denoise(eigen, 1.0), dtype=np.float64)
    rank = eigen.shape[0]
    pixels = height * width
    rng = np.random.default_rng(config.seed)
    divergence = np.zeros(rank)
    for _ in range(config.probes):
        probe = rng.integers(0, 2, size=eigen.shape).astype(np.float64) * 2.0 - 1.0
        moved = np.asarray(denoiser.denoise(eigen + config.step * probe, 1.0), dtype=np.float64)
        divergence += (probe * (moved - denoised)).reshape(rank, -1).mean(axis=1) / config.step
    divergence /= config.probes

    if subspace.loadings is not None:
        synthesis = subspace.loadings  # (B, k)
    else:
        synthesis = subspace.sigma[:, None] * subspace.basis
    gaussian = subspace.gaussian_sigma if subspace.gaussian_sigma is not None else subspace.sigma
    residual = (denoised - eigen).reshape(rank, -1)
    residual_products = residual @ residual.T / pixels  # (k, k)
    pair_divergence = divergence[:, None] + divergence[None, :] - 1.0  # (k, k)
    # inside_b = A_b (R + Sigma o D) A_b^T, Sigma = W diag(sigma^2) W^T: linear in each band's variance
    inside_constant = np.einsum("bj,jk,bk->b", synthesis, residual_products, synthesis)
    inside_gain = np.einsum("bj,jl,jk,kl,bk->bl", synthesis, weights, pair_divergence, weights, synthesis)  # (B, B)

    projection = synthesis @ weights  # (B, B): back_project(project(y)) = const + Pi y
    complement = cleaned - back_project(eigen, subspace).reshape(bands, -1)
    complement_energy = np.mean(complement**2, axis=1)
    # expected noise energy of (I - Pi) n: sigma_b^2 (1 - 2 Pi_bb) + sum_l Pi_bl^2 sigma_l^2
    outside_gain = projection**2
    outside_gain[np.diag_indices(bands)] += 1.0 - 2.0 * np.diag(projection)

    def extremes(gain: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(B,) smallest and largest of gain @ variance over the bands' variance intervals (linear: at the ends)."""
        at_low, at_high = gain * low_sigma**2, gain * high_sigma**2
        return np.minimum(at_low, at_high).sum(axis=1), np.maximum(at_low, at_high).sum(axis=1)

    spectral = band_noise(subspace.regression) if subspace.regression is not None else gaussian
    low_sigma, high_sigma, unresolved = sigma_bounds(
        gaussian, spectral, getattr(subspace.regression, "sample_count", None)
    )
    inside = inside_constant + inside_gain @ gaussian**2
    outside = complement_energy - outside_gain @ gaussian**2
    inside_least, inside_most = extremes(inside_gain)
    outside_least, outside_most = extremes(outside_gain)  # of the noise energy subtracted
    inside_low, inside_high = inside_constant + inside_least, inside_constant + inside_most
    outside_low, outside_high = complement_energy - outside_most, complement_energy - outside_least
    # two standard errors of each mean square over the window's pixels (a mean of n squared Gaussian values
    # of variance v has the standard error v sqrt(2 / n)): the complement's noise, and the eigen-images' noise
    # that the SURE data term averages (f - z is about -n where the denoiser smooths)
    sampling = 2.0 * math.sqrt(2.0 / pixels)
    covariance = (weights * gaussian[None, :] ** 2) @ weights.T  # (k, k) Sigma
    outside_error = sampling * (outside_gain @ gaussian**2)
    inside_error = sampling * np.einsum("bj,jk,bk->b", synthesis, covariance, synthesis)
    component_noise = np.sqrt(np.maximum(np.diag(covariance), 0.0))
    return SubspaceMseEstimate(
        mse=np.maximum(inside, 0.0) + np.maximum(outside, 0.0),
        low=np.maximum(inside_low - inside_error, 0.0) + np.maximum(outside_low - outside_error, 0.0),
        high=np.maximum(inside_high + inside_error, 0.0) + np.maximum(outside_high + outside_error, 0.0),
        inside=np.maximum(inside, 0.0),
        outside=np.maximum(outside, 0.0),
        component_noise=component_noise,
        divergence=divergence,
        unresolved_bands=tuple(int(b) for b in np.flatnonzero(unresolved)),
        cleaned_entries=cleaned_entries,
    )

