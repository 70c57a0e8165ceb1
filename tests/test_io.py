"""Cube I/O: round trips, metadata across formats, windows, streaming writes, bad input, real cubes."""

from __future__ import annotations

import gc
import os
from pathlib import Path

import h5py
import numpy as np
import pytest
import rasterio
import scipy.io
from rasterio.crs import CRS
from rasterio.transform import Affine
from spectral.io import envi as spy_envi

from hsidenoise.cube import Cube, CubeMeta
from hsidenoise.errors import (
    ConfigError,
    CubeReadError,
    CubeShapeError,
    CubeWriteError,
    HeaderError,
    HsiDenoiseError,
    ResourceError,
    UnsupportedFormatError,
    VariableError,
)
from hsidenoise.io import FORMATS, create_cube, format_for, open_cube, read_cube, write_cube
from hsidenoise.io.staging import check_output

# (output name, fmt) for every writer; ENVI once per interleave.
WRITERS = [
    ("cube.hdr", None),
    ("cube.bil", None),
    ("cube.bip", None),
    ("cube.tif", None),
    ("cube.mat", None),
    ("cube.mat", "mat73"),
    ("cube.h5", None),
]
WRITER_IDS = ["envi-bsq", "envi-bil", "envi-bip", "geotiff", "mat5", "mat73", "hdf5"]

ENVI_CODES = {1: "uint8", 2: "int16", 3: "int32", 4: "float32", 5: "float64"}
ENVI_CODES |= {12: "uint16", 13: "uint32", 14: "int64", 15: "uint64"}  # ENVI's data type codes, by the spec
OTHER_DTYPES = ["uint8", "int8", "int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64"]

ROUND_TRIPS = [
    pytest.param(name, fmt, dtype, id=f"{label}-{dtype}")
    for (name, fmt), label in zip(WRITERS, WRITER_IDS)
    for dtype in (ENVI_CODES.values() if label.startswith("envi") else OTHER_DTYPES)
]
ALL_WRITERS = [pytest.param(name, fmt, id=label) for (name, fmt), label in zip(WRITERS, WRITER_IDS)]


def files_in(folder: Path) -> list[str]:
    """Every entry of `folder`, hidden temporary files included."""
    return sorted(path.name for path in folder.iterdir())


def assert_one_line(error: pytest.ExceptionInfo) -> None:
    assert isinstance(error.value, HsiDenoiseError)
    message = str(error.value)
    assert message and "\n" not in message


def full_meta() -> CubeMeta:
    """Metadata with every field a writer can store (5 bands)."""
    return CubeMeta(
        wavelengths=np.array([412.5, 500.25, 600.125, 700.0, 801.5]),
        wavelength_units="Nanometers",
        fwhm=np.array([10.5, 9.75, 11.0, 12.25, 13.0]),
        bbl=np.array([1, 0, 1, 1, 0], dtype=np.uint8),
        band_names=["blue", "green", "red", "red edge", "nir"],
        nodata=-9999.0,
        scale_factor=10000.0,
        description="synthetic scene",
        crs_wkt=CRS.from_epsg(32611).to_wkt(),
        transform=(30.0, 0.0, 500000.0, 0.0, -30.0, 3700000.0),
    )


def write_envi_by_hand(
    folder: Path, data: np.ndarray, *, interleave: str, byte_order: int, offset: int, code: int, extra: str = ""
) -> Path:
    """An ENVI header (mixed-case keys) and raw file written without hsidenoise; returns the header path."""
    bands, rows, cols = data.shape
    order = {"bsq": (0, 1, 2), "bil": (1, 0, 2), "bip": (1, 2, 0)}[interleave]
    raw = np.transpose(data, order).astype(data.dtype.newbyteorder(">" if byte_order else "<"))
    (folder / "scene.raw").write_bytes(b"\x07" * offset + raw.tobytes())
    header = folder / "scene.hdr"
    header.write_text(
        f"ENVI\nSAMPLES = {cols}\nLines= {rows}\nBands = {bands}\nHeader Offset = {offset}\n"
        f"Data Type = {code}\nInterleave = {interleave.upper()}\nByte Order = {byte_order}\n{extra}"
    )
    return header


