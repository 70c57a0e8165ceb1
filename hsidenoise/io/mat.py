"""MATLAB MAT files: v5 through ``scipy.io``, v7.3 (HDF5 inside) through h5py.

Reading:

- ``var`` names the cube variable. Without it the file must hold exactly one 3-D numeric
  variable; if it holds none, a single 2-D variable with ``nRow * nCol`` pixels along one
  axis is taken when ``nRow`` and ``nCol`` are in the file (the unmixing layout, e.g.
  Samson's ``V``, 156 bands x 9025 pixels). Otherwise a `VariableError` lists the candidates.
- ``axes`` is the variable's axis order as MATLAB sees it: ``"hwb"`` (rows x cols x bands),
  ``"bhw"``, ``"whb"``, ... and ``"b(hw)"`` / ``"(hw)b"`` for bands x pixels,
  where pixels are in MATLAB's column-major order (the row index varies fastest). Without it, an
  ``axes`` char variable in the file (our writers store one) is used, else `hsidenoise.io.base.infer_axes`:
  ``"hwb"`` unless the wavelengths or the shape say otherwise, and a shape that could be either is refused.
- A plain HDF5 file named ``.mat`` (no MATLAB header, e.g. written by h5py) is read as HDF5.
- v5 files are loaded whole (scipy cannot read part of a variable). v7.3 cubes are read
  lazily with h5py, which sees MATLAB's axes reversed (an H x W x B variable is (B, W, H)).
- Metadata comes from variables next to the cube: ``wavelengths`` (or ``wavelength``,
  ``wl``), ``wavelength_units``, ``fwhm``, ``bbl``, ``band_names``, ``nodata``,
  ``scale_factor``, ``description``, ``crs_wkt``, ``transform``, ``map_info``. Without
  ``wavelength_units`` the unit is inferred from the values: below 30 → micrometres, else nanometres.

Writing: the variable ``cube`` (rows x cols x bands) plus the metadata variables above.
Format ``"mat"`` writes v5: the whole cube is gathered in memory and saved compressed by
``scipy.io.savemat`` on commit; a cube of 2 GiB or more (MATLAB's limit for one v5 variable)
is written as v7.3 instead. Format ``"mat73"`` always writes v7.3: an HDF5 file with MATLAB's
512-byte header, written tile by tile into gzip chunks. ``band_names`` and ``map_info`` are
cell arrays of strings (in v7.3: references into ``#refs#``, as MATLAB writes them); `CubeMeta.extra`
(e.g. ENVI keys hsidenoise has no field for) is two cell arrays, ``extra_keys`` and ``extra_values``.
"""

from __future__ import annotations

import logging
import struct
import sys
import time
import warnings
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import scipy.io
from scipy.io.matlab import MatReadError, matfile_version

from hsidenoise.cube import CubeMeta
from hsidenoise.errors import (
    CubeReadError,
    CubeShapeError,
    CubeWriteError,
    HsiDenoiseError,
    ResourceError,
    VariableError,
)
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
from hsidenoise.io.hdf5 import (
    H5_ERRORS,
    PROVENANCE_NAMES,
    SIZE_NAMES,
    Hdf5Writer,
    check_storage,
    describe,
)
from hsidenoise.io.hdf5 import open_reader as open_hdf5_reader
from hsidenoise.io.mat_v5 import check_v5
from hsidenoise.io.staging import PathLike, check_output, describe_os_error, estimated_size

logger = logging.getLogger(__name__)

DEFAULT_VARIABLE = "cube"
DEFAULT_AXES = "hwb"
V5_VARIABLE_LIMIT = 2**31
"""Bytes: MATLAB cannot hold a larger variable in a v5/v7 file."""

MATLAB_CLASSES = {
    np.dtype("float64"): "double",
    np.dtype("float32"): "single",
    np.dtype("int8"): "int8",
    np.dtype("uint8"): "uint8",
    np.dtype("int16"): "int16",
    np.dtype("uint16"): "uint16",
    np.dtype("int32"): "int32",
    np.dtype("uint32"): "uint32",
    np.dtype("int64"): "int64",
    np.dtype("uint64"): "uint64",
}
NUMERIC_CLASSES = frozenset(MATLAB_CLASSES.values())
SUPPORTED_DTYPES = tuple(MATLAB_CLASSES)

