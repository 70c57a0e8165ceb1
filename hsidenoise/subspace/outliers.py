"""Step 3 of the pipeline, per tile: stripes, dead lines and impulses removed with the help of the other bands.

Constant columns and rows are dead lines (missing), and so are entries at a band's stuck values
(:mod:`hsidenoise.subspace.stuck_values`); per-band column and row offsets that stand out are stripes (subtracted);
entries that the other bands contradict are impulses (missing), unless their neighbourhood agrees with them;
missing entries are imputed from the other bands (:func:`hsidenoise.subspace.noise_estimate.clean_entries`) and,
where it checks out better, from the band's own neighbourhood (:mod:`hsidenoise.subspace.spatial_fill`).

Shapes: tiles are (B, h, w); band-major pixels are (B, h * w).
"""

from __future__ import annotations

import numpy as np

from hsidenoise.subspace.config import LowRankConfig
from hsidenoise.subspace.noise_estimate import BandRegression, clean_entries, fill_missing
from hsidenoise.subspace.signal_subspace import Subspace
from hsidenoise.subspace.spatial_fill import fill_from_neighbourhood

ROW_STRIPE_FACTOR = 2.0
"""Row stripes must stand out by this factor times ``stripe_threshold``: horizontal scene edges that the other
bands predict poorly leave row-median offsets (measured: 81 false row offsets on a 256 x 256 CAVE tile with
column-only mixture noise at the plain threshold, -0.9 dB), while sensors stripe mostly along the columns."""
HALF_COLUMN_FACTOR = 0.7
"""A stripe offset is kept only where each half of its column (top and bottom; left and right of a row) finds an
offset of the same sign at this factor times the threshold (:func:`_confirmed_stripe_offsets`). A sensor's stripe
runs the whole line; the column structure of a quiet band's residuals, signal that the other bands do not
predict, changes along it. Measured (`bench/mixture.py`, CAVE apples seed 0): the whole-column test alone removed
false offsets of up to 5.8 sigma from the kept entries of a band with sigma 2.7/255; confirmed by halves,
mixture MPSNR +0.28 dB there, +0.17 dB on San Diego seed 1, the other cases within 0.01 dB."""
MIN_HALF_LINE = 8
"""Lines shorter than twice this many entries are not split (:func:`_confirmed_stripe_offsets`)."""
COHERENT_FRACTION = 0.5
"""An outlying entry is protected when its neighbourhood's median residual reaches this share of the threshold."""


class _FilledResiduals:
    """A tile's entries with the known missing ones imputed, and their residuals, kept up to date as stripes go.

    ``values`` is ``observed`` with the known missing entries set to the band mean, then imputed by one
    Gauss-Seidel sweep (:func:`fill_missing`); ``residuals`` is ``regression.residuals(values)``. Subtracting
    offsets from ``observed`` changes both linearly, except in the pixels with a known missing entry, whose
    imputation depends on the other entries: those pixels are imputed again, the others updated. So the
    residuals cost one (B, B) x (B, m) product per tile instead of one per stripe search.

    Args:
        observed: (B, m) float64 band-major pixels (kept, updated in place); known: (B, m) bool.
    """

    def __init__(self, observed: np.ndarray, known: np.ndarray, regression: BandRegression) -> None:
        self.observed, self.known, self.regression = observed, known, regression
        self.touched = np.flatnonzero(known.any(axis=0))  # pixels with a known missing entry
        self._fill()

    def subtract(self, offsets: np.ndarray, shape: tuple[int, ...]) -> None:
        """Subtract ``offsets`` (broadcast to ``shape`` = (B, h, w): (B, 1, w) column or (B, h, 1) row offsets)."""
        bands = shape[0]
        self.observed.reshape(shape)[...] -= offsets
        self.values.reshape(shape)[...] -= offsets
        # the residuals' change: (B, B) x the distinct offset vectors, broadcast like them
        echo = (self.regression.coefficients.T @ offsets.reshape(bands, -1)).reshape(offsets.shape)
        self.residuals.reshape(shape)[...] -= echo
        touched = self.touched
        if 2 * touched.size > self.observed.shape[1]:  # most pixels: impute them all again, without gathering
            self._fill()
        elif touched.size:
            values = np.where(self.known[:, touched], self.regression.mean[:, None], self.observed[:, touched])
            fill_missing(values, self.known[:, touched], self.regression, 1)
            self.values[:, touched] = values
            self.residuals[:, touched] = self.regression.residuals(values)

    def _fill(self) -> None:
        regression = self.regression
        self.values = np.where(self.known, regression.mean[:, None], self.observed)
        fill_missing(self.values, self.known, regression, 1)
        # regression.residuals(values) without its centred copy: C^T values - C^T mean
        self.residuals = regression.coefficients.T @ self.values
        self.residuals -= (regression.coefficients.T @ regression.mean)[:, None]


