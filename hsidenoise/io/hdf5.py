"""HDF5 through h5py: one dataset holds the cube, its attributes hold the metadata.

Reading: ``var`` is the dataset path (``"/data/reflectance"``); without it the file must hold
exactly one 3-D numeric dataset. ``axes`` gives the dataset's axis order; without it the
dataset's own ``axes`` attribute is used (our writer stores one), else the band axis is the one a wavelength
attribute's length names, or the clearly smallest one at either end (`hsidenoise.io.base.infer_axes`); a shape
that could be either is refused with a message asking for ``axes``. A 2-D
bands x pixels dataset is read with ``axes="b(hw)"`` (or ``"(hw)b"``) when ``nRow`` / ``nCol``
are attributes of the dataset or datasets/attributes at the file root. Slices are read lazily.

Writing: dataset ``/cube`` in ``"hwb"`` order, gzip-compressed chunks of at most 64 x 64 x 64,
and these dataset attributes (read back under the same names):
``wavelength``, ``wavelength_units``, ``fwhm``, ``bbl``, ``band_names``, ``nodata``,
``reflectance_scale_factor``, ``description``, ``crs_wkt``, ``transform``, ``map_info``, ``axes``;
`CubeMeta.extra` pairs become string attributes, `CubeMeta.provenance` attributes ``hsidenoise_<key>``.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from hsidenoise.cube import PROVENANCE_KEYS, CubeMeta
from hsidenoise.errors import CubeReadError, CubeShapeError, CubeWriteError, HsiDenoiseError, VariableError
from hsidenoise.io.base import (
    CUBE_AXES,
    ArrayCubeReader,
    CubeWriter,
    check_not_empty,
    check_readable,
    infer_axes,
    parse_axes,
    to_cube_order,
    usable_scale_factor,
)
from hsidenoise.io.dtypes import check_dtype
from hsidenoise.io.staging import PathLike, check_output, describe_os_error, estimated_size

logger = logging.getLogger(__name__)

H5_ERRORS = (OSError, KeyError, RuntimeError, ValueError, TypeError, IndexError, AttributeError, OverflowError)
"""What h5py raises on damaged files ("Unable to synchronously open object", "Object visitation failed", ...)."""

DEFAULT_DATASET = "cube"
DEFAULT_AXES = "hwb"
CHUNK = 64
SUPPORTED_DTYPES = tuple(
    np.dtype(name)
    for name in ("uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64", "int64", "float32", "float64")
)

WAVELENGTH_NAMES = ("wavelength", "wavelengths", "wl")
SIZE_NAMES = {"rows": ("nRow", "nrow", "nRows"), "cols": ("nCol", "ncol", "nCols")}
PROVENANCE_NAMES = {f"hsidenoise_{key}": key for key in PROVENANCE_KEYS}
"""Attribute (HDF5) / variable (MAT) name → `CubeMeta.provenance` key."""
_KNOWN_ATTRIBUTES = frozenset(
    WAVELENGTH_NAMES
    + (
        "wavelength_units",
        "fwhm",
        "bbl",
        "band_names",
        "nodata",
        "reflectance_scale_factor",
        "scale_factor",
        "description",
        "crs_wkt",
        "transform",
        "map_info",
        "axes",
    )
    + tuple(PROVENANCE_NAMES)
)


# ------------------------------------------------------------------------------------ helpers


def text(value: Any) -> str:
    """An HDF5 string attribute (bytes, numpy bytes/str, 1-element array) as str."""
    if isinstance(value, np.ndarray) and value.size == 1:
        value = value.reshape(-1)[0]
    if isinstance(value, bytes | np.bytes_):
        return value.decode("utf-8", errors="replace")
    return str(value)


def texts(value: Any) -> list[str]:
    """An HDF5 string-array attribute as a list of str."""
    return [text(item) for item in np.atleast_1d(np.asarray(value, dtype=object)).ravel()]


def describe(datasets: Iterable[tuple[str, tuple[int, ...], str]]) -> str:
    """``name (7x13x5 float32), ...`` for error messages."""
    items = [f"{name} ({'x'.join(map(str, shape))} {kind})" for name, shape, kind in datasets]
    return ", ".join(items) if items else "none"


def numeric_datasets(group: h5py.Group) -> list[h5py.Dataset]:
    """Every dataset with integer or float elements, skipping MATLAB's ``#refs#`` / ``#subsystem#``."""
    found: list[h5py.Dataset] = []

    def visit(name: str, item: Any) -> None:
        if any(part.startswith("#") for part in name.split("/")):
            return
        if isinstance(item, h5py.Dataset) and item.dtype.kind in "fiu" and item.shape is not None:
            found.append(item)

    group.visititems(visit)
    return found