def write_mat73_by_hand(path: Path, variables: dict[str, np.ndarray]) -> None:
    """A MAT v7.3 file written with bare h5py: MATLAB stores column-major, so h5py holds each array transposed."""
    classes = {"float64": "double", "float32": "single", "uint8": "uint8", "int16": "int16", "uint16": "uint16"}
    with h5py.File(path, "w", userblock_size=512) as file:
        for name, value in variables.items():
            value = np.asarray(value)
            dataset = file.create_dataset(name, data=value.T)
            dataset.attrs["MATLAB_class"] = np.bytes_(classes[value.dtype.name])
    header = b"MATLAB 7.3 MAT-file, Platform: test, HDF5 schema 1.00 .".ljust(116) + b"\0" * 8 + b"\x00\x02IM"
    with open(path, "r+b") as file:
        file.write(header)


# ------------------------------------------------------------------------------ formats


def test_every_suffix_selects_its_format_and_fmt_overrides() -> None:
    for format_ in FORMATS.values():
        for suffix in format_.suffixes:
            assert format_for(f"dir.x/scene{suffix.upper()}") is format_
    assert format_for("scene.dat", fmt="HDF5") is FORMATS["hdf5"]


def test_unknown_suffix_and_format_list_the_choices(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedFormatError) as error:
        open_cube(tmp_path / "scene.xyz")
    assert ".hdr" in str(error.value) and ".tif" in str(error.value) and ".h5" in str(error.value)
    assert_one_line(error)
    with pytest.raises(UnsupportedFormatError, match="envi"):
        write_cube(tmp_path / "scene.tif", Cube(np.zeros((1, 2, 2))), fmt="png")
    assert files_in(tmp_path) == []


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize(("name", "fmt", "dtype"), ROUND_TRIPS)
def test_round_trip_keeps_values_and_dtype(tmp_path: Path, tiny_cube, name: str, fmt: str | None, dtype: str) -> None:
    data = tiny_cube(dtype=dtype)
    write_cube(tmp_path / name, Cube(data), fmt=fmt, dtype="same")
    cube = read_cube(tmp_path / name)
    assert cube.data.dtype == np.dtype(dtype) and cube.meta.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(cube.data, data)


@pytest.mark.parametrize("interleave", ["bsq", "bil", "bip"])
@pytest.mark.parametrize("byte_order", [0, 1])
@pytest.mark.parametrize("code", list(ENVI_CODES))
def test_envi_reads_every_interleave_byte_order_and_offset(
    tmp_path: Path, tiny_cube, interleave: str, byte_order: int, code: int
) -> None:
    data = tiny_cube(dtype=ENVI_CODES[code], seed=code)
    header = write_envi_by_hand(tmp_path, data, interleave=interleave, byte_order=byte_order, offset=37, code=code)
    for path in (header, tmp_path / "scene.raw"):
        with open_cube(path) as reader:
            assert reader.shape == data.shape and reader.meta.interleave == interleave
            block = reader.read(rows=slice(1, 6), cols=slice(2, 11), bands=[4, 0])
            assert block.dtype.isnative and block.flags.c_contiguous and block.flags.writeable
            np.testing.assert_array_equal(block, data[[4, 0], 1:6, 2:11])
            np.testing.assert_array_equal(reader.read(), data)


def test_default_dtype_is_float32(tmp_path: Path, tiny_cube) -> None:
    data = tiny_cube(dtype="int16")
    write_cube(tmp_path / "scene.h5", Cube(data))
    cube = read_cube(tmp_path / "scene.h5")
    assert cube.data.dtype == np.float32
    np.testing.assert_array_equal(cube.data, data.astype(np.float32))


@pytest.mark.parametrize("name", ["scene.hdr", "scene.tif"])
def test_same_dtype_rounds_clips_and_fills_nan_with_nodata(tmp_path: Path, name: str) -> None:
    values = np.array([-40000.7, -2.5, -0.4, 0.6, 1.5, 32767.4, 50000.0, np.nan, np.inf]).reshape(1, 1, 9)
    meta = CubeMeta(dtype=np.dtype("int16"), nodata=-999.0, scale_factor=10000.0)
    write_cube(tmp_path / name, Cube(values, meta), dtype="same")
    cube = read_cube(tmp_path / name)
    # rint rounds halves to even; NaN becomes nodata; the range of int16 is [-32768, 32767].
    expected = np.array([-32768, -2, 0, 1, 2, 32767, 32767, -999, 32767], dtype=np.int16).reshape(1, 1, 9)
    assert cube.data.dtype == np.int16
    np.testing.assert_array_equal(cube.data, expected)
    assert cube.meta.scale_factor == 10000.0 and cube.meta.nodata == -999.0


