"""Converting a cube from any supported format to any other, block by block, metadata kept.

:func:`convert_cube` opens the source with :func:`~hsidenoise.io.open_cube`, creates the target with
:func:`~hsidenoise.io.create_cube` and copies :func:`plan_blocks` blocks in row-major order, so memory stays at
a few blocks whatever the size of the scene (except where a format cannot stream: MAT v5 is read and written
whole). Blocks are full-width row strips when a strip of `ALIGN` rows fits in `BLOCK_BYTES`, and otherwise
`ALIGN`-aligned rectangles, which are whole tiles of a tiled GeoTIFF output (no tile is written twice).

The values are copied as they are (no scale factor is applied) and cast to the output dtype with the rules of
:func:`hsidenoise.io.dtypes.cast_block`; the metadata (`CubeMeta`) goes to the writer, which keeps what its format
can hold. While a GeoTIFF is read or written, GDAL's block cache is capped at `GDAL_CACHE_BYTES`, else it would
hold up to 5 % of the machine's memory of written tiles.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from hsidenoise.errors import ConfigError
from hsidenoise.io.formats import create_cube, format_for, open_cube
from hsidenoise.io.staging import PathLike, output_folder

logger = logging.getLogger(__name__)

BLOCK_BYTES = 16 << 20
"""Target size of one block, in the source's dtype."""

ALIGN = 256
"""Block sides are multiples of this (the tile size of hsidenoise's GeoTIFF outputs) unless the cube is smaller."""

GDAL_CACHE_BYTES = 64 << 20
"""GDAL's raster block cache while a GeoTIFF is converted."""

ProgressCallback = Callable[[int, int], None]
"""Called after each block with (blocks done, blocks in total)."""


def plan_blocks(
    shape: tuple[int, int, int], itemsize: int, *, budget: int | None = None, align: int | None = None
) -> list[tuple[slice, slice]]:
    """Spatial blocks of about `budget` bytes covering a (B, H, W) cube, in row-major order.

    Full-width strips when at least `align` rows of the whole width fit in `budget` (their height a multiple
    of `align`, or the whole cube); otherwise blocks `side` rows high and a multiple of `side` wide, where
    `side` is `align`, halved until one `side` x `side` block fits (never below 16).

    Args:
        shape: (bands, rows, cols). itemsize: bytes per value. budget: bytes per block (None: `BLOCK_BYTES`).
        align: see above (None: `ALIGN`).

    Returns:
        (rows, cols) unit-step slices, each block at least one pixel, together covering the cube once.
    """
    bands, height, width = shape
    budget = BLOCK_BYTES if budget is None else budget
    align = ALIGN if align is None else align
    if budget < 1 or align < 1:
        raise ConfigError(f"budget and align must be positive; got {budget} and {align}")
    pixel = max(1, bands * itemsize)
    strip_rows = budget // (pixel * width)
    if strip_rows >= min(align, height):
        rows = height if strip_rows >= height else strip_rows // align * align
        cols = width
    else:
        side = align
        while side > 16 and pixel * side * side > budget:
            side //= 2
        rows = min(height, side)
        cols = min(width, side * max(1, budget // (pixel * side * side)))
    return [
        (slice(top, min(top + rows, height)), slice(left, min(left + cols, width)))
        for top in range(0, height, rows)
        for left in range(0, width, cols)
    ]


@contextlib.contextmanager
def gdal_cache_limit(*formats: str) -> Iterator[None]:
    """Cap GDAL's block cache at `GDAL_CACHE_BYTES` while inside, when one of `formats` is ``geotiff``."""
    if "geotiff" not in formats:
        yield
        return
    import rasterio

    with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_BYTES):
        yield


def convert_cube(
    src: PathLike,
    dst: PathLike,
    *,
    fmt: str | None = None,
    var: str | None = None,
    axes: str | None = None,
    dtype: str | np.dtype = "float32",
    overwrite: bool = False,
    progress: ProgressCallback | None = None,
    source_fmt: str | None = None,
    on_clipped: Callable[[int], None] | None = None,
    on_underflowed: Callable[[int], None] | None = None,
) -> Path:
    """Copy the cube `src` into `dst` (any format to any other) block by block, keeping its metadata.

    Args:
        src: the input cube (ENVI: header or data file).
        dst: the output; its suffix picks the format unless `fmt` is given.
        fmt: output format name overriding `dst`'s suffix (``"mat73"`` forces MAT v7.3).
        var: MAT variable / HDF5 dataset of the input, when it has several 3-D arrays.
        axes: axis order of a MAT/HDF5 input array (e.g. ``"bhw"``, ``"b(hw)"``).
        dtype: output type: ``"float32"`` (default), ``"same"`` (the input's) or a numpy dtype name.
        overwrite: replace an existing `dst` (never the input).
        progress: called after each block with (done, total).
        source_fmt: input format name overriding `src`'s suffix.
        on_clipped: called once, after the commit, with the number of values that did not fit `dtype` and were
            clipped to its range (float64 beyond 3.4e38 into float32, or out of an integer type's range), when
            there were any.
        on_underflowed: likewise with the number of non-zero values too small for `dtype`, written as zero
            (float64 1e-300 into float32).

    The folders above `dst` are created when missing (and removed again if the conversion fails).

    Returns:
        The path written, `dst`.

    Raises:
        CubeReadError, HeaderError, VariableError: the input cannot be read as asked.
        CubeWriteError: `dst` is the input, exists without `overwrite`, or cannot be written; nothing is left.
        ConfigError: the output format cannot store `dtype`.
        ResourceError: not enough disk space for the output (uncompressed size, `staging.estimated_size`).
    """
    dst = Path(dst)
    formats = (format_for(src, source_fmt).name, format_for(dst, fmt).name)
    with gdal_cache_limit(*formats), open_cube(src, fmt=source_fmt, var=var, axes=axes) as reader:
        blocks = plan_blocks(reader.shape, reader.dtype.itemsize)
        with output_folder(dst), create_cube(
            dst, reader.shape, meta=reader.meta, fmt=fmt, dtype=dtype, overwrite=overwrite, inputs=[src]
        ) as writer:
            for done, (rows, cols) in enumerate(blocks, start=1):
                writer.write(reader.read(rows, cols), rows, cols)
                if progress is not None:
                    progress(done, len(blocks))
    if writer.clipped and on_clipped is not None:
        on_clipped(writer.clipped)
    if writer.underflowed and on_underflowed is not None:
        on_underflowed(writer.underflowed)
    logger.info("converted %s (%s) into %s (%s)", src, formats[0], dst, formats[1])
    return dst