def image_size(file: h5py.File, dataset: h5py.Dataset) -> tuple[int | None, int | None]:
    """(nRow, nCol) from the dataset's attributes or the file root (datasets or attributes); None if absent."""

    def find(names: tuple[str, ...]) -> int | None:
        for name in names:
            for holder in (dataset.attrs, file.attrs):
                if name in holder:
                    return int(np.asarray(holder[name]).reshape(-1)[0])
            if isinstance(item := file.get(name), h5py.Dataset):
                return int(np.asarray(item[()]).reshape(-1)[0])
        return None

    return find(SIZE_NAMES["rows"]), find(SIZE_NAMES["cols"])


def wavelength_count(file: h5py.File, dataset: h5py.Dataset) -> int | None:
    """Length of the wavelength vector in the dataset's attributes, else at the file root; None if absent."""
    for holder in (dataset.attrs, file.attrs, file):
        for name in WAVELENGTH_NAMES:
            if name in holder:
                item = holder[name]
                if isinstance(item, h5py.Group):
                    continue
                shape = item.shape if isinstance(item, h5py.Dataset) else np.shape(item)
                return int(np.prod(shape)) if shape else 1
    return None


def select_dataset(file: h5py.File, var: str | None, path: Path) -> h5py.Dataset:
    """The dataset named `var`, or the only 3-D numeric dataset of the file.

    Raises:
        VariableError: `var` is missing or not a numeric dataset, or there is not exactly one
            candidate; the message lists the candidates.
    """
    datasets = numeric_datasets(file)
    listing = describe((d.name, d.shape, d.dtype.name) for d in datasets)
    if var is not None:
        item = file.get(var)
        if isinstance(item, h5py.Dataset) and (item.dtype.kind == "c" or set(item.dtype.names or ()) == {"real", "imag"}):
            raise CubeReadError(
                f"dataset {var!r} in {path} holds complex values; hsidenoise reads real numeric cubes: "
                "store the real part or the magnitude and read that"
            )
        if not isinstance(item, h5py.Dataset) or item.dtype.kind not in "fiu":
            raise VariableError(f"{path} has no numeric dataset {var!r}; numeric datasets: {listing}")
        return item
    cubes = [d for d in datasets if d.ndim == 3]
    if len(cubes) == 1:
        return cubes[0]
    if not cubes:
        raise VariableError(
            f"{path} has no 3-D numeric dataset; numeric datasets: {listing}; pass --var PATH and --axes "
            "(var=, axes= in Python)"
        )
    raise VariableError(
        f"{path} has several 3-D datasets: {describe((d.name, d.shape, d.dtype.name) for d in cubes)}; "
        "choose one with --var NAME"
    )


def _per_band(values: Any, bands: int, name: str) -> np.ndarray | None:
    array = np.asarray(values).reshape(-1)
    if array.size != bands:
        logger.warning("attribute %r has %d entries for %d bands; ignored", name, array.size, bands)
        return None
    return array


def meta_from_attributes(attrs: h5py.AttributeManager, bands: int) -> CubeMeta:
    """`CubeMeta` from a dataset's attributes (names in the module docstring)."""
    meta = CubeMeta(source_format="hdf5")
    for name in WAVELENGTH_NAMES:
        if name in attrs and (values := _per_band(attrs[name], bands, name)) is not None:
            meta.wavelengths = values.astype(np.float64)
            break
    if "fwhm" in attrs and (values := _per_band(attrs["fwhm"], bands, "fwhm")) is not None:
        meta.fwhm = values.astype(np.float64)
    if "bbl" in attrs and (values := _per_band(attrs["bbl"], bands, "bbl")) is not None:
        meta.bbl = values.astype(np.uint8)
    if "band_names" in attrs and len(names := texts(attrs["band_names"])) == bands:
        meta.band_names = names
    for name in ("wavelength_units", "description", "crs_wkt"):
        if name in attrs:
            setattr(meta, name, text(attrs[name]))
    if "nodata" in attrs:
        meta.nodata = float(np.asarray(attrs["nodata"]).reshape(-1)[0])
    for name in ("reflectance_scale_factor", "scale_factor"):
        if name in attrs:
            factor = float(np.asarray(attrs[name]).reshape(-1)[0])
            meta.scale_factor = usable_scale_factor(factor, f"attribute {name!r}")
    if "transform" in attrs and np.asarray(attrs["transform"]).size == 6:
        meta.transform = tuple(float(v) for v in np.asarray(attrs["transform"]).reshape(-1))
    if "map_info" in attrs:
        meta.map_info = texts(attrs["map_info"])
    for name, value in attrs.items():
        if name not in _KNOWN_ATTRIBUTES and not name.startswith("MATLAB_") and isinstance(value, str | bytes):
            meta.extra[name] = text(value)
    meta.provenance = {key: text(attrs[name]) for name, key in PROVENANCE_NAMES.items() if name in attrs}
    return meta