def test_format_that_cannot_hold_the_dtype_is_refused(tmp_path: Path, tiny_cube) -> None:
    with pytest.raises(ConfigError, match="int8") as error:
        write_cube(tmp_path / "scene.hdr", Cube(tiny_cube(dtype="int8")), dtype="same")
    assert_one_line(error)
    with pytest.raises(ConfigError, match="same"):
        create_cube(tmp_path / "scene.tif", (1, 2, 2), meta=CubeMeta(), dtype="same")
    assert files_in(tmp_path) == []


# ---------------------------------------------------------------------------- metadata


@pytest.mark.parametrize(("name", "fmt"), ALL_WRITERS)
def test_metadata_round_trip_within_a_format(tmp_path: Path, tiny_cube, name: str, fmt: str | None) -> None:
    meta = full_meta()
    write_cube(tmp_path / name, Cube(tiny_cube(), meta), fmt=fmt)
    back = read_cube(tmp_path / name).meta
    np.testing.assert_array_equal(back.wavelengths, meta.wavelengths)
    np.testing.assert_array_equal(back.fwhm, meta.fwhm)
    np.testing.assert_array_equal(back.bbl, meta.bbl)
    assert back.wavelength_units == meta.wavelength_units
    assert back.nodata == meta.nodata and back.scale_factor == meta.scale_factor
    assert back.description == meta.description
    assert back.transform == meta.transform
    assert CRS.from_wkt(back.crs_wkt).to_epsg() == 32611
    if fmt != "mat73":  # v7.3 cannot hold cell arrays (documented)
        assert back.band_names == meta.band_names


def test_metadata_survives_envi_geotiff_hdf5_mat_envi(tmp_path: Path, tiny_cube) -> None:
    data = tiny_cube(dtype="uint16")
    wavelengths = [400.5, 450.25, 500.0, 650.75, 900.125]
    extra = (
        "wavelength units = Nanometers\nwavelength = {400.5, 450.25,\n 500.0, 650.75, 900.125}\n"
        "fwhm = {5, 6, 7, 8, 9}\nbbl = {1, 1, 0, 1, 1}\ndata ignore value = 0\n"
        "map info = {UTM, 2, 3, 500000, 4000000, 30, 15, 11, North, WGS-84, units=Meters}\n"
    )
    header = write_envi_by_hand(tmp_path, data, interleave="bil", byte_order=1, offset=0, code=12, extra=extra)
    # map info: pixel (2, 3), 1-based, sits at (500000, 4000000); the outer corner of pixel (1, 1) is
    # one pixel west and two pixels north of it.
    expected_transform = (30.0, 0.0, 500000.0 - 30.0, 0.0, -15.0, 4000000.0 + 2 * 15.0)

    def check(cube: Cube) -> None:
        np.testing.assert_array_equal(cube.data, data)
        np.testing.assert_array_equal(cube.meta.wavelengths, wavelengths)
        np.testing.assert_array_equal(cube.meta.fwhm, [5, 6, 7, 8, 9])
        np.testing.assert_array_equal(cube.meta.bbl, [1, 1, 0, 1, 1])
        assert cube.meta.wavelength_units == "Nanometers" and cube.meta.nodata == 0.0
        assert cube.meta.transform == expected_transform
        assert CRS.from_wkt(cube.meta.crs_wkt).to_epsg() == 32611

    cube = read_cube(header)
    check(cube)
    for name in ("step.tif", "step.h5", "step.mat", "final.hdr"):
        write_cube(tmp_path / name, cube, dtype="same")
        cube = read_cube(tmp_path / name)
        check(cube)

    with rasterio.open(tmp_path / "step.tif") as dataset:  # what GDAL sees
        assert dataset.crs.to_epsg() == 32611 and dataset.transform == Affine(*expected_transform)
        assert float(dataset.tags(4)["wavelength"]) == wavelengths[3] and dataset.nodata == 0
    with h5py.File(tmp_path / "step.h5") as file:
        np.testing.assert_array_equal(file["cube"].attrs["wavelength"], wavelengths)
    final = spy_envi.read_envi_header(str(tmp_path / "final.hdr"))
    assert final["map info"][0] == "UTM" and final["map info"][7:9] == ["11", "North"]


