"""What every format shares: the `CubeReader` / `CubeWriter` interfaces and the axis layouts.

Readers hand out `(bands, rows, cols)` blocks in the file's own dtype (native byte order).
Writers take `(bands, rows, cols)` blocks, cast them to the output dtype (see
`hsidenoise.io.dtypes.cast_and_count`) and stage everything in hidden temporary files next to the target
(`hsidenoise.io.staging`); `commit` renames them into place, `abort` deletes them. An output path that is, or
resolves to, an input is refused (`hsidenoise.io.staging.check_output`): readers register the files they hold
open until closed.
"""

from __future__ import annotations

import errno
import logging
import math
import os
import weakref
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import numpy as np

from hsidenoise.cube import CubeMeta
from hsidenoise.errors import ConfigError, CubeReadError, CubeShapeError, CubeWriteError
from hsidenoise.io.dtypes import cast_and_count, count_underflow
from hsidenoise.io.staging import (
    PathLike,
    StagedFile,
    discard_all,
    pause_point,
    protect_inputs,
    release_inputs,
    retire_final,
)

logger = logging.getLogger(__name__)

CUBE_AXES = "bhw"
"""Axis letters: ``b`` bands, ``h`` rows (height), ``w`` columns (width); the in-memory order is ``bhw``."""


# --------------------------------------------------------------------------------------- paths


def check_readable(path: PathLike) -> Path:
    """Return `path` as a Path if it is an existing, readable regular file.

    Raises:
        CubeReadError: the path is missing, a directory, or not readable.
    """
    path = Path(path)
    if not path.exists():
        try:
            os.stat(path)
        except OSError as error:
            if error.errno == errno.ELOOP:
                raise CubeReadError(
                    f"{path} is a symbolic link loop (it never reaches a file); point it at the cube file"
                ) from None
        raise CubeReadError(f"no such file: {path}; check the path (and the working directory)")
    if not path.is_file():
        raise CubeReadError(f"{path} is not a regular file; give the path of a cube file")
    if not os.access(path, os.R_OK):
        raise CubeReadError(f"{path} is not readable (permission denied); fix its permissions")
    return path


def check_not_empty(path: PathLike, name: str, shape: Sequence[int]) -> None:
    """Raise CubeReadError when the array `name` of `path` has a zero-size dimension (no values to read)."""
    if 0 in tuple(shape):
        raise CubeReadError(
            f"{name!r} in {path} is empty (shape {'x'.join(map(str, shape))}); a cube needs at least one band, "
            "row and column"
        )


def usable_scale_factor(value: float, where: str) -> float | None:
    """`value` when it is a usable reflectance scale factor (finite and > 0), else None with one logged warning
    naming `where` (e.g. ``"x.hdr: 'reflectance scale factor'"``): 0, a negative or a non-finite factor would
    turn every stored value into nonsense, so it is ignored rather than copied into outputs."""
    if math.isfinite(value) and value > 0:
        return value
    logger.warning("%s is %s; a scale factor must be a finite number > 0, so it is ignored", where, value)
    return None


# -------------------------------------------------------------------------------------- layout


def parse_axes(axes: str, *, ndim: int = 3) -> str:
    """Validate an axis-order string such as ``"hwb"``, ``"bhw"`` or ``"b(hw)"``.

    ``(hw)`` stands for one pixel axis of length rows*cols in MATLAB column-major order
    (the row index varies fastest), the unmixing layout of e.g. Samson's ``V`` (bands x pixels).

    Returns:
        the lower-cased string.

    Raises:
        ConfigError: not a permutation of ``h``, ``w``, ``b`` (with ``hw`` optionally grouped).
    """
    text = axes.strip().lower()
    letters = text.replace("(hw)", "")
    grouped = "(hw)" in text
    expected = {"b"} if grouped else {"h", "w", "b"}
    if sorted(letters) != sorted(expected) or (grouped and ndim != 2) or (not grouped and ndim != 3):
        raise ConfigError(
            f"axes {axes!r} does not fit a {ndim}-D array; use a permutation of 'hwb' for 3-D arrays "
            "(e.g. 'hwb', 'bhw', 'whb') or 'b(hw)' / '(hw)b' for 2-D bands x pixels arrays"
        )
    return text