# ------------------------------------------------------------------------------------ reading


def open_reader(path: PathLike, *, var: str | None = None, axes: str | None = None) -> ArrayCubeReader:
    """Open a dataset of an HDF5 file lazily (h5py slices).

    Raises:
        CubeReadError: missing, unreadable or not HDF5.
        VariableError: no / several candidate datasets, or `var` not found.
        CubeShapeError: a dataset that is not 3-D (and not bands x pixels with nRow/nCol).
    """
    path = check_readable(path)
    try:
        file = h5py.File(path, "r")
    except OSError as error:
        raise CubeReadError(f"cannot open {path} as HDF5: {error}") from error
    try:
        dataset = select_dataset(file, var, path)
        order = axes if axes is not None else (text(dataset.attrs["axes"]) if "axes" in dataset.attrs else None)
        meta_bands = None
        check_not_empty(path, dataset.name, dataset.shape)
        if dataset.ndim == 3:
            if order is None:
                where = f"dataset {dataset.name} in {path}"
                order = infer_axes(dataset.shape, wavelength_count(file, dataset), where=where, matlab=False)
            order = parse_axes(order)
            meta_bands = dataset.shape[order.index("b")]
            array: Any = dataset
        elif dataset.ndim == 2 and order is not None and "(hw)" in order:
            rows, cols = image_size(file, dataset)
            array = to_cube_order(dataset[()], order, rows=rows, cols=cols)
            order, meta_bands = CUBE_AXES, array.shape[0]
        else:
            raise CubeShapeError(
                f"dataset {dataset.name} in {path} has shape {dataset.shape}; a cube needs 3 axes "
                "(or a 2-D bands x pixels array: pass --axes 'b(hw)' and give nRow/nCol attributes)"
            )
        check_storage(dataset, path)
        meta = meta_from_attributes(dataset.attrs, meta_bands)
        meta.dtype = np.dtype(dataset.dtype).newbyteorder("=")
        reader = ArrayCubeReader(path, array, order, meta, files=[path], handle=file)
    except HsiDenoiseError:
        file.close()
        raise
    except H5_ERRORS as error:
        file.close()
        raise CubeReadError(f"cannot read {path} as HDF5: {error}; the file is damaged, re-copy it") from error
    except BaseException:
        file.close()
        raise
    return reader


def check_storage(dataset: h5py.Dataset, path: Path) -> None:
    """Refuse a contiguous dataset whose bytes would lie past the end of the file (a truncated copy).

    h5py reads such a dataset without complaint up to the first missing byte; chunked datasets fail when the
    missing chunk is read instead (`ArrayCubeReader` turns that into a CubeReadError).
    """
    if dataset.chunks is not None:
        return
    offset = dataset.id.get_offset()  # None: never written (reads as the fill value)
    if offset is None:
        return
    needed = offset + dataset.size * dataset.dtype.itemsize
    size = path.stat().st_size
    if needed > size:
        raise CubeReadError(
            f"{path} is truncated: dataset {dataset.name} ({'x'.join(map(str, dataset.shape))} {dataset.dtype}) "
            f"needs bytes up to {needed} but the file has {size}; re-copy the file"
        )


# ------------------------------------------------------------------------------------ writing


def chunks_for(shape: tuple[int, ...]) -> tuple[int, ...]:
    """Chunk shape: at most `CHUNK` along every axis (about 1 MiB of float32)."""
    return tuple(min(n, CHUNK) for n in shape)


