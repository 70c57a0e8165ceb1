"""GeoTIFF through rasterio: windowed reads and writes, georeferencing and per-band spectral tags.

Where the metadata goes (the GDAL ENVI-driver conventions, so GDAL/QGIS read it too):

- band descriptions ← ``band_names``;
- per-band tags ``wavelength``, ``wavelength_units``, ``fwhm``, ``bbl``;
- dataset tags ``TIFFTAG_IMAGEDESCRIPTION`` ← ``description`` and ``reflectance_scale_factor``;
- CRS, transform and nodata (one value per file) as GeoTIFF keys;
- ``extra`` key/value pairs in the tag domain ``"hsidenoise"``;
- ``provenance`` as dataset tags ``hsidenoise_<key>``, and ``TIFFTAG_SOFTWARE``.

Outputs are deflate-compressed (predictor 2 for integers, 3 for floats), pixel-interleaved,
tiled 256 x 256 when both sides reach 256, and become BigTIFF when they might pass 4 GB
(``BIGTIFF=IF_SAFER``).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import shutil
import sys
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.errors import CRSError, NotGeoreferencedWarning, RasterioError
from rasterio.transform import Affine
from rasterio.windows import Window

from hsidenoise.cube import PROVENANCE_KEYS, CubeMeta
from hsidenoise.errors import ConfigError, CubeReadError, CubeWriteError
from hsidenoise.io.base import CubeReader, CubeWriter, check_readable, usable_scale_factor
from hsidenoise.io.dtypes import check_dtype
from hsidenoise.io.staging import PathLike, check_output, describe_os_error, estimated_size

logger = logging.getLogger(__name__)

EXTRA_DOMAIN = "hsidenoise"
"""Tag domain holding `CubeMeta.extra` (metadata GeoTIFF has no field for)."""

PROVENANCE_PREFIX = "hsidenoise_"
"""Dataset tags ``hsidenoise_method``, ``hsidenoise_weights``, ... hold `CubeMeta.provenance` (``gdalinfo`` shows
them); ``software`` also goes to ``TIFFTAG_SOFTWARE``."""

SUPPORTED_DTYPES = tuple(
    np.dtype(name)
    for name in ("uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64", "int64", "float32", "float64")
)
TILE = 256

_INTERLEAVE = {"pixel": "bip", "band": "bsq", "line": "bil"}


def _window(rows: slice, cols: slice) -> Window:
    return Window.from_slices((rows.start, rows.stop), (cols.start, cols.stop))


def _floats_or_none(values: list[str | None]) -> np.ndarray | None:
    if any(value is None for value in values):
        return None
    try:
        return np.array([float(value) for value in values], dtype=np.float64)
    except ValueError:
        return None


def meta_from_dataset(dataset: rasterio.io.DatasetReader) -> CubeMeta:
    """Read `CubeMeta` from an open rasterio dataset (see the module docstring for the mapping)."""
    meta = CubeMeta(source_format="geotiff")
    if dataset.crs is not None:
        meta.crs_wkt = dataset.crs.to_wkt()
    if dataset.transform != Affine.identity():  # identity: GDAL found no geotransform (a CRS alone places nothing)
        meta.transform = tuple(dataset.transform)[:6]
    meta.nodata = dataset.nodata
    if any(dataset.descriptions):
        meta.band_names = [name or "" for name in dataset.descriptions]
    band_tags = [dataset.tags(index) for index in dataset.indexes]
    meta.wavelengths = _floats_or_none([tags.get("wavelength") for tags in band_tags])
    meta.fwhm = _floats_or_none([tags.get("fwhm") for tags in band_tags])
    bbl = _floats_or_none([tags.get("bbl") for tags in band_tags])
    meta.bbl = None if bbl is None else bbl.astype(np.uint8)
    units = {tags["wavelength_units"] for tags in band_tags if "wavelength_units" in tags}
    tags = dataset.tags()
    if len(units) == 1:
        meta.wavelength_units = units.pop()
    elif "wavelength_units" in tags:
        meta.wavelength_units = tags["wavelength_units"]
    meta.description = tags.get("TIFFTAG_IMAGEDESCRIPTION")
    if "reflectance_scale_factor" in tags:
        factor = float(tags["reflectance_scale_factor"])
        meta.scale_factor = usable_scale_factor(factor, f"{dataset.name}: tag reflectance_scale_factor")
    meta.extra = dict(dataset.tags(ns=EXTRA_DOMAIN))
    meta.provenance = {
        key: tags[PROVENANCE_PREFIX + key] for key in PROVENANCE_KEYS if PROVENANCE_PREFIX + key in tags
    }
    meta.interleave = _INTERLEAVE.get(str(dataset.profile.get("interleave", "")).lower())
    return meta


class _GdalMessagesToDebug(logging.Filter):
    """Log GDAL's own messages (rasterio's ``rasterio._env`` logger) at DEBUG level: the errors among them come
    back as exceptions with the same text, and the warnings ("TIFFFetchNormalTag: IO error ...") say no more."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)


