"""GeoTIFF through rasterio: windowed reads and writes, georeferencing and per-band spectral tags.

Where the metadata goes (the GDAL ENVI-driver conventions, so GDAL/QGIS read it too):

- band descriptions ← ``band_names``;
- per-band tags ``wavelength``, ``wavelength_units``, ``fwhm``, ``bbl``;
- dataset tags ``TIFFTAG_IMAGEDESCRIPTION`` ← ``description`` and ``reflectance_scale_factor``;
- CRS, transform and nodata (one value per file) as GeoTIFF keys;
- ``extra`` key/value pairs in the tag domain ``"hsidenoise"``.

Outputs are deflate-compressed (predictor 2 for integers, 3 for floats), pixel-interleaved,
tiled 256 x 256 when both sides reach 256, and become BigTIFF when they might pass 4 GB
(``BIGTIFF=IF_SAFER``).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.errors import CRSError, NotGeoreferencedWarning, RasterioError
from rasterio.transform import Affine
from rasterio.windows import Window

from hsidenoise.cube import CubeMeta
from hsidenoise.errors import ConfigError, CubeReadError, CubeWriteError
from hsidenoise.io.base import CubeReader, CubeWriter, PathLike, check_dtype, check_output, check_readable

logger = logging.getLogger(__name__)

EXTRA_DOMAIN = "hsidenoise"
"""Tag domain holding `CubeMeta.extra` (metadata GeoTIFF has no field for)."""

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
    if dataset.crs is not None or dataset.transform != Affine.identity():
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
        meta.scale_factor = float(tags["reflectance_scale_factor"])
    meta.extra = dict(dataset.tags(ns=EXTRA_DOMAIN))
    meta.interleave = _INTERLEAVE.get(str(dataset.profile.get("interleave", "")).lower())
    return meta


class GeoTiffReader(CubeReader):
    """Windowed reads with rasterio; the dataset stays open until `close`."""

    def __init__(self, path: Path) -> None:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                dataset = rasterio.open(path)
        except RasterioError as error:
            raise CubeReadError(f"cannot open {path} as a GeoTIFF: {error}") from error
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
            return self._dataset.read(indexes, window=_window(rows, cols))
        except RasterioError as error:
            raise CubeReadError(f"cannot read {self.path} rows {rows} cols {cols}: {error}") from error

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
            raise CubeWriteError(f"cannot write {self.path} rows {rows} cols {cols}: {error}") from error

    def _finish(self) -> None:
        self._close()
        sidecar = self._staged[0].temp.with_name(self._staged[0].temp.name + ".aux.xml")
        if sidecar.exists():  # GDAL spilled metadata it could not fit into the TIFF
            sidecar.unlink()
            logger.warning("some GeoTIFF metadata of %s did not fit into the file and was dropped", self.path)

    def _close(self) -> None:
        if self._dataset is not None:
            self._dataset.close()
            self._dataset = None


def create_writer(
    path: PathLike,
    shape: tuple[int, int, int],
    *,
    meta: CubeMeta,
    dtype: np.dtype,
    overwrite: bool = False,
    inputs: Iterable[PathLike] = (),
) -> GeoTiffWriter:
    """Start writing a GeoTIFF (compressed, so the disk check is left to the filesystem)."""
    check_dtype(dtype, SUPPORTED_DTYPES, "GeoTIFF")
    path = Path(path)
    check_output([path], overwrite=overwrite, inputs=inputs)
    return GeoTiffWriter(path, tuple(shape), np.dtype(dtype), meta)