class Hdf5Writer(CubeWriter):
    """Writes windows into a chunked, gzip-compressed h5py dataset.

    Subclasses change `stored_axes` (the dataset's axis order), `userblock_size`, and how
    metadata is attached (`_describe`); the MAT v7.3 writer is one.
    """

    stored_axes = DEFAULT_AXES
    userblock_size = 0

    def __init__(
        self,
        path: Path,
        shape: tuple[int, int, int],
        dtype: np.dtype,
        meta: CubeMeta,
        *,
        dataset_name: str = DEFAULT_DATASET,
    ) -> None:
        self._file: h5py.File | None = None
        super().__init__(path, shape, dtype, meta, finals=[path])
        stored = tuple(self.shape[CUBE_AXES.index(axis)] for axis in self.stored_axes)
        try:
            options = {"userblock_size": self.userblock_size} if self.userblock_size else {}
            self._file = h5py.File(self.temp_path(path), "w", rdcc_nbytes=32 * 2**20, **options)
            self._dataset = self._file.create_dataset(
                dataset_name,
                shape=stored,
                dtype=self.dtype,
                chunks=chunks_for(stored),
                compression="gzip",
                compression_opts=4,
                shuffle=True,
            )
            self._describe(self._file, self._dataset)
        except (OSError, ValueError, TypeError) as error:
            self.abort()
            raise CubeWriteError(f"cannot create {path}: {describe_os_error(error)}") from None

    def _describe(self, file: h5py.File, dataset: h5py.Dataset) -> None:
        """Attach the metadata as attributes of the dataset."""
        meta, attrs = self.meta, dataset.attrs
        attrs["axes"] = self.stored_axes
        if meta.wavelengths is not None:
            attrs["wavelength"] = np.asarray(meta.wavelengths, dtype=np.float64)
        if meta.fwhm is not None:
            attrs["fwhm"] = np.asarray(meta.fwhm, dtype=np.float64)
        if meta.bbl is not None:
            attrs["bbl"] = np.asarray(meta.bbl, dtype=np.uint8)
        if meta.band_names is not None:
            attrs["band_names"] = [str(name) for name in meta.band_names]
        if meta.map_info is not None:
            attrs["map_info"] = [str(entry) for entry in meta.map_info]
        for name in ("wavelength_units", "description", "crs_wkt"):
            if (value := getattr(meta, name)) is not None:
                attrs[name] = value
        if meta.nodata is not None:
            attrs["nodata"] = float(meta.nodata)
        if meta.scale_factor is not None:
            attrs["reflectance_scale_factor"] = float(meta.scale_factor)
        if meta.transform is not None:
            attrs["transform"] = np.asarray(meta.transform, dtype=np.float64)
        for name, key in PROVENANCE_NAMES.items():
            if key in meta.provenance:
                attrs[name] = str(meta.provenance[key])
        for name, value in meta.extra.items():
            if name not in attrs:
                attrs[name] = str(value)

    def _write_window(self, block: np.ndarray, rows: slice, cols: slice) -> None:
        by_axis = {"b": slice(None), "h": rows, "w": cols}
        index = tuple(by_axis[axis] for axis in self.stored_axes)
        try:
            self._dataset[index] = np.transpose(block, [CUBE_AXES.index(axis) for axis in self.stored_axes])
        except OSError as error:  # h5py's failed write, e.g. a full disk
            raise CubeWriteError(f"cannot write {self.path}: {describe_os_error(error)}") from None

    def _finish(self) -> None:
        # A full disk must fail in flush, never in close: HDF5 cannot close a file whose close failed (the
        # process then crashes at exit), while after a failed flush `_close` still closes it safely.
        try:
            self._file.flush()
        except OSError as error:
            raise CubeWriteError(f"cannot write {self.path}: {describe_os_error(error)}") from None
        self._file.close()
        self._file = None

    def _close(self) -> None:
        """Abort: close without writing anything more to the staged file (it is deleted next)."""
        if self._file is None:
            return
        file, self._file = self._file, None
        _discard_writes(file)
        file.close()


def _discard_writes(file: h5py.File) -> None:
    """Point an open HDF5 file's descriptor at an anonymous in-memory file, so that closing it (which writes
    the cached chunks and metadata) cannot fail on a full disk. Linux (memfd); elsewhere the staged file is
    emptied instead, which frees what was written."""
    try:
        handle = file.id.get_vfd_handle()
    except (OSError, ValueError, RuntimeError):
        return
    if not isinstance(handle, int):
        return
    if hasattr(os, "memfd_create"):
        scratch = os.memfd_create("hsidenoise-discarded")
        try:
            os.dup2(scratch, handle)
        finally:
            os.close(scratch)
    else:
        with contextlib.suppress(OSError):
            os.ftruncate(handle, 0)


def create_writer(
    path: PathLike,
    shape: tuple[int, int, int],
    *,
    meta: CubeMeta,
    dtype: np.dtype,
    overwrite: bool = False,
    inputs: Iterable[PathLike] = (),
) -> Hdf5Writer:
    """Start writing an HDF5 cube (dataset ``/cube``, ``hwb`` order); the free space must hold it uncompressed."""
    check_dtype(dtype, SUPPORTED_DTYPES, "HDF5")
    path = Path(path)
    check_output([path], overwrite=overwrite, inputs=inputs, nbytes=estimated_size(shape, dtype, compressed=True))
    return Hdf5Writer(path, tuple(shape), np.dtype(dtype), meta)
