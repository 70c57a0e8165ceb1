"""Stripes: per-band line offsets that the other bands do not share, in a tile and in the fit's pixel sample.

A stripe adds one offset to every entry of a column (or a row) of one band. Against the band regression's
prediction from the other bands it stands out as a column whose residuals are shifted: :func:`stripe_offsets`
finds the offsets from the residuals' column medians (with the echo a stripe leaves in the bands predicted from
it), :func:`confirmed_stripe_offsets` keeps those that both halves of the line confirm. The tile step
(:func:`hsidenoise.subspace.outliers.remove_outliers`) subtracts them per tile; :func:`destripe_sample` does the same
for the fit's pixel sample, grouped by the sampled pixels' columns, so that stripes do not become components of
the subspace (:func:`hsidenoise.subspace.signal_subspace.fit_lowrank`).

Shapes: residual grids are (B, h, w) (offsets along axis 2, medians over axis 1); pixel samples (n, B).
"""

from __future__ import annotations

import warnings

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from hsidenoise.device import across_threads
from hsidenoise.statistics import PixelPositions
from hsidenoise.subspace.noise_estimate import FILL_SWEEPS, BandRegression, fill_missing
from hsidenoise.subspace.stuck_values import StuckValues

ROW_STRIPE_FACTOR = 2.0
"""Row stripes must stand out by this factor times ``stripe_threshold``: horizontal scene edges that the other
bands predict poorly leave row-median offsets (measured: 81 false row offsets on a 256 x 256 CAVE tile with
column-only mixture noise at the plain threshold, -0.9 dB), while sensors stripe mostly along the columns."""
HALF_COLUMN_FACTOR = 0.7
"""A stripe offset is kept only where each half of its column (top and bottom; left and right of a row) finds an
offset of the same sign at this factor times the threshold (:func:`confirmed_stripe_offsets`). A sensor's stripe
runs the whole line; the column structure of a quiet band's residuals, signal that the other bands do not
predict, changes along it. Measured (`bench/mixture.py`, CAVE apples seed 0): the whole-column test alone removed
false offsets of up to 5.8 sigma from the kept entries of a band with sigma 2.7/255; confirmed by halves,
mixture MPSNR +0.28 dB there, +0.17 dB on San Diego seed 1, the other cases within 0.01 dB."""
MIN_HALF_LINE = 8
"""Lines shorter than twice this many entries are not split (:func:`confirmed_stripe_offsets`)."""
OWN_LINE_WINDOW = 5
"""The own-line test (:func:`stripe_offsets` with ``values``): an offset is kept where subtracting it brings the
band's own line (its values, not its residuals) closer to the median of the ``OWN_LINE_WINDOW`` lines centred on it."""
RIVAL_SHARE = 0.5
"""The own-line test decides only where the chosen band has a rival: another band whose score in that line reaches
this share of the chosen band's. Measured on the held-out and validation cubes (bench/README.md, "Stripes given to
their own band"): with every line tested, held-out cases lost up to 0.44 dB where the test refused a true stripe at
a scene edge and a rival passed it; at 0.8 a non-i.i.d. validation case lost 0.12 dB; a rival that must explain the
chosen band's deviation as its echo kept most of the failures."""


MIN_OWN_SHARE = 0.2
"""With imputed entries (:func:`stripe_offsets`' ``imputed``), an offset shows in its own band's residual at 1 - the
share that the pixel's imputed entries explain away (:func:`imputed_shares`); each residual is divided by that
share, but by no less than this (an entry that the imputed bands predict almost fully: its residual tells little)."""


PARALLEL_MIN_ENTRIES = 1 << 20
""":func:`line_medians` splits its bands among threads (:func:`~hsidenoise.device.across_threads`) from this many
entries on (numpy's partition and sort run on one core; measured on a 224-band 192 x 192 tile: 2-4x faster on
two cores, the same numbers)."""


