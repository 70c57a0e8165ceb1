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
(integer data repeats every value; a saturated one repeats far more) *and*, in quantised data, than the values
beside them (a dark region piles its entries on a few adjacent counts: a peak, not a spike).
:meth:`StuckValues.mask` marks those entries in any pixels; the band regression leaves them out
(:func:`hsidenoise.subspace.noise_estimate.fit_band_regression`) and every tile treats them as missing, imputed from
the pixel's other bands
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
every value), and, in quantised data, than either neighbouring value on the band's lattice
(:func:`_above_lattice_neighbours`). Measured against the median count of the neighbouring values instead of the
mean, more pile-ups are found (an impulse shifted by a stripe) and a HYDICE cube with mixture noise lost 2 dB, so
the plain mean stays."""


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


def empty_pixels(stuck: StuckValues | None, stuck_entries: np.ndarray) -> np.ndarray:
    """(m,) bool: the pixels whose every band holds one of its stuck values.

    Such a pixel measured nothing: a region filled with a no-data spectrum (the MUUFL Gulfport cube's triangle
    outside its flight line holds one constant per band), or saturated in every band. Imputing it from its other
    bands imputes it from nothing (the mean spectrum), so the tiles give it back as read. The fit keeps it (as
    stuck entries, imputed): left out of the sample it raised the rank on mixed noise and lost up to 0.26 dB on the
    valid pixels (bench/README.md, "No-data pixels").

    Args:
        stuck: the band-wide stuck values, or None (no pixel is empty); stuck_entries: (B, m) bool, their
            :meth:`StuckValues.mask` on band-major pixels.
    """
    if stuck is None or not all(values.size for values in stuck.values):
        return np.zeros(stuck_entries.shape[1], bool)
    return stuck_entries.all(axis=0)


def find_stuck_values(spectra: np.ndarray) -> StuckValues:
    """The values on which entries pile up, per band, in a pixel sample.

    Args:
        spectra: (n, B) finite pixel samples in data units.

    Returns:
        The :class:`StuckValues` of each band: values held by at least ``max(STUCK_MIN_COUNT, STUCK_SHARE * n)``
        entries and :data:`STUCK_MULTIPLICITY` times the band's mean multiplicity (n / distinct values) and, where
        fewer than :data:`CONTINUOUS_DISTINCT_SHARE` of the entries are distinct, that times the count of either
        neighbouring value on the band's lattice.
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
        if stuck.any() and distinct.size < CONTINUOUS_DISTINCT_SHARE * n:  # quantised data: a spike, not a peak
            stuck &= _above_lattice_neighbours(distinct, counts)
        values.append(distinct[stuck].astype(np.float64))
        shares.append(counts[stuck] / n)
    return StuckValues(values=tuple(values), shares=tuple(shares))