logging.getLogger("rasterio._env").addFilter(_GdalMessagesToDebug())


def _log_unraisable(unraisable: sys.UnraisableHookArgs) -> None:
    logger.debug("GDAL message that rasterio could not decode: %s", unraisable.exc_value)


@contextlib.contextmanager
def quiet_gdal() -> Iterator[None]:
    """Keep GDAL off the terminal while inside: its messages go through rasterio's error handler (an `Env`) to
    the log, and one rasterio cannot decode as UTF-8 (a damaged tag) is logged instead of printed as
    "Exception ignored in rasterio._env.log_error" with a traceback."""
    hook = sys.unraisablehook
    sys.unraisablehook = _log_unraisable
    try:
        with rasterio.Env():
            yield
    finally:
        sys.unraisablehook = hook


def gdal_message(error: BaseException) -> str:
    """The message of the innermost exception chained to `error` (GDAL's own words, e.g. "ZIPDecode:Decoding
    error at scanline 0", where rasterio says "Read failed. See previous exception for details."), on one line."""
    message, seen = str(error), set()
    cause = error.__cause__ or error.__context__
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if str(cause).strip():
            message = str(cause)
        cause = cause.__cause__ or cause.__context__
    return " ".join(message.split())


class GeoTiffReader(CubeReader):
    """Windowed reads with rasterio; the dataset stays open until `close`."""

    def __init__(self, path: Path) -> None:
        try:
            with quiet_gdal(), warnings.catch_warnings():
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                dataset = rasterio.open(path, driver="GTiff")  # never sniffed: HDF5 bytes in a .tif stay unread
        except (RasterioError, ValueError, OSError) as error:
            raise CubeReadError(f"cannot open {path} as a GeoTIFF: {' '.join(str(error).split())}") from error
        try:
            if len(set(dataset.dtypes)) != 1:
                raise CubeReadError(f"{path} mixes band types {sorted(set(dataset.dtypes))}; a cube needs one type")
            dtype = np.dtype(dataset.dtypes[0])
            if dtype.kind not in "fiu":
                raise CubeReadError(f"{path} holds {dtype.name} pixels; only real numbers are supported")
            meta = meta_from_dataset(dataset)
            meta.dtype = dtype
        except BaseException:
            dataset.close()
            raise
        super().__init__(path, (dataset.count, dataset.height, dataset.width), dtype, meta, files=[path])
        self._dataset = dataset

    def _read_window(self, rows: slice, cols: slice, bands: slice | np.ndarray) -> np.ndarray:
        indexes = (np.arange(self.shape[0])[bands] + 1).tolist()
        try:
            with quiet_gdal():
                return self._dataset.read(indexes, window=_window(rows, cols))
        except (RasterioError, ValueError, OSError) as error:
            raise CubeReadError(
                f"cannot read rows {rows.start}-{rows.stop - 1}, cols {cols.start}-{cols.stop - 1} of {self.path}: "
                f"{gdal_message(error)}; the file is damaged, re-copy it"
            ) from error

    def _release(self) -> None:
        self._dataset.close()


def open_reader(path: PathLike, *, var: str | None = None, axes: str | None = None) -> GeoTiffReader:
    """Open a GeoTIFF lazily (rasterio windows).

    Raises:
        ConfigError: `var` or `axes` given (a GeoTIFF is always band, row, column).
        CubeReadError: missing, unreadable or not a TIFF.
    """
    if var is not None or axes is not None:
        raise ConfigError("var and axes apply to MAT and HDF5 files only; a GeoTIFF is always bands x rows x cols")
    return GeoTiffReader(check_readable(path))


def profile_for(shape: tuple[int, int, int], dtype: np.dtype, meta: CubeMeta) -> dict:
    """The rasterio creation profile for a cube of `shape` (B, H, W) and `dtype` carrying `meta`."""
    bands, rows, cols = shape
    profile: dict = {
        "driver": "GTiff",
        "count": bands,
        "height": rows,
        "width": cols,
        "dtype": np.dtype(dtype).name,
        "compress": "deflate",
        "predictor": 3 if np.dtype(dtype).kind == "f" else 2,
        "interleave": "pixel",
        "BIGTIFF": "IF_SAFER",
    }
    if rows >= TILE and cols >= TILE:
        profile.update(tiled=True, blockxsize=TILE, blockysize=TILE)
    if meta.crs_wkt:
        try:
            profile["crs"] = CRS.from_wkt(meta.crs_wkt)
        except CRSError:
            logger.warning("the CRS is not valid WKT; the GeoTIFF is written without one")
    if meta.transform is not None:
        profile["transform"] = Affine(*meta.transform)
    if meta.nodata is not None:
        nodata = float(meta.nodata)
        storable = True
        if np.dtype(dtype).kind in "iu":
            info = np.iinfo(dtype)
            storable = nodata.is_integer() and info.min <= nodata <= info.max
        if storable:
            profile["nodata"] = nodata
        else:
            logger.warning("nodata %s cannot be stored as %s; the GeoTIFF is written without nodata", nodata, dtype)
    return profile


