"""Part of step 3, found once per cube: the values at which a band's entries are stuck.

Impulse noise, saturation and dead detector elements do not add to the signal, they replace it by one value:
the sensor's floor or ceiling (salt and pepper: 0 and 1 of a normalised cube; dead lines: 0). Such an entry
is often *not* an outlier against the other bands: with the band's Gaussian noise at 0.2 of the range, salt at 1
on a clean value of 0.6 is two noise deviations away, which no residual test can tell from noise, and impulse at
10 % to 70 % of a band's pixels then counts as heavy noise that bends the noise estimate, the subspace and every
pixel's projection. What gives it away is the pile-up: one exact value shared by a share of the band's entries
that continuous noise never produces.

:func:`find_stuck_values` finds, in the cube's pixel sample, each band's values that occur at least
:data:`STUCK_SHARE` of the time *and* :data:`STUCK_MULTIPLICITY` times more often than its values do on average
(integer data repeats every value; a saturated one repeats far more). :meth:`StuckValues.mask` marks those entries in any pixels; the band regression leaves them out (:func:`hsidenoise.subspace.noise_estimate.
fit_band_regression`) and every tile treats them as missing, imputed from the pixel's other bands
(:func:`hsidenoise.subspace.outliers.remove_outliers`).

Shapes: spectra are (n, B) pixel samples; band-major pixels are (B, m).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

STUCK_SHARE = 0.002
"""A value is stuck when it holds at least this fraction of a band's sampled entries (and :data:`STUCK_MIN_COUNT`)."""
STUCK_MIN_COUNT = 8
"""... and at least this many of them, so a small sample never declares a chance repeat stuck."""
STUCK_MULTIPLICITY = 20.0
"""... and occurs this many times more often than the band's distinct values do on average (integer data repeats
every value). Measured against the median count of the neighbouring values instead, more pile-ups are found (an
impulse shifted by a stripe) and a HYDICE cube with mixture noise lost 2 dB, so the plain mean stays."""


@dataclass(frozen=True, eq=False)
class StuckValues:
    """Per band, the exact values that mark an entry as replaced (impulse, saturation, dead element).

    Attributes:
        values: one sorted float64 array per band (empty for most bands).
        shares: one array per band, the fraction of the sample's entries holding each value.
    """

    values: tuple[np.ndarray, ...]
    shares: tuple[np.ndarray, ...]

    @property
    def band_count(self) -> int:
        return len(self.values)

    def any(self) -> bool:
        """Whether any band has a stuck value."""
        return any(band.size for band in self.values)

    def mask(self, pixels: np.ndarray) -> np.ndarray:
        """Where band-major pixels hold their band's stuck values.

        Args:
            pixels: (B, m) band-major pixels in data units (any float or integer dtype).

        Returns:
            (B, m) bool.
        """
        found = np.zeros(pixels.shape, bool)
        for band, values in enumerate(self.values):
            if values.size:
                found[band] = np.isin(pixels[band], values.astype(pixels.dtype, copy=False))
        return found


def find_stuck_values(spectra: np.ndarray) -> StuckValues:
    """The values on which entries pile up, per band, in a pixel sample.

    Args:
        spectra: (n, B) finite pixel samples in data units.

    Returns:
        The :class:`StuckValues` of each band: values held by at least ``max(STUCK_MIN_COUNT, STUCK_SHARE * n)``
        entries and :data:`STUCK_MULTIPLICITY` times the band's mean multiplicity (n / distinct values).
    """
    spectra = np.asarray(spectra)
    n, bands = spectra.shape
    values, shares = [], []
    least = max(STUCK_MIN_COUNT, STUCK_SHARE * n)
    # one sort of all bands; a band with fewer repeats in all than a pile-up needs cannot have one
    ordered = np.sort(spectra, axis=0)
    repeats = np.count_nonzero(ordered[1:] == ordered[:-1], axis=0)
    for band in range(bands):
        if repeats[band] + 1 < least:
            values.append(np.zeros(0, np.float64))
            shares.append(np.zeros(0, np.float64))
            continue
        distinct, counts = np.unique(ordered[:, band], return_counts=True)
        stuck = (counts >= least) & (counts >= STUCK_MULTIPLICITY * n / max(distinct.size, 1))
        values.append(distinct[stuck].astype(np.float64))
        shares.append(counts[stuck] / n)
    return StuckValues(values=tuple(values), shares=tuple(shares))
