"""Whole-cube statistics gathered in one streaming pass over row strips.

Every tile of a scene is normalised with the same per-band-window range and its missing pixels are filled
with the same band means, so that tiles agree and no seams appear; this module computes those numbers without
holding the cube in memory. It also finds the bands that must not reach a denoiser (dead: constant, including
all-zero; NaN: no valid value at all) and keeps a uniform random sample of pixel spectra for the low-rank
front end.

A value is *valid* when it is finite and not the nodata value.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from hsidenoise.device import across_threads
from hsidenoise.errors import ConfigError, CubeShapeError

if TYPE_CHECKING:
    from hsidenoise.io import CubeReader

logger = logging.getLogger(__name__)

CHUNK_BYTES = 8 << 20
"""Target size of one row strip, as read, when ``rows_per_chunk`` is not given."""

GRAM_ROWS = 4096
"""Sample spectra per float64 product when accumulating the Gram matrix."""

LARGEST_SAFE = 2.0**120
"""A cube with a valid value beyond this magnitude (1.3e36) is denoised in a scaled domain: the methods work in
float32 (largest 3.4e38, with room for what a denoiser adds) and square values in float64; see :func:`value_scale`."""

SMALLEST_SAFE = 2.0**-100
"""A cube whose valid values are all below this magnitude (7.9e-31) is denoised in a scaled domain, so that the
methods' float32 keeps its precision (its normal numbers end at 1.2e-38); see :func:`value_scale`."""

SUM_SCALE = 2.0**-600
"""Bands whose float64 sum overflows (values near 1e308) are summed again times this power of two (exact)."""

PAIR_SAMPLE = 16_384
"""Pixels drawn with the mean of their two horizontal neighbours (:class:`NeighbourPairs`), for the noise
estimate that looks at space (:mod:`hsidenoise.subspace.neighbour_noise`; its cost is n (2B)^2)."""

GROSS_QUANTILE = 0.001
"""The central spread of a band is the range between these quantiles of its sampled values (0.1 % and 99.9 %)."""

GROSS_FACTOR = 1e3
"""A value farther than this many central spreads from its band's median is a gross outlier (see
:func:`gross_limits`): a flipped exponent bit or an undeclared fill value, not signal."""


def invalid_mask(values: np.ndarray, nodata: float | None) -> np.ndarray:
    """Where ``values`` are not valid: NaN, infinite, or equal to ``nodata``.

    Args:
        values: any-shape array of any numeric dtype.
        nodata: the value that marks missing pixels, or None. For float data it is compared in the
            data's own precision (a float32 file stores nodata rounded to float32).

    Returns:
        bool array of the shape of ``values``.
    """
    mask = ~np.isfinite(values)
    if nodata is not None and np.isfinite(nodata):
        target = values.dtype.type(nodata) if np.issubdtype(values.dtype, np.floating) else nodata
        mask |= values == target
    return mask


@dataclass(frozen=True, eq=False)
class NeighbourPairs:
    """Pixels of a cube with the mean of their two horizontal neighbours.

    Attributes:
        pixels: (n, B) spectra of pixels that have a left and a right neighbour.
        neighbours: (n, B) the mean of the left and right neighbours' spectra, row by row.
    """

    pixels: np.ndarray
    neighbours: np.ndarray

    def __post_init__(self) -> None:
        if self.pixels.shape != self.neighbours.shape or self.pixels.ndim != 2:
            raise CubeShapeError(
                f"pixels {self.pixels.shape} and neighbours {self.neighbours.shape} must both be (n, B), equal"
            )

    @property
    def count(self) -> int:
        return self.pixels.shape[0]

    def finite(self) -> NeighbourPairs:
        """The pairs whose pixel and neighbour mean are finite in every band, as float64."""
        keep = np.isfinite(self.pixels).all(axis=1) & np.isfinite(self.neighbours).all(axis=1)
        return NeighbourPairs(
            np.asarray(self.pixels[keep], dtype=np.float64), np.asarray(self.neighbours[keep], dtype=np.float64)
        )

    def bands(self, indices: np.ndarray) -> NeighbourPairs:
        """The same pairs in the bands ``indices`` only."""
        return NeighbourPairs(self.pixels[:, indices], self.neighbours[:, indices])