WAVELENGTH_NAMES = ("wavelengths", "wavelength", "wl")
META_NAMES = WAVELENGTH_NAMES + (
    "wavelength_units",
    "fwhm",
    "bbl",
    "band_names",
    "nodata",
    "scale_factor",
    "description",
    "crs_wkt",
    "transform",
    "map_info",
    "extra_keys",
    "extra_values",
    "axes",
) + tuple(PROVENANCE_NAMES)
SIZE_VARIABLES = SIZE_NAMES["rows"] + SIZE_NAMES["cols"]

Entry = tuple[str, tuple[int, ...], str]
"""A variable as ``scipy.io.whosmat`` lists it: (name, MATLAB shape, MATLAB class)."""


# ------------------------------------------------------------------------------ choosing a variable


def choose_variable(entries: list[Entry], var: str | None, path: Path, size: tuple[int | None, int | None]) -> str:
    """The cube variable: `var`, else the only 3-D numeric one, else a single bands x pixels one.

    Args:
        entries: every variable of the file.
        var: the name the user asked for, or None.
        path: for messages.
        size: (nRow, nCol) when the file has them.

    Raises:
        VariableError: `var` is missing or not numeric, or no single candidate exists (the message lists them).
    """
    listing = describe(entries)
    if var is not None:
        match = [entry for entry in entries if entry[0] == var]
        if not match:
            raise VariableError(f"{path} has no variable {var!r}; it holds: {listing}")
        if match[0][2] not in NUMERIC_CLASSES:
            raise VariableError(
                f"variable {var!r} in {path} is a {match[0][2]}, not a numeric array; it holds: {listing}"
            )
        return var
    numeric = [entry for entry in entries if entry[2] in NUMERIC_CLASSES]
    cubes = [entry for entry in numeric if len(entry[1]) == 3]
    if len(cubes) == 1:
        return cubes[0][0]
    if cubes:
        raise VariableError(f"{path} holds several 3-D variables: {describe(cubes)}; choose one with --var NAME")
    rows, cols = size
    if rows and cols:
        flat = [entry for entry in numeric if len(entry[1]) == 2 and rows * cols in entry[1]]
        if len(flat) == 1:
            return flat[0][0]
    raise VariableError(
        f"{path} holds no 3-D numeric variable; it holds: {listing}; pass --var NAME, and --axes 'b(hw)' "
        "with nRow/nCol in the file for a bands x pixels matrix"
    )


WRITTEN_AXES = "hwb"
"""The axis order (as MATLAB sees it) of the cube our writers store, recorded in an ``axes`` char variable so
that reading it back never depends on `infer_axes` (a rows x cols x bands cube with cols == bands is ambiguous)."""


def declared_axes(values: dict[str, Any]) -> str | None:
    """The ``axes`` char variable of the file (``"hwb"``, ``"bhw"``, ...) when it names three axes, else None."""
    declared = values.get("axes")
    if isinstance(declared, str) and sorted(declared.strip().lower()) == ["b", "h", "w"]:
        return declared.strip().lower()
    return None


def _layout(
    name: str,
    shape: tuple[int, ...],
    axes: str | None,
    size: tuple[int | None, int | None],
    path: Path,
    wavelength_count: int | None = None,
) -> str:
    """The axis order (as MATLAB sees it) of the chosen variable of `shape`; `size` is (nRow, nCol).

    A 3-D variable without `axes` gets `hsidenoise.io.base.infer_axes` (MATLAB's ``"hwb"`` unless the
    wavelength vector or the shape says where the bands are; a shape that could be either is refused)."""
    if len(shape) == 3:
        if axes is not None:
            return parse_axes(axes)
        return infer_axes(shape, wavelength_count, where=f"variable {name!r} in {path}", matlab=True)
    rows, cols = size
    if len(shape) == 2 and rows and cols:
        if axes is not None:
            return parse_axes(axes, ndim=2)
        return "b(hw)" if shape[1] == rows * cols else "(hw)b"
    raise CubeShapeError(
        f"variable {name!r} in {path} has shape {'x'.join(map(str, shape))}; a cube needs 3 axes "
        "(rows x cols x bands), or a bands x pixels matrix with nRow and nCol in the file"
    )


