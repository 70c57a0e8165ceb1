"""What every format shares: the `CubeReader` / `CubeWriter` interfaces, axis layouts, and safe output files.

Readers hand out `(bands, rows, cols)` blocks in the file's own dtype (native byte order).
Writers take `(bands, rows, cols)` blocks, cast them to the output dtype (see `cast_block`)
and stage everything in hidden temporary files next to the target; `commit` renames them
into place, `abort` deletes them. An output path that is, or resolves to, an input is refused.

Inputs are protected in two ways: paths passed as ``inputs=`` to `check_output`, and every
file held open by a `CubeReader` (readers register the files they read until closed), so a
pipeline that reads and writes at the same time cannot write over its source even with
``overwrite=True`` and even through another path or a symlink.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
import weakref
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import numpy as np

from hsidenoise.cube import CubeMeta
from hsidenoise.errors import ConfigError, CubeReadError, CubeShapeError, CubeWriteError, ResourceError

logger = logging.getLogger(__name__)

CUBE_AXES = "bhw"
"""Axis letters: ``b`` bands, ``h`` rows (height), ``w`` columns (width); the in-memory order is ``bhw``."""

PathLike = str | os.PathLike[str]

_open_inputs: Counter[Path] = Counter()
"""Resolved paths of the files held open by readers, counted (a file may be open twice)."""


# --------------------------------------------------------------------------------------- paths


def check_readable(path: PathLike) -> Path:
    """Return `path` as a Path if it is an existing, readable regular file.

    Raises:
        CubeReadError: the path is missing, a directory, or not readable.
    """
    path = Path(path)
    if not path.exists():
        raise CubeReadError(f"no such file: {path}; check the path (and the working directory)")
    if not path.is_file():
        raise CubeReadError(f"{path} is not a regular file; give the path of a cube file")
    if not os.access(path, os.R_OK):
        raise CubeReadError(f"{path} is not readable (permission denied); fix its permissions")
    return path


def same_file(a: PathLike, b: PathLike) -> bool:
    """Whether two paths name the same file: equal after resolving symlinks, or the same inode."""
    a, b = Path(a), Path(b)
    if a.resolve() == b.resolve():
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet)
        return False


def check_output(
    paths: Sequence[Path], *, overwrite: bool, inputs: Iterable[PathLike] = (), nbytes: int = 0
) -> None:
    """Refuse an output that would replace an input, exists without `overwrite`, or does not fit on disk.

    Args:
        paths: every file the writer will create (ENVI: data file and header).
        overwrite: allow replacing existing files that are not inputs.
        inputs: paths that must never be written, besides the files open in readers.
        nbytes: expected size of the output; compared with the free space of the target directory.

    Raises:
        CubeWriteError: an output is an input, exists, is a directory, or its directory is missing.
        ResourceError: the target filesystem has less than `nbytes` free.
    """
    protected = [Path(p) for p in inputs] + list(_open_inputs)
    for path in paths:
        for source in protected:
            if same_file(path, source):
                raise CubeWriteError(
                    f"refusing to write {path}: it is the input {source}; choose another output path"
                )
        if path.is_dir():
            raise CubeWriteError(f"{path} is a directory; give a file name with a cube suffix")
        if (path.exists() or path.is_symlink()) and not overwrite:
            raise CubeWriteError(f"{path} already exists; pass overwrite=True (--overwrite) to replace it")
        directory = path.parent
        if not directory.is_dir():
            raise CubeWriteError(f"output directory {directory} does not exist; create it first")
        if not os.access(directory, os.W_OK):
            raise CubeWriteError(f"output directory {directory} is not writable; fix its permissions")
    if paths and nbytes:
        free = shutil.disk_usage(paths[0].parent).free
        if free < nbytes:
            raise ResourceError(
                f"not enough disk space for {paths[0]}: need {nbytes / 2**20:.1f} MiB, "
                f"{free / 2**20:.1f} MiB free; free space or write elsewhere"
            )


class StagedFile:
    """A hidden temporary file in the target directory that becomes `final` on `commit`.

    The temporary name is ``.<final name>.<random>.tmp``; it is created with the usual
    permissions (0o666 minus the umask) so the committed file looks like any other.
    """

    def __init__(self, final: Path) -> None:
        self.final = Path(final)
        self.temp = self.final.with_name(f".{self.final.name}.{secrets.token_hex(4)}.tmp")
        fd = os.open(self.temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        os.close(fd)

    def commit(self) -> None:
        """Flush the temporary file to disk and rename it over `final` (atomic on one filesystem)."""
        fd = os.open(self.temp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(self.temp, self.final)
        _fsync_directory(self.final.parent)

    def discard(self) -> None:
        """Delete the temporary file (no error if it is already gone)."""
        self.temp.unlink(missing_ok=True)


@contextlib.contextmanager
def staged(final: PathLike) -> Iterator[Path]:
    """Write ``final`` atomically: yield a :class:`StagedFile`'s temporary path, rename it onto ``final`` when the
    block ends normally, delete it when the block raises. For single files outside the cube writers (reports,
    weights); no overwrite or input checks, the caller does those."""
    item = StagedFile(Path(final))
    try:
        yield item.temp
    except BaseException:
        item.discard()
        raise
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(item.temp, 0o666 & ~umask)  # a library may have re-created the file privately (safetensors does)
    item.commit()


def _fsync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # some platforms cannot open directories; the rename is still done
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _discard_all(staged: list[StagedFile]) -> None:
    for item in staged:
        item.discard()


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
                f"{rows}*{cols} = {rows * cols} pixels; check nRow/nCol or pass axes="
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
        self.path = Path(path)
        self.shape = tuple(int(n) for n in shape)
        self.dtype = np.dtype(dtype).newbyteorder("=")
        self.meta = meta
        self._files = [Path(f).resolve() for f in files]
        _open_inputs.update(self._files)
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
        _open_inputs.subtract(self._files)
        for path in self._files:
            if _open_inputs[path] <= 0:
                del _open_inputs[path]
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
        block = self._array[tuple(by_axis[axis] for axis in self._axes)]
        return np.transpose(block, [self._axes.index(axis) for axis in CUBE_AXES])

    def _release(self) -> None:
        self._array = None
        if self._handle is not None:
            self._handle.close()
            self._handle = None


# -------------------------------------------------------------------------------------- writer


def resolve_dtype(dtype: str | np.dtype | type, meta: CubeMeta, fallback: np.dtype | None = None) -> np.dtype:
    """The output dtype: ``"same"`` means `meta.dtype` (else `fallback`), anything else is passed to numpy.

    Raises:
        ConfigError: ``"same"`` with no known source dtype, or a name numpy does not know.
    """
    if isinstance(dtype, str) and dtype == "same":
        source = meta.dtype if meta.dtype is not None else fallback
        if source is None:
            raise ConfigError("dtype='same' needs the source dtype (meta.dtype is not set); pass a dtype instead")
        return np.dtype(source).newbyteorder("=")
    try:
        resolved = np.dtype(dtype)
    except TypeError as error:
        raise ConfigError(f"unknown dtype {dtype!r}; use 'float32', 'same' or a numpy dtype name") from error
    if resolved.kind not in "fiub":
        raise ConfigError(f"dtype {resolved} is not a real numeric type; use e.g. 'float32', 'uint16' or 'same'")
    return resolved.newbyteorder("=")


def check_dtype(dtype: np.dtype, supported: Iterable[np.dtype], format_name: str) -> None:
    """Raise ConfigError when `format_name` cannot store `dtype`; the message lists what it can store."""
    supported = [np.dtype(d) for d in supported]
    if np.dtype(dtype) not in supported:
        names = ", ".join(sorted(d.name for d in supported))
        raise ConfigError(f"{format_name} cannot store {np.dtype(dtype).name}; choose one of {names}")


def cast_block(block: np.ndarray, dtype: np.dtype, nodata: float | None = None) -> np.ndarray:
    """Cast data to the output dtype: floats as is; integers rounded to nearest and clipped to the type's range.

    NaN becomes `nodata` when that is set, else 0, in an integer output. The values are taken
    to be in the output file's units already (no scale factor is applied here).
    """
    dtype = np.dtype(dtype)
    if dtype.kind not in "iu" or block.dtype.kind == "b":
        return block.astype(dtype, copy=False)
    info = np.iinfo(dtype)
    if block.dtype.kind in "iu":
        source = np.iinfo(block.dtype)
        low, high = max(info.min, source.min), min(info.max, source.max)
        return np.clip(block, low, high).astype(dtype)
    values = np.rint(block.astype(np.float64, copy=False))
    values = np.where(np.isnan(values), 0.0 if nodata is None else nodata, values)
    return np.clip(values, info.min, info.max).astype(dtype)


class CubeWriter(ABC):
    """A cube being written block by block into staged temporary files.

    Use as a context manager: on a clean exit it commits (renames the files into place), on an
    exception it aborts (deletes them). A writer dropped without either is aborted when collected.

    Attributes:
        path: the final path.
        shape: (B, H, W).
        dtype: the output dtype.
        meta: the metadata that is written.
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
        self._staged: list[StagedFile] = []
        self._finalizer = weakref.finalize(self, _discard_all, self._staged)
        for final in finals:
            self._staged.append(StagedFile(final))
        self._done = False

    def temp_path(self, final: Path) -> Path:
        """The staged temporary path that will become `final`."""
        for item in self._staged:
            if item.final == Path(final):
                return item.temp
        raise KeyError(final)

    def write(self, block: np.ndarray, rows: slice, cols: slice) -> None:
        """Write all bands of one spatial window.

        Args:
            block: (B, r, c) array, any real dtype; cast with `cast_block`.
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
        self._write_window(cast_block(block, self.dtype, self.meta.nodata), window_rows, window_cols)

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
            for item in self._staged:
                item.commit()
        except BaseException:
            self._done = False
            self.abort()
            raise
        self._finalizer.detach()
        logger.info("wrote %s", self.path)

    def abort(self) -> None:
        """Close and delete the staged files; nothing is left at the target."""
        if self._done:
            return
        self._done = True
        try:
            self._close()
        except Exception as error:  # noqa: BLE001 - the failure that made us abort matters more
            logger.debug("closing %s after a failure raised %s", self.path, error)
        _discard_all(self._staged)
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