def line_medians(values: np.ndarray, missing: np.ndarray | None = None) -> np.ndarray:
    """The median over axis 1 of (B, h, w) ``values``, leaving out the ``missing`` ((B, h, w) bool) entries.

    The numbers of ``np.median(values, axis=1)`` (or ``np.nanmedian`` with the missing entries as NaN; NaN where
    a line has none), faster: one copy with the line axis last (contiguous). Without missing entries it is
    partitioned in place at the middle only (``np.median`` partitions at both middle positions, several times
    slower; the lower middle of an even line is the largest value below the split); with them, each line is
    sorted with its missing entries last and its two middle entries taken (``np.nanmedian`` goes through
    masked arrays). Large inputs are split by bands among threads (:data:`PARALLEL_MIN_ENTRIES`).

    Returns:
        (B, w) medians.
    """
    if values.size < PARALLEL_MIN_ENTRIES:
        return _line_medians(values, missing)
    parts = across_threads(
        lambda part: _line_medians(values[part], None if missing is None else missing[part]), values.shape[0]
    )
    return np.concatenate(parts)


def _line_medians(values: np.ndarray, missing: np.ndarray | None) -> np.ndarray:
    """:func:`line_medians` on one thread; bands without a missing entry take the partition, bands without any
    entry are NaN, only the others are sorted."""
    bands, height, width = values.shape
    if missing is not None and bands:
        absent = missing.reshape(bands, height * width)
        partial = absent.any(axis=1)
        if not partial.all():
            medians = np.full((bands, width), np.nan, dtype=values.dtype if values.dtype.kind == "f" else np.float64)
            complete = ~partial
            medians[complete] = _line_medians(values[complete], None)
            partial &= ~absent.all(axis=1)
            if partial.any():
                medians[partial] = _line_medians(values[partial], missing[partial])
            return medians
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


def _neighbour_deviation(medians: np.ndarray, window: int) -> np.ndarray:
    """(B, w) line medians minus the median of the 2 (window // 2) + 1 lines centred on each (mirrored at the edges);
    NaN medians (lines without an entry) are left out of their neighbours' median and stay NaN."""
    half = window // 2
    padded = np.pad(medians, ((0, 0), (half, half)), mode="reflect")
    windows = sliding_window_view(padded, 2 * half + 1, axis=1)
    if not np.isnan(medians).any():  # an odd window: its middle entry is np.median's, one partition
        return medians - np.partition(windows, half, axis=-1)[..., half]
    with warnings.catch_warnings():  # a window of empty lines only: NaN, as the line itself
        warnings.simplefilter("ignore", RuntimeWarning)
        return medians - np.nanmedian(windows, axis=-1)


def imputed_shares(coefficients: np.ndarray, missing: np.ndarray) -> np.ndarray:
    """The share of an offset that each entry's residual shows, where the pixel's missing entries were imputed.

    Where band m is missing in a pixel and imputed by the regression (x_m = its prediction from the pixel's other
    bands), an offset o in band k moves x_m by -Q[m, k] o (Q = ``coefficients``.T: Q[j, k] is the echo of a unit
    offset in band k in band j's residual, Q[j, j] = 1), and band j's residual by Q[j, m] times that: band j's own
    offset shows at 1 - Q[j, m] Q[m, j] (first order: each imputed band on its own; exact for one, the imputation
    then being the conditional mean). Two bands that predict each other well (Q[j, m] Q[m, j] near 1: the squared
    partial correlation) leave little of the offset where the other is imputed.

    Args:
        coefficients: (B, B) the band regression's; missing: (B, h, w) bool, the imputed entries.

    Returns:
        (B, h, w) 1 - sum over the pixel's missing bands m != j of Q[j, m] Q[m, j], at least :data:`MIN_OWN_SHARE`.
    """
    bands = missing.shape[0]
    imputed = np.flatnonzero(missing.reshape(bands, -1).any(axis=1))  # only bands with missing entries take part
    flat = missing[imputed].reshape(imputed.size, missing[0].size).astype(np.float64)  # (imputed bands, h * w)
    explained = _both_ways(coefficients)[:, imputed] @ flat
    return np.maximum(1.0 - explained, MIN_OWN_SHARE).reshape(missing.shape)