@pytest.mark.filterwarnings("ignore:Parameters with non-lowercase names")  # SPy reading our mixed-case header
def test_envi_to_envi_keeps_map_info_verbatim(tmp_path: Path, tiny_cube) -> None:
    map_info = "{UTM, 1, 1, 579717.18, 3714550.7, 16.9, 16.9, 11, North, WGS-84, units=Meters, rotation=34.0}"
    header = write_envi_by_hand(
        tmp_path, tiny_cube(), interleave="bsq", byte_order=0, offset=0, code=4,
        extra=f"map info = {map_info}\nsensor type = AVIRIS\n",
    )
    cube = read_cube(header)
    assert cube.meta.transform is not None  # rotated: the transform is turned too (tests/test_georef.py)
    write_cube(tmp_path / "copy.hdr", cube)
    written = spy_envi.read_envi_header(str(tmp_path / "copy.hdr"))
    assert written["map info"] == spy_envi.read_envi_header(str(header))["map info"]
    assert written["sensor type"] == "AVIRIS"


# ----------------------------------------------------------------------- windows, streams

SELECTIONS = [
    (slice(None), slice(None), None),
    (slice(2, 5), slice(3, 11), slice(1, 4)),
    (slice(1, None, 2), slice(None, None, 3), np.array([4, 0, 2])),
    (slice(None, None, -1), slice(12, 2, -2), np.array([True, False, True, True, False])),
    (slice(6, 7), slice(0, 1), [3, 3, 1]),
    (slice(3, 3), slice(None), None),
]


@pytest.mark.parametrize(("name", "fmt"), ALL_WRITERS)
def test_windowed_read_equals_slicing(tmp_path: Path, tiny_cube, name: str, fmt: str | None) -> None:
    data = tiny_cube(dtype="int16")
    write_cube(tmp_path / name, Cube(data), fmt=fmt, dtype="same")
    with open_cube(tmp_path / name) as reader:
        assert reader.shape == data.shape
        for rows, cols, bands in SELECTIONS:
            expected = (data if bands is None else data[bands])[:, rows][:, :, cols]
            np.testing.assert_array_equal(reader.read(rows, cols, bands), expected)
    with pytest.raises(CubeReadError, match="closed"):
        reader.read()


@pytest.mark.parametrize(("name", "fmt"), ALL_WRITERS)
def test_streaming_write_equals_write_cube(tmp_path: Path, tiny_cube, name: str, fmt: str | None) -> None:
    data = tiny_cube(bands=6, rows=11, cols=9, dtype="float64")
    meta = CubeMeta(wavelengths=np.arange(6) * 10.0 + 400.0)
    (tmp_path / "streamed").mkdir()
    (tmp_path / "whole").mkdir()
    write_cube(tmp_path / "whole" / name, Cube(data, meta), fmt=fmt)
    with create_cube(tmp_path / "streamed" / name, data.shape, meta=meta, fmt=fmt) as writer:
        for top in range(0, 11, 4):  # ragged 4 x 5 tiles
            for left in range(0, 9, 5):
                rows, cols = slice(top, min(top + 4, 11)), slice(left, min(left + 5, 9))
                writer.write(data[:, rows, cols], rows, cols)
    streamed, whole = read_cube(tmp_path / "streamed" / name), read_cube(tmp_path / "whole" / name)
    assert streamed.data.dtype == np.float32
    np.testing.assert_array_equal(streamed.data, whole.data)
    np.testing.assert_array_equal(streamed.data, data.astype(np.float32))
    np.testing.assert_array_equal(streamed.meta.wavelengths, meta.wavelengths)


# --------------------------------------------------------------------------- MAT layouts


def test_mat73_written_by_hand_reads_with_reversed_axes(tmp_path: Path, tiny_cube) -> None:
    hwb = tiny_cube(dtype="float32").transpose(1, 2, 0)  # MATLAB rows x cols x bands
    write_mat73_by_hand(tmp_path / "scene.mat", {"hsi": hwb, "wl": np.linspace(0.4, 2.4, 5).reshape(-1, 1)})
    assert scipy.io.matlab.matfile_version(str(tmp_path / "scene.mat")) == (2, 0)
    with open_cube(tmp_path / "scene.mat") as reader:
        assert reader.shape == (5, 7, 13)
        np.testing.assert_array_equal(reader.read(), hwb.transpose(2, 0, 1))
        block = reader.read(slice(2, 4), slice(5, 12), [3, 1])
        np.testing.assert_array_equal(block, hwb[2:4, 5:12][:, :, [3, 1]].transpose(2, 0, 1))
        np.testing.assert_array_equal(reader.meta.wavelengths, np.linspace(0.4, 2.4, 5))
        assert reader.meta.wavelength_units == "Micrometers"
    bhw = hwb.transpose(2, 0, 1).copy()  # a MATLAB variable stored bands x rows x cols
    write_mat73_by_hand(tmp_path / "bhw.mat", {"hsi": bhw})
    np.testing.assert_array_equal(read_cube(tmp_path / "bhw.mat", axes="bhw").data, bhw)


