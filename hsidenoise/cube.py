"""The in-memory cube: data in (bands, rows, cols) order plus the metadata every format can carry.

`Cube` is what readers return and writers take. For scenes larger than memory use the
streaming reader/writer in :mod:`hsidenoise.io` instead; they carry the same `CubeMeta`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from hsidenoise.errors import CubeShapeError

PROVENANCE_KEYS = ("software", "method", "weights", "command", "date")
"""What an hsidenoise output records about how it was made (`CubeMeta.provenance`), in this order.

Stored as ENVI header keys ``hsidenoise <key>``, GeoTIFF tags ``hsidenoise_<key>`` (plus ``TIFFTAG_SOFTWARE``),
HDF5 dataset attributes and MAT variables ``hsidenoise_<key>``; see :mod:`hsidenoise.provenance`."""


@dataclass
class CubeMeta:
    """Metadata kept across reading, processing and writing (and across formats).

    Every field is optional: a format fills what it knows, a writer keeps what it can hold.

    Attributes:
        wavelengths: (B,) band centres, in ``wavelength_units``.
        wavelength_units: e.g. ``"Nanometers"``, ``"Micrometers"``.
        fwhm: (B,) band widths, same units as the wavelengths.
        bbl: (B,) bad-band list, 1 = good band, 0 = bad band (ENVI convention).
        band_names: (B,) names.
        nodata: value that marks missing pixels (ENVI ``data ignore value``, GeoTIFF nodata).
        scale_factor: ENVI ``reflectance scale factor`` (stored value = physical * factor).
        description: free text.
        crs_wkt: coordinate reference system as WKT (ENVI ``coordinate system string``, GeoTIFF CRS).
        transform: affine geotransform (a, b, c, d, e, f) in rasterio order, or None.
        map_info: ENVI ``map info`` entries as strings, kept verbatim for ENVI → ENVI.
        dtype: data type of the source file (for ``--dtype same``).
        interleave: ``"bsq" | "bil" | "bip"`` of the source, when it has one.
        source_format: name of the reader that produced this cube (``"envi"``, ``"geotiff"``, ...).
        extra: other key → string pairs a format wants to round-trip (e.g. unknown ENVI keys).
        provenance: how the cube was made, `PROVENANCE_KEYS` → one-line strings (empty: not recorded).
    """

    wavelengths: np.ndarray | None = None
    wavelength_units: str | None = None
    fwhm: np.ndarray | None = None
    bbl: np.ndarray | None = None
    band_names: list[str] | None = None
    nodata: float | None = None
    scale_factor: float | None = None
    description: str | None = None
    crs_wkt: str | None = None
    transform: tuple[float, float, float, float, float, float] | None = None
    map_info: list[str] | None = None
    dtype: np.dtype | None = None
    interleave: str | None = None
    source_format: str | None = None
    extra: dict[str, str] = field(default_factory=dict)
    provenance: dict[str, str] = field(default_factory=dict)

    def select_bands(self, index: np.ndarray | slice) -> "CubeMeta":
        """Metadata for a subset of bands (per-band arrays are sliced, the rest is kept)."""

        def take(values):
            if values is None:
                return None
            return list(np.asarray(values, dtype=object)[index]) if isinstance(values, list) else np.asarray(values)[index]

        return replace(
            self,
            wavelengths=take(self.wavelengths),
            fwhm=take(self.fwhm),
            bbl=take(self.bbl),
            band_names=take(self.band_names),
            extra=dict(self.extra),
            provenance=dict(self.provenance),
        )


@dataclass
class Cube:
    """A hyperspectral cube held in memory.

    Attributes:
        data: (B, H, W) array = (bands, rows, cols), any numeric dtype.
        meta: the metadata that travels with it.
    """

    data: np.ndarray
    meta: CubeMeta = field(default_factory=CubeMeta)

    def __post_init__(self) -> None:
        if self.data.ndim != 3:
            raise CubeShapeError(
                f"a cube must be 3-D (bands, rows, cols); got an array of shape {tuple(self.data.shape)}"
            )

    @property
    def bands(self) -> int:
        return int(self.data.shape[0])

    @property
    def rows(self) -> int:
        return int(self.data.shape[1])

    @property
    def cols(self) -> int:
        return int(self.data.shape[2])

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.bands, self.rows, self.cols)