@dataclass(frozen=True, eq=False)
class PixelPositions:
    """Where the pixels of a sample lie in their cube.

    Attributes:
        rows, cols: (n,) int64 row and column of each sampled pixel, in the sample's order.
        height, width: the cube's spatial size.
    """

    rows: np.ndarray
    cols: np.ndarray
    height: int
    width: int

    @classmethod
    def from_flat(cls, index: np.ndarray, height: int, width: int) -> PixelPositions:
        """From flat pixel indices (row * width + col)."""
        rows, cols = np.divmod(np.asarray(index, dtype=np.int64), width)
        return cls(rows=rows, cols=cols, height=height, width=width)


def pair_positions(height: int, width: int, size: int, seed: int) -> np.ndarray:
    """Up to ``size`` flat pixel indices (row * width + col) with a left and a right neighbour, sorted.

    Drawn without replacement, seeded; empty when the cube is narrower than 3 columns.
    """
    if width < 3 or height < 1:
        return np.zeros(0, dtype=np.int64)
    inner = width - 2
    total = height * inner
    chosen = np.arange(total) if total <= size else np.random.default_rng(seed).choice(total, size, replace=False)
    rows, cols = np.divmod(np.sort(chosen), inner)
    return (rows * width + cols + 1).astype(np.int64)


def neighbour_pairs(cube: np.ndarray, size: int = PAIR_SAMPLE, seed: int = 0) -> NeighbourPairs:
    """The pairs of an in-memory cube ((B, H, W)); non-finite pairs are kept (:meth:`NeighbourPairs.finite`)."""
    bands, height, width = cube.shape
    rows, cols = np.divmod(pair_positions(height, width, size, seed), width)
    pixels = cube[:, rows, cols].T
    neighbours = 0.5 * (cube[:, rows, cols - 1].T.astype(np.float64) + cube[:, rows, cols + 1].T)
    return NeighbourPairs(np.asarray(pixels, dtype=np.float64), neighbours)


@dataclass(frozen=True, eq=False)
class CubeStatistics:
    """Per-band statistics of a whole cube and a sample of its pixel spectra.

    Attributes:
        shape: (B, H, W) of the cube.
        nodata: the nodata value that was applied, or None.
        minimum: (B,) smallest valid value of each band (NaN for a band without one).
        maximum: (B,) largest valid value of each band (NaN for a band without one).
        mean: (B,) mean of the valid values of each band (NaN for a band without one).
        valid_counts: (B,) number of valid values of each band.
        sample_spectra: (n, B) float32 spectra of a uniform random sample of the pixels that are valid in
            every band except ``nan_bands`` (whose columns hold 0); all such pixels when the scene has at
            most ``max_sample_pixels`` pixels.
        gram: (B, B) float64 mean outer product ``x x^T`` over ``sample_spectra``.
        pixel_count: n, the number of spectra behind ``gram``.
        dead_bands: indices of bands whose valid values are all equal (including all-zero bands).
        nan_bands: indices of bands without any valid value (all NaN or all nodata).
        partial_invalid: indices of bands with some, but not only, invalid values.
        gross_lower, gross_upper: (B,) limits beyond which a band's value is a gross outlier
            (:func:`gross_limits`; -inf and inf where there are none); pixels of the sample holding one are
            left out of ``sample_spectra``. None: no limits (every value counts).
        neighbour_pairs: up to :data:`PAIR_SAMPLE` pixels with the mean of their left and right neighbours,
            every band (NaN where one of the three is invalid or a gross outlier); None: not drawn.
        sample_positions: where each pixel of ``sample_spectra`` lies (the fit destripes its sample by column);
            None: unknown.
    """

    shape: tuple[int, int, int]
    nodata: float | None
    minimum: np.ndarray
    maximum: np.ndarray
    mean: np.ndarray
    valid_counts: np.ndarray
    sample_spectra: np.ndarray
    gram: np.ndarray
    pixel_count: int
    dead_bands: np.ndarray
    nan_bands: np.ndarray
    partial_invalid: np.ndarray
    gross_lower: np.ndarray | None = None
    gross_upper: np.ndarray | None = None
    neighbour_pairs: NeighbourPairs | None = None
    sample_positions: PixelPositions | None = None

    @property
    def gross_bands(self) -> np.ndarray:
        """Indices of the bands that hold a gross outlier somewhere in the cube (their range exceeds the limits)."""
        if self.gross_lower is None or self.gross_upper is None:
            return np.zeros(0, dtype=np.int64)
        with np.errstate(invalid="ignore"):  # NaN range of a band without a valid value: not gross
            outside = (self.minimum < self.gross_lower) | (self.maximum > self.gross_upper)
        return np.flatnonzero(outside).astype(np.int64)

    @property
    def untouched_bands(self) -> np.ndarray:
        """Indices of the bands no denoiser sees (dead and NaN bands), sorted."""
        return np.union1d(self.dead_bands, self.nan_bands).astype(np.int64)

    @property
    def valid_bands(self) -> np.ndarray:
        """Indices of the bands handed to a denoiser, sorted: every band that is neither dead nor NaN."""
        return np.setdiff1d(np.arange(self.shape[0]), self.untouched_bands).astype(np.int64)

    @property
    def valid_sample_spectra(self) -> np.ndarray:
        """(n, B_valid) float32: ``sample_spectra`` in the bands a denoiser sees (``valid_bands``, in order)."""
        return self.sample_spectra[:, self.valid_bands]

    @property
    def valid_neighbour_pairs(self) -> NeighbourPairs | None:
        """``neighbour_pairs`` in the bands a denoiser sees (``valid_bands``), or None."""
        return None if self.neighbour_pairs is None else self.neighbour_pairs.bands(self.valid_bands)

    def band_window_range(self, bands: slice | np.ndarray | list[int]) -> tuple[float, float]:
        """The (lo, hi) that maps a band window to [0, 1]: the whole-cube range of its valid bands.

        One range per window (not per band) keeps the spectral shape a model sees, and taking it over the
        whole cube gives every tile of the scene the same mapping. Dead and NaN bands in ``bands`` are ignored.

        Args:
            bands: the window as indices (or a slice) of the cube's bands.

        Returns:
            (lo, hi) with hi > lo.
        """
        indices = np.arange(self.shape[0])[bands]
        usable = np.intersect1d(indices, self.valid_bands)
        if usable.size == 0:
            raise ConfigError(
                f"band window {indices.tolist()} holds only dead or NaN bands; hand a denoiser valid bands only"
            )
        return float(self.minimum[usable].min()), float(self.maximum[usable].max())