def test_mat73_writer_stores_matlab_column_major(tmp_path: Path, tiny_cube) -> None:
    data = tiny_cube()
    write_cube(tmp_path / "scene.mat", Cube(data), fmt="mat73")
    assert scipy.io.matlab.matfile_version(str(tmp_path / "scene.mat")) == (2, 0)
    with h5py.File(tmp_path / "scene.mat") as file:
        assert file["cube"].shape == (5, 13, 7)  # bands x cols x rows: MATLAB's rows x cols x bands reversed
        np.testing.assert_array_equal(file["cube"][()].T, data.transpose(1, 2, 0))
        assert file["cube"].attrs["MATLAB_class"] == b"single"


def test_mat_axes_option(tmp_path: Path, tiny_cube) -> None:
    data = tiny_cube()
    scipy.io.savemat(tmp_path / "whb.mat", {"x": data.transpose(2, 1, 0)})
    np.testing.assert_array_equal(read_cube(tmp_path / "whb.mat", axes="whb").data, data)
    with pytest.raises(ConfigError, match="axes"):
        open_cube(tmp_path / "whb.mat", axes="hhb")


@pytest.mark.parametrize("transposed", [False, True])
def test_bands_by_pixels_layout_with_nrow_ncol(tmp_path: Path, tiny_cube, transposed: bool) -> None:
    data = tiny_cube()  # 5 bands, 7 rows, 13 cols
    bands, rows, cols = data.shape
    matrix = np.empty((bands, rows * cols), dtype=data.dtype)
    for row in range(rows):
        for col in range(cols):
            matrix[:, row + col * rows] = data[:, row, col]  # MATLAB column-major pixel order
    scipy.io.savemat(tmp_path / "unmix.mat", {"V": matrix.T if transposed else matrix, "nRow": rows, "nCol": cols})
    np.testing.assert_array_equal(read_cube(tmp_path / "unmix.mat").data, data)


def test_hdf5_dataset_path_and_axes(tmp_path: Path, tiny_cube) -> None:
    data = tiny_cube()
    with h5py.File(tmp_path / "scene.h5", "w") as file:
        file.create_dataset("product/reflectance", data=data.transpose(2, 1, 0))  # whb
        file.create_dataset("product/mask", data=np.ones((7, 13), dtype=np.uint8))
        file["product/reflectance"].attrs["wavelength"] = np.arange(5.0) + 500.0
        file.create_dataset("plain", data=data.transpose(1, 2, 0))  # 7 x 13 x 5: no axis clearly the bands
    cube = read_cube(tmp_path / "scene.h5", var="/product/reflectance", axes="whb")
    np.testing.assert_array_equal(cube.data, data)
    np.testing.assert_array_equal(cube.meta.wavelengths, np.arange(5.0) + 500.0)
    np.testing.assert_array_equal(read_cube(tmp_path / "scene.h5", var="plain", axes="hwb").data, data)


# ------------------------------------------------------------------------------ bad input


def test_truncated_envi_data_file(tmp_path: Path, tiny_cube) -> None:
    write_cube(tmp_path / "scene.hdr", Cube(tiny_cube()))
    data_file = tmp_path / "scene.img"
    data_file.write_bytes(data_file.read_bytes()[:-1])
    with pytest.raises(CubeReadError, match="truncated") as error:
        open_cube(tmp_path / "scene.hdr")
    assert_one_line(error)


@pytest.mark.parametrize("key", ["samples", "lines", "bands", "data type"])
def test_envi_header_missing_a_key(tmp_path: Path, tiny_cube, key: str) -> None:
    write_cube(tmp_path / "scene.hdr", Cube(tiny_cube()))
    header = tmp_path / "scene.hdr"
    header.write_text("".join(line for line in header.read_text().splitlines(True) if not line.startswith(key)))
    with pytest.raises(HeaderError, match=key) as error:
        open_cube(header)
    assert_one_line(error)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("data type = 6", "data type 6"),
        ("byte order = 2", "byte order"),
        ("interleave = bxx", "interleave"),
        ("samples = seven", "integer"),
    ],
)
def test_envi_header_with_a_bad_value(tmp_path: Path, tiny_cube, change: str, message: str) -> None:
    write_cube(tmp_path / "scene.hdr", Cube(tiny_cube()))
    header = tmp_path / "scene.hdr"
    key = change.split(" = ")[0]
    lines = [change + "\n" if line.startswith(key) else line for line in header.read_text().splitlines(True)]
    header.write_text("".join(lines))
    with pytest.raises(HeaderError, match=message) as error:
        open_cube(header)
    assert_one_line(error)