def _write_tags(dataset: rasterio.io.DatasetWriter, meta: CubeMeta) -> None:
    for position, index in enumerate(dataset.indexes):
        tags: dict[str, str] = {}
        for key, values in (("wavelength", meta.wavelengths), ("fwhm", meta.fwhm)):
            if values is not None:
                tags[key] = str(float(values[position]))
        if meta.bbl is not None:
            tags["bbl"] = str(int(meta.bbl[position]))
        if meta.wavelength_units and meta.wavelengths is not None:
            tags["wavelength_units"] = meta.wavelength_units
        if tags:
            dataset.update_tags(index, **tags)
        if meta.band_names is not None:
            dataset.set_band_description(index, str(meta.band_names[position]))
    tags = {}
    if meta.description:
        tags["TIFFTAG_IMAGEDESCRIPTION"] = meta.description
    if meta.scale_factor is not None:
        tags["reflectance_scale_factor"] = str(float(meta.scale_factor))
    if meta.wavelength_units:
        tags["wavelength_units"] = meta.wavelength_units
    for key, value in meta.provenance.items():
        if key in PROVENANCE_KEYS:
            tags[PROVENANCE_PREFIX + key] = str(value)
    if "software" in meta.provenance:
        tags["TIFFTAG_SOFTWARE"] = str(meta.provenance["software"])
    if tags:
        dataset.update_tags(**tags)
    if meta.extra:
        dataset.update_tags(ns=EXTRA_DOMAIN, **meta.extra)


class GeoTiffWriter(CubeWriter):
    """Writes windows into a staged GeoTIFF; tags are set up front, the file is closed on commit."""

    def __init__(self, path: Path, shape: tuple[int, int, int], dtype: np.dtype, meta: CubeMeta) -> None:
        self._dataset: rasterio.io.DatasetWriter | None = None
        super().__init__(path, shape, dtype, meta, finals=[path])
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                self._dataset = rasterio.open(self.temp_path(path), "w", **profile_for(self.shape, self.dtype, meta))
            _write_tags(self._dataset, meta)
        except (RasterioError, ValueError) as error:
            self.abort()
            raise CubeWriteError(f"cannot create {path}: {error}") from error

    def _write_window(self, block: np.ndarray, rows: slice, cols: slice) -> None:
        try:
            self._dataset.write(block, window=_window(rows, cols))
        except RasterioError as error:
            raise _write_error(self.path, error) from None

    def _finish(self) -> None:
        try:
            self._close()
        except RasterioError as error:  # GDAL writes the last tiles and the directory on close
            raise _write_error(self.path, error) from None
        sidecar = self._staged[0].temp.with_name(self._staged[0].temp.name + ".aux.xml")
        if sidecar.exists():  # GDAL spilled metadata it could not fit into the TIFF
            sidecar.unlink()
            logger.warning("some GeoTIFF metadata of %s did not fit into the file and was dropped", self.path)

    def _close(self) -> None:
        if self._dataset is not None:
            self._dataset.close()
            self._dataset = None


def _write_error(path: Path, error: RasterioError) -> CubeWriteError:
    """GDAL's write failure as one line; GDAL only says "Write failed", so a full disk is recognised by looking."""
    try:
        full = shutil.disk_usage(path.parent).free < 2**20
    except OSError:
        full = False
    if full:
        return CubeWriteError(f"cannot write {path}: {describe_os_error(OSError(errno.ENOSPC, 'disk full'))}")
    return CubeWriteError(f"cannot write {path}: {' '.join(str(error).split())}")


def create_writer(
    path: PathLike,
    shape: tuple[int, int, int],
    *,
    meta: CubeMeta,
    dtype: np.dtype,
    overwrite: bool = False,
    inputs: Iterable[PathLike] = (),
) -> GeoTiffWriter:
    """Start writing a GeoTIFF; the free space must hold it uncompressed (`estimated_size`)."""
    check_dtype(dtype, SUPPORTED_DTYPES, "GeoTIFF")
    path = Path(path)
    check_output([path], overwrite=overwrite, inputs=inputs, nbytes=estimated_size(shape, dtype, compressed=True))
    return GeoTiffWriter(path, tuple(shape), np.dtype(dtype), meta)