def infer_wavelength_units(wavelengths: np.ndarray) -> str:
    """``"Micrometers"`` when every wavelength is below 30, else ``"Nanometers"``."""
    return "Micrometers" if float(np.nanmax(wavelengths)) < 30 else "Nanometers"


def meta_from_variables(values: dict[str, Any], bands: int) -> CubeMeta:
    """`CubeMeta` from the metadata variables (strings as str, numbers as arrays)."""
    meta = CubeMeta(source_format="mat")

    def per_band(name: str) -> np.ndarray | None:
        if name not in values:
            return None
        array = np.asarray(values[name]).reshape(-1)
        if array.size != bands:
            logger.warning("MAT variable %r has %d entries for %d bands; ignored", name, array.size, bands)
            return None
        return array

    for name in WAVELENGTH_NAMES:
        if (array := per_band(name)) is not None:
            meta.wavelengths = array.astype(np.float64)
            break
    if (array := per_band("fwhm")) is not None:
        meta.fwhm = array.astype(np.float64)
    if (array := per_band("bbl")) is not None:
        meta.bbl = array.astype(np.uint8)
    if (array := per_band("band_names")) is not None:
        meta.band_names = [str(item) for item in array]
    for name in ("wavelength_units", "description", "crs_wkt"):
        if isinstance(values.get(name), str):
            setattr(meta, name, values[name])
    if "nodata" in values:
        meta.nodata = float(np.asarray(values["nodata"]).reshape(-1)[0])
    if "scale_factor" in values:
        factor = float(np.asarray(values["scale_factor"]).reshape(-1)[0])
        meta.scale_factor = usable_scale_factor(factor, "variable 'scale_factor'")
    if "transform" in values and np.asarray(values["transform"]).size == 6:
        meta.transform = tuple(float(v) for v in np.asarray(values["transform"]).reshape(-1))
    if "map_info" in values:
        meta.map_info = _strings(values["map_info"])
    if "extra_keys" in values and "extra_values" in values:
        keys, texts = _strings(values["extra_keys"]), _strings(values["extra_values"])
        if len(keys) == len(texts):
            meta.extra = dict(zip(keys, texts, strict=True))
        else:
            logger.warning("MAT variables extra_keys and extra_values differ in length; ignored")
    meta.provenance = {key: values[name] for name, key in PROVENANCE_NAMES.items() if isinstance(values.get(name), str)}
    if meta.wavelengths is not None and meta.wavelength_units is None:
        meta.wavelength_units = infer_wavelength_units(meta.wavelengths)
    return meta


def _wavelength_count(values: dict[str, Any]) -> int | None:
    """Length of the file's wavelength vector (the first of `WAVELENGTH_NAMES`), or None."""
    for name in WAVELENGTH_NAMES:
        if name in values and not isinstance(values[name], str):
            return int(np.asarray(values[name]).size)
    return None


def _strings(value: Any) -> list[str]:
    """A cell array of strings (or one string, as scipy squeezes a 1-element cell) as a list of str."""
    if isinstance(value, str):
        return [value]
    return [str(item) for item in np.atleast_1d(np.asarray(value, dtype=object)).ravel()]


def _size(values: dict[str, Any]) -> tuple[int | None, int | None]:
    def first(names: tuple[str, ...]) -> int | None:
        for name in names:
            if name in values:
                return int(np.asarray(values[name]).reshape(-1)[0])
        return None

    return first(SIZE_NAMES["rows"]), first(SIZE_NAMES["cols"])


# ---------------------------------------------------------------------------------------- v5