def test_mat_variable_errors_list_the_candidates(tmp_path: Path, tiny_cube) -> None:
    first, second = tiny_cube().transpose(1, 2, 0), tiny_cube(seed=1).transpose(1, 2, 0)
    scipy.io.savemat(tmp_path / "two.mat", {"radiance": first, "reflectance": second, "note": "hello"})
    with pytest.raises(VariableError, match="radiance.*reflectance|reflectance.*radiance") as error:
        open_cube(tmp_path / "two.mat")
    assert_one_line(error)
    with pytest.raises(VariableError, match="radiance"):
        open_cube(tmp_path / "two.mat", var="irradiance")
    with pytest.raises(VariableError, match="char"):
        open_cube(tmp_path / "two.mat", var="note")
    np.testing.assert_array_equal(read_cube(tmp_path / "two.mat", var="reflectance").data, second.transpose(2, 0, 1))


def test_two_dimensional_arrays_are_refused(tmp_path: Path) -> None:
    scipy.io.savemat(tmp_path / "flat.mat", {"image": np.zeros((7, 13))})
    with pytest.raises(VariableError, match="image") as error:
        open_cube(tmp_path / "flat.mat")
    assert_one_line(error)
    with pytest.raises(CubeShapeError, match="3 axes") as error:
        open_cube(tmp_path / "flat.mat", var="image")
    assert_one_line(error)
    with h5py.File(tmp_path / "flat.h5", "w") as file:
        file.create_dataset("image", data=np.zeros((7, 13)))
    with pytest.raises(VariableError, match="image"):
        open_cube(tmp_path / "flat.h5")
    with pytest.raises(CubeShapeError, match="3 axes"):
        open_cube(tmp_path / "flat.h5", var="image")
    with pytest.raises(CubeShapeError):
        Cube(np.zeros((7, 13)))


def test_hdf5_ambiguous_or_missing_dataset(tmp_path: Path, tiny_cube) -> None:
    with h5py.File(tmp_path / "two.h5", "w") as file:
        file.create_dataset("a/cube", data=tiny_cube())
        file.create_dataset("b/cube", data=tiny_cube())
    with pytest.raises(VariableError, match="/a/cube.*/b/cube") as error:
        open_cube(tmp_path / "two.h5")
    assert_one_line(error)
    with pytest.raises(VariableError, match="/a/cube"):
        open_cube(tmp_path / "two.h5", var="c/cube")


@pytest.mark.parametrize("name", ["scene.hdr", "scene.tif", "scene.mat", "scene.h5"])
def test_missing_directory_or_corrupt_input(tmp_path: Path, name: str) -> None:
    with pytest.raises(CubeReadError, match="no such file") as error:
        open_cube(tmp_path / name)
    assert_one_line(error)
    (tmp_path / "folder.tif").mkdir()
    with pytest.raises(CubeReadError, match="not a regular file"):
        open_cube(tmp_path / "folder.tif")
    (tmp_path / name).write_bytes(b"this is not a cube\n" * 40)
    with pytest.raises((CubeReadError, HeaderError)) as error:
        open_cube(tmp_path / name)
    assert_one_line(error)


def test_refuses_to_write_over_an_input_by_any_path(tmp_path: Path, tiny_cube) -> None:
    source = tmp_path / "in.tif"
    write_cube(source, Cube(tiny_cube()))
    before = source.read_bytes()
    (tmp_path / "link.tif").symlink_to(source)
    os.link(source, tmp_path / "hard.tif")
    (tmp_path / "sub").mkdir()
    for target in (source, tmp_path / "link.tif", tmp_path / "hard.tif", tmp_path / "sub" / ".." / "in.tif"):
        with pytest.raises(CubeWriteError, match="input") as error:
            write_cube(target, Cube(tiny_cube(seed=3)), overwrite=True, inputs=[source])
        assert_one_line(error)
    assert source.read_bytes() == before
    assert files_in(tmp_path) == ["hard.tif", "in.tif", "link.tif", "sub"]