def _both_ways(coefficients: np.ndarray) -> np.ndarray:
    """(B, B) Q[j, m] Q[m, j] for m != j, 0 on the diagonal (Q = ``coefficients``.T; symmetric)."""
    both_ways = coefficients * coefficients.T
    np.fill_diagonal(both_ways, 0.0)
    return both_ways


def _imputed_echoes(coefficients: np.ndarray, missing: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`imputed_shares` per line, for the echo of one band's offset in the others.

    Over a line, the pixels with band m missing are its share f[m] of the line's pixels (those missing in every
    band, padding or no-data, left out); an offset in band k echoes in band j's residual at Q[j, k] - sum over m of
    f[m] Q[j, m] Q[m, k] (m != j: where band j itself is missing, its residual is not in its line's median), and
    band j's own share there is 1 - sum over m != j of f[m] Q[j, m] Q[m, j].

    Returns:
        ((B, w) each band's own share in each line, at least :data:`MIN_OWN_SHARE`; (B, w) the shares f).
    """
    present = ~missing.all(axis=0)  # (h, w) pixels with an entry in some band
    share = np.count_nonzero(missing & present, axis=1) / np.maximum(np.count_nonzero(present, axis=0), 1)  # (B, w)
    return np.maximum(1.0 - _both_ways(coefficients) @ share, MIN_OWN_SHARE), share


def stripe_offsets(
    residuals: np.ndarray, missing: np.ndarray, regression: BandRegression, threshold: float, window: int = 0,
    veto: int = 0, values: np.ndarray | None = None, *, imputed: bool = False,
) -> np.ndarray:
    """Per-band column offsets (stripes) that explain the column structure of a tile's residuals.

    Each band's column medians (over rows not missing) are compared with the median of the columns within
    ``window`` around each (its neighbours: a stripe is a line that stands out from the lines beside it), or, with
    ``window`` below 3 or above the tile's width, with the band's typical column (median over columns). With
    ``veto`` (3 or more), an offset measured against the typical column is also kept only where the column stands
    out from the median of the ``veto`` columns around it. The spread they must stand out from is band-wide either
    way: the larger of the MAD over columns of the deviations from the typical column and the noise of a column
    median. The neighbours matter where the regression mispredicts a band alike over a block of lines (a quiet
    band's unexplained signal in one region of the scene): measured against the typical line, every line of the
    block stands out, and subtracting those "stripes" from a quiet band that a component leans on wrecks every band
    (bench/README.md: a CAVE crop with mixed noise, 33 consecutive rows of 13 bands, 26.1 dB instead of 36.9). The
    tile step gives rows a ``window`` and columns a ``veto`` (``LowRankConfig.stripe_window``).

    As with entries, an offset in band j echoes, weaker in units of the residual scale, into the bands predicted
    from j; so per column the band with the largest deviation in those units is taken, its
    offset is removed from every band's deviation (rank-one update), and so on while the band taken stands
    out by more than ``threshold`` spreads.

    That choice is ambiguous between two bands that predict each other: a stripe in either shows in both residuals
    at nearly the same size in their units (Cauchy-Schwarz on the precision matrix leaves the own band a margin of a
    few per cent on a near-collinear pair, less than the residual scales' own errors). With ``values`` (the lines
    themselves), the band's own line decides where the chosen band has a rival (another band scoring at least
    :data:`RIVAL_SHARE` of it in that line): the offset is kept only if subtracting it brings the band's own line
    closer to the median of the :data:`OWN_LINE_WINDOW` lines around it; if not, the line goes on to the next band,
    and a line where every band is refused keeps its first choice, as without the test. Measured (bench/README.md,
    "Stripes given to their own band"): on the ABU airport-2 cube with mixture noise, bands 71 and 92 (sigma 0.27
    and 0.07 / 255; 71 = 1.45 x 92) predict each other, and the stripes of band 92 (up to 880 of its sigma) were
    taken for stripes of band 71 and of bands predicted from both: 37.5 dB against 46.0 for the Gaussian part, 41.1
    with the test.

    With ``imputed`` (the missing entries were imputed from the other bands with this regression, and the residuals
    computed with them), an offset echoes also through the imputed entries of its pixels: an entry's residual shows
    only a share of its own band's offset where a band that predicts it well is imputed (:func:`imputed_shares`).
    Each residual is divided by its share before the line medians, and an offset's echo in the other bands is the
    one through the imputed entries (:func:`_imputed_echoes`). A share per line instead (the deviation divided by
    the line's mean share) left the lines where a band that predicts the striped one is imputed in half the pixels
    undecided: two groups of residuals, one with the offset and one with little of it, and the median between them.
    Measured (bench/README.md, "Offsets echoed through imputed entries"): on ABU urban-3 with mixture noise, band 92
    (sigma 0.31 / 255) and band 72, dead in the same column, predict each other; the imputed dead column carried
    three quarters of band 92's stripe (+0.238) into its prediction; the search took 0.090 of it and false stripes
    of -0.16 and -0.14 in bands 54 and 40 (43.16 dB instead of 42.12; its Gaussian part 45.74).

    Args:
        residuals: (B, h, w); missing: (B, h, w) bool.
        values: (B, h, w) the values whose residuals these are, or None (no own-line test).
        imputed: whether ``missing`` entries were imputed by ``regression`` before the residuals were taken.

    Returns:
        (B, w) offsets to subtract from each column of each band (zero where there is no stripe).
    """
    residuals = _divided_by_shares(residuals, missing, regression, imputed)
    return _greedy_offsets(residuals, missing, regression, threshold, window, veto, values, imputed)


def _divided_by_shares(
    residuals: np.ndarray, missing: np.ndarray, regression: BandRegression, imputed: bool
) -> np.ndarray:
    """``residuals`` divided by their :func:`imputed_shares` where ``imputed`` and some entry is missing, else as
    they are."""
    if imputed and missing.any():
        return residuals / imputed_shares(regression.coefficients, missing)
    return residuals


def _greedy_offsets(
    residuals: np.ndarray, missing: np.ndarray, regression: BandRegression, threshold: float, window: int,
    veto: int, values: np.ndarray | None, imputed: bool,
) -> np.ndarray:
    """:func:`stripe_offsets` with ``residuals`` already divided by their :func:`imputed_shares` where ``imputed``."""
    bands, height, width = residuals.shape
    if missing.any():
        counts = height - np.count_nonzero(missing, axis=1)  # (B, w) entries not missing
        medians = np.where(counts > 0, line_medians(residuals, missing), 0.0)
    else:
        counts = np.full((bands, width), height)
        medians = line_medians(residuals)
    deviation = medians - np.median(medians, axis=1, keepdims=True)
    spread = 1.4826 * np.median(np.abs(deviation), axis=1, keepdims=True)
    if 3 <= window <= width:  # against the neighbouring lines; the spread stays the band-wide one
        deviation = _neighbour_deviation(medians, window)
    local = _neighbour_deviation(medians, veto) if 3 <= veto <= width else None
    own_test = values is not None and 3 <= OWN_LINE_WINDOW <= width
    own = None  # each band's own lines against their neighbours, once a line stands out (lines without entries: NaN)
    spread = np.maximum(spread, 1.2533 * regression.residual_scale[:, None] / np.sqrt(np.maximum(counts, 1)))
    inverse_scale = 1.0 / regression.residual_scale[:, None]
    offsets = np.zeros((bands, width))
    found = counts == 0
    columns = np.arange(width)
    refused_band, refused_offset = np.zeros(width, np.int64), np.full(width, np.nan)  # own-line test: first refusals
    coefficients = regression.coefficients
    through_imputed = imputed and missing.any()
    if through_imputed:
        own_share, imputed_share = _imputed_echoes(coefficients, missing)
    for _ in range(bands):
        with np.errstate(over="ignore"):  # against a near-zero scale an offset stands out, also as inf
            score = np.where(found, 0.0, np.abs(deviation) * inverse_scale)
        worst = score.argmax(axis=0)
        top = score[worst, columns]
        stands_out = np.abs(deviation[worst, columns]) > threshold * spread[worst, columns]
        if local is not None:
            stands_out &= np.abs(local[worst, columns]) > threshold * spread[worst, columns]
        striped = (top > 0) & stands_out
        if not striped.any():
            break
        band, column = worst[striped], columns[striped]
        offset = deviation[band, column]
        if own_test:  # refused where the band's own line would stand out more: the next band is tried
            if own is None:  # no offset taken yet: the lines as they are
                own_medians = line_medians(values, missing) if missing.any() else line_medians(values)
                own = _neighbour_deviation(np.where(counts > 0, own_medians, np.nan), OWN_LINE_WINDOW)
            score[band, column] = 0.0
            contested = score[:, column].max(axis=0) >= RIVAL_SHARE * top[column]
            closer = ~contested | (np.abs(own[band, column] - offset) < np.abs(own[band, column]))
            first = ~closer & np.isnan(refused_offset[column])
            refused_band[column[first]], refused_offset[column[first]] = band[first], offset[first]
            found[band[~closer], column[~closer]] = True
            band, column, offset = band[closer], column[closer], offset[closer]
            own[band, column] -= offset
        echo = coefficients[band, :].T  # (B, picks): each pick's echo in every band's residual
        if through_imputed:  # through the imputed entries too (a band's own ones are out of its line's median)
            through = coefficients.T @ (imputed_share[:, column] * echo) - imputed_share[:, column] * echo
            echo = (echo - through) / own_share[:, column]
            echo[band, np.arange(band.size)] = 1.0
        offsets[band, column] += offset
        found[band, column] = True
        deviation[:, column] -= echo * offset
        if local is not None:
            local[:, column] -= echo * offset
    if own_test:  # a line where every band was refused keeps the first choice, as without the test
        fallback = ~offsets.any(axis=0) & ~np.isnan(refused_offset)
        offsets[refused_band[fallback], columns[fallback]] += refused_offset[fallback]
    return offsets


def confirmed_stripe_offsets(
    residuals: np.ndarray, missing: np.ndarray, regression: BandRegression, threshold: float, window: int = 0,
    veto: int = 0, values: np.ndarray | None = None, *, imputed: bool = False,
) -> np.ndarray:
    """:func:`stripe_offsets` of whole columns, kept where both halves of the column agree.

    Each half (rows ``[0, h/2)`` and ``[h/2, h)``) is searched on its own at :data:`HALF_COLUMN_FACTOR` times the
    threshold (a half's column median is noisier by about sqrt(2)); an offset of the whole column stays where
    both halves find one of its sign.

    Args:
        residuals: (B, h, w); missing: (B, h, w) bool; values: (B, h, w) or None; imputed: as
            :func:`stripe_offsets`.

    Returns:
        (B, w) offsets, zero where there is no confirmed stripe.
    """
    residuals = _divided_by_shares(residuals, missing, regression, imputed)
    offsets = _greedy_offsets(residuals, missing, regression, threshold, window, veto, values, imputed)
    height = residuals.shape[1]
    if not offsets.any() or height < 2 * MIN_HALF_LINE:
        return offsets
    half = height // 2
    sign = np.sign(offsets)
    for rows in (slice(0, half), slice(half, height)):
        part = _greedy_offsets(
            residuals[:, rows], missing[:, rows], regression, HALF_COLUMN_FACTOR * threshold, window, veto,
            None if values is None else values[:, rows], imputed,
        )
        sign = np.where(np.sign(part) == sign, sign, 0.0)
    return np.where(sign != 0, offsets, 0.0)


MIN_COMPLEMENT_SHARE = 0.5
"""A band takes part in the subspace stripe search (:func:`subspace_complement`) only where at least this share of
an offset in it stays outside the subspace (1 - its leverage): a component that sits on one band (a stripe the
fit's sample kept, a band unlike the others) would absorb that band's stripes, and dividing by the small share
left would blow its residual up."""


def subspace_complement(
    values: np.ndarray, mean: np.ndarray, sigma: np.ndarray, basis: np.ndarray
) -> tuple[BandRegression, np.ndarray, np.ndarray]:
    """Each band against its low-rank prediction: a second predictor for the stripe search.

    The residual is the subspace's complement, r = (I - P)(x - mean) with P = diag(sigma) U U^T diag(1 / sigma)
    the projection on the signal subspace in data units: signal that the components explain leaves none, a stripe
    leaves its offset times 1 - the band's leverage. Each row of I - P is divided by that share, so that an offset
    o in band k adds o to band k's residual, as :func:`stripe_offsets` assumes. The band regression
    (:class:`BandRegression`) predicts a band from all the others instead, including the signal outside the
    subspace; searched a second time against this predictor, a tile gives up stripes that the regression's passes
    left (measured on the mixture cubes, mostly in middling and noisy bands). Why is not established: the echo a
    noisy band receives from the other bands' offsets is not smaller here (median root-sum-square of the echo
    scores on the validation draws 0.03-0.38 against the regression's 0.05-0.17); the spread and the per-column
    choice of band differ.

    Args:
        values: (B, m) band-major pixels in data units; mean, sigma: (B,); basis: (B, k) orthonormal, whitened.

    Returns:
        (the predictor: ``coefficients`` with ``residuals(x)`` = the divided complement, ``residual_scale`` the
        larger of the residuals' robust spread on ``values`` and the noise that sigma carries into them;
        (B,) bool, the bands that take part (:data:`MIN_COMPLEMENT_SHARE`); the (B, m) residuals).
    """
    bands = sigma.shape[0]
    complement = np.eye(bands) - (sigma[:, None] * basis) @ (basis.T / sigma[None, :])
    share = np.diag(complement).copy()
    usable = share > MIN_COMPLEMENT_SHARE
    divisor = np.where(usable, share, 1.0)
    coefficients = (complement / divisor[:, None]).T
    residuals = coefficients.T @ (values - mean[:, None])
    centre = line_medians(residuals[:, :, None])  # (B, 1): np.median's numbers, faster
    spread = 1.4826 * line_medians(np.abs(residuals - centre)[:, :, None])[:, 0]
    carried = np.sqrt((complement**2) @ sigma**2) / divisor
    scale = np.maximum(np.maximum(spread, carried), np.finfo(np.float64).tiny)  # constant data: no division by 0
    predictor = BandRegression(mean=mean, coefficients=coefficients, residual_scale=scale)
    return predictor, usable, residuals


MIN_SAMPLE_STRIPE_LINES = 3
"""The fit's sample is destriped only in bands where at least this many columns carry a confirmed stripe: a
sensor's striped band has many (the protocol: 5-15 % of the columns), while one or two confirmed columns on pure
Gaussian noise are a quiet band's image structure (measured: the validation cubes' Gaussian parts are then never
changed)."""
MIN_STRIPE_VARIANCE_DROP = 0.99
"""A band's sample offsets are kept only if they take at least 1 % off its residuals' sum of squares: column
medians of data that are not a continuous signal plus noise (a cube of two values, 0 and 1) stand out as stripes
that subtracting would only add to (measured: such a cube's output was amplified). At 5 % some real stripe bands
were left in (CAVE apples mixture: 0.1-0.2 dB less)."""


def _grouped(values: np.ndarray, missing: np.ndarray, keys: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(B, n) values and missing flags regrouped as a (B, m, size) grid by their column ``keys`` (m: the most
    pixels any column holds), padding missing; pixels keep their order (by row) within a column."""
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    counts = np.bincount(sorted_keys, minlength=size)
    slot = np.arange(sorted_keys.size) - np.repeat(np.cumsum(counts) - counts, counts)
    bands, depth = values.shape[0], max(int(counts.max(initial=0)), 1)
    target = np.empty(keys.size, dtype=np.int64)  # each pixel's place in a flattened (depth, size) grid
    target[order] = slot * size + sorted_keys
    # pixel-major scatter (each pixel's B values are one contiguous row), then a (B, depth, size) view
    grid = np.zeros((depth * size, bands))
    absent = np.ones((depth * size, bands), bool)
    grid[target] = values.T
    absent[target] = missing.T
    return grid.T.reshape(bands, depth, size), absent.T.reshape(bands, depth, size)


def destripe_sample(
    spectra: np.ndarray,
    positions: PixelPositions,
    regression: BandRegression,
    stuck: StuckValues | None,
    threshold: float,
) -> tuple[np.ndarray, np.ndarray]:
    """The fit's pixel sample with its column stripes subtracted.

    The sample's residuals (stuck entries imputed from the other bands first, nothing else cleaned: an impulse
    test would take a stripe's largest entries for impulses and hide them) are grouped by column and searched as a
    tile is (:func:`confirmed_stripe_offsets`), the bands' own lines deciding between two bands that predict each
    other (without them the stripes of a nearly noise-free band went to its partner and echoed into other bands,
    and the ones left in took the first component: ABU airport-2, mixture, 206 of the band's sigma left;
    bench/README.md, "The sample's stripes given to their own band"); bands with fewer than
    :data:`MIN_SAMPLE_STRIPE_LINES` striped columns, or whose residuals the offsets do not shrink
    (:data:`MIN_STRIPE_VARIANCE_DROP`), are left alone.

    The entries at a stuck value keep their value (offset 0): they are imputed later, and found by that value
    (:meth:`~hsidenoise.subspace.stuck_values.StuckValues.mask`). Destriped with their column, the impulses that a
    stripe shifted (marked by :func:`~hsidenoise.subspace.stuck_values.with_line_pileups`) would leave their value,
    stay in the subspace's sample and take components of their own (bench/README.md, "Marked entries kept out of
    the sample's destriping").

    Args:
        spectra: (n, B) pixel sample in data units; positions: where each of its pixels lies.
        regression: the band regression fitted on it; stuck: its stuck values, or None.
        threshold: ``LowRankConfig.stripe_threshold``.

    Returns:
        (destriped (n, B) float64, offsets (n, B): what was subtracted from each entry).
    """
    observed = np.asarray(spectra, dtype=np.float64).T  # (B, n)
    known = stuck.mask(observed) if stuck is not None and stuck.any() else np.zeros(observed.shape, bool)
    values = np.where(known, regression.mean[:, None], observed)
    if known.any():
        fill_missing(values, known, regression, FILL_SWEEPS)
    residuals = regression.residuals(values)
    grid, absent = _grouped(residuals, known, positions.cols, positions.width)
    own_lines, _ = _grouped(values, known, positions.cols, positions.width)  # the bands' own lines decide rivals
    offsets = confirmed_stripe_offsets(grid, absent, regression, threshold, values=own_lines, imputed=True)
    offsets[np.count_nonzero(offsets, axis=1) < MIN_SAMPLE_STRIPE_LINES] = 0.0
    striped = np.flatnonzero(offsets.any(axis=1))
    if striped.size:  # a stripe adds to its band's residuals: taking it out must leave them smaller
        before = np.where(known[striped], 0.0, residuals[striped])
        after = np.where(known[striped], 0.0, before - offsets[striped][:, positions.cols])
        shrunk = (after**2).sum(axis=1) <= MIN_STRIPE_VARIANCE_DROP * (before**2).sum(axis=1)
        offsets[striped[~shrunk]] = 0.0
    # the stuck entries stay as read: they are imputed, not destriped, and the fit finds them again by their value
    # (shifted to 0 + offset - estimate, a column's impulses would be marked no more and take a component)
    subtracted = np.where(known, 0.0, offsets[:, positions.cols]).T  # (n, B)
    return np.asarray(spectra, dtype=np.float64) - subtracted, subtracted