def compute_statistics(
    reader: CubeReader,
    *,
    nodata: float | None = None,
    max_sample_pixels: int = 65536,
    rows_per_chunk: int | None = None,
    seed: int = 0,
) -> CubeStatistics:
    """Read the cube once, strip by strip, and gather its :class:`CubeStatistics`.

    Memory is one strip of ``rows_per_chunk`` rows (twice, for integer data) plus the pixel sample
    (n x B float32) and the neighbour pairs (2 x :data:`PAIR_SAMPLE` x B float32).

    Args:
        reader: an open cube; ``reader.read(rows)`` gives (B, r, W).
        nodata: value that marks missing pixels; None takes ``reader.meta.nodata``.
        max_sample_pixels: size of the uniform spatial sample behind ``gram`` and ``sample_spectra``.
        rows_per_chunk: rows per strip; None picks about ``CHUNK_BYTES`` per strip.
        seed: seed of the pixel sample.

    Returns:
        The statistics of the whole cube.
    """
    bands, height, width = reader.shape
    if nodata is None:
        nodata = reader.meta.nodata
    if max_sample_pixels < 1:
        raise ConfigError(f"max_sample_pixels must be at least 1; got {max_sample_pixels}")
    if rows_per_chunk is None:
        rows_per_chunk = max(1, CHUNK_BYTES // (bands * width * np.dtype(reader.dtype).itemsize))
    if rows_per_chunk < 1:
        raise ConfigError(f"rows_per_chunk must be at least 1; got {rows_per_chunk}")

    pixels = height * width
    if pixels <= max_sample_pixels:
        sample_index = np.arange(pixels, dtype=np.int64)
    else:
        rng = np.random.default_rng(seed)
        sample_index = np.sort(rng.choice(pixels, size=max_sample_pixels, replace=False))
    sample = np.empty((sample_index.size, bands), dtype=np.float32)  # invalid values become NaN
    pair_index = pair_positions(height, width, PAIR_SAMPLE, seed + 1)
    pair_pixels = np.empty((pair_index.size, bands), dtype=np.float32)
    pair_neighbours = np.empty((pair_index.size, bands), dtype=np.float32)

    counts = np.zeros(bands, dtype=np.int64)
    sums = np.zeros(bands, dtype=np.float64)
    minimum = np.full(bands, np.inf)
    maximum = np.full(bands, -np.inf)
    for row_start in range(0, height, rows_per_chunk):
        row_stop = min(row_start + rows_per_chunk, height)
        raw = reader.read(slice(row_start, row_stop))
        valid = ~invalid_mask(raw, nodata)
        values = raw if raw.dtype.kind == "f" else raw.astype(np.promote_types(raw.dtype, np.float32))
        counts += np.count_nonzero(valid, axis=(1, 2))
        with np.errstate(over="ignore"):  # float64 values near 1e308: those bands are summed again, scaled
            sums += np.sum(values, axis=(1, 2), where=valid, dtype=np.float64)
        minimum = np.minimum(minimum, np.min(values, axis=(1, 2), where=valid, initial=np.inf))
        maximum = np.maximum(maximum, np.max(values, axis=(1, 2), where=valid, initial=-np.inf))

        first, last = np.searchsorted(sample_index, [row_start * width, row_stop * width])
        rows, cols = np.divmod(sample_index[first:last] - row_start * width, width)
        with np.errstate(over="ignore"):  # float64 beyond the float32 range becomes inf: the pixel is not sampled
            sample[first:last] = np.where(valid[:, rows, cols], values[:, rows, cols], np.nan).T
        first, last = np.searchsorted(pair_index, [row_start * width, row_stop * width])
        rows, cols = np.divmod(pair_index[first:last] - row_start * width, width)
        triple = valid[:, rows, cols] & valid[:, rows, cols - 1] & valid[:, rows, cols + 1]
        with np.errstate(over="ignore"):
            pair_pixels[first:last] = np.where(triple, values[:, rows, cols], np.nan).T
            neighbour_mean = 0.5 * (values[:, rows, cols - 1].astype(np.float64) + values[:, rows, cols + 1])
            pair_neighbours[first:last] = np.where(triple, neighbour_mean, np.nan).T
        del raw, valid, values  # before the next strip is read: one strip in memory at a time
        logger.debug("statistics: rows %d-%d of %d", row_start, row_stop, height)

    has_values = counts > 0
    overflowed = np.flatnonzero(has_values & ~np.isfinite(sums))
    if overflowed.size:
        sums[overflowed] = _scaled_sums(reader, overflowed, nodata, rows_per_chunk)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(has_values, sums / counts, np.nan)
    if overflowed.size:
        mean[overflowed] /= SUM_SCALE  # the mean lies between the band's minimum and maximum: finite
    minimum = np.where(has_values, minimum, np.nan)
    maximum = np.where(has_values, maximum, np.nan)
    nan_bands = np.flatnonzero(~has_values)
    dead_bands = np.flatnonzero(has_values & (minimum == maximum))
    partial_invalid = np.flatnonzero(has_values & (counts < pixels))

    kept = np.isfinite(sample[:, has_values] if not has_values.all() else sample).all(axis=1)
    sample_spectra = sample if kept.all() else sample[kept]  # no second copy of the sample when nothing is dropped
    sample_positions = sample_index if kept.all() else sample_index[kept]
    del sample
    sample_spectra[:, nan_bands] = 0.0
    gross_lower, gross_upper = gross_limits(sample_spectra)
    gross_rows = ((sample_spectra < gross_lower) | (sample_spectra > gross_upper)).any(axis=1)
    if gross_rows.any():  # a flipped bit must not drive the fit: its pixel leaves the sample
        sample_spectra = sample_spectra[~gross_rows]
        sample_positions = sample_positions[~gross_rows]
        logger.info("statistics: %d sampled pixel(s) with gross outliers left out", int(gross_rows.sum()))
    with np.errstate(invalid="ignore"):  # NaN entries stay NaN: those pairs are left out
        gross_pairs = np.zeros(pair_index.size, dtype=bool)
        for half in (pair_pixels, pair_neighbours):
            gross_pairs |= ((half < gross_lower) | (half > gross_upper)).any(axis=1)
    pair_pixels[gross_pairs] = np.nan
    gram = np.zeros((bands, bands))
    for first in range(0, len(sample_spectra), GRAM_ROWS):
        rows64 = sample_spectra[first : first + GRAM_ROWS].astype(np.float64)
        gram += rows64.T @ rows64
    gram /= max(len(sample_spectra), 1)
    return CubeStatistics(
        shape=(bands, height, width),
        nodata=nodata,
        minimum=minimum,
        maximum=maximum,
        mean=mean,
        valid_counts=counts,
        sample_spectra=sample_spectra,
        gram=gram,
        pixel_count=int(len(sample_spectra)),
        dead_bands=dead_bands,
        nan_bands=nan_bands,
        partial_invalid=partial_invalid,
        gross_lower=gross_lower,
        gross_upper=gross_upper,
        neighbour_pairs=NeighbourPairs(pair_pixels, pair_neighbours),
        sample_positions=PixelPositions.from_flat(sample_positions, height, width),
    )


def gross_limits(sample: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-band limits beyond which a value is a gross outlier, from robust quantiles of a pixel sample.

    A band's central spread is the range between its :data:`GROSS_QUANTILE` and 1 - :data:`GROSS_QUANTILE`
    quantiles, at least one value trimmed on each side; a value farther than :data:`GROSS_FACTOR` spreads from
    the band's median is gross. A handful of such values (a flipped exponent bit: 1e10 in a band of 0..1)
    would otherwise dominate every square the fit takes. A band without spread (constant in its bulk) or a
    sample of fewer than 4 pixels gets no limits.

    Args:
        sample: (n, B) finite pixel spectra.

    Returns:
        (lower (B,), upper (B,)) float64; -inf and inf where a band has no limits.
    """
    count, bands = sample.shape
    lower, upper = np.full(bands, -np.inf), np.full(bands, np.inf)
    trim = max(1, math.ceil(GROSS_QUANTILE * count))
    if count < 2 * trim + 2:
        return lower, upper
    middle = count // 2
    kth = [trim, middle, count - 1 - trim]
    ordered = np.array(sample.T, order="C")  # (B, n) copy: each band's values contiguous, partitioned in place

    def partition(part: slice) -> None:
        ordered[part].partition(kth, axis=1)

    across_threads(partition, bands)
    low, median, high = (ordered[:, index].astype(np.float64) for index in kth)
    spread = high - low
    limited = spread > 0
    lower[limited] = (median - GROSS_FACTOR * spread)[limited]
    upper[limited] = (median + GROSS_FACTOR * spread)[limited]
    return lower, upper


def _scaled_sums(reader: CubeReader, bands: np.ndarray, nodata: float | None, rows_per_chunk: int) -> np.ndarray:
    """(len(bands),) sums of the valid values of ``bands`` times :data:`SUM_SCALE`, in a second pass over them.

    Only for bands whose plain float64 sum overflowed (values near the float64 maximum).
    """
    _, height, _ = reader.shape
    sums = np.zeros(bands.size)
    for row_start in range(0, height, rows_per_chunk):
        raw = reader.read(slice(row_start, min(row_start + rows_per_chunk, height)), slice(None), bands)
        valid = ~invalid_mask(raw, nodata)
        sums += np.sum(np.where(valid, raw, 0.0) * SUM_SCALE, axis=(1, 2), dtype=np.float64)
    return sums


def value_scale(stats: CubeStatistics) -> float:
    """The power of two the methods should see the cube multiplied by: 1.0 unless its values are extreme.

    When the largest valid magnitude (gross outliers aside: at most their band's limit, :func:`gross_limits`)
    exceeds :data:`LARGEST_SAFE` (e.g. float32 values near 3e38, or float64
    beyond the float32 range) or is below :data:`SMALLEST_SAFE` (e.g. 1e-38 or subnormals), the scale brings
    it into [0.5, 1). A power of two scales every value exactly, so the output
    divided by it is the denoised cube in its own units.

    Args:
        stats: the statistics of the cube.

    Returns:
        A power of two (1.0 for every cube of ordinary magnitude).
    """
    usable = stats.valid_counts > 0
    if not usable.any():
        return 1.0
    minimum, maximum = stats.minimum, stats.maximum
    if stats.gross_bands.size:  # a gross outlier (one flipped bit) must not set the scale of the whole cube
        minimum, maximum = np.maximum(minimum, stats.gross_lower), np.minimum(maximum, stats.gross_upper)
    largest = float(max(np.abs(minimum[usable]).max(), np.abs(maximum[usable]).max()))
    if not np.isfinite(largest) or largest == 0.0 or SMALLEST_SAFE <= largest <= LARGEST_SAFE:
        return 1.0
    exponent = int(np.frexp(largest)[1])  # largest = mantissa * 2**exponent, mantissa in [0.5, 1)
    # kept a normal float64 either way (float64 subnormals scale to about 2**-74, near enough)
    return float(np.ldexp(1.0, -int(np.clip(exponent, -1000, 1022))))