def test_files_open_in_a_reader_are_protected(tmp_path: Path, tiny_cube) -> None:
    write_cube(tmp_path / "scene.hdr", Cube(tiny_cube()))
    before = (tmp_path / "scene.img").read_bytes()
    with open_cube(tmp_path / "scene.img") as reader:
        for target in ("scene.hdr", "scene.img"):
            with pytest.raises(CubeWriteError, match="input"):
                create_cube(tmp_path / target, reader.shape, meta=reader.meta, overwrite=True)
    assert (tmp_path / "scene.img").read_bytes() == before
    write_cube(tmp_path / "scene.hdr", Cube(tiny_cube(seed=4)), overwrite=True)  # closed: allowed again
    np.testing.assert_array_equal(read_cube(tmp_path / "scene.hdr").data, tiny_cube(seed=4))


def test_existing_output_needs_overwrite(tmp_path: Path, tiny_cube) -> None:
    write_cube(tmp_path / "out.h5", Cube(tiny_cube()))
    with pytest.raises(CubeWriteError, match="overwrite") as error:
        write_cube(tmp_path / "out.h5", Cube(tiny_cube(seed=5)))
    assert_one_line(error)
    write_cube(tmp_path / "out.h5", Cube(tiny_cube(seed=5)), overwrite=True)
    np.testing.assert_array_equal(read_cube(tmp_path / "out.h5").data, tiny_cube(seed=5))
    assert files_in(tmp_path) == ["out.h5"]


@pytest.mark.parametrize(("name", "fmt"), ALL_WRITERS)
def test_failed_write_leaves_nothing_and_keeps_the_old_file(
    tmp_path: Path, tiny_cube, name: str, fmt: str | None
) -> None:
    data = tiny_cube()
    with pytest.raises(RuntimeError, match="interrupted"):
        with create_cube(tmp_path / name, data.shape, meta=CubeMeta(), fmt=fmt) as writer:
            writer.write(data[:, :3], slice(0, 3), slice(0, 13))
            raise RuntimeError("interrupted")
    assert files_in(tmp_path) == []
    with pytest.raises(CubeShapeError, match="should have shape"):
        with create_cube(tmp_path / name, data.shape, meta=CubeMeta(), fmt=fmt) as writer:
            writer.write(data[:, :3], slice(0, 4), slice(0, 13))
    assert files_in(tmp_path) == []
    writer = create_cube(tmp_path / name, data.shape, meta=CubeMeta(), fmt=fmt)
    del writer  # dropped without commit or abort
    gc.collect()
    assert files_in(tmp_path) == []

    write_cube(tmp_path / name, Cube(data), fmt=fmt)
    old = {entry: (tmp_path / entry).read_bytes() for entry in files_in(tmp_path)}
    with pytest.raises(RuntimeError):
        with create_cube(tmp_path / name, data.shape, meta=CubeMeta(), fmt=fmt, overwrite=True) as writer:
            writer.write(data[::-1], slice(None), slice(None))
            raise RuntimeError("interrupted")
    assert {entry: (tmp_path / entry).read_bytes() for entry in files_in(tmp_path)} == old


def test_not_enough_disk_space(tmp_path: Path) -> None:
    with pytest.raises(ResourceError, match="disk space") as error:
        check_output([tmp_path / "huge.img"], overwrite=False, nbytes=2**62)
    assert_one_line(error)


# ------------------------------------------------------------------------------ real cubes


def test_real_salton_sea_mat(shared_data: Path) -> None:
    path = shared_data / "aviris_salton_sea_224" / "salton_sea_roi.mat"
    raw = scipy.io.loadmat(path, variable_names=["I", "wl", "bbl"])
    with pytest.raises(VariableError, match="rgb"):  # I and rgb are both 3-D
        open_cube(path)
    cube = read_cube(path, var="I")
    assert cube.shape == (224, 51, 56) and cube.data.dtype == np.float64
    np.testing.assert_array_equal(cube.data, raw["I"].transpose(2, 0, 1))  # NaN bands compare equal
    np.testing.assert_array_equal(cube.meta.wavelengths, raw["wl"].ravel())
    assert cube.meta.wavelength_units == "Micrometers"
    bad = set(range(107, 113)) | set(range(153, 167))  # MANIFEST.md: bbl == 0 bands, 0-based
    assert set(np.flatnonzero(cube.meta.bbl == 0)) == bad


def test_real_samson_bands_by_pixels(shared_data: Path, tmp_path: Path) -> None:
    path = shared_data / "samson" / "samson_1.mat"
    raw = scipy.io.loadmat(path)
    expected = raw["V"].reshape(156, 95, 95).transpose(2, 1, 0)  # MANIFEST.md: H x W x B
    cube = read_cube(path)
    assert cube.shape == (156, 95, 95)
    np.testing.assert_array_equal(cube.data, expected.transpose(2, 0, 1))
    write_cube(tmp_path / "samson.h5", cube, dtype="same")
    with h5py.File(tmp_path / "samson.h5") as file:  # the HDF5 file read without hsidenoise
        np.testing.assert_array_equal(file["cube"][()], expected)
    np.testing.assert_array_equal(read_cube(tmp_path / "samson.h5").data, cube.data)


