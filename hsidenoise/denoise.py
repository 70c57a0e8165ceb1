"""The tool: read -> statistics -> tile -> method -> stitch -> write, streaming so memory does not grow with the scene.

:func:`denoise` runs one cube from a file (or an open reader) into an output file; :func:`denoise_array` runs an
in-memory cube through the same code. The flow:

1. the memory the run needs is checked, and the output is created (a staged temporary file): an output that is
   an input, exists without ``overwrite``, or does not fit on disk is refused before any work;
2. one streaming pass computes the :class:`~hsidenoise.statistics.CubeStatistics`, and ``method.prepare`` gets them
   (a cube of extreme values, e.g. float64 beyond the float32 range, is seen by the method times a power of two,
   :func:`~hsidenoise.statistics.value_scale`; a cube with nothing to denoise, no valid band or a method that
   raises :class:`~hsidenoise.errors.NothingToDenoise`, is copied unchanged and the reason is a warning of the run);
3. tile by tile (with overlap), the valid bands are read, missing pixels are filled with the band mean, and the
   method denoises the tile (several tiles per call when it has ``denoise_tiles``; on out-of-memory the batch is
   halved and retried);
4. the :class:`~hsidenoise.tiling.Stitcher` blends the tiles (in place, into the arrays the method returned,
   which the pipeline owns from then on) and hands back each block once it is final; the block's dead and NaN
   bands and its missing pixels are copied from the input unchanged, and the block is written;
5. the output is committed (renamed into place). Any exception aborts it, so no partial output is left.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from hsidenoise.cube import CubeMeta
from hsidenoise.denoiser import Denoiser, TileResult
from hsidenoise.device import is_out_of_memory
from hsidenoise.errors import CubeShapeError, NothingToDenoise, ResourceError
from hsidenoise.methods.memory import SAMPLE_PIXELS, check_batch_size, check_memory
from hsidenoise.statistics import GROSS_FACTOR, CubeStatistics, compute_statistics, invalid_mask, value_scale
from hsidenoise.tiling import StitchedBlock, Stitcher, Tile, TileConfig, plan_tiles

if TYPE_CHECKING:
    from hsidenoise.io import CubeReader

logger = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int], None]
"""Called after each tile with (tiles done, tiles in total)."""

PhaseCallback = Callable[[str], None]
"""Called as each stage of a run begins: ``"statistics"`` (the streaming pass), ``"prepare"`` (the method's
fit, e.g. noise and subspace), ``"adapt"`` (``--adapt`` only) and ``"tiles"`` (before the first tile)."""



@dataclass(frozen=True)
class TileRecord:
    """What happened to one tile.

    Attributes:
        tile: the tile (overlap included).
        seconds: the method's time for this tile (its share of the batch it was in).
        info: what the method reported for this tile (e.g. solver iterations); empty when nothing.
    """

    tile: Tile
    seconds: float
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunResult:
    """The outcome of one :func:`denoise` run, for the CLI and the report.

    Attributes:
        output_path: the written cube (None for :func:`denoise_array`).
        method: the method's name.
        shape: (B, H, W) of the cube.
        config: the tiling used.
        tiles: the spatial tile plan, in processing order.
        statistics: the whole-cube statistics the method was prepared with.
        tile_records: one per tile, in processing order.
        timings: seconds per stage: ``statistics``, ``prepare``, ``read``, ``method``, ``write`` and ``total``.
        batch_size: tiles per method call at the end of the run (lower than asked after an out-of-memory).
        clipped_values: output values that did not fit the output dtype and were clipped to its range.
        underflowed_values: non-zero output values too small for the output dtype, written as zero.
        warnings: one sentence per thing the user should know about the output, e.g. that the cube was passed
            through unchanged because nothing in it can be denoised (``"one band: nothing to regress against;
            passed through unchanged"``).
        passed_through: the output is the input unchanged (no valid band, or the method found nothing to do).
        value_scale: the power of two the method saw the cube multiplied by (1.0 unless its values were
            extreme, e.g. float64 beyond the float32 range; :func:`hsidenoise.statistics.value_scale`).
    """

    output_path: Path | None
    method: str
    shape: tuple[int, int, int]
    config: TileConfig
    tiles: list[Tile]
    statistics: CubeStatistics
    tile_records: list[TileRecord]
    timings: dict[str, float]
    batch_size: int
    clipped_values: int = 0
    underflowed_values: int = 0
    warnings: list[str] = field(default_factory=list)
    passed_through: bool = False
    value_scale: float = 1.0

    @property
    def dead_bands(self) -> list[int]:
        """Constant bands, written unchanged."""
        return self.statistics.dead_bands.tolist()

    @property
    def nan_bands(self) -> list[int]:
        """Bands without a valid value, written unchanged."""
        return self.statistics.nan_bands.tolist()

    @property
    def untouched_bands(self) -> list[int]:
        """Every band the method did not see (dead and NaN), sorted."""
        return self.statistics.untouched_bands.tolist()


class _BlockWriter(Protocol):
    def write(self, block: np.ndarray, rows: slice, cols: slice) -> None: ...


def denoise(
    source: CubeReader | str | os.PathLike[str],
    output_path: str | os.PathLike[str],
    method: Denoiser,
    config: TileConfig | None = None,
    *,
    dtype: str | np.dtype = "float32",
    overwrite: bool = False,
    nodata: float | None = None,
    batch_size: int = 1,
    progress: ProgressCallback | None = None,
    phase: PhaseCallback | None = None,
) -> RunResult:
    """Denoise a cube file (or an open reader) into ``output_path``, streaming tile by tile.

    Args:
        source: a path any :func:`hsidenoise.io.open_cube` reads, or an open ``CubeReader`` (left open).
        output_path: the cube to write; its suffix picks the format.
        method: the denoiser.
        config: tiling; the default :class:`TileConfig` when None.
        dtype: output data type: ``"float32"``, ``"same"`` (the input's) or a numpy dtype.
        overwrite: replace an existing output (never an input).
        nodata: value that marks missing pixels; None takes the input's own (e.g. ENVI ``data ignore value``).
        batch_size: tiles per method call (used when the method has ``denoise_tiles``).
        progress: called after every tile with (done, total).
        phase: called with the name of each stage as it begins (:data:`PhaseCallback`), for a display of the
            long statistics pass and fit that come before the first tile.

    Returns:
        What was done: tile plan, untouched bands, per-tile info and timings.

    Raises:
        CubeWriteError: the output is an input, exists without ``overwrite``, or cannot be written.
        ResourceError: not enough disk space or memory; the message gives the numbers.
    """
    from hsidenoise.io import create_cube, format_for, open_cube
    from hsidenoise.io.convert import gdal_cache_limit

    config = config if config is not None else TileConfig()
    output_path = Path(output_path)
    started = time.perf_counter()
    is_reader = hasattr(source, "read")
    source_format = getattr(source.meta, "source_format", None) if is_reader else format_for(source).name
    with ExitStack() as stack:
        # GDAL would otherwise cache up to 5 % of the machine's memory of GeoTIFF blocks, growing with the scene.
        stack.enter_context(gdal_cache_limit(source_format or "", format_for(output_path).name))
        reader = source if is_reader else stack.enter_context(open_cube(source))
        check_memory(reader.shape, reader.dtype, config, batch_size=batch_size)
        inputs = [reader.path] if getattr(reader, "path", None) is not None else []
        meta = reader.meta if nodata is None else replace(reader.meta, nodata=nodata)
        writer = stack.enter_context(
            create_cube(output_path, reader.shape, meta=meta, dtype=dtype, overwrite=overwrite, inputs=inputs)
        )
        result = _run(
            reader, writer, method, config, nodata=nodata, batch_size=batch_size, progress=progress,
            spill_dir=output_path.resolve().parent, phase=phase,
        )
    result.output_path = output_path
    result.clipped_values = writer.clipped
    result.underflowed_values = writer.underflowed
    dtype_name = writer.dtype.name
    if writer.clipped:
        result.warnings.append(
            f"{writer.clipped} value(s) did not fit the output type {dtype_name} and were clipped to its range; "
            "write float64 (--dtype same for float64 input) to keep them"
        )
    if writer.underflowed:
        result.warnings.append(
            f"{writer.underflowed} non-zero value(s) were too small for the output type {dtype_name} and became 0; "
            "write float64 (--dtype same for float64 input) to keep them"
        )
    result.timings["total"] = time.perf_counter() - started
    logger.info("denoised %s into %s in %.1f s", getattr(reader, "path", source), output_path, result.timings["total"])
    return result


def denoise_array(
    cube: np.ndarray,
    method: Denoiser,
    config: TileConfig | None = None,
    *,
    nodata: float | None = None,
    batch_size: int = 1,
) -> np.ndarray:
    """Denoise an in-memory cube through the same pipeline as :func:`denoise`.

    Args:
        cube: (B, H, W) array, any real dtype.
        method, config, nodata, batch_size: as for :func:`denoise`.

    Returns:
        (B, H, W) float32 (float64 for float64 or 32/64-bit integer input); dead and NaN bands and missing
        pixels hold the input values. A cube with nothing to denoise comes back unchanged, with a
        ``UserWarning`` saying why (:attr:`RunResult.warnings`).
    """
    import warnings

    from hsidenoise.io.memory import ArrayReader, ArrayWriter

    cube = np.asarray(cube)
    if cube.ndim != 3:
        raise CubeShapeError(f"a cube must be 3-D (bands, rows, cols); got an array of shape {tuple(cube.shape)}")
    reader = ArrayReader(cube, CubeMeta(nodata=nodata, dtype=cube.dtype))
    writer = ArrayWriter(cube.shape, _working_dtype(cube.dtype))
    result = _run(reader, writer, method, config if config is not None else TileConfig(), nodata=nodata,
                  batch_size=batch_size, progress=None)
    for message in result.warnings:
        warnings.warn(message, stacklevel=2)
    return writer.data


def _working_dtype(dtype: np.dtype) -> np.dtype:
    """float32 unless the input needs more (float64, 32/64-bit integers): then float64."""
    return np.promote_types(np.dtype(dtype), np.float32)


@dataclass(frozen=True)
class _BandRoles:
    """Which bands go to the method and which values are copied from the input when a block is written.

    Attributes:
        valid: bands handed to the method (B_valid,).
        untouched: dead and NaN bands, copied whole.
        partial: positions in ``valid`` of the bands with missing pixels (filled for the method, restored after).
        fill: (B_valid,) float32 band means used to fill missing pixels (and gross outliers).
        nodata: the nodata value, or None.
        scale: the method sees the cube times this power of two (:func:`hsidenoise.statistics.value_scale`);
            its output is divided by it when written.
        gross: positions in ``valid`` of the bands holding gross outliers (values beyond ``lower`` or ``upper``,
            :func:`hsidenoise.statistics.gross_limits`): treated as impulses, i.e. filled for the method and
            written unchanged, so that they spread to no other value.
        lower, upper: (B_valid,) those limits in the units the method sees (the cube times ``scale``).
    """

    valid: np.ndarray
    untouched: np.ndarray
    partial: np.ndarray
    fill: np.ndarray
    nodata: float | None
    scale: float = 1.0
    gross: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    lower: np.ndarray | None = None
    upper: np.ndarray | None = None

    @classmethod
    def from_statistics(cls, stats: CubeStatistics) -> _BandRoles:
        valid = stats.valid_bands
        gross = np.flatnonzero(np.isin(valid, stats.gross_bands))
        mean = stats.mean[valid]
        if gross.size:  # the plain mean of a band with a gross outlier is the outlier's: the sample's instead
            mean[gross] = stats.valid_sample_spectra[:, gross].astype(np.float64).mean(axis=0)
        fill = mean.astype(np.float32)
        return cls(
            valid=valid,
            untouched=stats.untouched_bands,
            partial=np.flatnonzero(np.isin(valid, stats.partial_invalid)),
            fill=fill,
            nodata=stats.nodata,
            gross=gross,
            lower=None if stats.gross_lower is None else stats.gross_lower[valid],
            upper=None if stats.gross_upper is None else stats.gross_upper[valid],
        )

    def outside(self, position: int, values: np.ndarray, scaled: bool = True) -> np.ndarray:
        """Where the values of band ``valid[position]`` are gross outliers (bool, the shape of ``values``).

        ``scaled``: the values are in the units the method sees; False: in the cube's own (times ``scale`` here).
        """
        if self.lower is None or self.upper is None:
            return np.zeros(values.shape, bool)
        if not scaled and self.scale != 1.0:
            values = values.astype(np.float64) * self.scale
        with np.errstate(invalid="ignore"):  # NaN (missing) is not gross
            return (values < self.lower[position]) | (values > self.upper[position])

    def without_method(self) -> _BandRoles:
        """These roles with no band for the method: every band is copied from the input."""
        bands = self.valid.size + self.untouched.size
        empty = np.zeros(0, dtype=np.int64)
        return _BandRoles(empty, np.arange(bands, dtype=np.int64), empty, np.zeros(0, np.float32), self.nodata)

    def gross_warning(self, count: int) -> str:
        """The run's warning for ``count`` gross outliers."""
        return (
            f"{count} value(s) far outside their band's range (beyond {GROSS_FACTOR:g} times its central spread "
            "from its median) were treated as impulses: left out of the fit and written unchanged"
        )


def _run(
    reader: CubeReader,
    writer: _BlockWriter,
    method: Denoiser,
    config: TileConfig,
    *,
    nodata: float | None,
    batch_size: int,
    progress: ProgressCallback | None,
    spill_dir: Path | None = None,
    phase: PhaseCallback | None = None,
) -> RunResult:
    """Statistics, preparation and the tile loop; the caller owns the reader and the writer.

    ``spill_dir``: where the :class:`Stitcher` parks the overlaps waiting for the next row of tiles (None: in
    memory), so that memory does not grow with the width of the scene. ``phase``: as for :func:`denoise`.
    """
    check_batch_size(batch_size)
    announce = phase if phase is not None else (lambda stage: None)
    timings = dict.fromkeys(("statistics", "prepare", "read", "method", "write"), 0.0)
    started = time.perf_counter()
    announce("statistics")
    stats = compute_statistics(reader, nodata=nodata, max_sample_pixels=SAMPLE_PIXELS)
    bands, height, width = reader.shape
    # Values too large (or too small) for the methods' float32 are denoised in a domain scaled by a power of two.
    source, method_stats, scale = reader, stats, value_scale(stats)
    if scale != 1.0:
        source = _ScaledReader(reader, scale, stats.nodata)
        method_stats = compute_statistics(source, max_sample_pixels=SAMPLE_PIXELS)
        logger.info("values up to %.3g: the method sees them times 2**%d", 1.0 / scale, int(np.log2(scale)))
    timings["statistics"] = time.perf_counter() - started
    tiles = plan_tiles(height, width, config)
    roles = replace(_BandRoles.from_statistics(method_stats), nodata=stats.nodata, scale=scale)
    logger.info(
        "%s: %d tiles; %d of %d bands to the method, untouched: %s",
        method.name, len(tiles), roles.valid.size, bands, roles.untouched.tolist(),
    )
    records: list[TileRecord] = []
    run_warnings: list[str] = []
    reason = _nothing_to_denoise(method_stats) if roles.valid.size == 0 else None
    if reason is None:
        started = time.perf_counter()
        announce("prepare")
        try:
            method.prepare(method_stats)
        except NothingToDenoise as error:  # a valid cube this method can do nothing with: written unchanged
            reason = str(error)
        timings["prepare"] = time.perf_counter() - started
    if reason is not None:
        run_warnings.append(f"{reason}; passed through unchanged")
        logger.info("%s: %s", method.name, run_warnings[-1])
        roles = roles.without_method()
        started = time.perf_counter()
        announce("tiles")
        for tile in tiles:
            block = StitchedBlock(tile.rows, tile.cols, np.empty((0, *tile.shape), dtype=np.float32))
            _write_block(reader, writer, block, roles)
            records.append(TileRecord(tile, 0.0))
            if progress is not None:
                progress(len(records), len(tiles))
        timings["write"] = time.perf_counter() - started
    else:
        if method.wants_samples:  # --adapt: the method learns from crops of this cube first
            started = time.perf_counter()
            announce("adapt")
            method.adapt_to(_sample_crops(source, roles, height, width))
            timings["adapt"] = time.perf_counter() - started
        stitcher = Stitcher(roles.valid.size, (height, width), tiles, spill_dir=spill_dir)
        gross_found = 0
        from hsidenoise.io.base import CubeReader as FileReader

        owned = isinstance(source, FileReader)  # their blocks are new memory (the CubeReader contract)
        announce("tiles")
        try:
            position = 0
            while position < len(tiles):
                batch = tiles[position : position + batch_size]
                started = time.perf_counter()
                inputs = [_method_input(source, tile, roles, owned=owned) for tile in batch]
                timings["read"] += time.perf_counter() - started
                started = time.perf_counter()
                results, batch_size = _denoise_batch(method, inputs, batch_size)
                elapsed = time.perf_counter() - started
                timings["method"] += elapsed
                del inputs  # the method is done with them: free them before the next tiles are read
                started = time.perf_counter()
                for tile in batch:
                    result = results.pop(0)
                    gross_found += _stitch_and_write(reader, writer, stitcher, tile, result, roles, method.name)
                    records.append(TileRecord(tile, elapsed / len(batch), dict(result.info)))
                    del result
                    if progress is not None:
                        progress(len(records), len(tiles))
                timings["write"] += time.perf_counter() - started
                position += len(batch)
        finally:
            stitcher.close()
        if gross_found:
            run_warnings.append(roles.gross_warning(gross_found))
            logger.info("%s: %s", method.name, run_warnings[-1])
    return RunResult(
        output_path=None,
        method=method.name,
        shape=(bands, height, width),
        config=config,
        tiles=tiles,
        statistics=stats,
        tile_records=records,
        timings=timings,
        batch_size=batch_size,
        warnings=run_warnings,
        passed_through=reason is not None,
        value_scale=scale,
    )


def _nothing_to_denoise(stats: CubeStatistics) -> str:
    """Why a cube without a valid band has nothing to denoise, in the words of the run's warning."""
    bands, height, width = stats.shape
    if height * width == 1:
        return "one pixel: nothing to denoise"
    if stats.nan_bands.size == bands:
        return "no band has a valid value (all NaN, infinite or nodata): nothing to denoise"
    if stats.dead_bands.size == bands:
        return "every band is constant: nothing to denoise"
    return (
        f"every band is constant ({stats.dead_bands.size}) or without a valid value ({stats.nan_bands.size}): "
        "nothing to denoise"
    )


ADAPT_CROP = 64
"""Side of the crops an adapting method learns from."""
ADAPT_CROPS = 16
"""At most this many crops, spread over the scene on a seeded grid."""


def _sample_crops(reader: CubeReader, roles: _BandRoles, height: int, width: int) -> list[np.ndarray]:
    """Up to :data:`ADAPT_CROPS` crops of :data:`ADAPT_CROP` pixels (valid bands, invalid pixels filled)."""
    side_r, side_c = min(ADAPT_CROP, height), min(ADAPT_CROP, width)
    per_axis = max(1, int(np.ceil(np.sqrt(ADAPT_CROPS))))
    rows = np.unique(np.linspace(0, height - side_r, per_axis).astype(int))
    cols = np.unique(np.linspace(0, width - side_c, per_axis).astype(int))
    crops = []
    for top in rows:
        for left in cols:
            tile = Tile(int(top), int(top) + side_r, int(left), int(left) + side_c)
            crops.append(_method_input(reader, tile, roles))
    return crops[:ADAPT_CROPS]


def _stitch_and_write(
    reader: CubeReader,
    writer: _BlockWriter,
    stitcher: Stitcher,
    tile: Tile,
    result: TileResult,
    roles: _BandRoles,
    name: str,
) -> int:
    """Blend one denoised tile and write the blocks it finishes (in place: the pipeline owns the method's output).

    Returns:
        The gross outliers restored in those blocks (:func:`_write_block`).
    """
    denoised = np.asarray(result.denoised)
    expected = (roles.valid.size, *tile.shape)
    if denoised.shape != expected:
        raise CubeShapeError(
            f"method {name!r} must return a tile of the shape it was given {expected}; got {denoised.shape}"
        )
    restored = 0
    for block in stitcher.add(tile, denoised.astype(np.float32, copy=False), in_place=True):
        restored += _write_block(reader, writer, block, roles)
    return restored


def _method_input(reader: CubeReader, tile: Tile, roles: _BandRoles, *, owned: bool = False) -> np.ndarray:
    """The valid bands of one tile as a new float32 (B_valid, h, w), missing pixels (and gross outliers) replaced by
    the band mean.

    ``owned``: the reader hands out new memory nobody else holds, so a float32 block is used as it is.
    """
    raw = reader.read(tile.rows, tile.cols, roles.valid)
    if raw.dtype == np.float32 and raw.flags.writeable and (owned or raw.base is None):
        values = raw  # new memory of our own: the method may change it, nobody else sees it
    else:
        with np.errstate(over="ignore"):  # only a gross outlier can exceed float32 here: it is replaced below
            values = raw.astype(np.float32)  # a copy: the method may work in place
    for position in roles.partial:
        values[position][invalid_mask(raw[position], roles.nodata)] = roles.fill[position]
    for position in roles.gross:
        values[position][roles.outside(position, raw[position])] = roles.fill[position]
    return values


def _denoise_batch(
    method: Denoiser, inputs: list[np.ndarray], batch_size: int
) -> tuple[list[TileResult], int]:
    """Run the method on ``inputs``, ``batch_size`` tiles per call, halving the batch on out-of-memory.

    Returns:
        One result per input, and the batch size that worked.
    """
    results: list[TileResult] = []
    while len(results) < len(inputs):
        chunk = inputs[len(results) : len(results) + batch_size]
        try:
            chunk_results = list(method.denoise_tiles(chunk))
        except Exception as error:
            if not is_out_of_memory(error):
                raise
            if batch_size == 1:
                raise ResourceError(
                    f"method {method.name!r} ran out of memory on a single tile of shape {chunk[0].shape}; "
                    "lower --tile (or use --device cpu)"
                ) from error
            batch_size //= 2
            logger.warning("%s ran out of memory; retrying with %d tiles per call", method.name, batch_size)
            continue
        if len(chunk_results) != len(chunk):
            raise CubeShapeError(
                f"method {method.name!r} returned {len(chunk_results)} results for {len(chunk)} tiles"
            )
        results.extend(chunk_results)
    return results, batch_size


def _write_block(reader: CubeReader, writer: _BlockWriter, block: StitchedBlock, roles: _BandRoles) -> int:
    """Write a finished block: the method's values where it had valid input, the input's own values elsewhere.

    Dead and NaN bands, and the missing pixels and gross outliers of the other bands, are read again from the
    input and copied bit for bit; when there are none, the block is written as it is.

    Returns:
        The number of gross outliers copied from the input.
    """
    partial_bands = roles.valid[roles.partial]
    gross_bands = roles.valid[roles.gross]
    restore = np.union1d(np.union1d(roles.untouched, partial_bands), gross_bands).astype(np.int64)
    data = block.data
    if roles.scale != 1.0:  # back to the cube's units, in float64; the writer clips what its dtype cannot hold
        with np.errstate(over="ignore"):
            data = np.clip(data.astype(np.float64) / roles.scale, -_FLOAT64_MAX, _FLOAT64_MAX)
    if restore.size == 0:
        writer.write(data, block.rows, block.cols)
        return 0
    bands = roles.valid.size + roles.untouched.size
    output = np.empty((bands, *data.shape[1:]), dtype=np.promote_types(_working_dtype(reader.dtype), data.dtype))
    output[roles.valid] = data
    source = reader.read(block.rows, block.cols, restore)
    restored = 0
    for values, band in zip(source, restore, strict=True):
        if band in partial_bands or band in gross_bands:
            missing = invalid_mask(values, roles.nodata)
            if band in gross_bands:
                outside = roles.outside(int(np.searchsorted(roles.valid, band)), values, scaled=False) & ~missing
                restored += int(np.count_nonzero(outside))
                missing |= outside
            np.copyto(output[band], values, where=missing)
        else:
            output[band] = values
    writer.write(output, block.rows, block.cols)
    return restored


_FLOAT64_MAX = float(np.finfo(np.float64).max)


class _ScaledReader:
    """A ``CubeReader`` that hands out a cube times a power of two, as float64, invalid values as NaN.

    What a method reads when the cube's values are extreme (:func:`hsidenoise.statistics.value_scale`); its
    metadata has no nodata value (the invalid values are NaN already).
    """

    def __init__(self, reader: CubeReader, scale: float, nodata: float | None) -> None:
        self.reader = reader
        self.scale = scale
        self.nodata = nodata
        self.shape = reader.shape
        self.dtype = np.dtype(np.float64)
        self.meta = replace(reader.meta, nodata=None)
        self.path = None

    def read(
        self, rows: slice = slice(None), cols: slice = slice(None), bands: slice | np.ndarray | None = None
    ) -> np.ndarray:
        raw = self.reader.read(rows, cols, bands)
        values = raw.astype(np.float64) * self.scale
        values[invalid_mask(raw, self.nodata)] = np.nan
        return values

    def close(self) -> None:
        """The wrapped reader belongs to the caller."""