def _line_medians(values: np.ndarray, missing: np.ndarray | None = None) -> np.ndarray:
    """The median over axis 1 of (B, h, w) ``values``, leaving out the ``missing`` ((B, h, w) bool) entries.

    The numbers of ``np.median(values, axis=1)`` (or ``np.nanmedian`` with the missing entries as NaN; NaN where
    a line has none), faster: one copy with the line axis last (contiguous). Without missing entries it is
    partitioned in place at the middle only (``np.median`` partitions at both middle positions, several times
    slower; the lower middle of an even line is the largest value below the split); with them, each line is
    sorted with its missing entries last and its two middle entries taken (``np.nanmedian`` goes through
    masked arrays).
    """
    lines = np.moveaxis(values, 1, -1).copy(order="C")  # (B, w, h)
    length = lines.shape[-1]
    if missing is None:
        half = length // 2
        lines.partition(half, axis=-1)
        upper = lines[..., half]
        if length % 2:
            return upper.copy()
        return 0.5 * (lines[..., :half].max(axis=-1) + upper)
    gaps = np.moveaxis(missing, 1, -1)
    np.copyto(lines, np.inf, where=gaps)
    lines.sort(axis=-1)
    count = length - gaps.sum(axis=-1)
    low = np.take_along_axis(lines, (np.maximum(count - 1, 0) // 2)[..., None], axis=-1)[..., 0]
    high = np.take_along_axis(lines, np.minimum(count // 2, length - 1)[..., None], axis=-1)[..., 0]
    with np.errstate(invalid="ignore"):
        return np.where(count > 0, 0.5 * (low + high), np.nan)


def _stripe_offsets(
    residuals: np.ndarray, missing: np.ndarray, regression: BandRegression, threshold: float
) -> np.ndarray:
    """Per-band column offsets (stripes) that explain the column structure of a tile's residuals.

    Each band's column medians (over rows not missing) are compared with the band's typical column (median
    over columns), with a spread that is the larger of the MAD over columns and the noise of a column
    median. As with entries, an offset in band j echoes, weaker in units of the residual scale, into the
    bands predicted from j; so per column the band with the largest deviation in those units is taken, its
    offset is removed from every band's deviation (rank-one update), and so on while the band taken stands
    out by more than ``threshold`` spreads.

    Args:
        residuals: (B, h, w); missing: (B, h, w) bool.

    Returns:
        (B, w) offsets to subtract from each column of each band (zero where there is no stripe).
    """
    bands, height, width = residuals.shape
    if missing.any():
        counts = height - np.count_nonzero(missing, axis=1)  # (B, w) entries not missing
        medians = np.where(counts > 0, _line_medians(residuals, missing), 0.0)
    else:
        counts = np.full((bands, width), height)
        medians = _line_medians(residuals)
    deviation = medians - np.median(medians, axis=1, keepdims=True)
    spread = 1.4826 * np.median(np.abs(deviation), axis=1, keepdims=True)
    spread = np.maximum(spread, 1.2533 * regression.residual_scale[:, None] / np.sqrt(np.maximum(counts, 1)))
    inverse_scale = 1.0 / regression.residual_scale[:, None]
    offsets = np.zeros((bands, width))
    found = counts == 0
    columns = np.arange(width)
    for _ in range(bands):
        with np.errstate(over="ignore"):  # against a near-zero scale an offset stands out, also as inf
            score = np.where(found, 0.0, np.abs(deviation) * inverse_scale)
        worst = score.argmax(axis=0)
        stands_out = np.abs(deviation[worst, columns]) > threshold * spread[worst, columns]
        striped = (score[worst, columns] > 0) & stands_out
        if not striped.any():
            break
        band, column = worst[striped], columns[striped]
        offset = deviation[band, column]
        offsets[band, column] += offset
        found[band, column] = True
        deviation[:, column] -= regression.coefficients[band, :].T * offset
    return offsets


def _confirmed_stripe_offsets(
    residuals: np.ndarray, missing: np.ndarray, regression: BandRegression, threshold: float
) -> np.ndarray:
    """:func:`_stripe_offsets` of whole columns, kept where both halves of the column agree.

    Each half (rows ``[0, h/2)`` and ``[h/2, h)``) is searched on its own at :data:`HALF_COLUMN_FACTOR` times the
    threshold (a half's column median is noisier by about sqrt(2)); an offset of the whole column stays where
    both halves find one of its sign.

    Args:
        residuals: (B, h, w); missing: (B, h, w) bool.

    Returns:
        (B, w) offsets, zero where there is no confirmed stripe.
    """
    offsets = _stripe_offsets(residuals, missing, regression, threshold)
    height = residuals.shape[1]
    if not offsets.any() or height < 2 * MIN_HALF_LINE:
        return offsets
    half = height // 2
    sign = np.sign(offsets)
    for rows in (slice(0, half), slice(half, height)):
        part = _stripe_offsets(residuals[:, rows], missing[:, rows], regression, HALF_COLUMN_FACTOR * threshold)
        sign = np.where(np.sign(part) == sign, sign, 0.0)
    return np.where(sign != 0, offsets, 0.0)


def _coherent_residuals(
    filled: _FilledResiduals, dead: np.ndarray, regression: BandRegression, config: LowRankConfig
) -> np.ndarray:
    """Outlying entries whose neighbourhood shares their residual: unusual signal, not noise.

    Impulses are isolated and dead lines and stripes are one column wide, so the median residual of a
    ``coherence_window`` square around them stays small. A region that the other bands predict poorly (a
    material seen in few pixels, a chromatic edge) keeps a large median of the same sign; replacing it by
    its prediction would erase real signal.

    Args:
        filled: the tile's entries (B, h * w), the known missing ones imputed, and their residuals;
        dead: (B, h, w) bool, the known missing entries.

    Returns:
        (B, h * w) bool, True where an entry is beyond ``outlier_threshold`` but the median of its
        neighbourhood's standardised residuals has its sign and at least :data:`COHERENT_FRACTION` of it.
    """
    from numpy.lib.stride_tricks import sliding_window_view

    bands, height, width = dead.shape
    protected = np.zeros((bands, height * width), bool)
    window = config.coherence_window
    if window < 2:
        return protected
    missing = dead.reshape(bands, -1)
    with np.errstate(over="ignore"):  # against a near-zero scale a residual is an outlier, also as inf
        standardised = filled.residuals / regression.residual_scale[:, None]
    standardised[missing] = 0.0
    band, pixel = np.nonzero(np.abs(standardised) > config.outlier_threshold)
    if band.size == 0:
        return protected
    half = window // 2
    padded = np.pad(standardised.reshape(bands, height, width), ((0, 0), (half, half), (half, half)), mode="symmetric")
    windows = sliding_window_view(padded, (window, window), axis=(1, 2))  # (B, h', w', window, window)
    local = np.median(windows[band, pixel // width, pixel % width].reshape(band.size, -1), axis=1)
    centre = standardised[band, pixel]
    keep = (np.sign(local) == np.sign(centre)) & (np.abs(local) >= COHERENT_FRACTION * config.outlier_threshold)
    protected[band[keep], pixel[keep]] = True
    return protected


def remove_outliers(
    tile: np.ndarray, subspace: Subspace, config: LowRankConfig | None = None, *, facts: dict | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Undo dead-line, stripe and impulse corruption of a tile with the help of the other bands.

    Dead lines: a column (or a row) whose standard deviation is below ``dead_line_fraction`` of the band's
    sigma is missing, and so is every entry at one of the band's stuck values (:attr:`Subspace.stuck`:
    impulse, saturation, dead elements). Stripes (:func:`_stripe_offsets`, ``robust_passes`` times, along
    the track and across it): column medians, then row medians, of the residuals, which impulses do not move,
    give the offsets to subtract, where both halves of the line confirm them (:func:`_confirmed_stripe_offsets`).
    Impulses
    (:func:`clean_entries`): entries the other bands contradict are missing, except where the whole
    neighbourhood agrees with them (:func:`_coherent_residuals`). Missing entries are imputed from the other bands,
    then, where a leave-one-out check finds it better, from the band's own neighbourhood
    (:func:`~hsidenoise.subspace.spatial_fill.fill_from_neighbourhood`).

    Args:
        tile: (B, h, w) in data units.
        subspace: the fitted model; without a regression (or with ``robust_passes == 0``) nothing changes.
        config: pipeline settings; the defaults when None.
        facts: when given, filled with this tile's per-band facts for the report: ``outlier_entries`` (B,)
            entries treated as outliers (``missing``), ``stripe_square_sum`` (B,) sum over the entries of the
            squared stripe offsets subtracted, and ``entries`` (h * w, entries per band).

    Returns:
        (cleaned (B, h, w) float64, missing (B, h, w) bool: the entries replaced by their prediction).
    """
    config = config or LowRankConfig()
    bands, height, width = tile.shape
    regression = subspace.regression
    if regression is None or config.robust_passes == 0 or bands < 2:
        if facts is not None:
            facts.update(outlier_entries=np.zeros(bands, np.int64), stripe_square_sum=np.zeros(bands), entries=height * width)
        return tile.astype(np.float64), np.zeros(tile.shape, bool)
    dead = np.zeros(tile.shape, bool)
    if height > 2:
        column_spread = tile.std(axis=1, dtype=np.float64)  # (B, w)
        dead |= (column_spread < config.dead_line_fraction * subspace.sigma[:, None])[:, None, :]
    if width > 2:
        row_spread = tile.std(axis=2, dtype=np.float64)  # (B, h)
        dead |= (row_spread < config.dead_line_fraction * subspace.sigma[:, None])[:, :, None]
    if subspace.stuck is not None and subspace.stuck.any():
        dead |= subspace.stuck.mask(tile.reshape(bands, -1)).reshape(tile.shape)
    known = dead.reshape(bands, -1)
    filled = _FilledResiduals(tile.astype(np.float64).reshape(bands, -1), known, regression)
    for _ in range(config.robust_passes if height >= 4 and width >= 4 else 0):
        found = False
        for axis in (1, 2):  # column stripes (constant along the rows), then row stripes
            residuals = filled.residuals.reshape(tile.shape)
            if axis == 2:
                residuals, missing_lines = residuals.transpose(0, 2, 1), dead.transpose(0, 2, 1)
            else:
                missing_lines = dead
            threshold = config.stripe_threshold * (1.0 if axis == 1 else ROW_STRIPE_FACTOR)
            offsets = _confirmed_stripe_offsets(residuals, missing_lines, regression, threshold)
            if offsets.any():
                found = True
                filled.subtract(offsets[:, None, :] if axis == 1 else offsets[:, :, None], tile.shape)
        if not found:
            break
    destriped = filled.observed.reshape(tile.shape)
    protected = _coherent_residuals(filled, dead, regression, config)
    cleaned, missing = clean_entries(filled.values, known, regression, config, protected, residuals=filled.residuals)
    cleaned = fill_from_neighbourhood(cleaned.reshape(tile.shape), missing.reshape(tile.shape), regression)
    if facts is not None:
        offsets = tile.astype(np.float64) - destriped  # (B, h, w) the stripe offsets subtracted, summed over passes
        facts.update(
            outlier_entries=missing.reshape(bands, -1).sum(axis=1),
            stripe_square_sum=(offsets.reshape(bands, -1) ** 2).sum(axis=1),
            entries=height * width,
        )
    return cleaned.reshape(tile.shape), missing.reshape(tile.shape)