def test_real_santa_barbara_as_envi(shared_data: Path, tmp_path: Path) -> None:
    path = shared_data / "aviris_santa_barbara_lacumbre_224" / "a_hsi_img_for_VI_demo.mat"
    raw = scipy.io.loadmat(path)
    write_cube(tmp_path / "sb.bip", read_cube(path), dtype="same")
    image = spy_envi.open(str(tmp_path / "sb.hdr"), str(tmp_path / "sb.bip"))  # read back with SPy
    np.testing.assert_array_equal(image.open_memmap(), raw["hsi_img"])
    np.testing.assert_allclose(image.bands.centers, raw["wavelengths"].ravel())
    cube = read_cube(tmp_path / "sb.hdr")
    assert cube.shape == (224, 90, 90) and cube.data.dtype == np.int16
    np.testing.assert_array_equal(cube.data, raw["hsi_img"].transpose(2, 0, 1))
    np.testing.assert_array_equal(cube.meta.wavelengths, raw["wavelengths"].ravel())
    assert cube.meta.wavelength_units == "Nanometers"


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")  # the ROI has no map in the MAT file
def test_real_salton_sea_as_geotiff_and_mat73(shared_data: Path, tmp_path: Path) -> None:
    path = shared_data / "aviris_salton_sea_224" / "salton_sea_roi.mat"
    raw = scipy.io.loadmat(path, variable_names=["I", "wl"])
    expected = raw["I"].transpose(2, 0, 1).astype(np.float32)
    source = read_cube(path, var="I")
    write_cube(tmp_path / "salton.tif", source)
    assert files_in(tmp_path) == ["salton.tif"]  # no sidecar: 224 bands of tags fit in the TIFF
    with rasterio.open(tmp_path / "salton.tif") as dataset:
        np.testing.assert_array_equal(dataset.read(), expected)
        assert float(dataset.tags(224)["wavelength"]) == raw["wl"].ravel()[223]
    cube = read_cube(tmp_path / "salton.tif")
    np.testing.assert_array_equal(cube.data, expected)
    np.testing.assert_array_equal(cube.meta.wavelengths, raw["wl"].ravel())
    write_cube(tmp_path / "salton73.mat", cube, fmt="mat73")
    with open_cube(tmp_path / "salton73.mat") as reader:
        np.testing.assert_array_equal(reader.read(rows=slice(10, 20), bands=slice(100, 120)), expected[100:120, 10:20])
        np.testing.assert_array_equal(reader.meta.bbl, source.meta.bbl)


def test_read_errors_name_the_command_line_flags(tmp_path: Path, tiny_cube) -> None:
    (tmp_path / "junk.mat").write_bytes(b"not a MAT file at all" * 10)
    with pytest.raises(CubeReadError, match=r"--format") as error:
        open_cube(tmp_path / "junk.mat")
    assert "another fmt=" not in str(error.value)
    with pytest.raises(UnsupportedFormatError, match=r"--format \(fmt= in Python\)"):
        format_for(tmp_path / "scene.xyz")
    with h5py.File(tmp_path / "flat.h5", "w") as file:
        file.create_dataset("image", data=np.zeros((7, 13)))
    with pytest.raises(VariableError, match=r"--var PATH and --axes"):
        open_cube(tmp_path / "flat.h5")


def test_a_damaged_geotiff_block_names_the_window_and_gdals_reason(tmp_path: Path, tiny_cube) -> None:
    write_cube(tmp_path / "scene.tif", Cube(tiny_cube(bands=5, rows=12, cols=14)))
    raw = bytearray((tmp_path / "scene.tif").read_bytes())
    for index in range(len(raw) // 3, len(raw) // 3 + 64):
        raw[index] ^= 0xFF  # inside the deflated pixel blocks, after the TIFF header and tags
    (tmp_path / "bad.tif").write_bytes(bytes(raw))
    with pytest.raises(CubeReadError) as error, open_cube(tmp_path / "bad.tif") as reader:
        reader.read()
    message = str(error.value)
    assert "rows 0-11, cols 0-13 of" in message and "re-copy" in message
    assert "Decoding error" in message  # GDAL's own reason, from the chained exceptions
    assert "See previous exception" not in message and "slice(" not in message
    assert_one_line(error)
