"""ENVI: a ``.hdr`` text header next to a raw data file (BSQ, BIL or BIP).

Headers are parsed and written with SPy (``spectral.io.envi.read_envi_header`` /
``write_envi_header``): keys are case-insensitive, values are strings. The pixels are read
by our own code honouring ``header offset``, ``interleave`` and ``byte order``, because
SPy's ``load()`` converts the dtype and applies the scale factor.

Pixels move with positioned reads and writes (``os.preadv`` / ``os.pwritev``, see
`read_box` / `write_box`), not through a memory map: the kernel's page cache then never
counts in the process's resident memory, so reading and writing a scene of any size keeps
memory at the size of the blocks asked for. A window whose file rows are at most
`GAP_BYTES` apart is read in calls spanning the gaps (up to `SPAN_BYTES` each); otherwise
each row is read on its own. Writes of such a window span the gaps too: each span is read,
the window's rows are put in, and it is written back (the file holds zeros where nothing was
written yet), one read and one write per span instead of one write per row.

Supported ``data type`` codes: 1 uint8, 2 int16, 3 int32, 4 float32, 5 float64, 12 uint16,
13 uint32, 14 int64, 15 uint64 (complex 6 and 9 are refused). A missing ``byte order`` is
taken as 0 (little endian) and a missing ``interleave`` as BSQ, with a warning, as GDAL does.

Writing: the output path may name the header (``out.hdr`` → data file ``out.img``) or the
data file (``out.bil`` → header ``out.hdr``); a ``.bil`` / ``.bip`` / ``.bsq`` data suffix
chooses the interleave, anything else writes BSQ. Files are written in native byte order.
``map info`` is kept verbatim when the metadata has one; otherwise it is built from the
transform (a turned grid gets ``rotation=``) and CRS (UTM / WGS-84 geographic by name, anything
else as ``Arbitrary``); the CRS is also written as WKT in ``coordinate system string``.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

import numpy as np
from spectral.io import envi as spy_envi

from hsidenoise.cube import PROVENANCE_KEYS, CubeMeta
from hsidenoise.errors import ConfigError, CubeReadError, CubeWriteError, HeaderError
from hsidenoise.io.base import CUBE_AXES, CubeReader, CubeWriter, check_readable, usable_scale_factor
from hsidenoise.io.dtypes import check_dtype
from hsidenoise.io.envi_georef import crs_from_map_info, map_info_from_geo, number_text, transform_from_map_info
from hsidenoise.io.staging import PathLike, check_output, describe_os_error, estimated_size

logger = logging.getLogger(__name__)

DATA_SUFFIXES = (".img", ".dat", ".raw", ".bsq", ".bil", ".bip", ".bin")
INTERLEAVE_AXES = {"bsq": "bhw", "bil": "hbw", "bip": "hwb"}
"""Order of the data file's axes for each interleave, in the letters of `base.CUBE_AXES`."""

PROVENANCE_PREFIX = "hsidenoise "
"""Header keys ``hsidenoise method``, ``hsidenoise weights``, ... hold `CubeMeta.provenance`."""

REQUIRED_KEYS = ("samples", "lines", "bands", "data type")
STRUCTURE_KEYS = frozenset(REQUIRED_KEYS + ("header offset", "file type", "interleave", "byte order"))
META_KEYS = frozenset(
    (
        "description",
        "wavelength",
        "wavelength units",
        "fwhm",
        "bbl",
        "band names",
        "data ignore value",
        "reflectance scale factor",
        "map info",
        "coordinate system string",
    )
)


GAP_BYTES = 64 << 10
"""Rows of a window at most this many bytes apart in the file are read in one call, gaps included."""

SPAN_BYTES = 1 << 20
"""Largest single read over gaps; longer spans are read in several calls."""

ENVI_DATA_TYPES: dict[int, np.dtype] = {
    int(code): np.dtype(char) for code, char in spy_envi.envi_to_dtype.items() if np.dtype(char).kind != "c"
}
"""``data type`` code → numpy dtype (SPy's table without the complex types)."""


