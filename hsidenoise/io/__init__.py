"""Reading and writing cubes: ENVI, GeoTIFF, MAT (v5 and v7.3) and HDF5, whole or window by window.

The format follows the path's suffix (`FORMATS`), or `fmt` when given; files are never
sniffed by trial. Blocks are (bands, rows, cols). Each format lives in its own module,
imported only when used, so importing this package stays cheap.

Output dtype: ``"float32"`` by default; ``"same"`` writes the source's dtype (``meta.dtype``)
by rounding, clipping to the type's range and casting (NaN becomes ``meta.nodata``, else 0).
The data handed to a writer are taken to be in the output file's units: nothing is
rescaled, and ``meta.scale_factor`` is written unchanged so it keeps describing the values.

Safety: writers stage hidden temporary files in the target directory and rename them on
commit, refuse existing outputs unless ``overwrite=True``, and never write over an input:
the paths in ``inputs=`` or any file currently open in a `CubeReader` (compared after
resolving symlinks, and by inode).

Example:
    >>> with open_cube("scene.hdr") as reader, create_cube(
    ...     "clean.tif", reader.shape, meta=reader.meta
    ... ) as writer:  # doctest: +SKIP
    ...     for top in range(0, reader.shape[1], 256):
    ...         rows = slice(top, min(top + 256, reader.shape[1]))
    ...         writer.write(reader.read(rows=rows), rows, slice(None))

`convert_cube` does such a copy for any pair of formats, in blocks of bounded size.

The package re-exports its modules' public names: the format registry and the entry points above from
`formats.py`, the reader and writer bases from `base.py`, `convert_cube` from `convert.py`.
"""

from __future__ import annotations

from hsidenoise.cube import Cube, CubeMeta
from hsidenoise.io.base import CubeReader, CubeWriter
from hsidenoise.io.convert import convert_cube
from hsidenoise.io.formats import FORMATS, Format, create_cube, format_for, open_cube, read_cube, write_cube

__all__ = [
    "FORMATS",
    "Cube",
    "CubeMeta",
    "CubeReader",
    "CubeWriter",
    "Format",
    "convert_cube",
    "create_cube",
    "format_for",
    "open_cube",
    "read_cube",
    "write_cube",
]
