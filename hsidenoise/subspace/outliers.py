"""Step 3 of the pipeline, per tile: stripes, dead lines and impulses removed with the help of the other bands.

Constant columns and rows are dead lines (missing), and so are entries at a band's stuck values
(:mod:`hsidenoise.subspace.stuck_values`); per-band column and row offsets that stand out are stripes (subtracted);
entries that the other bands contradict are impulses (missing), unless their neighbourhood agrees with them;
missing entries are imputed from the other bands (:func:`hsidenoise.subspace.noise_estimate.clean_entries`) and,
where it checks out better, from the band's own neighbourhood (:mod:`hsidenoise.subspace.spatial_fill`).

Shapes: tiles are (B, h, w); band-major pixels are (B, h * w).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from hsidenoise.subspace.config import LowRankConfig
from hsidenoise.subspace.noise_estimate import FILL_SWEEPS, BandRegression, clean_entries, fill_missing
from hsidenoise.subspace.signal_subspace import Subspace
from hsidenoise.subspace.spatial_fill import NeighbourhoodFill, fill_from_neighbourhood, move_neighbourhood_fill
from hsidenoise.subspace.stripes import ROW_STRIPE_FACTOR, confirmed_stripe_offsets, subspace_complement
from hsidenoise.subspace.stuck_values import empty_pixels

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


def _coherent_residuals(
    filled: _FilledResiduals, dead: np.ndarray, regression: BandRegression, config: LowRankConfig
) -> np.ndarray:
    """Outlying entries whose neighbourhood shares their residual: unusual signal, not noise.

    Impulses are isolated and dead lines and stripes are one column wide, so the median residual of a
    ``coherence_window`` square around them stays small. A region that the other bands predict poorly (a
    material seen in few pixels, a chromatic edge) keeps a large median of the same sign; replacing it by
    its prediction would erase real signal.

    The known missing entries count as zero residuals, so in a band whose entries are mostly stuck nothing is
    protected. The median over the measured entries alone protects such a band's genuine signal, and was measured
    twice and not adopted: a quiet band that owns a component then moves it by its unexplained signal, which the
    component's loadings carry into the noisy bands (bench/README.md, "The coherence test over measured entries").

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


def _stripe_search(
    filled: _FilledResiduals,
    residuals: Callable[[], np.ndarray],
    missing: np.ndarray,
    predictor: BandRegression,
    config: LowRankConfig,
    *,
    imputed: bool,
) -> bool:
    """Column, then row stripes of the (B, h, w) ``residuals()`` against ``predictor``, subtracted from ``filled``.

    ``residuals`` is called before each orientation (the column offsets change the residuals the rows are searched
    in); ``missing``: (B, h, w) entries left out of the line medians. The tile's values so far decide between bands
    that predict each other (:func:`~hsidenoise.subspace.stripes.stripe_offsets`'s own-line test). ``imputed``: the
    residuals are ``predictor``'s, with the missing entries imputed by it (an offset then echoes through them too).
    Returns whether any offset was subtracted.
    """
    shape = missing.shape
    found = False
    for axis in (1, 2):  # column stripes (constant along the rows), then row stripes
        lines, absent, values = residuals(), missing, filled.observed.reshape(shape)
        if axis == 2:
            lines, absent, values = lines.transpose(0, 2, 1), absent.transpose(0, 2, 1), values.transpose(0, 2, 1)
        threshold = config.stripe_threshold * (1.0 if axis == 1 else ROW_STRIPE_FACTOR)
        # every stripe must stand out from its neighbouring lines: a row's offset is measured against them, a
        # column's against the band's typical column and vetoed by them
        window, veto = (config.stripe_window, 0) if axis == 2 else (0, config.stripe_window)
        offsets = confirmed_stripe_offsets(lines, absent, predictor, threshold, window, veto, values, imputed=imputed)
        if offsets.any():
            found = True
            filled.subtract(offsets[:, None, :] if axis == 1 else offsets[:, :, None], shape)
    return found


def _subtract_complement_stripes(
    filled: _FilledResiduals, dead: np.ndarray, subspace: Subspace, config: LowRankConfig
) -> None:
    """One more stripe search, against the subspace's complement instead of the band regression.

    The regression's passes find most stripes of quiet and middling bands but few of the noisiest (San Diego
    mixture seed 1: 0 of 13 in a band with sigma 77/255); a search against a second predictor
    (:func:`~hsidenoise.subspace.stripes.subspace_complement`) finds some of the rest. Measured (`bench/mixture.py
    --seeds 2`, bench/README.md; before the line pile-ups of the fit): mixture MPSNR +0.18 dB on San Diego seed 1,
    +0.03 on CAVE seed 0, the other cases and every Gaussian part within 0.01 dB; more regression passes instead
    (4) gain nothing.
    """
    predictor, usable, first = subspace_complement(filled.values, subspace.mean, subspace.sigma, subspace.basis)
    unused = [first]  # the residuals before any subtraction, computed with the predictor

    def residuals() -> np.ndarray:
        return (unused.pop() if unused else predictor.residuals(filled.values)).reshape(dead.shape)

    _stripe_search(filled, residuals, dead | ~usable[:, None, None], predictor, config, imputed=False)