# ------------------------------------------------------------------------------------ numbers


def _as_list(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def _per_band(header: dict, key: str, bands: int, hdr_path: Path) -> list[str] | None:
    if key not in header:
        return None
    values = _as_list(header[key])
    if len(values) != bands:
        logger.warning("%s: '%s' has %d entries for %d bands; ignored", hdr_path, key, len(values), bands)
        return None
    return values


def _floats(values: list[str], key: str, hdr_path: Path) -> np.ndarray:
    try:
        return np.array([float(v) for v in values], dtype=np.float64)
    except ValueError as error:
        raise HeaderError(f"{hdr_path}: '{key}' must hold numbers; got {values[:3]}...; fix the header") from error


def _integer(header: dict, key: str, hdr_path: Path, default: int | None = None) -> int:
    if key not in header:
        if default is None:
            raise HeaderError(
                f"ENVI header {hdr_path} has no '{key}'; a header needs samples, lines, bands and data type; "
                "add the missing line"
            )
        return default
    text = header[key]
    try:
        return int(text)
    except (TypeError, ValueError) as error:
        raise HeaderError(f"ENVI header {hdr_path}: '{key}' must be an integer; got {text!r}") from error


# ---------------------------------------------------------------------------------- raw file I/O


def _pread_into(file: BinaryIO, array: np.ndarray, offset: int) -> None:
    """Fill the C-contiguous `array` with the bytes of `file` at `offset`.

    Raises:
        CubeReadError: the file ends first (it shrank after it was opened).
    """
    view = memoryview(array.reshape(-1).view(np.uint8))
    done = 0
    while done < len(view):
        if hasattr(os, "preadv"):
            count = os.preadv(file.fileno(), [view[done:]], offset + done)
        else:  # platforms without positioned reads (Windows)
            file.seek(offset + done)
            count = file.readinto(view[done:])
        if not count:
            raise CubeReadError(
                f"{file.name} ended at byte {offset + done} while reading; was it truncated? open it again"
            )
        done += count


def _pwrite_from(file: BinaryIO, array: np.ndarray, offset: int) -> None:
    """Write the C-contiguous `array` into `file` at `offset`."""
    view = memoryview(array.reshape(-1).view(np.uint8))
    done = 0
    while done < len(view):
        if hasattr(os, "pwritev"):
            count = os.pwritev(file.fileno(), [view[done:]], offset + done)
        else:  # platforms without positioned writes (Windows)
            file.seek(offset + done)
            count = file.write(view[done:])
        done += count


def read_box(
    file: BinaryIO,
    offset: int,
    layout: tuple[int, int, int],
    dtype: np.dtype,
    outer: slice | np.ndarray,
    middle: slice,
    inner: slice,
) -> np.ndarray:
    """Read a box of a raw 3-D array stored in C order at `offset` of `file`.

    Args:
        file: the data file, opened unbuffered for reading.
        offset: byte offset of the array (ENVI ``header offset``).
        layout: (n0, n1, n2) of the stored array (file axes, outermost first).
        dtype: the stored dtype, byte order included.
        outer: unit-step slice or sorted unique indices along axis 0.
        middle, inner: unit-step slices along axes 1 and 2 (normalised: start and stop set).

    Returns:
        (len outer, len middle, len inner) array in `dtype`.
    """
    n0, n1, n2 = layout
    item = dtype.itemsize
    indices = np.arange(n0)[outer] if isinstance(outer, slice) else np.asarray(outer)
    m0, m_len = middle.start, middle.stop - middle.start
    i0, i_len = inner.start, inner.stop - inner.start
    out = np.empty((indices.size, m_len, i_len), dtype=dtype)
    if not out.size:
        return out
    if i_len == n2 and m_len == n1 and indices.size == indices[-1] - indices[0] + 1:
        _pread_into(file, out, offset + int(indices[0]) * n1 * n2 * item)  # one contiguous run
        return out
    gap = (n2 - i_len) * item
    # Rows of the window that fit in SPAN_BYTES when read with the gaps between them.
    rows_per_span = max(1, SPAN_BYTES // max(1, n2 * item)) if 0 < gap <= GAP_BYTES else 0
    span = np.empty((min(rows_per_span, m_len) * n2,), dtype=dtype) if rows_per_span else None
    for k, index in enumerate(indices):
        base = offset + (int(index) * n1 + m0) * n2 * item + i0 * item
        if i_len == n2:
            _pread_into(file, out[k], base)
        elif span is not None:
            for first in range(0, m_len, rows_per_span):
                count = min(rows_per_span, m_len - first)
                part = span[: (count - 1) * n2 + i_len]
                _pread_into(file, part, base + first * n2 * item)
                out[k, first : first + count] = np.lib.stride_tricks.as_strided(
                    part, shape=(count, i_len), strides=(n2 * item, item)
                )
        else:
            for j in range(m_len):
                _pread_into(file, out[k, j], base + j * n2 * item)
    return out


def write_box(
    file: BinaryIO, layout: tuple[int, int, int], block: np.ndarray, starts: tuple[int, int, int]
) -> None:
    """Write the (l0, l1, l2) `block` at `starts` of a raw C-order array of `layout` in `file`.

    `block` may be any view (e.g. a transpose): only the pieces that go to one contiguous run of the file are
    copied, one at a time, when they are not contiguous in memory already. Rows at most `GAP_BYTES` apart go
    through spans of up to `SPAN_BYTES` read from the file, filled in and written back (read-modify-write: the
    file must be open for reading too, and no one else may write it meanwhile).
    """
    n0, n1, n2 = layout
    item = block.dtype.itemsize
    s0, s1, s2 = starts
    l0, l1, l2 = block.shape
    if l2 == n2 and l1 == n1 and block.flags.c_contiguous:
        _pwrite_from(file, block, s0 * n1 * n2 * item)
        return
    gap = (n2 - l2) * item
    rows_per_span = SPAN_BYTES // max(1, n2 * item) if 0 < gap <= GAP_BYTES and l1 > 1 else 0
    # a span of one row would read that row only to write it back: rows that long go one write each
    span = np.empty((min(rows_per_span, l1) * n2,), dtype=block.dtype) if rows_per_span >= 2 else None
    for k in range(l0):
        base = ((s0 + k) * n1 + s1) * n2 * item + s2 * item
        if l2 == n2:
            _pwrite_from(file, np.ascontiguousarray(block[k]), base)
        elif span is not None:
            for first in range(0, l1, rows_per_span):
                count = min(rows_per_span, l1 - first)
                part = span[: (count - 1) * n2 + l2]
                start = base + first * n2 * item
                _pread_into(file, part, start)  # the gaps: what the file holds there
                rows = np.lib.stride_tricks.as_strided(part, shape=(count, l2), strides=(n2 * item, item))
                rows[...] = block[k, first : first + count]
                _pwrite_from(file, part, start)
        else:
            for j in range(l1):
                _pwrite_from(file, np.ascontiguousarray(block[k, j]), base + j * n2 * item)


# ------------------------------------------------------------------------------------- reading


def header_and_data_paths(path: PathLike) -> tuple[Path, Path]:
    """Find the header and data file of an ENVI cube given either of them.

    Raises:
        CubeReadError: the other file is missing (the message names the places searched).
    """
    path = check_readable(path)
    if path.suffix.lower() == ".hdr":
        stem = path.with_suffix("")
        suffixes = ("",) + DATA_SUFFIXES + tuple(suffix.upper() for suffix in DATA_SUFFIXES)
        candidates = [stem.with_name(stem.name + suffix) for suffix in suffixes]
        for candidate in candidates:
            if candidate.is_file() and candidate != path:
                return path, candidate
        raise CubeReadError(
            f"no data file for ENVI header {path}: looked for {stem.name} with no suffix or "
            f"{', '.join(DATA_SUFFIXES)}; pass the data file's path instead"
        )
    candidates = [path.with_suffix(".hdr"), path.with_name(path.name + ".hdr"), path.with_suffix(".HDR")]
    for candidate in candidates:
        if candidate.is_file():
            return candidate, path
    raise CubeReadError(
        f"no ENVI header for {path}: expected {candidates[0].name} or {candidates[1].name} next to it"
    )


def read_header(hdr_path: Path) -> dict[str, str | list[str]]:
    """Parse an ENVI header with SPy; keys lower-cased, values strings or lists of strings.

    Raises:
        HeaderError: the file does not start with ``ENVI`` or cannot be parsed.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # SPy warns about upper-case keys; nothing of it is for the user
            header = spy_envi.read_envi_header(str(hdr_path))
    except spy_envi.FileNotAnEnviHeader as error:
        raise HeaderError(f"{hdr_path} is not an ENVI header (its first line must be 'ENVI')") from error
    except spy_envi.EnviHeaderParsingError as error:
        raise HeaderError(f"cannot parse ENVI header {hdr_path} (an unclosed '{{'?); fix the header") from error
    except (OSError, UnicodeDecodeError) as error:
        raise CubeReadError(f"cannot read ENVI header {hdr_path}: {error}") from error
    except (ValueError, IndexError, KeyError, TypeError) as error:
        raise HeaderError(f"cannot parse ENVI header {hdr_path} ({error}); fix the header") from error
    parsed: dict[str, str | list[str]] = {}
    for key, value in header.items():
        name = " ".join(key.lower().split())
        if not name or "=" in name or not name.isprintable():  # a line like '=' or binary junk: not a key
            logger.debug("%s: ignoring the header line with key %r", hdr_path, key)
            continue
        parsed[name] = value
    return parsed


def meta_from_header(header: dict, bands: int, hdr_path: Path) -> CubeMeta:
    """Everything `CubeMeta` holds, taken from a parsed header (per-band lists must have `bands` entries)."""
    meta = CubeMeta()
    if (values := _per_band(header, "wavelength", bands, hdr_path)) is not None:
        meta.wavelengths = _floats(values, "wavelength", hdr_path)
    if (values := _per_band(header, "fwhm", bands, hdr_path)) is not None:
        meta.fwhm = _floats(values, "fwhm", hdr_path)
    if (values := _per_band(header, "bbl", bands, hdr_path)) is not None:
        meta.bbl = _floats(values, "bbl", hdr_path).astype(np.uint8)
    if (values := _per_band(header, "band names", bands, hdr_path)) is not None:
        meta.band_names = values
    if "wavelength units" in header:
        meta.wavelength_units = str(header["wavelength units"])
    if "description" in header:
        meta.description = str(header["description"])
    if "data ignore value" in header:
        meta.nodata = float(_floats(_as_list(header["data ignore value"])[:1], "data ignore value", hdr_path)[0])
    if "reflectance scale factor" in header:
        scale_key = "reflectance scale factor"
        factor = float(_floats(_as_list(header[scale_key])[:1], scale_key, hdr_path)[0])
        meta.scale_factor = usable_scale_factor(factor, f"{hdr_path}: '{scale_key}'")
    if "coordinate system string" in header:
        # SPy splits every braced value at commas; WKT has commas of its own.
        meta.crs_wkt = ",".join(_as_list(header["coordinate system string"]))
    if "map info" in header:
        meta.map_info = _as_list(header["map info"])
        meta.transform = transform_from_map_info(meta.map_info)
        if meta.transform is None:
            logger.warning(
                "%s: 'map info' {%s} is not readable (expected {projection, reference x, reference y, easting, "
                "northing, pixel size x, pixel size y, ...} with finite numbers); the cube is read without "
                "georeferencing and the map info is copied as it is",
                hdr_path, ", ".join(meta.map_info),
            )  # fmt: skip
        if meta.crs_wkt is None:
            meta.crs_wkt = crs_from_map_info(meta.map_info)
    for key, value in header.items():
        text = value if isinstance(value, str) else "{" + ", ".join(value) + "}"
        if key.startswith(PROVENANCE_PREFIX) and key[len(PROVENANCE_PREFIX) :] in PROVENANCE_KEYS:
            meta.provenance[key[len(PROVENANCE_PREFIX) :]] = text
        elif key not in STRUCTURE_KEYS and key not in META_KEYS:
            meta.extra[key] = text
    return meta


class EnviReader(CubeReader):
    """Reads windows of an ENVI data file with positioned reads; the file stays open until `close`.

    Args:
        path: the path the cube was opened with. data_path: the raw data file. hdr_path: its header.
        layout: sizes of the data file's axes, outermost first, for `axes`.
        axes: the file's axis order (`INTERLEAVE_AXES`). file_dtype: stored dtype with its byte order.
        offset: ``header offset`` in bytes. meta: the cube's metadata.
    """

    fresh_windows = True  # every window is read into a new array

    def __init__(
        self,
        path: Path,
        data_path: Path,
        hdr_path: Path,
        layout: tuple[int, int, int],
        axes: str,
        file_dtype: np.dtype,
        offset: int,
        meta: CubeMeta,
    ) -> None:
        try:
            file = open(data_path, "rb", buffering=0)  # closed in _release
        except OSError as error:
            raise CubeReadError(f"cannot open {data_path}: {error}") from error
        self._file: BinaryIO | None = file
        shape = tuple(layout[axes.index(axis)] for axis in CUBE_AXES)
        super().__init__(path, shape, file_dtype, meta, files=[hdr_path, data_path])
        self._layout = layout
        self._axes = axes
        self._file_dtype = file_dtype
        self._offset = offset

    def _read_window(self, rows: slice, cols: slice, bands: slice | np.ndarray) -> np.ndarray:
        n_bands = self.shape[0]
        if isinstance(bands, slice):
            bands = slice(*bands.indices(n_bands))
        by_axis = {"b": bands, "h": rows, "w": cols}
        outer, middle, inner = (by_axis[axis] for axis in self._axes)
        picks = []
        windows = []
        for selection, size in ((middle, self._layout[1]), (inner, self._layout[2])):
            if isinstance(selection, slice):
                windows.append(slice(*selection.indices(size)))
                picks.append(None)
            else:  # sorted unique band indices inside the file: read their covering range
                windows.append(slice(int(selection[0]), int(selection[-1]) + 1))
                picks.append(selection - selection[0])
        if isinstance(outer, slice):
            outer = slice(*outer.indices(self._layout[0]))
        try:
            block = read_box(self._file, self._offset, self._layout, self._file_dtype, outer, *windows)
        except OSError as error:
            raise CubeReadError(f"cannot read {self._file.name}: {error}") from error
        if picks[0] is not None:
            block = block[:, picks[0]]
        if picks[1] is not None:
            block = block[:, :, picks[1]]
        return np.transpose(block, [self._axes.index(axis) for axis in CUBE_AXES])

    def _release(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def open_reader(path: PathLike, *, var: str | None = None, axes: str | None = None) -> EnviReader:
    """Open an ENVI cube for windowed reading (positioned reads of the data file).

    Args:
        path: the header or the data file.
        var, axes: not used by ENVI (the header says everything); must be None.

    Raises:
        HeaderError: a required key is missing or a value is invalid.
        CubeReadError: a file is missing, unreadable or shorter than the header says.
    """
    if var is not None or axes is not None:
        raise ConfigError("var and axes apply to MAT and HDF5 files only; an ENVI header gives the layout")
    hdr_path, data_path = header_and_data_paths(path)
    header = read_header(hdr_path)
    samples, lines, bands = (_integer(header, key, hdr_path) for key in ("samples", "lines", "bands"))
    code = _integer(header, "data type", hdr_path)
    offset = _integer(header, "header offset", hdr_path, default=0)
    if min(samples, lines, bands) < 1 or offset < 0:
        raise HeaderError(
            f"ENVI header {hdr_path}: samples, lines and bands must be >= 1 and header offset >= 0; "
            f"got {samples}, {lines}, {bands}, {offset}"
        )
    if code not in ENVI_DATA_TYPES:
        raise HeaderError(
            f"ENVI header {hdr_path}: data type {code} is not supported; use one of "
            + ", ".join(f"{c} ({t.name})" for c, t in ENVI_DATA_TYPES.items())
        )
    if "byte order" not in header:
        logger.warning("%s has no 'byte order'; assuming 0 (little endian)", hdr_path)
    byte_order = _integer(header, "byte order", hdr_path, default=0)
    if byte_order not in (0, 1):
        raise HeaderError(f"ENVI header {hdr_path}: byte order must be 0 or 1; got {byte_order}")
    interleave = str(header.get("interleave", "bsq")).strip().lower()
    if "interleave" not in header:
        logger.warning("%s has no 'interleave'; assuming bsq", hdr_path)
    if interleave not in INTERLEAVE_AXES:
        raise HeaderError(f"ENVI header {hdr_path}: interleave must be bsq, bil or bip; got {interleave!r}")

    dtype = ENVI_DATA_TYPES[code].newbyteorder("<" if byte_order == 0 else ">")
    axes_order = INTERLEAVE_AXES[interleave]
    size_by_axis = {"b": bands, "h": lines, "w": samples}
    layout = tuple(size_by_axis[axis] for axis in axes_order)
    expected = offset + bands * lines * samples * dtype.itemsize
    actual = data_path.stat().st_size
    if actual < expected:
        raise CubeReadError(
            f"{data_path} is truncated: {hdr_path.name} describes {bands} bands x {lines} lines x {samples} "
            f"samples of {dtype.name} ({expected} bytes with the offset) but the file has {actual} bytes; "
            "re-copy the file or fix the header"
        )
    if actual > expected:
        logger.warning("%s has %d bytes more than its header describes; they are ignored", data_path, actual - expected)

    meta = meta_from_header(header, bands, hdr_path)
    meta.dtype = dtype.newbyteorder("=")
    meta.interleave = interleave
    meta.source_format = "envi"
    return EnviReader(Path(path), data_path, hdr_path, layout, axes_order, dtype, offset, meta)


# ------------------------------------------------------------------------------------- writing


def output_paths(path: PathLike) -> tuple[Path, Path, str]:
    """(header, data file, interleave) for an output path naming either the header or the data file."""
    path = Path(path)
    if path.suffix.lower() == ".hdr":
        return path, path.with_suffix(".img"), "bsq"
    interleave = path.suffix.lower().lstrip(".")
    return path.with_suffix(".hdr"), path, interleave if interleave in INTERLEAVE_AXES else "bsq"


def header_from_meta(
    meta: CubeMeta, shape: tuple[int, int, int], dtype: np.dtype, interleave: str
) -> dict[str, str | list[str]]:
    """The header dict (as `spectral.io.envi.write_envi_header` takes it) for a native-order data file."""
    bands, lines, samples = shape
    codes = {dtype_: code for code, dtype_ in ENVI_DATA_TYPES.items()}
    header: dict[str, str | list[str]] = {
        "samples": str(samples),
        "lines": str(lines),
        "bands": str(bands),
        "header offset": "0",
        "file type": "ENVI Standard",
        "data type": str(codes[np.dtype(dtype).newbyteorder("=")]),
        "interleave": interleave,
        "byte order": "0" if sys.byteorder == "little" else "1",
    }
    if meta.description:
        header["description"] = meta.description
    if meta.wavelength_units:
        header["wavelength units"] = meta.wavelength_units
    for key, values in (("wavelength", meta.wavelengths), ("fwhm", meta.fwhm)):
        if values is not None:
            header[key] = [number_text(v) for v in np.asarray(values, dtype=np.float64)]
    if meta.bbl is not None:
        header["bbl"] = [str(int(v)) for v in np.asarray(meta.bbl)]
    if meta.band_names is not None:
        header["band names"] = [str(name) for name in meta.band_names]
    if meta.nodata is not None:
        header["data ignore value"] = number_text(meta.nodata)
    if meta.scale_factor is not None:
        header["reflectance scale factor"] = number_text(meta.scale_factor)
    map_info = meta.map_info
    if map_info is None and meta.transform is not None:
        map_info = map_info_from_geo(meta.transform, meta.crs_wkt)
    if map_info is not None:
        header["map info"] = list(map_info)
    if meta.crs_wkt:
        header["coordinate system string"] = "{" + meta.crs_wkt + "}"  # a string: SPy writes it verbatim
    for key, value in meta.provenance.items():
        if key in PROVENANCE_KEYS:  # one line, no braces (an ENVI value in braces is a list)
            header[PROVENANCE_PREFIX + key] = " ".join(str(value).split()).replace("{", "(").replace("}", ")")
    for key, value in meta.extra.items():
        key = key.strip().lower()
        if key in header or key in STRUCTURE_KEYS or "=" in key or "\n" in key or not key:
            logger.debug("extra key %r not written to the ENVI header", key)
            continue
        header[key] = value if value.startswith("{") else value.replace("\n", " ")
    return header


class EnviWriter(CubeWriter):
    """Streams blocks into the staged data file with positioned writes; the header is written on commit.

    The data file is sized up front (sparse where the filesystem allows), so unwritten parts read as zeros.
    """

    def __init__(
        self,
        path: Path,
        shape: tuple[int, int, int],
        dtype: np.dtype,
        meta: CubeMeta,
        *,
        header_path: Path,
        data_path: Path,
        interleave: str,
    ) -> None:
        self._file: BinaryIO | None = None
        super().__init__(path, shape, dtype, meta, finals=[data_path, header_path])
        self._header_path = header_path
        self._interleave = interleave
        self._axes = INTERLEAVE_AXES[interleave]
        self._layout = tuple(self.shape[CUBE_AXES.index(axis)] for axis in self._axes)
        try:
            self._file = open(self.temp_path(data_path), "r+b", buffering=0)  # closed in _close
            self._file.truncate(int(np.prod(self._layout)) * self.dtype.itemsize)
        except OSError as error:
            self.abort()
            raise CubeWriteError(f"cannot create {data_path}: {describe_os_error(error)}") from None

    def _write_window(self, block: np.ndarray, rows: slice, cols: slice) -> None:
        stored = np.transpose(block, [CUBE_AXES.index(axis) for axis in self._axes]).astype(self.dtype, copy=False)
        starts_by_axis = {"b": 0, "h": rows.start, "w": cols.start}
        try:
            write_box(self._file, self._layout, stored, tuple(starts_by_axis[axis] for axis in self._axes))
        except OSError as error:
            raise CubeWriteError(f"cannot write {self.path}: {describe_os_error(error)}") from None

    def _finish(self) -> None:
        self._close()
        header = header_from_meta(self.meta, self.shape, self.dtype, self._interleave)
        try:
            spy_envi.write_envi_header(str(self.temp_path(self._header_path)), header)
        except OSError as error:
            raise CubeWriteError(f"cannot write {self._header_path}: {describe_os_error(error)}") from None

    def _close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def create_writer(
    path: PathLike,
    shape: tuple[int, int, int],
    *,
    meta: CubeMeta,
    dtype: np.dtype,
    overwrite: bool = False,
    inputs: Iterable[PathLike] = (),
) -> EnviWriter:
    """Start writing an ENVI cube (header + data file, see the module docstring for names and interleave)."""
    check_dtype(dtype, ENVI_DATA_TYPES.values(), "ENVI")
    header_path, data_path, interleave = output_paths(path)
    nbytes = estimated_size(shape, dtype)
    check_output([data_path, header_path], overwrite=overwrite, inputs=inputs, nbytes=nbytes)  # commit order
    return EnviWriter(
        Path(path), shape, dtype, meta, header_path=header_path, data_path=data_path, interleave=interleave
    )