def clearly_smallest_axis(shape: Sequence[int]) -> int | None:
    """The axis of `shape` shorter than half of each other axis (``2 * n[i] < n[j]`` for both others), or None."""
    for axis, size in enumerate(shape):
        if all(2 * size < other for index, other in enumerate(shape) if index != axis):
            return axis
    return None


BAND_AXIS_LAYOUT = {0: "bhw", 1: "hbw", 2: "hwb"}
"""The axis order that puts the bands at that position, the other two staying rows then columns."""


def infer_axes(shape: Sequence[int], wavelength_count: int | None, *, where: str, matlab: bool) -> str:
    """The axis order of a 3-D MAT/HDF5 array for which neither the caller nor the file names one.

    An ``axes`` given by the caller (``--axes``) or stored in the file (our writers store one: an ``axes``
    attribute in HDF5, an ``axes`` variable in MAT files) wins, and this function is not called. Otherwise, with
    ``shape`` = (n0, n1, n2) as MATLAB sees the array (`matlab` True: MAT v5 and v7.3) or as h5py sees the
    dataset (plain HDF5), and "clearly the smallest" meaning shorter than half of each of the other two axes
    (`clearly_smallest_axis`), the first rule that applies decides:

    1. n0 == n1 == n2: refused (nothing tells bands from pixels).
    2. a wavelength vector of L entries and exactly one axis of length L: that axis holds the bands
       (``"bhw"``, ``"hbw"`` or ``"hwb"``, the other two staying rows then columns).
       L matching two axes: MAT keeps ``"hwb"`` when n2 == L, anything else is refused.
       L matching no axis is ignored here (the reader warns that the wavelengths do not fit).
    3. plain HDF5: n0 clearly the smallest (and n0 > 1) → ``"bhw"`` (224 x 512 x 614), n2 clearly the
       smallest → ``"hwb"`` (610 x 340 x 103); anything else (n1 the smallest, no axis clearly the smallest,
       e.g. 31 x 64 x 48 or 145 x 145 x 200, or 1 x 50 x 30) is refused.
    4. MAT: n0 clearly the smallest and n0 > 1 → ``"bhw"`` (31 x 256 x 256, or 224 x 512 x 614 saved from a
       bands-first numpy array); n1 == n2 != n0 (a stack of square images, 40 x 23 x 23 or 20 x 23 x 23: n0 bands of
       n1 x n2 pixels, or n0 x n1 pixels of n2 bands?) → refused; otherwise ``"hwb"``, MATLAB's
       rows x cols x bands convention (HYDICE 80 x 100 x 162, MUUFL 51 x 88 x 72, CAVE 256 x 256 x 31).

    Raises:
        CubeShapeError: a refused shape; the one-line message names the readings and their ``--axes``.
    """
    n0, n1, n2 = shape = tuple(int(n) for n in shape)
    def bands(count: int) -> str:
        return f"{count} band{'' if count == 1 else 's'}"

    readings = f"{bands(n0)} of {n1}x{n2} pixels (--axes bhw) or {n0}x{n1} pixels of {bands(n2)} (--axes hwb)"

    def refuse(why: str, readings: str = readings) -> CubeShapeError:
        return CubeShapeError(
            f"{where} has shape {'x'.join(map(str, shape))}: {readings}? {why}; pass --axes (axes= in Python)"
        )

    if n0 == n1 == n2:
        raise refuse("all three axes are equal")
    if wavelength_count is not None:
        matches = [axis for axis, length in enumerate(shape) if length == wavelength_count]
        if len(matches) == 1:
            return BAND_AXIS_LAYOUT[matches[0]]
        if len(matches) > 1:
            if matlab and 2 in matches:
                return "hwb"
            raise refuse(f"its {wavelength_count} wavelengths fit several axes")
    smallest = clearly_smallest_axis(shape)
    if smallest == 0 and n0 > 1:  # 1 x W x B is one row of pixels in MATLAB (a single band is 2-D there)
        return "bhw"
    if matlab:
        if n1 == n2:
            raise refuse("no axis is clearly the band axis")
        return "hwb"
    if smallest == 2:
        return "hwb"
    if smallest == 1:
        middle = f"{n0}x{n2} pixels of {bands(n1)} (--axes hbw) or {n0}x{n1} pixels of {bands(n2)} (--axes hwb)"
        raise refuse("no axes attribute says which", middle)
    raise refuse("no axis is clearly the band axis and no axes attribute or wavelengths say which")