@dataclass(frozen=True)
class CleanedTile:
    """A tile after :func:`clean_tile`.

    Attributes:
        values: (B, h, w) float64, destriped, missing entries imputed.
        missing: (B, h, w) bool, the entries replaced by their imputation.
        known: (B, h, w) bool, the part of ``missing`` known before any residual test (dead lines, stuck values):
            their imputation errs by about the band regression's residual scale; the rest of ``missing`` was
            detected by its residual, so its imputation errs by more where the detection was false
            (:func:`~hsidenoise.subspace.projection.entry_weights`).
        fill: what the neighbourhood fill decided (:func:`move_cleaned`), or None (nothing imputed).
        empty: (h, w) bool, the pixels stuck in every band (no-data fills,
            :func:`~hsidenoise.subspace.stuck_values.empty_pixels`): imputed here like any missing entry, but the
            pipeline gives them back as read; None: no pixel is.
    """

    values: np.ndarray
    missing: np.ndarray
    known: np.ndarray
    fill: NeighbourhoodFill | None = None
    empty: np.ndarray | None = None

    def untouched(self, tile: np.ndarray) -> np.ndarray:
        """(B, h, w) bool: the entries of ``tile`` (as read) neither replaced nor destriped, where the noise is the
        Gaussian noise alone (what the SURE blends sum over)."""
        return ~self.missing & (self.values == tile)


def move_cleaned(move: np.ndarray, cleaned: CleanedTile, regression: BandRegression | None) -> np.ndarray:
    """How a cleaned tile moves when the tile's entries that were kept move by ``move``, every decision held.

    The entries found missing are imputed again from the moved ones: the spectral imputation (the conditional mean
    given the pixel's other bands, by Gauss-Seidel sweeps from zero; exactly linear, without the mean), then the
    neighbourhood fill with its bands and blends (:func:`~hsidenoise.subspace.spatial_fill.move_neighbourhood_fill`).
    What the band blend's divergence needs (:func:`~hsidenoise.subspace.band_blend.probe_perturbation`): an entry
    y_b(p) moves the output of band b at p also through the imputed entries of the pixel's other bands, and of
    its own band's neighbours. Left out, that path underestimated the divergence on mixed noise (every band, the
    untouched ones too: SURE then kept changes that hurt; bench/README.md).

    Args:
        move: (B, h, w) float64, zero at ``cleaned.missing`` (not changed).
        cleaned: the :class:`CleanedTile` of the tile; regression: the band regression that cleaned it (None: no
            imputation happened).

    Returns:
        (B, h, w) float64, the cleaned tile's move.
    """
    missing = cleaned.missing
    if regression is None or not missing.any():
        return move
    bands = move.shape[0]
    moved = np.where(missing, 0.0, move).reshape(bands, -1)
    centred = dataclasses.replace(regression, mean=np.zeros(bands))  # a move is linear: no mean to subtract
    fill_missing(moved, missing.reshape(bands, -1), centred, FILL_SWEEPS + 1)
    moved = moved.reshape(move.shape)
    if cleaned.fill is not None:
        move_neighbourhood_fill(moved, missing, centred, cleaned.fill)
    return moved


