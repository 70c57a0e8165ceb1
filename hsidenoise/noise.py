"""Synthetic noise recipes of the DECSC paper and its peers, seeded and fast enough for on-the-fly training.

Every recipe works on a clean cube normalised to [0, 1] (see :func:`normalise_cube`) and states its
Gaussian levels on the customary 0-255 scale: ``sigma = 30`` means a standard deviation of 30/255.

Recipes (``NOISES``; the literature behind each one is in
``shared/reference/peers-and-conventions.md`` section 4):

- ``gauss``: i.i.d. Gaussian, one sigma = ``sigma_max`` for every band.
- ``noniid``: DECSC's "non-i.i.d. [0, sigma_max]" (``AddNoiseDynamic``): sigma_b = U(0, 1) * sigma_max,
  drawn independently per band from a *continuous* uniform.
- ``corr``: Bodrito et al. (T3SC) "spectrally correlated variance", DECSC Eq. (26):
  sigma_i = beta * exp(-(i / B - 1/2)^2 / (4 eta^2)), i = 0..B-1, beta = 23.08, eta = 0.157.
  The bell is fixed by ``corr_beta`` / ``corr_eta``; ``sigma_max`` does NOT enter it (the paper's
  corr case has a peak of 23.08, far below the default sigma_max of 95). Change ``corr_beta`` to scale it.
- ``stripe``, ``deadline``, ``impulse``: ``noniid`` base noise, then the structured noise on
  floor(B/3) random bands (at least one band):
  stripe adds a column-constant offset U(-amplitude, amplitude) to 5-15 % of the columns;
  deadline sets 5-15 % of the columns to 0; impulse turns each pixel, with a probability drawn per band
  from {0.1, 0.3, 0.5, 0.7}, into salt (1) or pepper (0) with equal odds.
- ``mixture``: ``noniid`` base, then impulse, stripe and deadline, each on its own floor(B/3) bands.
  By default each of the three draws its band subset independently, so the groups may overlap: this is
  the SSUMamba code of the DECSC authors' group (``disjoint=False``). ``disjoint=True`` splits one band
  permutation into three disjoint thirds, as QRNN3D's MATLAB test sets do.

The number of stripe/deadline columns per band is a uniform integer in
[ceil(0.05 W), floor(0.15 W)] (clamped to [1, W]); for W = 512 that is 26-76, between the peers'
Python (25-75) and MATLAB (26-77) ranges.

Same generator state, same output: every random draw comes from the ``rng`` passed in, in a fixed order.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from hsidenoise.errors import ConfigError, CubeShapeError

logger = logging.getLogger(__name__)

SIGMA_SCALE = 255.0
"""Gaussian levels are given on the 0-255 scale and divided by this for [0, 1] data."""


@dataclass(frozen=True)
class NoiseSpec:
    """One synthetic noise case.

    Attributes:
        recipe: a key of :data:`NOISES`.
        sigma_max: Gaussian level on the 0-255 scale: the sigma of ``gauss``, the upper end of the
            per-band uniform of every other recipe except ``corr`` (which ignores it).
        disjoint: ``mixture`` only: True puts impulse, stripe and deadline on three disjoint thirds of the
            bands (QRNN3D), False lets each draw its own third (SSUMamba / DECSC code, the default).
        column_fraction: (low, high) fraction of the columns hit by a stripe or a deadline in one band.
        stripe_amplitude: stripe offsets are U(-amplitude, amplitude), in [0, 1] data units.
        impulse_densities: per band, the salt-and-pepper probability is drawn from these.
        corr_beta: peak sigma of the ``corr`` bell, 0-255 scale.
        corr_eta: width of the ``corr`` bell (in units of the band axis normalised to [0, 1]).
    """

    recipe: str
    sigma_max: float = 95.0
    disjoint: bool = False
    column_fraction: tuple[float, float] = (0.05, 0.15)
    stripe_amplitude: float = 0.25
    impulse_densities: tuple[float, ...] = (0.1, 0.3, 0.5, 0.7)
    corr_beta: float = 23.08
    corr_eta: float = 0.157

    def __post_init__(self) -> None:
        get_noise(self.recipe)
        if not (math.isfinite(self.sigma_max) and self.sigma_max >= 0):
            raise ConfigError(f"sigma_max must be a finite number >= 0 on the 0-255 scale, got {self.sigma_max}")
        low, high = self.column_fraction
        if not 0 <= low <= high <= 1:
            raise ConfigError(f"column_fraction must satisfy 0 <= low <= high <= 1, got {self.column_fraction}")
        if not (math.isfinite(self.stripe_amplitude) and self.stripe_amplitude >= 0):
            raise ConfigError(f"stripe_amplitude must be finite and >= 0, got {self.stripe_amplitude}")
        if not self.impulse_densities or not all(0 <= d <= 1 for d in self.impulse_densities):
            raise ConfigError(
                f"impulse_densities must be a non-empty list of values in [0, 1], got {self.impulse_densities}"
            )
        if not (self.corr_beta >= 0 and self.corr_eta > 0):
            raise ConfigError(
                f"corr needs corr_beta >= 0 and corr_eta > 0, got beta={self.corr_beta}, eta={self.corr_eta}"
            )


@dataclass(frozen=True, eq=False)
class NoisyResult:
    """What a recipe produced.

    Attributes:
        noisy: (B, H, W) float32, not clipped (impulse pixels are exactly 0 or 1, deadlines exactly 0).
        sigma: (B,) float64, the Gaussian standard deviation used in each band, in [0, 1] data units.
        mask: (B, H, W) bool, True where impulse or deadline noise replaced the pixel; None for recipes
            that replace no pixel (gauss, noniid, corr, stripe).
        bands: structured-noise name (``"stripe"``, ``"deadline"``, ``"impulse"``) -> sorted band indices it hit.
    """

    noisy: np.ndarray
    sigma: np.ndarray
    mask: np.ndarray | None = None
    bands: dict[str, np.ndarray] = field(default_factory=dict)


Recipe = Callable[[np.ndarray, NoiseSpec, np.random.Generator], NoisyResult]


def normalise_cube(cube: np.ndarray, nodata: float | None = None) -> tuple[np.ndarray, float, float]:
    """Map a cube to [0, 1] with one (min, max) over all its valid values.

    Args:
        cube: (B, H, W) any numeric dtype; NaN/inf values and values equal to `nodata` are left out of the
            range; nodata values come back as NaN, NaN and inf as they were.
        nodata: the value that marks missing pixels (ENVI ``data ignore value``), or None.

    Returns:
        (x01, lo, hi): x01 (B, H, W) float32 = (cube - lo) / (hi - lo), non-finite where the input is not valid;
        a constant cube maps to 0; a cube without any valid value comes back as float32 (nodata as NaN) with
        lo = hi = NaN.
    """
    from hsidenoise.statistics import invalid_mask

    data = np.asarray(cube)
    valid = ~invalid_mask(data, nodata)
    if not valid.any():
        logger.warning("cube has no valid value; returned unnormalised")
        return np.where(np.isfinite(data), np.nan, data).astype(np.float32), math.nan, math.nan
    values = data[valid] if not valid.all() else data
    lo, hi = float(values.min()), float(values.max())
    span = hi - lo
    x01 = (data.astype(np.float64) - lo) / span if span > 0 else np.zeros(data.shape)
    x01[~valid] = np.nan
    if data.dtype.kind == "f":
        infinite = np.isinf(data)
        x01[infinite] = data[infinite]  # infinities stay what they were
    return x01.astype(np.float32), lo, hi


def correlated_sigmas(
    band_count: int, beta: float = NoiseSpec.corr_beta, eta: float = NoiseSpec.corr_eta
) -> np.ndarray:
    """DECSC Eq. (26) / T3SC: per-band sigma on the 0-255 scale.

    Returns:
        (B,) float64, sigma_i = beta * exp(-(i / B - 0.5)^2 / (4 eta^2)) for i = 0..B-1.
    """
    index = np.arange(band_count, dtype=np.float64)
    return beta * np.exp(-((index / band_count - 0.5) ** 2) / (4.0 * eta**2))


def _gaussian(clean: np.ndarray, sigma255: np.ndarray, rng: np.random.Generator) -> NoisyResult:
    """clean + N(0, (sigma255 / 255)^2) per band; the shared first step of every recipe."""
    sigma = np.asarray(sigma255, dtype=np.float64) / SIGMA_SCALE
    noise = rng.standard_normal(clean.shape, dtype=np.float32)
    noise *= sigma.astype(np.float32)[:, None, None]
    noise += clean
    return NoisyResult(noisy=noise, sigma=sigma)


def _noniid_base(clean: np.ndarray, spec: NoiseSpec, rng: np.random.Generator) -> NoisyResult:
    return _gaussian(clean, rng.uniform(0.0, 1.0, clean.shape[0]) * spec.sigma_max, rng)


def _structured_band_count(band_count: int) -> int:
    return max(1, band_count // 3) if band_count else 0


def _random_bands(band_count: int, rng: np.random.Generator) -> np.ndarray:
    return np.sort(rng.permutation(band_count)[: _structured_band_count(band_count)])


def _column_count(width: int, spec: NoiseSpec, rng: np.random.Generator) -> int:
    low = min(max(1, math.ceil(spec.column_fraction[0] * width)), width)
    high = min(max(low, math.floor(spec.column_fraction[1] * width)), width)
    return int(rng.integers(low, high + 1))


def _apply_stripes(noisy: np.ndarray, bands: np.ndarray, spec: NoiseSpec, rng: np.random.Generator) -> None:
    width = noisy.shape[2]
    for band in bands:
        columns = rng.permutation(width)[: _column_count(width, spec, rng)]
        offsets = rng.uniform(-spec.stripe_amplitude, spec.stripe_amplitude, columns.size)
        noisy[band][:, columns] += offsets.astype(np.float32)


def _apply_deadlines(
    noisy: np.ndarray, mask: np.ndarray, bands: np.ndarray, spec: NoiseSpec, rng: np.random.Generator
) -> None:
    width = noisy.shape[2]
    for band in bands:
        columns = rng.permutation(width)[: _column_count(width, spec, rng)]
        noisy[band][:, columns] = 0.0
        mask[band][:, columns] = True


def _apply_impulses(
    noisy: np.ndarray, mask: np.ndarray, bands: np.ndarray, spec: NoiseSpec, rng: np.random.Generator
) -> None:
    densities = np.asarray(spec.impulse_densities, dtype=np.float64)
    for band in bands:
        density = densities[rng.integers(densities.size)]
        hit = rng.random(noisy.shape[1:]) < density
        salt = rng.random(noisy.shape[1:]) < 0.5
        noisy[band][hit] = salt[hit].astype(np.float32)
        mask[band] |= hit


def iid_gaussian(clean: np.ndarray, spec: NoiseSpec, rng: np.random.Generator) -> NoisyResult:
    """``gauss``: one sigma = ``sigma_max`` / 255 in every band."""
    return _gaussian(clean, np.full(clean.shape[0], spec.sigma_max), rng)


def noniid_gaussian(clean: np.ndarray, spec: NoiseSpec, rng: np.random.Generator) -> NoisyResult:
    """``noniid``: sigma_b = U(0, 1) * ``sigma_max`` / 255, independently per band (DECSC's AddNoiseDynamic)."""
    return _noniid_base(clean, spec, rng)


def correlated_gaussian(clean: np.ndarray, spec: NoiseSpec, rng: np.random.Generator) -> NoisyResult:
    """``corr``: sigma from :func:`correlated_sigmas` (DECSC Eq. 26); ``sigma_max`` is not used."""
    return _gaussian(clean, correlated_sigmas(clean.shape[0], spec.corr_beta, spec.corr_eta), rng)


def stripe_noise(clean: np.ndarray, spec: NoiseSpec, rng: np.random.Generator) -> NoisyResult:
    """``stripe``: ``noniid`` base, then column-constant offsets on floor(B/3) random bands."""
    base = _noniid_base(clean, spec, rng)
    bands = _random_bands(clean.shape[0], rng)
    _apply_stripes(base.noisy, bands, spec, rng)
    return NoisyResult(base.noisy, base.sigma, None, {"stripe": bands})


def deadline_noise(clean: np.ndarray, spec: NoiseSpec, rng: np.random.Generator) -> NoisyResult:
    """``deadline``: ``noniid`` base, then zeroed columns on floor(B/3) random bands."""
    base = _noniid_base(clean, spec, rng)
    mask = np.zeros(clean.shape, dtype=bool)
    bands = _random_bands(clean.shape[0], rng)
    _apply_deadlines(base.noisy, mask, bands, spec, rng)
    return NoisyResult(base.noisy, base.sigma, mask, {"deadline": bands})


def impulse_noise(clean: np.ndarray, spec: NoiseSpec, rng: np.random.Generator) -> NoisyResult:
    """``impulse``: ``noniid`` base, then salt-and-pepper on floor(B/3) random bands."""
    base = _noniid_base(clean, spec, rng)
    mask = np.zeros(clean.shape, dtype=bool)
    bands = _random_bands(clean.shape[0], rng)
    _apply_impulses(base.noisy, mask, bands, spec, rng)
    return NoisyResult(base.noisy, base.sigma, mask, {"impulse": bands})


def mixture_noise(clean: np.ndarray, spec: NoiseSpec, rng: np.random.Generator) -> NoisyResult:
    """``mixture``: ``noniid`` base, then impulse, stripe and deadline, each on its own third of the bands.

    With ``spec.disjoint`` the thirds come from one permutation and never share a band; otherwise each
    noise draws its own subset (the groups may overlap). Applied in the SSUMamba order: impulse, stripe,
    deadline (so a deadline column is exactly 0 even where it crosses an impulse band).
    """
    band_count = clean.shape[0]
    base = _noniid_base(clean, spec, rng)
    mask = np.zeros(clean.shape, dtype=bool)
    if spec.disjoint:
        order = rng.permutation(band_count)
        third = _structured_band_count(band_count)
        groups = [np.sort(order[k * third : (k + 1) * third]) for k in range(3)]
    else:
        groups = [_random_bands(band_count, rng) for _ in range(3)]
    impulse_bands, stripe_bands, deadline_bands = groups
    _apply_impulses(base.noisy, mask, impulse_bands, spec, rng)
    _apply_stripes(base.noisy, stripe_bands, spec, rng)
    _apply_deadlines(base.noisy, mask, deadline_bands, spec, rng)
    return NoisyResult(
        base.noisy, base.sigma, mask, {"impulse": impulse_bands, "stripe": stripe_bands, "deadline": deadline_bands}
    )


NOISES: dict[str, Recipe] = {
    "gauss": iid_gaussian,
    "noniid": noniid_gaussian,
    "corr": correlated_gaussian,
    "stripe": stripe_noise,
    "deadline": deadline_noise,
    "impulse": impulse_noise,
    "mixture": mixture_noise,
}
"""Recipe name -> function ``(clean, spec, rng) -> NoisyResult``; the CLI's ``--recipe`` choices."""


def get_noise(name: str) -> Recipe:
    """The recipe called ``name``.

    Raises:
        ConfigError: ``name`` is not a key of :data:`NOISES`; the message lists the valid names.
    """
    try:
        return NOISES[name]
    except KeyError:
        raise ConfigError(f"unknown noise recipe {name!r}; choose one of: {', '.join(NOISES)}") from None


def add_noise(clean: np.ndarray, spec: NoiseSpec, rng: np.random.Generator) -> NoisyResult:
    """Corrupt a clean cube with the recipe in ``spec``; the input is never modified.

    Args:
        clean: (B, H, W) float in [0, 1] (see :func:`normalise_cube`); non-finite values mark missing pixels,
            which are copied to ``noisy`` unchanged (never noised, never in ``mask``).
        spec: which recipe and its parameters.
        rng: the only source of randomness; ``np.random.default_rng(seed)`` gives reproducible output.

    Returns:
        NoisyResult with ``noisy`` (B, H, W) float32, ``sigma`` (B,) in [0, 1] units, the replaced-pixel
        ``mask`` (or None) and the bands each structured noise hit.

    Raises:
        CubeShapeError: ``clean`` is not 3-D.
    """
    clean = np.asarray(clean)
    if clean.ndim != 3:
        raise CubeShapeError(f"add_noise expects a (bands, rows, cols) cube, got shape {clean.shape}; pass a 3-D array")
    clean = clean.astype(np.float32, copy=False)
    result = get_noise(spec.recipe)(clean, spec, rng)
    invalid = ~np.isfinite(clean)
    if invalid.any():  # missing pixels stay missing: no impulse or deadline writes a value into them
        result.noisy[invalid] = clean[invalid]
        if result.mask is not None:
            result.mask[invalid] = False
    return result