def to_cube_order(array: np.ndarray, axes: str, *, rows: int | None = None, cols: int | None = None) -> np.ndarray:
    """Rearrange an in-memory array with axis order `axes` into (B, H, W).

    Args:
        array: 3-D array in the order `axes`, or 2-D bands x pixels for ``"b(hw)"`` / ``"(hw)b"``.
        axes: a string accepted by `parse_axes`.
        rows, cols: image size, required for the ``(hw)`` layouts.

    Returns:
        (B, H, W) view or copy of `array`.
    """
    axes = parse_axes(axes, ndim=array.ndim)
    if "(hw)" in axes:
        if rows is None or cols is None:
            raise CubeShapeError(f"axes {axes!r} needs the image size (nRow, nCol); none was found")
        bands_by_pixels = array if axes == "b(hw)" else array.T
        if bands_by_pixels.shape[1] != rows * cols:
            raise CubeShapeError(
                f"a bands x pixels array of shape {tuple(array.shape)} does not hold nRow*nCol = "
                f"{rows}*{cols} = {rows * cols} pixels; check nRow/nCol or pass --axes (axes= in Python)"
            )
        # MATLAB column-major pixel order: pixel index = row + col * rows.
        return bands_by_pixels.reshape(bands_by_pixels.shape[0], cols, rows).transpose(0, 2, 1)
    return array.transpose([axes.index(axis) for axis in CUBE_AXES])


# -------------------------------------------------------------------------------------- reader


def _covering(index: np.ndarray) -> tuple[slice, np.ndarray | None]:
    """Smallest unit-step slice holding `index`, and the positions to pick inside it (None: all of it)."""
    low, high = int(index.min()), int(index.max()) + 1
    local = index - low
    if len(local) == high - low and np.array_equal(local, np.arange(high - low)):
        return slice(low, high), None
    return slice(low, high), local


