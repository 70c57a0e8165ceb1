"""ENVI georeferencing: the header's ``map info`` to and from an affine transform and a CRS (as rasterio's
``Affine`` coefficients and WKT), rotation included; and how the header writes a number.

Split from :mod:`hsidenoise.io.envi`, which reads and writes the files and calls these for ``map info``.
"""

from __future__ import annotations

import logging
import math

logger = logging.getLogger(__name__)


def number_text(value: float) -> str:
    """Shortest text that reads back as the same float (integers without a trailing ``.0``)."""
    value = float(value)
    return str(int(value)) if value.is_integer() and abs(value) < 2**53 else str(value)


# ------------------------------------------------------------------------------ georeferencing


def _rotation_degrees(map_info: list[str]) -> float | None:
    """The ``rotation=`` entry of ``map info`` in degrees (0 when absent); None when it is not a number."""
    for entry in map_info[7:]:
        key, _, value = entry.partition("=")
        if key.strip().lower() == "rotation":
            try:
                return float(value or 0)
            except ValueError:
                return None
    return 0.0


def transform_from_map_info(map_info: list[str]) -> tuple[float, float, float, float, float, float] | None:
    """Affine transform (rasterio order) from ENVI ``map info``, rotation included; None when unreadable
    (fewer than six numbers after the projection name, a value that is not a finite number).

    ``map info = {name, ref x, ref y, easting, northing, size x, size y, [zone, North|South,] datum,
    units=..., rotation=deg}``: the reference pixel (1-based; (1, 1) is the outer corner of the upper-left
    pixel) sits at (easting, northing), and the pixel grid is turned counterclockwise by ``rotation``
    degrees. The transform is then

        a = sx cos r, b = sy sin r, d = sx sin r, e = -sy cos r,
        (c, f) = (easting, northing) - (ref x - 1) (a, d) - (ref y - 1) (b, e),

    which is what GDAL's ENVI driver reads for square pixels referenced at (1, 1) (the usual case, e.g.
    AVIRIS); for non-square pixels or another reference pixel GDAL does not turn the sizes and the
    reference offset with the grid, this function does.
    """
    try:
        ref_x, ref_y, easting, northing, size_x, size_y = (float(v) for v in map_info[1:7])
    except ValueError:
        return None
    if len(map_info) < 7:  # fewer than six numbers after the name
        return None
    rotation = _rotation_degrees(map_info)
    if rotation is None or not all(map(math.isfinite, (ref_x, ref_y, easting, northing, size_x, size_y, rotation))):
        return None
    if rotation == 0.0:
        cos, sin = 1.0, 0.0
    else:
        cos, sin = math.cos(math.radians(rotation)), math.sin(math.radians(rotation))
    a, b, d, e = size_x * cos, size_y * sin, size_x * sin, -size_y * cos
    c = easting - (ref_x - 1.0) * a - (ref_y - 1.0) * b
    f = northing - (ref_x - 1.0) * d - (ref_y - 1.0) * e
    return (a, b, c, d, e, f)


def crs_from_map_info(map_info: list[str]) -> str | None:
    """WKT for the common ENVI projections (UTM and geographic lat/lon on WGS-84); None otherwise."""
    from rasterio.crs import CRS

    name = map_info[0].strip().lower() if map_info else ""
    extras = [entry.strip().lower() for entry in map_info[7:] if "=" not in entry]
    if name == "utm" and len(extras) >= 2:
        try:
            zone = int(float(extras[0]))
        except ValueError:
            return None
        datum = extras[2] if len(extras) > 2 else "wgs-84"
        if datum.replace("-", "") != "wgs84":
            return None
        return CRS.from_epsg((32600 if extras[1].startswith("n") else 32700) + zone).to_wkt()
    if name.startswith("geographic") and (not extras or extras[0].replace("-", "") == "wgs84"):
        return CRS.from_epsg(4326).to_wkt()
    return None


def _derived(value: float) -> str:
    """A size or angle computed from a transform, at 15 significant digits (16.900000000000002 → 16.9)."""
    return number_text(float(f"{value:.15g}"))


def map_info_from_geo(
    transform: tuple[float, float, float, float, float, float], crs_wkt: str | None
) -> list[str] | None:
    """ENVI ``map info`` for a transform (the inverse of `transform_from_map_info`, reference pixel (1, 1)).

    A turned grid gets a ``rotation=`` entry; None for a transform that is no rotation of a north-up grid
    (sheared or mirrored), which ``map info`` cannot describe.
    """
    a, b, west, d, e, north = (float(v) for v in transform)
    if b == 0.0 and d == 0.0:
        size_x, size_y, rotation = a, -e, 0.0
    else:
        size_x, size_y = math.hypot(a, d), math.hypot(b, e)
        rotation = math.degrees(math.atan2(d, a))
        cos, sin = math.cos(math.radians(rotation)), math.sin(math.radians(rotation))
        if not math.isclose(b, size_y * sin, rel_tol=1e-9, abs_tol=1e-12 * size_y) or not math.isclose(
            e, -size_y * cos, rel_tol=1e-9, abs_tol=1e-12 * size_y
        ):
            logger.warning("the transform %s is sheared or mirrored; ENVI map info is not written", transform)
            return None
    if size_x <= 0 or size_y <= 0:
        logger.warning("the transform %s is mirrored; ENVI map info is not written", transform)
        return None
    sizes = [number_text(size_x), number_text(size_y)] if rotation == 0.0 else [_derived(size_x), _derived(size_y)]
    base = ["1", "1", number_text(west), number_text(north), *sizes]
    tail = [f"rotation={_derived(rotation)}"] if rotation != 0.0 else []
    epsg = None
    if crs_wkt:
        from rasterio.crs import CRS
        from rasterio.errors import CRSError

        try:
            epsg = CRS.from_wkt(crs_wkt).to_epsg()
        except CRSError:
            epsg = None
    if epsg is not None and 32601 <= epsg <= 32660:
        return ["UTM", *base, str(epsg - 32600), "North", "WGS-84", "units=Meters", *tail]
    if epsg is not None and 32701 <= epsg <= 32760:
        return ["UTM", *base, str(epsg - 32700), "South", "WGS-84", "units=Meters", *tail]
    if epsg == 4326:
        return ["Geographic Lat/Lon", *base, "WGS-84", "units=Degrees", *tail]
    return ["Arbitrary", *base, *tail]