SCIPY_ERRORS = (
    MatReadError, ValueError, TypeError, OverflowError, IndexError, KeyError, AttributeError, OSError,
    NotImplementedError, struct.error, zlib.error,
)  # fmt: skip
"""What scipy's MAT reader raises on a file that passes `check_v5` but still does not parse."""

METADATA_ERRORS = (ValueError, TypeError, IndexError, OverflowError, AttributeError)
"""What turning an odd metadata variable (empty, text where a number belongs) into `CubeMeta` raises."""


def _open_v5(path: Path, var: str | None, axes: str | None, major: int) -> ArrayCubeReader:
    # v5 files are walked first: scipy's compiled reader crashes on some damaged tags (see mat_v5).
    # v4 files (major 0) go to scipy's pure-Python reader, which raises instead.
    unloadable = {v.name for v in check_v5(path) if not v.loadable} if major == 1 else set()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # scipy warns about duplicate names and odd headers: not ours to print
            entries = [
                (name, tuple(shape), kind)
                for name, shape, kind in scipy.io.whosmat(str(path))
                if name not in unloadable
            ]
            present = {name for name, _, _ in entries}
            small = [name for name in META_NAMES + SIZE_VARIABLES if name in present]
            values = {}
            if small:
                values = scipy.io.loadmat(str(path), variable_names=small, squeeze_me=True, chars_as_strings=True)
            size = _metadata(path, _size, values)
            name = choose_variable(entries, var, path, size)
            array = scipy.io.loadmat(str(path), variable_names=[name])[name]
    except HsiDenoiseError:
        raise
    except SCIPY_ERRORS as error:
        raise CubeReadError(f"cannot read {path} as a MAT file: {error}; re-save or re-copy it") from error
    if not isinstance(array, np.ndarray) or array.dtype.kind not in "fiub":
        kind = "complex values" if np.iscomplexobj(array) else f"{type(array).__name__} {getattr(array, 'dtype', '')}"
        raise CubeReadError(
            f"variable {name!r} in {path} holds {kind}; hsidenoise reads real numeric cubes: "
            "save real(x) or abs(x) in MATLAB and read that"
        )
    check_not_empty(path, name, array.shape)
    axes = axes if axes is not None else declared_axes(values)
    order = _layout(name, array.shape, axes, size, path, _metadata(path, _wavelength_count, values))
    if "(hw)" in order:
        array, order = to_cube_order(array, order, rows=size[0], cols=size[1]), CUBE_AXES
    meta = _metadata(path, meta_from_variables, values, array.shape[order.index("b")])
    meta.dtype = np.dtype(array.dtype).newbyteorder("=")
    return ArrayCubeReader(path, array, order, meta, files=[path])


def _metadata(path: Path, function: Any, *args: Any) -> Any:
    """`function(*args)` on the file's metadata variables; an unusable value becomes a CubeReadError."""
    try:
        return function(*args)
    except METADATA_ERRORS as error:
        raise CubeReadError(
            f"{path}: a metadata variable ({', '.join(META_NAMES[:3])}, nRow, nCol, ...) holds an unusable value "
            f"({error}); fix or remove it"
        ) from error


# -------------------------------------------------------------------------------------- v7.3


def _matlab_class(dataset: h5py.Dataset) -> str:
    if "MATLAB_class" in dataset.attrs:
        value = dataset.attrs["MATLAB_class"]
        return value.decode() if isinstance(value, bytes | np.bytes_) else str(value)
    return MATLAB_CLASSES.get(np.dtype(dataset.dtype).newbyteorder("="), dataset.dtype.name)


def _v73_value(dataset: h5py.Dataset) -> Any:
    """A small v7.3 variable as scipy would give it: str for char arrays, a list for cell arrays (of these
    values, in MATLAB's column-major order), else the MATLAB-order array."""
    kind = _matlab_class(dataset)
    if "MATLAB_empty" in dataset.attrs:
        return "" if kind == "char" else np.zeros((0,))
    data = dataset[()]
    if kind == "char":
        return "".join(chr(code) for code in np.asarray(data).T.reshape(-1))
    if kind == "cell":
        return [_v73_value(dataset.file[ref]) for ref in np.asarray(data).T.reshape(-1)]
    return np.asarray(data).T


