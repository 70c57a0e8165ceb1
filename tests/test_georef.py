"""Georeferencing: ENVI ``map info`` (rotation included) ⇄ affine transform ⇄ GeoTIFF, with GDAL as the oracle."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.crs import CRS
from rasterio.transform import Affine
from spectral.io import envi as spy_envi

from hsidenoise.cube import Cube, CubeMeta
from hsidenoise.io import read_cube, write_cube
from hsidenoise.io.envi_georef import map_info_from_geo, transform_from_map_info

SALTON_MAP_INFO = "{ UTM , 1 , 1 , 579717.180 , 3714550.700 , 16.900 , 16.900 , 11 , North , WGS-84 , units=Meters , rotation=34.0000 }"
"""The ``map info`` of the original Salton Sea header (``params.map_info`` in salton_sea_roi.mat)."""


def write_envi(folder: Path, data: np.ndarray, extra: str, name: str = "scene") -> Path:
    """A float32 BSQ ENVI cube written without hsidenoise (so GDAL and we read the same bytes)."""
    bands, rows, cols = data.shape
    data.astype("<f4").tofile(folder / f"{name}.img")
    header = folder / f"{name}.hdr"
    header.write_text(
        f"ENVI\nsamples = {cols}\nlines = {rows}\nbands = {bands}\nheader offset = 0\nfile type = ENVI Standard\n"
        f"data type = 4\ninterleave = bsq\nbyte order = 0\n{extra}"
    )
    return header


def gdal_transform(path: Path) -> tuple[Affine, CRS | None]:
    with rasterio.open(path) as dataset:
        return dataset.transform, dataset.crs


def test_salton_sea_header_in_the_shared_file_is_rotated(shared_data: Path) -> None:
    import scipy.io

    params = scipy.io.loadmat(
        str(shared_data / "aviris_salton_sea_224" / "salton_sea_roi.mat"), variable_names=["params"], squeeze_me=True
    )["params"]
    map_info = str(params["map_info"].item())
    assert "rotation=34" in map_info.replace(" ", "")
    assert [v.strip() for v in map_info.strip("{} ").split(",")] == [
        v.strip() for v in SALTON_MAP_INFO.strip("{} ").split(",")
    ]


@pytest.mark.parametrize("rotation", [34.0, -20.5, 90.0, 151.25])
def test_rotated_map_info_reads_as_gdal_reads_it(tmp_path: Path, rotation: float) -> None:
    header = write_envi(
        tmp_path,
        np.zeros((3, 5, 7), np.float32),
        "map info = { UTM , 1 , 1 , 579717.180 , 3714550.700 , 16.900 , 16.900 , 11 , North , WGS-84 , "
        f"units=Meters , rotation={rotation} }}\n",
    )
    expected, crs = gdal_transform(tmp_path / "scene.img")
    meta = read_cube(header).meta
    assert meta.transform is not None
    np.testing.assert_allclose(meta.transform, tuple(expected)[:6], rtol=1e-12, atol=1e-6)
    assert CRS.from_wkt(meta.crs_wkt) == crs


def test_map_info_reference_pixel_off_the_corner_is_rotated_with_the_grid() -> None:
    # Reference pixel (3, 2) (1-based) at (1000, 2000), 10 m pixels rotated by 90 degrees counterclockwise:
    # moving one column moves north by 10 m, moving one row moves east by 10 m.
    info = ["Arbitrary", "3", "2", "1000", "2000", "10", "10", "rotation=90"]
    a, b, c, d, e, f = transform_from_map_info(info)
    corner = Affine(a, b, c, d, e, f)
    assert corner @ (2, 1) == pytest.approx((1000, 2000))  # the reference pixel's outer corner
    assert corner @ (3, 1) == pytest.approx((1000, 2010))
    assert corner @ (2, 2) == pytest.approx((1010, 2000))


def test_salton_sea_rotation_survives_envi_geotiff_envi(tmp_path: Path) -> None:
    data = np.arange(3 * 5 * 7, dtype=np.float32).reshape(3, 5, 7)
    header = write_envi(tmp_path, data, f"map info = {SALTON_MAP_INFO}\n")
    expected, _ = gdal_transform(tmp_path / "scene.img")

    write_cube(tmp_path / "step.tif", read_cube(header))
    tif_transform, tif_crs = gdal_transform(tmp_path / "step.tif")
    np.testing.assert_allclose(tuple(tif_transform)[:6], tuple(expected)[:6], rtol=1e-12, atol=1e-6)
    assert tif_crs.to_epsg() == 32611
    assert tif_transform != Affine.identity()

    write_cube(tmp_path / "back.hdr", read_cube(tmp_path / "step.tif"))
    written = [v.strip() for v in spy_envi.read_envi_header(str(tmp_path / "back.hdr"))["map info"]]
    assert written[0] == "UTM" and written[7:10] == ["11", "North", "WGS-84"]
    numbers = [float(v) for v in written[1:7]]
    assert numbers == pytest.approx([1, 1, 579717.18, 3714550.7, 16.9, 16.9], rel=1e-12)
    rotation = [float(v.split("=")[1]) for v in written if v.lower().startswith("rotation")]
    assert rotation == pytest.approx([34.0], rel=1e-12)
    back, back_crs = gdal_transform(tmp_path / "back.img")  # GDAL reads our header as it read the original
    np.testing.assert_allclose(tuple(back)[:6], tuple(expected)[:6], rtol=1e-12, atol=1e-6)
    assert back_crs.to_epsg() == 32611
    np.testing.assert_array_equal(read_cube(tmp_path / "back.hdr").data, data)


@pytest.mark.parametrize(
    "transform",
    [
        (30.0, 0.0, 500000.0, 0.0, -30.0, 3700000.0),
        tuple(Affine.translation(579717.18, 3714550.7) @ Affine.rotation(34.0) @ Affine.scale(16.9, -16.9))[:6],
        tuple(Affine.translation(-12.5, 48.25) @ Affine.rotation(-10.0) @ Affine.scale(0.001, -0.001))[:6],
    ],
    ids=["north-up", "salton", "geographic"],
)
def test_geotiff_envi_geotiff_keeps_the_transform(tmp_path: Path, tiny_cube, transform) -> None:
    crs = CRS.from_epsg(4326 if transform[2] < 0 else 32611).to_wkt()
    write_cube(tmp_path / "a.tif", Cube(tiny_cube(), CubeMeta(transform=transform, crs_wkt=crs)))
    write_cube(tmp_path / "b.hdr", read_cube(tmp_path / "a.tif"))
    gdal_envi, gdal_crs = gdal_transform(tmp_path / "b.img")
    np.testing.assert_allclose(tuple(gdal_envi)[:6], transform, rtol=1e-12, atol=1e-9)
    assert gdal_crs == CRS.from_wkt(crs)
    write_cube(tmp_path / "c.tif", read_cube(tmp_path / "b.hdr"))
    final, _ = gdal_transform(tmp_path / "c.tif")
    np.testing.assert_allclose(tuple(final)[:6], transform, rtol=1e-12, atol=1e-9)


def test_map_info_from_a_rotated_transform_has_the_rotation_key() -> None:
    transform = tuple(Affine.translation(100.0, 200.0) @ Affine.rotation(34.0) @ Affine.scale(2.0, -2.0))[:6]
    info = map_info_from_geo(transform, None)
    assert info is not None and info[0] == "Arbitrary"
    assert [float(v) for v in info[1:7]] == pytest.approx([1, 1, 100, 200, 2, 2])
    assert any(entry.startswith("rotation=") and math.isclose(float(entry[9:]), 34.0) for entry in info)
    assert transform_from_map_info(info) == pytest.approx(transform)


def test_a_sheared_transform_writes_no_map_info() -> None:
    assert map_info_from_geo((1.0, 0.5, 0.0, 0.0, -1.0, 0.0), None) is None


def test_geotiff_without_georeferencing_writes_no_map_info(tmp_path: Path, tiny_cube) -> None:
    # A GeoTIFF with a CRS but no geotransform must not become a map info at (0, 0) with 1 m pixels.
    with rasterio.open(
        tmp_path / "bare.tif", "w", driver="GTiff", count=5, height=7, width=13, dtype="float32",
        crs=CRS.from_epsg(32611),
    ) as dataset:
        dataset.write(tiny_cube())
    meta = read_cube(tmp_path / "bare.tif").meta
    assert meta.transform is None
    write_cube(tmp_path / "bare.hdr", read_cube(tmp_path / "bare.tif"))
    assert "map info" not in spy_envi.read_envi_header(str(tmp_path / "bare.hdr"))


def test_coordinate_system_string_is_read_and_written(tmp_path: Path, tiny_cube) -> None:
    # A CRS ENVI map info cannot name (a Lambert conformal conic) travels as 'coordinate system string'.
    lcc = CRS.from_proj4("+proj=lcc +lat_1=33 +lat_2=45 +lat_0=39 +lon_0=-96 +datum=WGS84 +units=m")
    transform = (20.0, 0.0, -1000.0, 0.0, -20.0, 5000.0)
    write_cube(tmp_path / "a.tif", Cube(tiny_cube(), CubeMeta(transform=transform, crs_wkt=lcc.to_wkt())))
    write_cube(tmp_path / "b.hdr", read_cube(tmp_path / "a.tif"))
    header = spy_envi.read_envi_header(str(tmp_path / "b.hdr"))
    assert "coordinate system string" in header
    gdal_envi, gdal_crs = gdal_transform(tmp_path / "b.img")
    assert gdal_crs.equals(lcc) if hasattr(gdal_crs, "equals") else gdal_crs == lcc
    assert tuple(gdal_envi)[:6] == pytest.approx(transform)
    back = read_cube(tmp_path / "b.hdr").meta
    assert CRS.from_wkt(back.crs_wkt) == CRS.from_wkt(read_cube(tmp_path / "a.tif").meta.crs_wkt)
    assert back.transform == pytest.approx(transform)


@pytest.mark.parametrize(
    "map_info", ["{ UTM , 1 , 1 , abc }", "{UTM}", "{ UTM , 1 , 1 , 579717.18 , 3714550.7 , 16.9 , inf , 11 , North }"]
)
def test_an_unreadable_map_info_warns_once_and_is_kept(tmp_path: Path, caplog, map_info: str) -> None:
    import logging

    header = write_envi(tmp_path, np.zeros((3, 5, 4), np.float32), f"map info = {map_info}\n")
    with caplog.at_level(logging.WARNING, logger="hsidenoise"):
        cube = read_cube(header)
    assert cube.meta.transform is None
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "'map info'" in warnings[0] and str(header) in warnings[0]
    assert cube.meta.map_info is not None  # copied as it is into ENVI outputs
