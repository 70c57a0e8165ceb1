"""Cutting a cube into overlapping pieces and blending the denoised pieces back together.

One rule plans every axis: pieces of a fixed size, the first at 0 and the last flush with the end, spread
evenly so that neighbours share at least ``size - stride`` entries (no padding; an axis shorter than a piece is
one piece). Spatially the pieces are square tiles of ``tile`` pixels sharing at least ``overlap`` pixels;
spectrally, a method that works on a fixed number of bands (DECSC: 31) uses windows of ``band_window`` bands at
most ``band_stride`` apart. Spreading the pieces evenly keeps every overlap close to the one asked for, instead
of one large overlap at the end of the axis.

Overlapping outputs are blended with weights that are 1 in the middle of a piece and follow a raised-cosine
(Hann) ramp across each overlap with a neighbour, so the two ramps sum to one there. Every weight is strictly
positive, and the blended value is always divided by the accumulated weight, so the weights sum to one also
where three pieces meet.

The :class:`Stitcher` keeps only the parts of the output that still wait for a tile: a cell of the cube is handed
back as soon as every tile that covers it has been added, so for tiles added in plan order (row by row) its
memory is about ``overlap x W x B`` plus one tile, whatever the height of the scene. With ``spill_dir`` it keeps
in memory only what the next tile of the plan adds to and parks the rest of that strip in an unlinked temporary
file (the kernel's page cache holds it, not the process), so its memory does not grow with the width either.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, NamedTuple

import numpy as np

from hsidenoise.errors import ConfigError, CubeShapeError, CubeWriteError

if TYPE_CHECKING:
    from hsidenoise.statistics import CubeStatistics


@dataclass(frozen=True)
class TileConfig:
    """How a cube is cut into tiles and band windows.

    Attributes:
        tile: side of a square spatial tile in pixels (a tile is smaller only where the cube is).
        overlap: least number of pixels shared by neighbouring tiles (blended); at most half a tile.
        band_window: bands per spectral window for methods that take a fixed band count (31, DECSC's).
        band_stride: most bands between the starts of consecutive windows, 1 to ``band_window``; at least
            ``band_window - band_stride`` bands of neighbouring windows are blended.
    """

    tile: int = 256
    overlap: int = 32
    band_window: int = 31
    band_stride: int = 16

    def __post_init__(self) -> None:
        for name in ("tile", "overlap", "band_window", "band_stride"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise ConfigError(f"{name} must be a whole number of pixels/bands; got {value!r}")
        if self.tile < 1:
            raise ConfigError(f"tile must be at least 1 pixel; got {self.tile}: pass a positive --tile")
        if not 0 <= 2 * self.overlap <= self.tile:
            raise ConfigError(
                f"overlap must be between 0 and half the tile ({self.tile // 2}); got {self.overlap}: "
                "lower --overlap or raise --tile"
            )
        if self.band_window < 1:
            raise ConfigError(f"band_window must be at least 1 band; got {self.band_window}")
        if not 1 <= self.band_stride <= self.band_window:
            raise ConfigError(
                f"band_stride must be between 1 and the band window ({self.band_window}) so that no band is "
                f"skipped; got {self.band_stride}"
            )

    @property
    def stride(self) -> int:
        """Most pixels between the starts of neighbouring tiles."""
        return self.tile - self.overlap


@dataclass(frozen=True)
class Tile:
    """One spatial tile: the region of the cube that is read and denoised, overlap included.

    Attributes:
        row_start, row_stop: rows ``[row_start, row_stop)`` of the cube.
        col_start, col_stop: columns ``[col_start, col_stop)`` of the cube.
    """

    row_start: int
    row_stop: int
    col_start: int
    col_stop: int

    @property
    def rows(self) -> slice:
        return slice(self.row_start, self.row_stop)

    @property
    def cols(self) -> slice:
        return slice(self.col_start, self.col_stop)

    @property
    def shape(self) -> tuple[int, int]:
        """(h, w) of the tile."""
        return (self.row_stop - self.row_start, self.col_stop - self.col_start)


def plan_axis(length: int, size: int, stride: int) -> list[slice]:
    """Pieces of ``size`` covering an axis of ``length``, at most ``stride`` apart, spread evenly.

    The first piece starts at 0 and the last ends at ``length``; starts between them are spaced as evenly as
    whole numbers allow, so neighbours overlap by at least ``size - stride``. An axis no longer than ``size``
    is one piece.

    Example:
        >>> plan_axis(10, 4, 3)
        [slice(0, 4, None), slice(3, 7, None), slice(6, 10, None)]
        >>> plan_axis(11, 4, 3)
        [slice(0, 4, None), slice(2, 6, None), slice(4, 8, None), slice(7, 11, None)]
    """
    if length < 1 or size < 1 or stride < 1:
        raise ConfigError(f"length, window size and stride must be positive; got {length}, {size}, {stride}")
    if length <= size:
        return [slice(0, length)]
    gaps = -(-(length - size) // stride)  # ceil: the fewest steps of at most `stride`
    starts = [k * (length - size) // gaps for k in range(gaps + 1)]
    return [slice(start, start + size) for start in starts]


def plan_spatial_axis(length: int, config: TileConfig) -> list[slice]:
    """The tiles' pieces of a spatial axis: as few as with side ``config.tile``, each as small as they can be.

    :func:`plan_axis` with pieces of ``config.tile`` spreads the slack over the overlaps: a 512-pixel axis
    takes three 256-pixel tiles overlapping by 128, 1.5x the pixels. The same three pieces at 192 pixels overlap
    by ``config.overlap`` (32), 1.125x the pixels: every per-pixel stage of a method does 25 % less work per
    axis, and no piece is larger than asked (the memory bound holds). When the smaller side would leave less
    than two overlaps per piece, the pieces keep ``config.tile``.

    Example:
        >>> plan_spatial_axis(512, TileConfig(tile=256, overlap=32))
        [slice(0, 192, None), slice(160, 352, None), slice(320, 512, None)]
    """
    pieces = plan_axis(length, config.tile, config.stride)
    if len(pieces) == 1:
        return pieces
    gaps, overlap = len(pieces) - 1, config.overlap
    side = max(-(-(length + gaps * overlap) // (gaps + 1)), 2 * overlap, 1)
    while side < config.tile and -(-(length - side) // (side - overlap)) > gaps:
        side += 1
    return plan_axis(length, side, side - overlap) if side < config.tile else pieces


def plan_tiles(height: int, width: int, config: TileConfig) -> list[Tile]:
    """Spatial tiles covering a ``height`` x ``width`` cube, row by row (the order the Stitcher expects)."""
    row_windows = plan_spatial_axis(height, config)
    col_windows = plan_spatial_axis(width, config)
    return [Tile(rows.start, rows.stop, cols.start, cols.stop) for rows in row_windows for cols in col_windows]


def plan_band_windows(bands: int, window: int, stride: int) -> list[slice]:
    """Band windows of ``window`` bands, at most ``stride`` apart, covering all ``bands``.

    The last window ends flush with the last band; with fewer bands than a window there is one window of
    all bands.
    """
    if not 1 <= stride <= window:
        raise ConfigError(f"band stride must be between 1 and the band window ({window}); got {stride}")
    return plan_axis(bands, window, stride)


def taper(size: int, rise: int, fall: int) -> np.ndarray:
    """1-D weights of a piece of ``size`` sharing ``rise`` entries with its predecessor, ``fall`` with its successor.

    The weights are 1, except over the first ``rise`` entries, which follow the raised cosine
    ``sin^2(pi/2 (k + 1/2) / rise)``, and over the last ``fall`` entries, which follow its mirror image; where
    both ramps reach the same entry their product is taken. A falling ramp and the rising ramp of the same
    length in the next piece sum to one entry by entry.

    Returns:
        (size,) float32 weights in (0, 1].
    """
    weights = np.ones(size, dtype=np.float64)
    if rise > 0:
        weights[:rise] *= np.sin(0.5 * np.pi * (np.arange(rise) + 0.5) / rise) ** 2
    if fall > 0:
        weights[size - fall :] *= np.cos(0.5 * np.pi * (np.arange(fall) + 0.5) / fall) ** 2
    return weights.astype(np.float32)


def blend_weights(windows: Sequence[slice]) -> list[np.ndarray]:
    """Blending weights of each piece of an axis plan (rows, columns or bands), ramped across each overlap.

    Args:
        windows: the plan of one axis, sorted by start (as :func:`plan_axis` returns it).

    Returns:
        One (piece size,) float32 array per window, strictly positive; where at most two pieces overlap they
        sum to one, elsewhere dividing by the accumulated weight normalises them.
    """
    shared = [max(0, before.stop - after.start) for before, after in zip(windows, windows[1:])]
    return [
        taper(window.stop - window.start, shared[k - 1] if k > 0 else 0, shared[k] if k < len(shared) else 0)
        for k, window in enumerate(windows)
    ]


def mirror_bands(x: np.ndarray, size: int) -> np.ndarray:
    """Extend (b, ...) along axis 0 to ``size`` by mirroring (b < size): 0 1 2 -> 0 1 2 1 0 1 2 ..."""
    b = x.shape[0]
    if b >= size:
        return x
    period = max(2 * b - 2, 1)
    index = np.arange(size) % period
    index = np.where(index < b, index, period - index)
    return x[index]


@dataclass(frozen=True, eq=False)
class BandWindowPlan:
    """The band windows of one cube, each with its whole-cube normalisation, and how to blend them back.

    A tile's valid bands (B_valid, h, w) are optionally mirrored up to one window (:func:`mirror_bands`), cut
    into ``windows``, each mapped to [0, 1] with its (lo, hi) from :meth:`CubeStatistics.band_window_range`;
    outputs are mapped back and blended along the spectrum with :func:`blend_weights`.

    Attributes:
        bands: B_valid, the bands of a tile.
        padded: the band count after mirroring (``bands`` when not mirrored or not shorter than a window).
        windows: slices of the padded band axis.
        weights: (window size,) blend weights per window.
        ranges: (lo, hi) per window.
        total: (padded,) summed blend weights.
    """

    bands: int
    padded: int
    windows: list[slice]
    weights: list[np.ndarray]
    ranges: list[tuple[float, float]]
    total: np.ndarray

    @classmethod
    def plan(cls, stats: CubeStatistics, window: int, stride: int, *, mirror: bool) -> BandWindowPlan:
        """Windows of ``window`` bands ``stride`` apart over the valid bands of ``stats``.

        With ``mirror`` a cube with fewer valid bands than ``window`` is mirrored up to it (a model that needs
        exactly ``window`` bands); without, it gets one window of all its bands.
        """
        valid = stats.valid_bands
        bands = int(valid.size)
        padded = max(bands, window) if mirror and bands else bands
        windows = plan_band_windows(padded, window, stride) if bands else []
        weights = blend_weights(windows)
        source = mirror_bands(np.arange(bands), padded)
        ranges = [stats.band_window_range(valid[np.unique(source[w])]) for w in windows]
        total = np.zeros(padded, dtype=np.float32)
        for w, weight in zip(windows, weights, strict=True):
            total[w] += weight
        return cls(bands, padded, windows, weights, ranges, total)

    def pad(self, x: np.ndarray) -> np.ndarray:
        """(B_valid, ...) -> (padded, ...) by mirroring."""
        return mirror_bands(x, self.padded)

    def scale(self, k: int) -> float:
        """hi - lo of window ``k``: divide a noise sigma by it to bring it to the model's units."""
        lo, hi = self.ranges[k]
        return hi - lo

    def normalise(self, padded: np.ndarray, k: int) -> np.ndarray:
        """Window ``k`` of a padded (padded, h, w) array mapped to [0, 1]: (b, h, w) float32."""
        lo, hi = self.ranges[k]
        return (padded[self.windows[k]] - np.float32(lo)) / np.float32(hi - lo)

    def accumulate(self, blended: np.ndarray, k: int, values: np.ndarray) -> None:
        """Add window ``k``'s output (b, h, w) in [0, 1], mapped back and weighted, into ``blended`` (padded, h, w)."""
        lo, hi = self.ranges[k]
        blended[self.windows[k]] += self.weights[k][:, None, None] * (values * np.float32(hi - lo) + np.float32(lo))

    def finish(self, blended: np.ndarray) -> np.ndarray:
        """Normalise the accumulated (padded, h, w) by the summed weights; returns (B_valid, h, w)."""
        blended /= self.total[:, None, None]
        return blended[: self.bands]


def _accumulator_bytes(shape: tuple[int, ...], dtype: np.dtype) -> int:
    """Bytes of one accumulator: values of `shape` (B, r, c) and weights (r, c)."""
    return (int(np.prod(shape)) + int(np.prod(shape[1:]))) * np.dtype(dtype).itemsize


class StitchedBlock(NamedTuple):
    """A finished part of the output: ``data`` (B, r, c) belongs at ``[:, rows, cols]`` of the cube."""

    rows: slice
    cols: slice
    data: np.ndarray


class Stitcher:
    """Weighted accumulation of overlapping tiles that hands back each part of the cube once it is final.

    The cube is split into cells by every tile edge. A cell covered by one tile is handed back as that tile's
    values (unchanged); a cell covered by several tiles is accumulated as ``sum(w * x) / sum(w)``, with ``w``
    the outer product of the row and column :func:`blend_weights` of the plan, and handed back when its last
    tile arrives. The cells finished by one :meth:`add`
    are merged into one block when they form a rectangle (in plan order: one block per tile).

    Args:
        bands: B of the blocks that will be added.
        shape: (H, W) of the cube.
        tiles: the plan of :func:`plan_tiles` (each tile is added exactly once, in any order; plan order keeps
            memory low).
        spill_dir: a directory for a temporary file that holds the accumulated overlaps the next tile (in plan
            order) does not add to, until a tile needs them again; None keeps everything in memory. The file
            is unlinked from the start and closed when the last tile is added (or by :meth:`close`).
    """

    def __init__(
        self,
        bands: int,
        shape: tuple[int, int],
        tiles: Sequence[Tile],
        *,
        spill_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        self.bands = bands
        self.shape = shape
        height, width = shape
        self._pending = set(tiles)
        row_windows = sorted({(t.row_start, t.row_stop) for t in tiles})
        col_windows = sorted({(t.col_start, t.col_stop) for t in tiles})
        self._row_weights = dict(zip(row_windows, blend_weights([slice(*w) for w in row_windows]), strict=True))
        self._col_weights = dict(zip(col_windows, blend_weights([slice(*w) for w in col_windows]), strict=True))
        self._row_cuts = np.unique([0, height, *(edge for t in tiles for edge in (t.row_start, t.row_stop))])
        self._col_cuts = np.unique([0, width, *(edge for t in tiles for edge in (t.col_start, t.col_stop))])
        if (self._row_cuts[0], self._row_cuts[-1], self._col_cuts[0], self._col_cuts[-1]) != (0, height, 0, width):
            raise ConfigError(f"tiles reach outside the cube of {height} x {width} pixels")
        self._remaining = np.zeros((len(self._row_cuts) - 1, len(self._col_cuts) - 1), dtype=np.int64)
        for tile in tiles:
            rows, cols = self._cell_ranges(tile)
            self._remaining[rows, cols] += 1
        if (self._remaining == 0).any():
            raise ConfigError(f"the tiles leave parts of the {height} x {width} cube uncovered")
        self._accumulators: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
        self._plan = list(tiles)
        self._index = {tile: position for position, tile in enumerate(self._plan)}
        self._spill_dir = spill_dir
        self._spill: IO[bytes] | None = None
        # cell -> (offset in the spill file, shape of its values, dtype) of the accumulators parked there
        self._spilled: dict[tuple[int, int], tuple[int, tuple[int, ...], np.dtype]] = {}
        # size in bytes -> offsets of spill-file slots that were read back and can be reused
        self._free_slots: dict[int, list[int]] = {}
        self._spill_end = 0

    @property
    def done(self) -> bool:
        """True once every cell has been handed back."""
        return not self._remaining.any()

    @property
    def buffered_bytes(self) -> int:
        """Bytes held in memory in accumulators for cells that still wait for a tile."""
        return sum(values.nbytes + weights.nbytes for values, weights in self._accumulators.values())

    @property
    def spilled_bytes(self) -> int:
        """Bytes of accumulators parked in the spill file."""
        return sum(_accumulator_bytes(shape, dtype) for _, shape, dtype in self._spilled.values())

    def close(self) -> None:
        """Close the spill file, if any (called by the last :meth:`add`; idempotent)."""
        if self._spill is not None:
            self._spill.close()
            self._spill = None
        self._spilled.clear()
        self._free_slots.clear()

    def _has_accumulator(self, cell: tuple[int, int]) -> bool:
        return cell in self._accumulators or cell in self._spilled

    def _accumulator(self, cell: tuple[int, int]) -> tuple[np.ndarray, np.ndarray] | None:
        """The accumulator of `cell` in memory (read back from the spill file if it was parked), or None."""
        if cell in self._spilled:
            offset, shape, dtype = self._spilled.pop(cell)
            values = np.empty(shape, dtype=dtype)
            weights = np.empty(shape[1:], dtype=dtype)
            self._spill.seek(offset)
            for array in (values, weights):
                if self._spill.readinto(memoryview(array.reshape(-1).view(np.uint8))) != array.nbytes:
                    raise CubeWriteError(
                        f"the temporary file of overlaps in {self._spill_dir} ended early; run again"
                    )
            self._free_slots.setdefault(_accumulator_bytes(shape, dtype), []).append(offset)
            self._accumulators[cell] = (values, weights)
        return self._accumulators.get(cell)

    def _park(self, keep: Tile | None) -> None:
        """Move to the spill file every accumulator `keep` (the next tile) does not add to."""
        if self._spill_dir is None:
            return
        if keep is not None:
            rows, cols = self._cell_ranges(keep)
        for cell in list(self._accumulators):
            if keep is not None and rows.start <= cell[0] < rows.stop and cols.start <= cell[1] < cols.stop:
                continue
            values, weights = self._accumulators.pop(cell)
            size = values.nbytes + weights.nbytes
            slots = self._free_slots.get(size)
            if slots:
                offset = slots.pop()
            else:
                offset, self._spill_end = self._spill_end, self._spill_end + size
            try:
                if self._spill is None:
                    self._spill = tempfile.TemporaryFile(dir=self._spill_dir)  # closed in close()
                self._spill.seek(offset)
                self._spill.write(np.ascontiguousarray(values).data)
                self._spill.write(np.ascontiguousarray(weights).data)
            except OSError as error:
                raise CubeWriteError(
                    f"cannot keep overlaps in a temporary file in {self._spill_dir}: {error}; free disk space there"
                ) from error
            self._spilled[cell] = (offset, values.shape, values.dtype)

    def _next_pending(self, after: Tile) -> Tile | None:
        """The first tile after `after` in the plan that has not been added yet (None at the end)."""
        for candidate in self._plan[self._index[after] + 1 :]:
            if candidate in self._pending:
                return candidate
        return None

    def _cell_ranges(self, tile: Tile) -> tuple[slice, slice]:
        row_first, row_end = np.searchsorted(self._row_cuts, [tile.row_start, tile.row_stop])
        col_first, col_end = np.searchsorted(self._col_cuts, [tile.col_start, tile.col_stop])
        return slice(int(row_first), int(row_end)), slice(int(col_first), int(col_end))

    def add(self, tile: Tile, block: np.ndarray, *, in_place: bool = False) -> list[StitchedBlock]:
        """Add one denoised tile; returns the blocks of the cube that became final.

        Args:
            tile: where the block belongs.
            block: (B, h, w) values of the tile, float.
            in_place: blend the finished overlaps into ``block`` itself and hand back views of it rather than
                new arrays (one tile less memory, one copy less). ``block`` is then changed: pass only an array
                nobody reads again before the returned blocks are used. Ignored for a read-only or non-float32
                ``block``.

        Returns:
            Finished blocks, each (B, r, c), in no particular order.
        """
        if block.shape != (self.bands, *tile.shape):
            raise CubeShapeError(
                f"a tile at rows {tile.row_start}:{tile.row_stop}, cols {tile.col_start}:{tile.col_stop} must be "
                f"{(self.bands, *tile.shape)}; the method returned {tuple(block.shape)}"
            )
        if tile not in self._pending:
            raise ConfigError(f"{tile} was added twice or is not part of the plan")
        self._pending.remove(tile)
        in_place = in_place and block.flags.writeable and block.dtype == np.float32
        cell_rows, cell_cols = self._cell_ranges(tile)
        weights = None
        finished: dict[tuple[int, int], np.ndarray] = {}
        for i in range(cell_rows.start, cell_rows.stop):
            local_rows = slice(int(self._row_cuts[i]) - tile.row_start, int(self._row_cuts[i + 1]) - tile.row_start)
            for j in range(cell_cols.start, cell_cols.stop):
                local_cols = slice(
                    int(self._col_cuts[j]) - tile.col_start, int(self._col_cuts[j + 1]) - tile.col_start
                )
                self._remaining[i, j] -= 1
                part = block[:, local_rows, local_cols]
                if self._remaining[i, j] == 0 and not self._has_accumulator((i, j)):
                    finished[i, j] = part
                    continue
                if weights is None:
                    weights = np.outer(
                        self._row_weights[tile.row_start, tile.row_stop],
                        self._col_weights[tile.col_start, tile.col_stop],
                    )
                part_weights = weights[local_rows, local_cols]
                accumulator = self._accumulator((i, j))
                if accumulator is None:
                    dtype = np.result_type(block.dtype, np.float32)
                    accumulator = self._accumulators[i, j] = (
                        np.zeros(part.shape, dtype=dtype),
                        np.zeros(part_weights.shape, dtype=dtype),
                    )
                values, total_weights = accumulator
                values += part * part_weights
                total_weights += part_weights
                if self._remaining[i, j] == 0:
                    del self._accumulators[i, j]
                    finished[i, j] = np.divide(values, total_weights, out=part if in_place else None)
        if self.done:
            self.close()
        else:
            self._park(self._next_pending(tile))
        return self._merge(finished, (tile, block) if in_place else None)

    def _merge(
        self, cells: dict[tuple[int, int], np.ndarray], source: tuple[Tile, np.ndarray] | None = None
    ) -> list[StitchedBlock]:
        """One block for the finished cells when they form a rectangle, else one block per cell.

        With ``source`` (the tile and its block, every cell already a view of that block), the rectangle is
        handed back as a view of the block instead of a copy.
        """
        if not cells:
            return []
        row_indices = [i for i, _ in cells]
        col_indices = [j for _, j in cells]
        first_row, last_row = min(row_indices), max(row_indices)
        first_col, last_col = min(col_indices), max(col_indices)
        rows = slice(int(self._row_cuts[first_row]), int(self._row_cuts[last_row + 1]))
        cols = slice(int(self._col_cuts[first_col]), int(self._col_cuts[last_col + 1]))
        if len(cells) == 1:
            return [StitchedBlock(rows, cols, next(iter(cells.values())))]
        if len(cells) == (last_row - first_row + 1) * (last_col - first_col + 1) and source is not None:
            tile, block = source
            return [
                StitchedBlock(
                    rows,
                    cols,
                    block[:, rows.start - tile.row_start : rows.stop - tile.row_start,
                          cols.start - tile.col_start : cols.stop - tile.col_start],
                )
            ]
        if len(cells) != (last_row - first_row + 1) * (last_col - first_col + 1):
            return [
                StitchedBlock(
                    slice(int(self._row_cuts[i]), int(self._row_cuts[i + 1])),
                    slice(int(self._col_cuts[j]), int(self._col_cuts[j + 1])),
                    data,
                )
                for (i, j), data in cells.items()
            ]
        dtype = np.result_type(*(data.dtype for data in cells.values()))
        merged = np.empty((self.bands, rows.stop - rows.start, cols.stop - cols.start), dtype=dtype)
        for (i, j), data in cells.items():
            top = int(self._row_cuts[i]) - rows.start
            left = int(self._col_cuts[j]) - cols.start
            merged[:, top : top + data.shape[1], left : left + data.shape[2]] = data
        return [StitchedBlock(rows, cols, merged)]