def _above_lattice_neighbours(distinct: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """(k,) bool: the values of a quantised band held :data:`STUCK_MULTIPLICITY` times more often than either
    neighbour on the band's lattice (its smallest step between distinct values; an absent neighbour counts 0).

    In integer data the band-wide mean multiplicity is no yardstick where a large dark region piles its entries on a
    few values: the ABU beach cubes' water holds 30 to 60 % of a band on two or three adjacent counts, which were
    all taken for stuck values, so that half of every band's entries were imputed from the other bands. A
    saturated or dead element stands alone above its neighbouring counts; the peak of a narrow distribution does not.

    Args:
        distinct: (k,) sorted distinct values of one band; counts: (k,) how often each occurs.
    """
    if distinct.size < 2:
        return np.ones(distinct.size, bool)
    step = float(np.diff(distinct).min())
    neighbours = np.zeros(distinct.size)
    for shift in (-step, step):
        target = distinct + shift
        index = np.minimum(np.searchsorted(distinct, target - 0.5 * step), distinct.size - 1)
        found = np.abs(distinct[index] - target) <= 0.5 * step
        neighbours = np.maximum(neighbours, np.where(found, counts[index], 0))
    return counts >= STUCK_MULTIPLICITY * neighbours


LINE_PILEUP_SHARE = 0.1
"""In a band that has stuck values, a value is stuck in one column (or row) of the pixel sample when it holds at
least this share of the line's sampled entries (and :data:`STUCK_MIN_COUNT`, and :data:`STUCK_MULTIPLICITY` times
the median count of the line's values: integer data repeats every value)."""
CONTINUOUS_LINE_PILEUP = (0.03, 3, 3.0)
"""(share, fewest entries, multiplicity) of a line pile-up in a band whose values are continuous
(:data:`CONTINUOUS_DISTINCT_SHARE`): there three exact repeats of one value in one line are no noise. An impulse
band hit at density p has about p / 2 of a striped column at each of its two shifted values (5 of the 100 sampled
entries of a column of a 100 x 100 cube at p = 0.1), which the settings above (10 %, 8 entries, 20 times the median
count) miss: those impulses stayed in the fit's sample, 65 sigma off on a San Diego validation band, and the
subspace kept components for them. Measured (bench/README.md, "Impulses that a stripe shifted in sparsely hit
columns")."""
CONTINUOUS_DISTINCT_SHARE = 0.5
"""A band's values are continuous when at least this share of its sampled entries off its stuck values are distinct
(integer or otherwise quantised data repeat most of their values; the test's integer band: 4 %)."""
MIN_LINE_SAMPLE = 16
"""Lines with fewer sampled pixels are not searched for pile-ups."""


def with_line_pileups(stuck: StuckValues, spectra: np.ndarray, rows: np.ndarray, columns: np.ndarray) -> StuckValues:
    """``stuck`` plus, in each band that has stuck values, the values that pile up within one column (or row) of
    the sample.

    Impulse noise followed by a stripe (the order of the mixture protocol, and of a sensor whose detector offset
    drifts after saturation) puts a column's impulses at 0 + offset and 1 + offset: a pile-up in that column,
    too small a share of the band to pass :func:`find_stuck_values`. Left in the fit's sample they are impulses
    that no stuck value marks. Measured (`bench/mixture.py --seeds 2`, bench/README.md): impulse bands at
    p = 0.7 lose 2.1-5.7 dB instead of 4.7-10.5 on five of six cases, the whole mixture 0.24-0.79 dB less on five,
    0.08 more on San Diego seed 1. The tiles mark them only once their stripes are removed
    (:attr:`Subspace.line_stuck <hsidenoise.subspace.signal_subspace.Subspace>`; marked before the stripe search
    they cost San Diego seed 0 1.0 dB, 4.9 on the thirteenth session's front end), while
    :attr:`Subspace.stuck <hsidenoise.subspace.signal_subspace.Subspace>` keeps the band-wide values. Rows are
    searched the same way (a stripe along the rows shifts a row's impulses); the mixture protocol stripes columns
    only, so the rows change nothing there (tested on a synthetic cube). A band whose values are continuous
    (:func:`_is_continuous`) is searched with :data:`CONTINUOUS_LINE_PILEUP`, which also finds a sparsely hit
    band's shifted impulses; integer data with :data:`LINE_PILEUP_SHARE` and the band-wide search's count and
    multiplicity.

    Args:
        stuck: the band-wide stuck values (:func:`find_stuck_values`) of ``spectra``.
        spectra: (n, B) the pixel sample in data units; rows, columns: (n,) where each sampled pixel lies.

    Returns:
        A :class:`StuckValues` whose values include the line pile-ups (their ``shares`` 0: not band-wide).
    """
    spectra = np.asarray(spectra)
    lines = [(index, np.bincount(index)) for index in (np.asarray(columns), np.asarray(rows))]  # and pixels per line
    values, shares = list(stuck.values), list(stuck.shares)
    for band, known in enumerate(stuck.values):
        if not known.size:
            continue
        settings = CONTINUOUS_LINE_PILEUP if _is_continuous(spectra[:, band], known) else ()
        found = [_line_pileups(spectra[:, band], index, per_line, *settings) for index, per_line in lines]
        extra = np.setdiff1d(np.concatenate(found), known)
        if extra.size:
            merged = np.concatenate([known, extra])
            order = np.argsort(merged, kind="stable")
            values[band] = merged[order]
            shares[band] = np.concatenate([shares[band], np.zeros(extra.size)])[order]
    return StuckValues(values=tuple(values), shares=tuple(shares))


def _is_continuous(band: np.ndarray, known: np.ndarray) -> bool:
    """Whether at least :data:`CONTINUOUS_DISTINCT_SHARE` of a band's (n,) entries off its ``known`` stuck values are
    distinct (continuous data; integer data repeat most of their values)."""
    kept = band[~np.isin(band, known)]
    return kept.size > 0 and np.unique(kept).size >= CONTINUOUS_DISTINCT_SHARE * kept.size


def _line_pileups(
    band: np.ndarray,
    lines: np.ndarray,
    per_line: np.ndarray,
    share: float = LINE_PILEUP_SHARE,
    min_count: int = STUCK_MIN_COUNT,
    multiplicity: float = STUCK_MULTIPLICITY,
) -> np.ndarray:
    """The values of one band's (n,) sample that pile up within a line (``share`` of its entries, at least
    ``min_count`` of them and ``multiplicity`` times the line's median count of a value), float64.

    ``lines``: (n,) the line (column or row) of each entry; ``per_line``: entries per line. Vectorised over the
    lines: the entries sorted by (line, value), each run of one value in one line counted, and each line's median
    run length found in the runs sorted by (line, length).
    """
    order = np.lexsort((band, lines))
    ordered_lines, ordered = lines[order], band[order]
    starts = np.flatnonzero(np.r_[True, (np.diff(ordered_lines) != 0) | (np.diff(ordered) != 0)])
    lengths = np.diff(np.r_[starts, ordered.size])  # (runs,)
    run_lines = ordered_lines[starts]
    distinct = np.bincount(run_lines, minlength=per_line.size)  # runs per line
    by_length = lengths[np.lexsort((lengths, run_lines))]  # runs sorted by line, then length
    present = np.flatnonzero(distinct)
    first, count = (np.cumsum(distinct) - distinct)[present], distinct[present]
    middle = np.zeros(distinct.size)  # each line's median run length
    middle[present] = 0.5 * (by_length[first + (count - 1) // 2] + by_length[first + count // 2])
    samples = per_line[run_lines]
    pile = (
        (samples >= MIN_LINE_SAMPLE)
        & (lengths >= np.maximum(min_count, share * samples))
        & (lengths >= multiplicity * middle[run_lines])
    )
    return np.unique(ordered[starts[pile]]).astype(np.float64)