class CubeReader(ABC):
    """A cube opened for windowed reading; use as a context manager.

    Attributes:
        path: the path it was opened with.
        shape: (B, H, W) = (bands, rows, cols).
        dtype: the file's data type, in native byte order.
        meta: everything the format knows about the cube (`meta.dtype == dtype`).
    """

    fresh_windows: bool = False
    """True for formats whose `_read_window` always returns new memory that nothing else holds (positioned
    reads into a new array): `read` then hands out views of it as they are, instead of copying them."""

    def __init__(
        self, path: Path, shape: tuple[int, int, int], dtype: np.dtype, meta: CubeMeta, files: Sequence[Path]
    ) -> None:
        check_not_empty(path, "the cube", shape)
        self.path = Path(path)
        self.shape = tuple(int(n) for n in shape)
        self.dtype = np.dtype(dtype).newbyteorder("=")
        self.meta = meta
        self._files = [Path(f).resolve() for f in files]
        protect_inputs(self._files)
        self._closed = False

    def read(
        self,
        rows: slice = slice(None),
        cols: slice = slice(None),
        bands: slice | np.ndarray | Sequence[int] | None = None,
    ) -> np.ndarray:
        """Read a block.

        Args:
            rows, cols: spatial window (any slice; steps are applied after reading the covering window).
            bands: a slice, integer indices in any order, a boolean mask of length B, or None for all.

        Returns:
            (b, r, c) array in `dtype`, native byte order, C-contiguous.
        """
        if self._closed:
            raise CubeReadError(f"{self.path} is closed; open it again to read")
        n_bands, n_rows, n_cols = self.shape
        row_index = np.arange(n_rows)[rows]
        col_index = np.arange(n_cols)[cols]
        band_index = self._band_index(bands)
        if not (row_index.size and col_index.size and band_index.size):
            return np.empty((band_index.size, row_index.size, col_index.size), dtype=self.dtype)
        row_window, row_pick = _covering(row_index)
        col_window, col_pick = _covering(col_index)
        unique_bands, band_order = np.unique(band_index, return_inverse=True)
        band_window, band_pick = _covering(unique_bands)
        selection: slice | np.ndarray = band_window if band_pick is None else unique_bands
        block = self._read_window(row_window, col_window, selection)
        if band_order.size != unique_bands.size or not np.array_equal(band_order, np.arange(band_order.size)):
            block = block[band_order]
        if row_pick is not None:
            block = block[:, row_pick]
        if col_pick is not None:
            block = block[:, :, col_pick]
        block = np.ascontiguousarray(block, dtype=self.dtype)  # a view (not a copy) when nothing changes
        # Hand out memory of our own, never a view of a memmap or of an array the reader keeps.
        if (block.base is None or self.fresh_windows) and block.flags.writeable:
            return block
        return block.copy()

    def _band_index(self, bands: slice | np.ndarray | Sequence[int] | None) -> np.ndarray:
        n_bands = self.shape[0]
        if bands is None:
            return np.arange(n_bands)
        if isinstance(bands, slice):
            return np.arange(n_bands)[bands]
        index = np.asarray(bands)
        if index.dtype == bool:
            if index.shape != (n_bands,):
                raise CubeShapeError(f"a band mask needs {n_bands} entries; got shape {index.shape}")
            return np.flatnonzero(index)
        if index.ndim != 1 or index.dtype.kind not in "iu":
            raise CubeShapeError(f"bands must be a slice, integer indices or a boolean mask; got {bands!r}")
        if index.size and (index.min() < -n_bands or index.max() >= n_bands):
            raise CubeShapeError(f"band index out of range for {n_bands} bands: {index.min()}..{index.max()}")
        return index % n_bands

    @abstractmethod
    def _read_window(self, rows: slice, cols: slice, bands: slice | np.ndarray) -> np.ndarray:
        """Read unit-step `rows` x `cols` for `bands` (a unit-step slice or sorted unique indices) as (b, r, c)."""

    def close(self) -> None:
        """Release the file (idempotent); the input is no longer protected from writers afterwards."""
        if self._closed:
            return
        self._closed = True
        release_inputs(self._files)
        self._release()

    def _release(self) -> None:
        """Close the underlying file handles (formats that hold one override this)."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r}, shape={self.shape}, dtype={self.dtype})"


class ArrayCubeReader(CubeReader):
    """A reader over anything indexable like an array (numpy array, memmap, h5py dataset).

    Args:
        array: the stored array; it is indexed with slices and sorted band indices only,
            which numpy memmaps and h5py datasets both read lazily.
        axes: order of `array`'s axes, a permutation of ``"bhw"`` (e.g. ENVI BIL is ``"hbw"``).
        handle: an object whose ``close()`` is called on `close` (an h5py file), or None.
    """

    def __init__(
        self,
        path: Path,
        array: Any,
        axes: str,
        meta: CubeMeta,
        files: Sequence[Path],
        handle: Any = None,
    ) -> None:
        axes = parse_axes(axes)
        shape = tuple(int(array.shape[axes.index(axis)]) for axis in CUBE_AXES)
        super().__init__(path, shape, np.dtype(array.dtype), meta, files)
        self._array = array
        self._axes = axes
        self._handle = handle

    def _read_window(self, rows: slice, cols: slice, bands: slice | np.ndarray) -> np.ndarray:
        by_axis = {"b": bands, "h": rows, "w": cols}
        try:
            block = self._array[tuple(by_axis[axis] for axis in self._axes)]
        except (OSError, RuntimeError, ValueError) as error:  # h5py on a damaged chunk: "Can't read data"
            raise CubeReadError(f"cannot read {self.path}: {error}; the file is damaged, re-copy it") from error
        return np.transpose(block, [self._axes.index(axis) for axis in CUBE_AXES])

    def _release(self) -> None:
        self._array = None
        if self._handle is not None:
            self._handle.close()
            self._handle = None


# -------------------------------------------------------------------------------------- writer


class CubeWriter(ABC):
    """A cube being written block by block into staged temporary files.

    Use as a context manager: on a clean exit it commits (renames the files into place), on an
    exception it aborts (deletes them). A writer dropped without either is aborted when collected.

    Attributes:
        path: the final path.
        shape: (B, H, W).
        dtype: the output dtype.
        meta: the metadata that is written.
        clipped: values so far that did not fit `dtype` and were clipped to its range (`cast_and_count`).
        underflowed: non-zero values so far too small for `dtype`, written as zero (`count_underflow`).
    """

    def __init__(
        self, path: Path, shape: tuple[int, int, int], dtype: np.dtype, meta: CubeMeta, finals: Sequence[Path]
    ) -> None:
        if len(shape) != 3 or min(shape) < 1:
            raise CubeShapeError(f"a cube shape is (bands, rows, cols) with every size >= 1; got {tuple(shape)}")
        self.path = Path(path)
        self.shape = tuple(int(n) for n in shape)
        self.dtype = np.dtype(dtype)
        self.meta = meta
        self.clipped = 0
        self.underflowed = 0
        self._staged: list[StagedFile] = []
        self._finalizer = weakref.finalize(self, discard_all, self._staged)
        self._done = False
        try:
            for final in finals:
                self._staged.append(StagedFile(final))
        except BaseException:
            self._done = True
            discard_all(self._staged)
            self._finalizer.detach()
            raise

    def temp_path(self, final: Path) -> Path:
        """The staged temporary path that will become `final`."""
        for item in self._staged:
            if item.final == Path(final):
                return item.temp
        raise KeyError(final)

    def write(self, block: np.ndarray, rows: slice, cols: slice) -> None:
        """Write all bands of one spatial window.

        Args:
            block: (B, r, c) array, any real dtype; cast with `hsidenoise.io.dtypes.cast_block`.
            rows, cols: unit-step slices of the window; r and c must match their lengths.
        """
        if self._done:
            raise CubeWriteError(f"{self.path} is already committed or aborted; create a new writer")
        n_bands, n_rows, n_cols = self.shape
        row_range = range(n_rows)[rows]
        col_range = range(n_cols)[cols]
        if row_range.step != 1 or col_range.step != 1:
            raise CubeShapeError(f"write windows need unit-step slices; got rows={rows}, cols={cols}")
        expected = (n_bands, len(row_range), len(col_range))
        if block.shape != expected:
            raise CubeShapeError(
                f"block for rows {rows.start}:{rows.stop}, cols {cols.start}:{cols.stop} should have shape "
                f"{expected} (bands, rows, cols); got {tuple(block.shape)}"
            )
        window_rows = slice(row_range.start, row_range.stop)
        window_cols = slice(col_range.start, col_range.stop)
        cast, clipped = cast_and_count(block, self.dtype, self.meta.nodata)
        self.clipped += clipped
        self.underflowed += count_underflow(block, cast)
        self._write_window(cast, window_rows, window_cols)
        pause_point("block-written")

    @abstractmethod
    def _write_window(self, block: np.ndarray, rows: slice, cols: slice) -> None:
        """Store an already cast (B, r, c) block at unit-step `rows` x `cols`."""

    @abstractmethod
    def _finish(self) -> None:
        """Complete the staged files (metadata, headers) and close the format's handles."""

    def _close(self) -> None:
        """Close the format's handles without completing the files (formats that hold one override this)."""

    def commit(self) -> None:
        """Finish the files, flush them to disk and rename them to their final names."""
        if self._done:
            return
        self._done = True
        try:
            self._finish()
            pause_point("before-commit")
            if len(self._staged) > 1:
                # Replacing a multi-file output (ENVI with --overwrite): the old header goes first, so that at no
                # moment does it describe the new data file; a data file without its header counts as absent.
                retire_final(self._staged[-1].final)
            for number, item in enumerate(self._staged, start=1):
                item.commit()  # in order: for ENVI the data file, then the header (see `unfinished_commit`)
                if number < len(self._staged):
                    pause_point("between-renames")
        except BaseException:
            self._done = False
            self.abort()
            raise
        self._finalizer.detach()
        if self.clipped:
            logger.info("%s: %d value(s) did not fit %s and were clipped to its range", self.path, self.clipped,
                        self.dtype.name)
        logger.info("wrote %s", self.path)
        pause_point("committed")

    def abort(self) -> None:
        """Close and delete the staged files; nothing is left at the target."""
        if self._done:
            return
        self._done = True
        try:
            self._close()
        except Exception as error:  # noqa: BLE001 - the failure that made us abort matters more
            logger.debug("closing %s after a failure raised %s", self.path, error)
        discard_all(self._staged)
        self._finalizer.detach()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r}, shape={self.shape}, dtype={self.dtype})"

