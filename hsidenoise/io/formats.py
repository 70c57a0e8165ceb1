"""The format registry and the entry points that use it: `open_cube`, `read_cube`, `create_cube`, `write_cube`.

`FORMATS` maps each format name to a `Format`: the suffixes that select it and the module that reads and writes
it, imported only when a file of that format is opened or created. The format follows the path's suffix, or
`fmt` when given; files are never sniffed by trial. Blocks are (bands, rows, cols). `hsidenoise.io` re-exports
these names; `hsidenoise.io.convert` imports them from here, so the package imports no module that imports it
back.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hsidenoise.cube import Cube, CubeMeta
from hsidenoise.errors import UnsupportedFormatError
from hsidenoise.io.base import CubeReader, CubeWriter
from hsidenoise.io.dtypes import resolve_dtype
from hsidenoise.io.staging import PathLike

WRITE_STRIP_BYTES = 64 * 2**20
"""`write_cube` casts and writes an in-memory cube in row strips of about this many bytes."""


@dataclass(frozen=True)
class Format:
    """A cube format: the suffixes that select it and the module functions that open and create files.

    Attributes:
        name: the ``fmt`` / ``--format`` name.
        suffixes: lower-case suffixes that select it (empty: only by name).
        module: module with ``open_reader(path, *, var, axes)`` and the writer factory.
        create: name of the writer factory in `module`.
    """

    name: str
    suffixes: tuple[str, ...]
    module: str
    create: str = "create_writer"

    def open_reader(self, path: PathLike, *, var: str | None, axes: str | None) -> CubeReader:
        """Import the format's module and open `path` with it."""
        return importlib.import_module(self.module).open_reader(path, var=var, axes=axes)

    def create_writer(self, path: PathLike, shape: tuple[int, int, int], **options: Any) -> CubeWriter:
        """Import the format's module and start a writer (options: meta, dtype, overwrite, inputs)."""
        return getattr(importlib.import_module(self.module), self.create)(path, shape, **options)


FORMATS: dict[str, Format] = {
    format_.name: format_
    for format_ in (
        Format("envi", (".hdr", ".img", ".dat", ".raw", ".bsq", ".bil", ".bip"), "hsidenoise.io.envi"),
        Format("geotiff", (".tif", ".tiff"), "hsidenoise.io.geotiff"),
        Format("mat", (".mat",), "hsidenoise.io.mat"),
        Format("mat73", (), "hsidenoise.io.mat", create="create_writer_v73"),
        Format("hdf5", (".h5", ".hdf5", ".hdf", ".he5"), "hsidenoise.io.hdf5"),
    )
}
"""Format name → `Format`. ``mat73`` reads like ``mat`` (the file says its version) and always writes v7.3."""


def format_for(path: PathLike, fmt: str | None = None) -> Format:
    """The format named `fmt`, else the one the suffix of `path` selects.

    Raises:
        UnsupportedFormatError: unknown `fmt`, or a suffix no format claims (the message lists them).
    """
    if fmt is not None:
        try:
            return FORMATS[fmt.lower()]
        except KeyError:
            raise UnsupportedFormatError(
                f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}"
            ) from None
    suffix = Path(path).suffix.lower()
    for format_ in FORMATS.values():
        if suffix in format_.suffixes:
            return format_
    known = " ".join(s for format_ in FORMATS.values() for s in format_.suffixes)
    raise UnsupportedFormatError(
        f"cannot tell the format of {path} from its suffix {suffix or '(none)'!r}; known suffixes: {known}; "
        f"or pass --format (fmt= in Python), one of {', '.join(FORMATS)}"
    )


def open_cube(
    path: PathLike, *, fmt: str | None = None, var: str | None = None, axes: str | None = None
) -> CubeReader:
    """Open a cube for windowed reading (use as a context manager).

    Args:
        path: the cube file (ENVI: header or data file).
        fmt: format name overriding the suffix (`FORMATS`).
        var: MAT variable / HDF5 dataset path; needed when the file has several 3-D arrays.
        axes: MAT/HDF5 axis order such as ``"hwb"`` (default), ``"bhw"``, ``"b(hw)"``.

    Returns:
        a `CubeReader` whose ``read()`` gives (b, r, c) blocks and whose ``meta`` is filled.
    """
    return format_for(path, fmt).open_reader(path, var=var, axes=axes)


def read_cube(
    path: PathLike, *, fmt: str | None = None, var: str | None = None, axes: str | None = None
) -> Cube:
    """Read a whole cube into memory: data (B, H, W) in the file's dtype, plus its metadata."""
    with open_cube(path, fmt=fmt, var=var, axes=axes) as reader:
        return Cube(reader.read(), reader.meta)


def create_cube(
    path: PathLike,
    shape: tuple[int, int, int],
    *,
    meta: CubeMeta,
    fmt: str | None = None,
    dtype: str | np.dtype = "float32",
    overwrite: bool = False,
    inputs: Iterable[PathLike] = (),
) -> CubeWriter:
    """Start writing a cube of `shape` (B, H, W) block by block (use as a context manager).

    Args:
        path: output file; its suffix chooses the format unless `fmt` is given.
        shape: (bands, rows, cols).
        meta: metadata to store (whatever the format can hold).
        fmt: format name overriding the suffix; ``"mat73"`` forces MAT v7.3.
        dtype: ``"float32"``, ``"same"`` (``meta.dtype``) or any numpy dtype the format supports.
        overwrite: replace an existing output (never an input).
        inputs: paths that must not be written (files open in readers are protected anyway).

    Raises:
        CubeWriteError: the output exists (without `overwrite`), is an input, or cannot be created.
        ConfigError: the format cannot store `dtype`.
        ResourceError: not enough free disk space (uncompressed formats).
    """
    out_dtype = resolve_dtype(dtype, meta)
    return format_for(path, fmt).create_writer(
        path, tuple(shape), meta=meta, dtype=out_dtype, overwrite=overwrite, inputs=inputs
    )


def write_cube(
    path: PathLike,
    cube: Cube,
    *,
    fmt: str | None = None,
    dtype: str | np.dtype = "float32",
    overwrite: bool = False,
    inputs: Iterable[PathLike] = (),
) -> None:
    """Write an in-memory cube (see `create_cube`; ``dtype="same"`` falls back to the array's dtype)."""
    out_dtype = resolve_dtype(dtype, cube.meta, fallback=cube.data.dtype)
    bands, rows, cols = cube.shape
    strip = max(1, WRITE_STRIP_BYTES // max(1, bands * cols * 8))
    with create_cube(
        path, cube.shape, meta=cube.meta, fmt=fmt, dtype=out_dtype, overwrite=overwrite, inputs=inputs
    ) as writer:
        for top in range(0, rows, strip):
            window = slice(top, min(top + strip, rows))
            writer.write(cube.data[:, window], window, slice(0, cols))