def _variables(file: h5py.File) -> dict[str, h5py.Dataset]:
    """The non-empty datasets of a v7.3 file by name, without MATLAB's ``#refs#`` / ``#subsystem#``."""
    found: dict[str, h5py.Dataset] = {}

    def visit(name: str, item: Any) -> None:
        hidden = any(part.startswith("#") for part in name.split("/"))
        if isinstance(item, h5py.Dataset) and not hidden and "MATLAB_empty" not in item.attrs:
            found[name] = item

    file.visititems(visit)
    return found


def _open_v73(path: Path, var: str | None, axes: str | None) -> ArrayCubeReader:
    try:
        file = h5py.File(path, "r")
    except OSError as error:
        raise CubeReadError(f"cannot open {path} as a MAT v7.3 (HDF5) file: {error}") from error
    try:
        datasets = _variables(file)
        entries = [(name, tuple(reversed(d.shape)), _matlab_class(d)) for name, d in datasets.items()]
        values = {name: _v73_value(datasets[name]) for name in META_NAMES + SIZE_VARIABLES if name in datasets}
        size = _metadata(path, _size, values)
        name = choose_variable(entries, var, path, size)
        dataset = datasets[name]
        if dataset.dtype.kind not in "fiu":
            kind = "complex values" if dataset.dtype.names or dataset.dtype.kind == "c" else f"{dataset.dtype}"
            raise CubeReadError(
                f"variable {name!r} in {path} holds {kind}; hsidenoise reads real numeric cubes: "
                "save real(x) or abs(x) in MATLAB and read that"
            )
        check_not_empty(path, name, dataset.shape)
        check_storage(dataset, path)
        wavelengths = _metadata(path, _wavelength_count, values)
        axes = axes if axes is not None else declared_axes(values)
        order = _layout(name, tuple(reversed(dataset.shape)), axes, size, path, wavelengths)
        if "(hw)" in order:
            array: Any = to_cube_order(dataset[()].T, order, rows=size[0], cols=size[1])
            stored = CUBE_AXES
        else:
            array, stored = dataset, order[::-1]
        meta = _metadata(path, meta_from_variables, values, array.shape[stored.index("b")])
        meta.dtype = np.dtype(array.dtype).newbyteorder("=")
        return ArrayCubeReader(path, array, stored, meta, files=[path], handle=file)
    except HsiDenoiseError:
        file.close()
        raise
    except H5_ERRORS as error:
        file.close()
        raise CubeReadError(f"cannot read {path} as a MAT v7.3 (HDF5) file: {error}; re-save or re-copy it") from error
    except BaseException:
        file.close()
        raise


def is_plain_hdf5(path: Path) -> bool:
    """True for an HDF5 file without a user block, hence without MATLAB's v7.3 header (e.g. written by h5py
    under a ``.mat`` name); a v7.3 file always starts with a 512-byte user block holding that header."""
    try:
        if not h5py.is_hdf5(path):
            return False
        with h5py.File(path, "r") as file:
            return file.userblock_size == 0
    except H5_ERRORS:
        return False


def open_reader(path: PathLike, *, var: str | None = None, axes: str | None = None) -> ArrayCubeReader:
    """Open a MAT file (v5 in memory, v7.3 lazily); see the module docstring for `var` and `axes`.

    A plain HDF5 file named ``.mat`` (`is_plain_hdf5`) is read as HDF5 (`hsidenoise.io.hdf5.open_reader`, whose
    band-axis rule is that of C-order arrays).

    Raises:
        CubeReadError: missing, unreadable or not a MAT file.
        VariableError: no single candidate variable, or `var` not found / not numeric.
        CubeShapeError: the variable is 2-D without nRow/nCol, or `axes` does not fit.
    """
    path = check_readable(path)
    try:
        major, _ = matfile_version(str(path))
    except (MatReadError, ValueError, OSError, IndexError) as error:  # scipy: IndexError on tiny junk
        if is_plain_hdf5(path):
            logger.info("%s is a plain HDF5 file (no MATLAB header); reading it as HDF5", path)
            return open_hdf5_reader(path, var=var, axes=axes)
        raise CubeReadError(
            f"{path} is not a MAT file ({error}); check the file, or pass --format with its format "
            "(fmt= in Python)"
        ) from error
    if major == 2:
        return _open_v73(path, var, axes)
    return _open_v5(path, var, axes, major)