def remove_outliers(
    tile: np.ndarray, subspace: Subspace, config: LowRankConfig | None = None, *, facts: dict | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`clean_tile`'s (values, missing)."""
    cleaned = clean_tile(tile, subspace, config, facts=facts)
    return cleaned.values, cleaned.missing


def clean_tile(
    tile: np.ndarray, subspace: Subspace, config: LowRankConfig | None = None, *, facts: dict | None = None
) -> CleanedTile:
    """Undo dead-line, stripe and impulse corruption of a tile with the help of the other bands.

    Dead lines: a column (or a row) whose standard deviation is below ``dead_line_fraction`` of the band's
    sigma is missing, and so is every entry at one of the band's stuck values (:attr:`Subspace.stuck`:
    impulse, saturation, dead elements). Stripes (:func:`~hsidenoise.subspace.stripes.stripe_offsets`,
    ``robust_passes`` times, along the track and across it): column medians, then row medians, of the residuals,
    which impulses do not move, give the offsets to subtract, where both halves of the line confirm them
    (:func:`~hsidenoise.subspace.stripes.confirmed_stripe_offsets`); then one more search against the subspace's
    complement instead of the regression (:func:`_subtract_complement_stripes`). The impulses that a stripe shifted
    (at a value of :attr:`Subspace.line_stuck`, as read) are missing from then on: marked before the search, the
    bands predicted from a striped band would see its stripe only through its measured entries, not in the
    proportion the regression's echo assumes, and took false stripes (bench/README.md, "Shifted impulses marked in
    the tiles"); left measured, those near the band's clean values (salt or pepper in a dark or bright band)
    stayed below the outlier threshold. Impulses (:func:`clean_entries`): entries the other bands contradict are
    missing, except where the whole neighbourhood agrees with them (:func:`_coherent_residuals`). Missing entries
    are imputed from the other bands, then, where a leave-one-out check finds it better, from the band's own
    neighbourhood (:func:`~hsidenoise.subspace.spatial_fill.fill_from_neighbourhood`).

    Args:
        tile: (B, h, w) in data units.
        subspace: the fitted model; without a regression (or with ``robust_passes == 0``) nothing changes.
        config: pipeline settings; the defaults when None.
        facts: when given, filled with this tile's per-band facts for the report: ``outlier_entries`` (B,)
            entries treated as outliers (``missing``), ``stripe_square_sum`` (B,) sum over the entries of the
            squared stripe offsets subtracted, and ``entries`` (h * w, entries per band).

    Returns:
        The :class:`CleanedTile`.
    """
    config = config or LowRankConfig()
    bands, height, width = tile.shape
    regression = subspace.regression
    if regression is None or config.robust_passes == 0 or bands < 2:
        if facts is not None:
            facts.update(outlier_entries=np.zeros(bands, np.int64), stripe_square_sum=np.zeros(bands), entries=height * width)
        nothing = np.zeros(tile.shape, bool)
        return CleanedTile(tile.astype(np.float64), nothing, nothing)
    dead = np.zeros(tile.shape, bool)
    if height > 2:
        column_spread = tile.std(axis=1, dtype=np.float64)  # (B, w)
        dead |= (column_spread < config.dead_line_fraction * subspace.sigma[:, None])[:, None, :]
    if width > 2:
        row_spread = tile.std(axis=2, dtype=np.float64)  # (B, h)
        dead |= (row_spread < config.dead_line_fraction * subspace.sigma[:, None])[:, :, None]
    empty = None
    if subspace.stuck is not None and subspace.stuck.any():
        stuck_entries = subspace.stuck.mask(tile.reshape(bands, -1))
        dead |= stuck_entries.reshape(tile.shape)
        empty = empty_pixels(subspace.stuck, stuck_entries).reshape(height, width)
        empty = empty if empty.any() else None
    known = dead.reshape(bands, -1)
    filled = _FilledResiduals(tile.astype(np.float64).reshape(bands, -1), known, regression)
    for _ in range(config.robust_passes if height >= 4 and width >= 4 else 0):
        if not _stripe_search(
            filled, lambda: filled.residuals.reshape(tile.shape), dead, regression, config, imputed=True
        ):
            break
    if height >= 4 and width >= 4 and subspace.rank > 0 and np.all(subspace.sigma > 0):
        _subtract_complement_stripes(filled, dead, subspace, config)
    destriped = filled.observed.reshape(tile.shape)
    if subspace.line_stuck is not None and subspace.line_stuck.any():
        # impulses that a stripe shifted, found by their value as read; missing only now that the stripes are out
        shifted = subspace.line_stuck.mask(tile.reshape(bands, -1)) & ~known
        if shifted.any():
            dead = dead | shifted.reshape(tile.shape)
            known = dead.reshape(bands, -1)
            filled = _FilledResiduals(filled.observed, known, regression)
    protected = _coherent_residuals(filled, dead, regression, config)
    cleaned, missing = clean_entries(filled.values, known, regression, config, protected, residuals=filled.residuals)
    cleaned, fill = fill_from_neighbourhood(cleaned.reshape(tile.shape), missing.reshape(tile.shape), regression)
    if facts is not None:
        offsets = np.subtract(tile, destriped, dtype=np.float64)  # (B, h, w) the stripe offsets subtracted, summed
        treated = missing.reshape(tile.shape) & ~empty if empty is not None else missing  # no-data pixels: as read
        facts.update(
            outlier_entries=treated.reshape(bands, -1).sum(axis=1),
            stripe_square_sum=(offsets.reshape(bands, -1) ** 2).sum(axis=1),
            entries=height * width,
        )
    return CleanedTile(cleaned.reshape(tile.shape), missing.reshape(tile.shape), dead, fill, empty)
