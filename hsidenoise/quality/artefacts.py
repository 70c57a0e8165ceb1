"""Per-band artefacts of a cube: how strong each band's row stripes, column stripes and noise are, and which
bands a profile plot should show.

:func:`measure_band_artefacts` measures (the method in words: :data:`STRIPE_MEASURE`, written into
``report.json``); :func:`choose_profile_bands` picks the bands with the strongest row and column stripes and the
strongest noise, each with the reason it was chosen (:class:`ProfileBand`). :mod:`hsidenoise.quality.plots` plots them.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from hsidenoise.errors import CubeShapeError
from hsidenoise.quality.metrics import estimate_noise_mad
from hsidenoise.quality.labels import nth

PROFILE_BAND_COUNT = 3
"""Bands in the profile plot when the caller names none: strongest stripes, strongest noise, the other stripes."""

MAD_TO_STD = 1.4826
"""Median absolute deviation -> standard deviation of a Gaussian."""

MEDIAN_NOISE_FACTOR = 1.2533
"""std of the median of n Gaussian samples over their std / sqrt(n), for large n (sqrt(pi / 2))."""

SPECTRAL_NEIGHBOURS = 2
"""Twice this many nearest bands give the line pattern taken as scene, not stripes (:func:`measure_band_artefacts`)."""

STRIPE_MEASURE = (
    "stripes: for each pair of adjacent rows (columns), the median over the line of their difference; of these "
    "steps, the part that the four spectrally nearest bands do not share (least-squares residual against "
    "their median: a shared pattern is the scene); its RMS / sqrt(2), less in quadrature what the band's random "
    "noise alone gives (1.2533 sigma / sqrt(line length)), divided by the band's contrast (1.4826 MAD of its "
    "values), sigma from the Immerkaer residual + MAD; noise (before and after): that sigma divided by the same "
    "contrast; the noisiest bands are ranked by spectral_noise_before: the HySime spectral regression's sigma of "
    "each band on the others, divided by the contrast (blind to spatial texture; the spatial noise where the "
    "regression cannot be fitted)"
)
"""How :func:`measure_band_artefacts` measures, in words (written into ``report.json``)."""


@dataclass(frozen=True)
class BandArtefacts:
    """Per-band stripe and noise strength of a (B, H, W) cube (:func:`measure_band_artefacts`).

    Stripe and noise strengths are relative to the band's contrast, so bands of different brightness compare.

    Attributes:
        row_stripes: (B,) RMS offset between adjacent rows that neither the scene (what the spectrally
            neighbouring bands share) nor the random noise explains, / contrast.
        column_stripes: (B,) the same between adjacent columns.
        noise: (B,) noise std / contrast.
        sigma: (B,) noise std in data units (:func:`hsidenoise.quality.metrics.estimate_noise_mad`, blind to stripes).
        contrast: (B,) 1.4826 MAD of the band's finite values (its std where the MAD is 0), data units;
            NaN for an empty band, 0 for a constant (dead) one.
    """

    row_stripes: np.ndarray
    column_stripes: np.ndarray
    noise: np.ndarray
    sigma: np.ndarray
    contrast: np.ndarray
    noise_kind: str = "noise"

    def of_band(self, band: int) -> dict[str, float]:
        return {
            "row_stripes": float(self.row_stripes[band]),
            "column_stripes": float(self.column_stripes[band]),
            "noise": float(self.noise[band]),
            "sigma": float(self.sigma[band]),
            "contrast": float(self.contrast[band]),
        }

    def with_noise(self, sigma: np.ndarray, kind: str = "spectral noise") -> BandArtefacts:
        """The same measures with the noise of another (B,) estimate (named ``kind`` in the reasons), relative to
        the same contrast."""
        sigma = np.asarray(sigma, dtype=np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            noise = sigma / np.where(self.contrast > 0, self.contrast, np.nan)
        return replace(self, noise=noise, sigma=sigma, noise_kind=kind)


def _line_steps(band: np.ndarray) -> tuple[np.ndarray, float]:
    """(H, W) -> the (H - 1,) steps between adjacent rows, about their median, and the median line length.

    The step between two rows is the median over the columns of their difference: scene edges that cross a
    row barely move it, a stripe (one offset per row) moves every column alike. The steps' median is taken
    off (a smooth gradient is scene). NaN steps where two rows share no finite pixel.
    """
    differences = np.diff(band, axis=0)
    finite = np.isfinite(differences)
    counts = finite.sum(axis=1)
    steps = np.median(differences, axis=1) if finite.all() else np.nanmedian(differences, axis=1)
    usable = counts > 0
    if usable.sum() < 2:
        return np.full(steps.shape, np.nan), 0.0
    steps = np.where(usable, steps - np.median(steps[usable]), np.nan)
    return steps, float(np.median(counts[usable]))


def _band_specific_offsets(
    steps: np.ndarray, lengths: np.ndarray, contrast: np.ndarray, sigma: np.ndarray
) -> np.ndarray:
    """(B, L) line steps -> (B,) RMS line offset that is the band's own, data units (NaN where unknown).

    The scene's edges along the lines are shared by spectrally neighbouring bands, a stripe pattern is not:
    the steps of the 2 x :data:`SPECTRAL_NEIGHBOURS` nearest valid bands (each scaled by its contrast; their
    median, so that one striped neighbour does not count as scene) are fitted to the band's steps by least
    squares, and only the residual counts. The offsets'
    RMS is the residual's / sqrt(2) (a step is the difference of two offsets), less in quadrature the spread
    that random noise alone leaves in a median of n differences (1.2533 sigma / sqrt(n)).
    """
    band_count = steps.shape[0]
    valid = np.isfinite(steps).sum(axis=1) >= 2
    valid &= np.isfinite(contrast) & (contrast > 0)
    normalised = np.where(valid[:, None], steps / np.where(valid, contrast, 1.0)[:, None], np.nan)
    offsets = np.full(band_count, np.nan)
    for band in np.flatnonzero(valid):
        own = steps[band]
        others = np.flatnonzero(valid)
        others = others[others != band]
        neighbours = others[np.argsort(np.abs(others - band), kind="stable")[: 2 * SPECTRAL_NEIGHBOURS]]
        residual = own
        if neighbours.size:
            shared = np.nanmedian(normalised[neighbours], axis=0)  # a striped neighbour does not leak in
            both = np.isfinite(own) & np.isfinite(shared)
            energy = float(np.dot(shared[both], shared[both]))
            if both.sum() >= 2 and energy > 0:
                residual = own[both] - float(np.dot(own[both], shared[both])) / energy * shared[both]
        residual = residual[np.isfinite(residual)]
        if residual.size < 2:
            continue
        rms = math.sqrt(float(np.mean(residual**2)) / 2.0)
        floor = MEDIAN_NOISE_FACTOR * sigma[band] / math.sqrt(lengths[band]) if math.isfinite(sigma[band]) else 0.0
        offsets[band] = math.sqrt(max(rms**2 - floor**2, 0.0))
    return offsets


def spectral_band_noise(cube: np.ndarray, exclude: Sequence[int] = ()) -> np.ndarray | None:
    """Each band's noise std from the HySime regression of the band on the others, over the cube's pixels.

    Unlike a spatial estimate it does not take fine texture for noise (on Santa Barbara the spatial estimate
    ranks textured near-infrared bands above the known low-SNR bands 2, 152 and 220; this one does not).

    Args:
        cube: (B, H, W); pixels with a non-finite value in a used band are left out.
        exclude: bands left out of the regression (dead or NaN bands); their sigma is NaN.

    Returns:
        (B,) sigma in the cube's units, or None when there are too few bands or pixels to fit the regression.
    """
    from hsidenoise.errors import HsiDenoiseError
    from hsidenoise.subspace import estimate_band_noise

    data = np.asarray(cube, dtype=np.float64)
    used = np.setdiff1d(np.arange(data.shape[0]), np.asarray(list(exclude), dtype=int))
    if used.size < 2:
        return None
    spectra = data[used].reshape(used.size, -1).T
    spectra = spectra[np.isfinite(spectra).all(axis=1)]
    if spectra.shape[0] <= 2 * used.size:
        return None
    try:
        sigma = estimate_band_noise(spectra)
    except HsiDenoiseError:
        return None
    full = np.full(data.shape[0], np.nan)
    full[used] = sigma
    return full


def measure_band_artefacts(cube: np.ndarray, sigma: np.ndarray | None = None) -> BandArtefacts:
    """Measure each band's row stripes, column stripes and noise (see :data:`STRIPE_MEASURE`).

    Stripes are what a band has of its own: an offset pattern along the rows or columns shared with the
    spectrally neighbouring bands is the scene (fields, roads, a coastline) and does not count, and neither
    does the random noise. A pattern common to every band is therefore not measured as stripes.

    Args:
        cube: (B, H, W), any real dtype; non-finite pixels are left out.
        sigma: (B,) noise std of ``cube`` in its units; default :func:`hsidenoise.quality.metrics.estimate_noise_mad`.

    Returns:
        The (B,) measures; NaN where a band has too few finite pixels or no contrast.
    """
    data = np.asarray(cube)
    if data.ndim != 3:
        raise CubeShapeError(f"expected a (bands, rows, cols) cube, got shape {data.shape}")
    band_count, height, width = data.shape
    sigma = np.asarray(estimate_noise_mad(data) if sigma is None else sigma, dtype=np.float64)
    if sigma.shape != (band_count,):
        raise CubeShapeError(f"expected {band_count} noise values (one per band), got {sigma.size}")
    contrast = np.full(band_count, np.nan)
    row_steps, col_steps = np.full((band_count, height - 1), np.nan), np.full((band_count, width - 1), np.nan)
    row_lengths, col_lengths = np.zeros(band_count), np.zeros(band_count)
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN lines are skipped, as they should be
        for index in range(band_count):
            band = np.asarray(data[index], dtype=np.float64)
            finite = band[np.isfinite(band)]
            if finite.size < 4 or min(height, width) < 3:
                continue
            spread = MAD_TO_STD * float(np.median(np.abs(finite - np.median(finite))))
            contrast[index] = spread if spread > 0 else float(finite.std())
            if contrast[index] > 0:
                row_steps[index], row_lengths[index] = _line_steps(band)
                col_steps[index], col_lengths[index] = _line_steps(band.T)
        rows = _band_specific_offsets(row_steps, row_lengths, contrast, sigma)
        cols = _band_specific_offsets(col_steps, col_lengths, contrast, sigma)
    with np.errstate(invalid="ignore", divide="ignore"):
        scale = np.where(contrast > 0, contrast, np.nan)
        return BandArtefacts(rows / scale, cols / scale, sigma / scale, sigma, contrast)


@dataclass(frozen=True)
class ProfileBand:
    """A band of the profile plot and why it is there (``reason``, shown in the plot and the JSON)."""

    band: int
    reason: str


def _ordinal(rank: int) -> str:
    """0 -> "", 1 -> "2nd ", 2 -> "3rd ": the prefix of the (rank + 1)-th strongest."""
    return "" if rank == 0 else f"{nth(rank + 1)} "


def choose_profile_bands(
    artefacts: BandArtefacts, count: int = PROFILE_BAND_COUNT, *, exclude: Sequence[int] = ()
) -> list[ProfileBand]:
    """The bands worth a profile plot: the strongest stripes, the strongest noise, the other stripes' strongest.

    A stripe orientation measured at zero on every band is skipped, so a scene without stripes gets its
    noisiest bands.

    The stripe orientation (rows or columns) with the larger strongest value comes first; more bands repeat
    the round with the runners-up. Bands next to one already chosen (closer than B / 40) are passed over
    while others remain, so the plot does not show one artefact twice. A band that tops another measure too
    says so in its reason.

    Args:
        artefacts: :func:`measure_band_artefacts` of the input. count: bands at most.
        exclude: bands never chosen (dead or NaN bands the method left alone).

    Returns:
        Up to ``count`` bands in order of choice; none when no band has a finite measure.
    """
    band_count = artefacts.noise.size
    eligible = np.isfinite(artefacts.noise)
    eligible[[band for band in exclude if 0 <= band < band_count]] = False
    if not eligible.any():
        return []
    rows = ("strongest row stripes", "offsets", np.nan_to_num(artefacts.row_stripes, nan=-1.0))
    cols = ("strongest column stripes", "offsets", np.nan_to_num(artefacts.column_stripes, nan=-1.0))
    noisiest = ("noisiest", artefacts.noise_kind, artefacts.noise)
    row_first = rows[2][eligible].max() >= cols[2][eligible].max()
    criteria = (rows, noisiest, cols) if row_first else (cols, noisiest, rows)
    # an orientation with no stripe measured anywhere picks nothing: the noisiest bands fill its places
    criteria = tuple(c for c in criteria if c is noisiest or (c[2][eligible] > 0).any())
    ranking = {
        wording: [int(b) for b in np.argsort(-scores, kind="stable") if eligible[b]] for wording, _, scores in criteria
    }

    def describe(wording: str, what: str, scores: np.ndarray, band: int) -> str:
        ordinal = _ordinal(ranking[wording].index(band))
        text = wording.replace("strongest", f"{ordinal}strongest") if "strongest" in wording else f"{ordinal}{wording}"
        return f"{text} ({what} {max(float(scores[band]), 0.0):.2g} × band contrast)"

    separation = max(1, band_count // 40)
    chosen: list[ProfileBand] = []
    while len(chosen) < min(count, int(eligible.sum())):
        for wording, what, scores in criteria:
            if len(chosen) >= count:
                break
            candidates = [band for band in ranking[wording] if band not in {item.band for item in chosen}]
            if not candidates:
                break
            apart = [band for band in candidates if all(abs(band - item.band) >= separation for item in chosen)]
            band = (apart or candidates)[0]
            also = [describe(w, x, s, band) for w, x, s in criteria if w != wording and ranking[w][0] == band]
            chosen.append(ProfileBand(band, "; ".join([describe(wording, what, scores, band), *also])))
    return chosen