# ------------------------------------------------------------------------------------- writing


def mat_variables(meta: CubeMeta) -> dict[str, Any]:
    """The metadata variables written next to the cube (v5: everything; see `Mat73Writer` for v7.3)."""
    variables: dict[str, Any] = {"axes": WRITTEN_AXES}
    for name, values in (("wavelengths", meta.wavelengths), ("fwhm", meta.fwhm), ("transform", meta.transform)):
        if values is not None:
            variables[name] = np.asarray(values, dtype=np.float64)
    if meta.bbl is not None:
        variables["bbl"] = np.asarray(meta.bbl, dtype=np.uint8)
    for name in ("wavelength_units", "description", "crs_wkt"):
        if getattr(meta, name):
            variables[name] = getattr(meta, name)
    for name in ("nodata", "scale_factor"):
        if getattr(meta, name) is not None:
            variables[name] = float(getattr(meta, name))
    for name in ("band_names", "map_info"):
        if getattr(meta, name) is not None:
            variables[name] = _cell([str(item) for item in getattr(meta, name)])
    for name, key in PROVENANCE_NAMES.items():
        if meta.provenance.get(key):
            variables[name] = str(meta.provenance[key])
    if meta.extra:  # keys that are no MATLAB identifier ("sensor type"): two cell arrays, not a struct
        variables["extra_keys"] = _cell([str(key) for key in meta.extra])
        variables["extra_values"] = _cell([str(value) for value in meta.extra.values()])
    return variables


def _cell(items: list[str]) -> np.ndarray:
    """A column cell array of strings for ``scipy.io.savemat`` (an object array)."""
    cell = np.empty((len(items),), dtype=object)
    cell[:] = items
    return cell


class MatV5Writer(CubeWriter):
    """Gathers the blocks in memory (B x H x W in the output dtype) and saves a compressed v5 file on commit."""

    def __init__(self, path: Path, shape: tuple[int, int, int], dtype: np.dtype, meta: CubeMeta) -> None:
        self._data: np.ndarray | None = None
        super().__init__(path, shape, dtype, meta, finals=[path])
        try:
            self._data = np.zeros(self.shape, dtype=self.dtype)
        except MemoryError as error:
            self.abort()
            nbytes = int(np.prod(self.shape)) * self.dtype.itemsize
            raise ResourceError(
                f"a MAT v5 output is built in memory and needs {nbytes / 2**30:.2f} GiB; "
                "write --format mat73 (fmt='mat73' in Python), HDF5 or ENVI instead"
            ) from error

    def _write_window(self, block: np.ndarray, rows: slice, cols: slice) -> None:
        self._data[:, rows, cols] = block

    def _finish(self) -> None:
        variables = {DEFAULT_VARIABLE: self._data.transpose(1, 2, 0), **mat_variables(self.meta)}
        try:
            with open(self._staged[0].temp, "wb") as file:
                scipy.io.savemat(file, variables, do_compression=True, oned_as="column")
        except (OSError, ValueError) as error:
            raise CubeWriteError(f"cannot write {self.path}: {describe_os_error(error)}") from None
        self._close()

    def _close(self) -> None:
        self._data = None


def _matlab_header() -> bytes:
    """The 128-byte header MATLAB puts in the user block of a v7.3 file."""
    created = time.strftime("%a %b %d %H:%M:%S %Y")
    text = f"MATLAB 7.3 MAT-file, Platform: {sys.platform}, Created on: {created} HDF5 schema 1.00 .".encode()
    return text.ljust(116, b" ")[:116] + b"\x00" * 8 + b"\x00\x02" + b"IM"


def _write_v73_char(group: h5py.Group, name: str, value: str) -> None:
    """A MATLAB 1 x n char array (UTF-16 code units; an empty string as MATLAB writes one)."""
    if not value:
        variable = group.create_dataset(name, data=np.zeros(2, dtype=np.uint64))
        variable.attrs["MATLAB_empty"] = np.uint8(1)
    else:
        codes = np.frombuffer(value.encode("utf-16-le"), dtype="<u2").astype(np.uint16).reshape(-1, 1)
        variable = group.create_dataset(name, data=codes)
        variable.attrs["MATLAB_int_decode"] = np.int32(2)
    variable.attrs["MATLAB_class"] = np.bytes_("char")


class Mat73Writer(Hdf5Writer):
    """A v7.3 MAT file: HDF5 with MATLAB's header; the cube is stored with MATLAB's axes reversed."""

    stored_axes = "bwh"  # h5py order of MATLAB's rows x cols x bands
    userblock_size = 512

    def _describe(self, file: h5py.File, dataset: h5py.Dataset) -> None:
        """Tag the cube with its MATLAB class and write the metadata as MATLAB variables."""
        dataset.attrs["MATLAB_class"] = np.bytes_(MATLAB_CLASSES[self.dtype])
        for name, value in mat_variables(self.meta).items():
            if isinstance(value, str):
                _write_v73_char(file, name, value)
            elif isinstance(value, np.ndarray) and value.dtype == object:  # a cell array of strings
                refs = file.require_group("#refs#")
                targets = []
                for item in value:
                    item_name = f"{name}_{len(refs)}"
                    _write_v73_char(refs, item_name, str(item))
                    targets.append(refs[item_name].ref)
                variable = file.create_dataset(name, data=np.array(targets, dtype=h5py.ref_dtype).reshape(1, -1))
                variable.attrs["MATLAB_class"] = np.bytes_("cell")
            else:
                array = np.atleast_1d(np.asarray(value))
                variable = file.create_dataset(name, data=array.reshape(1, -1))  # a MATLAB column vector
                variable.attrs["MATLAB_class"] = np.bytes_(MATLAB_CLASSES[array.dtype])

    def _finish(self) -> None:
        super()._finish()
        try:
            with open(self._staged[0].temp, "r+b") as file:
                file.write(_matlab_header())
        except OSError as error:
            raise CubeWriteError(f"cannot write {self.path}: {describe_os_error(error)}") from None


def create_writer(
    path: PathLike,
    shape: tuple[int, int, int],
    *,
    meta: CubeMeta,
    dtype: np.dtype,
    overwrite: bool = False,
    inputs: Iterable[PathLike] = (),
    version: str = "5",
) -> CubeWriter:
    """Start writing a MAT file: v5 unless the cube reaches 2 GiB or `version` is ``"7.3"``."""
    check_dtype(dtype, SUPPORTED_DTYPES, "MAT")
    path = Path(path)
    # Compressed either way: the free space must hold the uncompressed cube (`estimated_size`).
    check_output([path], overwrite=overwrite, inputs=inputs, nbytes=estimated_size(shape, dtype, compressed=True))
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    if version == "5" and nbytes >= V5_VARIABLE_LIMIT:
        logger.info("%s: %.1f GiB is too large for MAT v5; writing v7.3", path, nbytes / 2**30)
        version = "7.3"
    if version == "7.3":
        return Mat73Writer(path, tuple(shape), np.dtype(dtype), meta, dataset_name=DEFAULT_VARIABLE)
    return MatV5Writer(path, tuple(shape), np.dtype(dtype), meta)


def create_writer_v73(
    path: PathLike,
    shape: tuple[int, int, int],
    *,
    meta: CubeMeta,
    dtype: np.dtype,
    overwrite: bool = False,
    inputs: Iterable[PathLike] = (),
) -> CubeWriter:
    """Start writing a MAT v7.3 file (format ``"mat73"``)."""
    return create_writer(path, shape, meta=meta, dtype=dtype, overwrite=overwrite, inputs=inputs, version="7.3")
