"""Metadata that survives: nodata through `noise`, every field through every format, band-axis detection,
provenance of outputs, and what `info` reports."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from hsidenoise.cli import app
from hsidenoise.cube import Cube, CubeMeta
from hsidenoise.io import read_cube, write_cube
from hsidenoise.noise import NoiseSpec, add_noise, normalise_cube

NODATA = 65535


def invoke(*args: object, code: int = 0):
    result = CliRunner().invoke(app, [str(arg) for arg in args])
    assert result.exit_code == code, result.output
    return result


def uint16_scene_with_nodata(folder: Path) -> tuple[Path, np.ndarray, np.ndarray]:
    """A uint16 ENVI cube, values 100..5000, whose first two rows and one column are `NODATA` (declared)."""
    rng = np.random.default_rng(3)
    data = rng.integers(100, 5001, size=(5, 9, 11), dtype=np.uint16)
    data[:, 5, 0], data[:, -1, -1] = 100, 5000
    nodata = np.zeros(data.shape[1:], dtype=bool)
    nodata[:2] = True
    nodata[:, 4] = True
    data[:, nodata] = NODATA
    path = folder / "scene.hdr"
    write_cube(path, Cube(data, CubeMeta(nodata=float(NODATA))), dtype="uint16")
    return path, data, nodata


# ---------------------------------------------------------------------------------------- noise


def test_normalise_cube_leaves_nodata_out_of_the_range() -> None:
    data = np.array([[[100, 5000, NODATA], [2550, NODATA, 100]]], dtype=np.uint16)
    x01, low, high = normalise_cube(data, nodata=NODATA)
    assert (low, high) == (100.0, 5000.0)
    assert np.isnan(x01[data == NODATA]).all()
    valid = x01[data != NODATA]
    assert valid.min() == 0.0 and valid.max() == 1.0


@pytest.mark.parametrize("recipe", ["gauss", "stripe", "deadline", "impulse", "mixture"])
def test_add_noise_keeps_invalid_pixels_invalid(recipe: str) -> None:
    clean = np.random.default_rng(0).random((6, 8, 10)).astype(np.float32)
    clean[:, 2, :] = np.nan
    result = add_noise(clean, NoiseSpec(recipe), np.random.default_rng(1))
    assert np.isnan(result.noisy[:, 2, :]).all()
    assert np.isfinite(np.delete(result.noisy, 2, axis=1)).all()
    if result.mask is not None:
        assert not result.mask[:, 2, :].any()


def test_noise_command_honours_data_ignore_value(tmp_path: Path) -> None:
    path, data, nodata = uint16_scene_with_nodata(tmp_path)
    out, clean = tmp_path / "noisy.hdr", tmp_path / "clean.hdr"
    invoke("noise", path, "-o", out, "--recipe", "mixture", "--seed", "4", "--write-clean", clean, "--quiet")
    for written in (out, clean):
        cube = read_cube(written)
        declared = cube.meta.nodata
        values = cube.data
        # Declared nodata marks exactly the nodata pixels: NaN for a float output.
        assert declared is not None and np.isnan(declared)
        assert np.isnan(values[:, nodata]).all()
        assert np.isfinite(values[:, ~nodata]).all()
    reference = read_cube(clean).data[:, ~nodata]
    # The valid range, not 65535, sets the normalisation: the clean reference spans [0, 1].
    assert reference.min() == 0.0 and reference.max() == 1.0
    expected = (data[:, ~nodata].astype(np.float64) - 100.0) / 4900.0
    np.testing.assert_allclose(reference, expected, rtol=1e-6)


# ------------------------------------------------------------------------------ every field, every format

FORMATS = [("cube.hdr", None), ("cube.tif", None), ("cube.mat", None), ("cube.mat", "mat73"), ("cube.h5", None)]
FORMAT_IDS = ["envi", "geotiff", "mat5", "mat73", "hdf5"]


def rich_meta() -> CubeMeta:
    """Every metadata field, including ENVI keys hsidenoise has no field for (5 bands)."""
    from rasterio.crs import CRS

    return CubeMeta(
        wavelengths=np.array([0.4125, 0.50025, 0.600125, 0.7, 0.8015]),
        wavelength_units="Micrometers",
        fwhm=np.array([0.0105, 0.00975, 0.011, 0.01225, 0.013]),
        bbl=np.array([1, 0, 1, 1, 0], dtype=np.uint8),
        band_names=["blue", "green band", "red", "red edge", "nir"],
        nodata=-9999.0,
        scale_factor=10000.0,
        description="synthetic scene, two clauses",
        crs_wkt=CRS.from_epsg(32611).to_wkt(),
        transform=(16.9, 0.0, 579717.18, 0.0, -16.9, 3714550.7),
        map_info=["UTM", "1", "1", "579717.18", "3714550.7", "16.9", "16.9", "11", "North", "WGS-84", "units=Meters"],
        extra={"sensor type": "AVIRIS", "acquisition time": "2014-04-16T18:30:00Z", "solar zenith": "31.5"},
    )


@pytest.mark.parametrize(("name", "fmt"), FORMATS, ids=FORMAT_IDS)
def test_every_metadata_field_round_trips(tmp_path: Path, tiny_cube, name: str, fmt: str | None) -> None:
    meta = rich_meta()
    write_cube(tmp_path / name, Cube(tiny_cube(), meta), fmt=fmt)
    back = read_cube(tmp_path / name).meta
    np.testing.assert_array_equal(back.wavelengths, meta.wavelengths)
    np.testing.assert_array_equal(back.fwhm, meta.fwhm)
    np.testing.assert_array_equal(back.bbl, meta.bbl)
    assert back.band_names == meta.band_names
    assert back.wavelength_units == meta.wavelength_units
    assert (back.nodata, back.scale_factor, back.description) == (meta.nodata, meta.scale_factor, meta.description)
    assert back.transform == pytest.approx(meta.transform)
    if fmt != "geotiff" and not name.endswith(".tif"):  # a GeoTIFF holds the transform, not ENVI's map info
        assert [entry.strip() for entry in back.map_info] == meta.map_info
    for key, value in meta.extra.items():
        assert back.extra.get(key) == value, (key, back.extra)


@pytest.mark.parametrize(("name", "fmt"), FORMATS[1:], ids=FORMAT_IDS[1:])
def test_extra_envi_keys_survive_a_trip_through_another_format(tmp_path: Path, tiny_cube, name, fmt) -> None:
    write_cube(tmp_path / "a.hdr", Cube(tiny_cube(), rich_meta()))
    write_cube(tmp_path / name, read_cube(tmp_path / "a.hdr"), fmt=fmt)
    write_cube(tmp_path / "b.hdr", read_cube(tmp_path / name))
    from spectral.io import envi as spy_envi

    first = spy_envi.read_envi_header(str(tmp_path / "a.hdr"))
    final = spy_envi.read_envi_header(str(tmp_path / "b.hdr"))
    for key in ("sensor type", "acquisition time", "solar zenith", "band names", "description", "map info"):
        assert final.get(key) == first[key], key


def test_a_single_band_keeps_its_name_in_mat_files(tmp_path: Path, tiny_cube) -> None:
    meta = CubeMeta(band_names=["only"], extra={"sensor type": "CASI"})
    for fmt in (None, "mat73"):
        write_cube(tmp_path / f"one-{fmt}.mat", Cube(tiny_cube(bands=1), meta), fmt=fmt)
        back = read_cube(tmp_path / f"one-{fmt}.mat").meta
        assert back.band_names == ["only"] and back.extra == {"sensor type": "CASI"}


# ---------------------------------------------------------------------------------------- provenance

PROVENANCE = {
    "software": "hsidenoise 9.9.9",
    "method": "decsc",
    "weights": "decsc-subspace.safetensors sha256:0123456789ab",
    "command": "hsidenoise run scene.hdr -o 'clean {1}.hdr' --method decsc",
    "date": "2026-01-02T03:04:05Z",
}


@pytest.mark.parametrize(("name", "fmt"), FORMATS, ids=FORMAT_IDS)
def test_provenance_round_trips_in_every_format(tmp_path: Path, tiny_cube, name: str, fmt: str | None) -> None:
    write_cube(tmp_path / name, Cube(tiny_cube(), CubeMeta(provenance=dict(PROVENANCE))), fmt=fmt)
    back = read_cube(tmp_path / name).meta
    expected = dict(PROVENANCE)
    if name.endswith(".hdr"):  # an ENVI header value cannot hold braces
        expected["command"] = expected["command"].replace("{", "(").replace("}", ")")
    assert back.provenance == expected
    assert not any("hsidenoise" in key for key in back.extra)


def test_provenance_is_where_the_ecosystem_looks(tmp_path: Path, tiny_cube) -> None:
    import h5py
    import rasterio
    from spectral.io import envi as spy_envi

    meta = CubeMeta(provenance=dict(PROVENANCE))
    for name in ("p.hdr", "p.tif", "p.h5"):
        write_cube(tmp_path / name, Cube(tiny_cube(), meta))
    assert spy_envi.read_envi_header(str(tmp_path / "p.hdr"))["hsidenoise method"] == "decsc"
    with rasterio.open(tmp_path / "p.tif") as dataset:
        assert dataset.tags()["TIFFTAG_SOFTWARE"] == "hsidenoise 9.9.9"
        assert dataset.tags()["hsidenoise_weights"] == PROVENANCE["weights"]
    with h5py.File(tmp_path / "p.h5") as file:
        assert file["cube"].attrs["hsidenoise_date"] == PROVENANCE["date"]


def test_run_records_its_provenance(tmp_path: Path, tiny_cube, monkeypatch) -> None:
    import sys

    import hsidenoise

    write_cube(tmp_path / "in.hdr", Cube(tiny_cube(bands=7, rows=21, cols=19), CubeMeta(description="input")))
    args = ["run", str(tmp_path / "in.hdr"), "-o", str(tmp_path / "out.h5"), "--method", "identity", "--quiet"]
    monkeypatch.setattr(sys, "argv", ["/some/venv/bin/hsidenoise", *args])  # as the console script sees it
    invoke(*args)
    provenance = read_cube(tmp_path / "out.h5").meta.provenance
    assert provenance["method"] == "identity" and provenance["weights"] == "none"
    assert provenance["software"] == f"hsidenoise {hsidenoise.__version__}"
    assert provenance["command"].startswith("hsidenoise run ") and "out.h5 --method identity" in provenance["command"]
    assert provenance["date"].endswith("Z") and provenance["date"][:2] == "20"
    # A converted output keeps the run's provenance.
    invoke("convert", tmp_path / "out.h5", "-o", tmp_path / "copy.hdr")
    assert read_cube(tmp_path / "copy.hdr").meta.provenance == provenance


def test_run_with_weights_records_their_hash(tmp_path: Path) -> None:
    from hsidenoise.provenance import weights_identity

    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"not really weights")
    import hashlib

    digest = hashlib.sha256(b"not really weights").hexdigest()
    assert weights_identity(weights) == f"w.safetensors sha256:{digest[:12]}"
    assert weights_identity(None) == "none"


# ------------------------------------------------------------------------------------ band axis

SHARED_SHAPES = {  # MANIFEST.md: (bands, rows, cols) of every shared cube as read today
    "abu_airport_beach_urban/abu-airport-1.mat": (205, 100, 100),
    "abu_airport_beach_urban/abu-airport-4.mat": (191, 100, 100),
    "abu_airport_beach_urban/abu-beach-1.mat": (188, 150, 150),
    "abu_airport_beach_urban/abu-urban-2.mat": (207, 100, 100),
    "pavia_centre_rosis_abu_beach4/abu-beach-4.mat": (102, 100, 100),
    "hydice_urban_crop/hydice.mat": (162, 80, 100),
    "aviris_san_diego/sandiego.mat": (189, 100, 100),
    "aviris_san_diego/sandiego_plane.mat": (189, 100, 100),
    "samson/samson_1.mat": (156, 95, 95),
    "aviris_santa_barbara_lacumbre_224/a_hsi_img_for_VI_demo.mat": (224, 90, 90),
    "aviris_salton_sea_224/salton_sea_roi.mat": (224, 51, 56),
    "muufl_gulfport_sub/an_hsi_image_sub_for_demo.mat": (72, 51, 88),
    "reno/Reno150-150-100.mat": (100, 150, 150),
    "cave_256/chart_and_stuffed_toy_ms_256.mat": (31, 256, 256),
    "cave_256/real_and_fake_apples_ms_256.mat": (31, 256, 256),
}
SHARED_VARIABLES = {"aviris_salton_sea_224/salton_sea_roi.mat": "I"}  # it also holds the 3-D `rgb` preview


@pytest.mark.parametrize("name", sorted(SHARED_SHAPES))
def test_every_shared_cube_reads_with_the_same_shape(shared_data: Path, name: str) -> None:
    from hsidenoise.io import open_cube

    with open_cube(shared_data / name, var=SHARED_VARIABLES.get(name)) as reader:
        assert reader.shape == SHARED_SHAPES[name]


def bands_first(bands: int = 9, rows: int = 11, cols: int = 13) -> np.ndarray:
    return np.random.default_rng(2).random((bands, rows, cols))


def write_array(path: Path, array: np.ndarray, **variables) -> None:
    """`array` stored as it is (MAT v5 with scipy, HDF5 with h5py), plus metadata variables / attributes."""
    if path.suffix == ".mat":
        import scipy.io

        scipy.io.savemat(str(path), {"cube": array, **variables})
        return
    import h5py

    with h5py.File(path, "w") as file:
        dataset = file.create_dataset("cube", data=array)
        for key, value in variables.items():
            dataset.attrs[key] = value


@pytest.mark.parametrize("suffix", [".mat", ".h5"])
def test_bands_first_is_found_from_the_wavelengths(tmp_path: Path, suffix: str) -> None:
    array = bands_first()
    write_array(tmp_path / f"c{suffix}", array, wavelength=np.linspace(400, 900, 9))
    cube = read_cube(tmp_path / f"c{suffix}")
    assert cube.shape == (9, 11, 13)
    np.testing.assert_array_equal(cube.data, array)
    assert len(cube.meta.wavelengths) == 9


@pytest.mark.parametrize("suffix", [".mat", ".h5"])
def test_bands_first_is_found_from_a_square_image_behind_fewer_bands(tmp_path: Path, suffix: str) -> None:
    array = bands_first(7, 23, 23)
    write_array(tmp_path / f"c{suffix}", array)
    cube = read_cube(tmp_path / f"c{suffix}")
    assert cube.shape == (7, 23, 23)
    np.testing.assert_array_equal(cube.data, array)


@pytest.mark.parametrize("suffix", [".mat", ".h5"])
def test_an_ambiguous_shape_asks_for_axes(tmp_path: Path, suffix: str) -> None:
    from hsidenoise.errors import HsiDenoiseError

    write_array(tmp_path / f"c{suffix}", bands_first(40, 23, 23))  # 40 bands of 23 x 23, or 40 x 23 with 23 bands?
    with pytest.raises(HsiDenoiseError, match="--axes") as error:
        read_cube(tmp_path / f"c{suffix}")
    assert "\n" not in str(error.value)
    assert read_cube(tmp_path / f"c{suffix}", axes="bhw").shape == (40, 23, 23)
    assert read_cube(tmp_path / f"c{suffix}", axes="hwb").shape == (23, 40, 23)


def test_bands_first_in_mat_v73(tmp_path: Path) -> None:
    import h5py

    array = bands_first()
    with h5py.File(tmp_path / "c.mat", "w", userblock_size=512) as file:
        file.create_dataset("cube", data=array.T).attrs["MATLAB_class"] = np.bytes_("double")
        file.create_dataset("wl", data=np.linspace(0.4, 0.9, 9)[None, :]).attrs["MATLAB_class"] = np.bytes_("double")
    with open(tmp_path / "c.mat", "r+b") as file:
        file.write(b"MATLAB 7.3 MAT-file, Platform: test, HDF5 schema 1.00 .".ljust(116) + b"\0" * 8 + b"\x00\x02IM")
    cube = read_cube(tmp_path / "c.mat")
    assert cube.shape == (9, 11, 13)
    np.testing.assert_array_equal(cube.data, array)


def test_the_usual_layout_is_kept_when_wavelengths_agree(tmp_path: Path) -> None:
    array = np.random.default_rng(0).random((11, 13, 9))  # H x W x B
    write_array(tmp_path / "c.mat", array, wl=np.linspace(0.4, 0.9, 9))
    assert read_cube(tmp_path / "c.mat").shape == (9, 11, 13)
    write_array(tmp_path / "d.mat", np.random.default_rng(0).random((80, 100, 162)))  # HYDICE-like, no wavelengths
    assert read_cube(tmp_path / "d.mat").shape == (162, 80, 100)


AXIS_RULE_CASES = [  # (shape, wavelengths, matlab, expected axes or None for a refusal)
    ((224, 512, 614), None, False, "bhw"),  # a real bands-first scene, plain HDF5
    ((224, 512, 614), None, True, "bhw"),  # the same saved with scipy from a bands-first numpy array
    ((610, 340, 103), None, False, "hwb"),
    ((31, 64, 48), None, False, None),  # 31 bands of 64 x 48, or 48 bands of 31 x 64: refused
    ((31, 64, 48), None, True, "hwb"),  # MATLAB's convention when nothing is clear
    ((40, 40, 40), None, False, None),
    ((40, 40, 40), None, True, None),
    ((40, 40, 40), 40, True, None),
    ((100, 10, 120), None, False, None),  # the smallest axis in the middle: refused for plain HDF5
    ((100, 10, 120), None, True, "hwb"),
    ((40, 23, 23), None, True, None),  # a stack of square images behind more "bands" than pixels per side
    ((20, 23, 23), None, True, None),  # ... or behind not clearly fewer
    ((11, 23, 23), None, True, "bhw"),
    ((1, 50, 30), None, True, "hwb"),  # one row of pixels in MATLAB
    ((1, 50, 30), None, False, None),
    ((51, 56, 224), 224, True, "hwb"),  # Salton Sea with its `wl` vector
    ((11, 9, 13), 9, False, "hbw"),  # the wavelengths name the middle axis
    ((9, 11, 9), 9, True, "hwb"),  # they fit two axes: MATLAB's last one
    ((9, 11, 9), 9, False, None),
    ((31, 64, 48), 50, False, None),  # wavelengths that fit no axis say nothing
    ((51, 88, 72), None, True, "hwb"),  # MUUFL
    ((80, 100, 162), None, True, "hwb"),  # HYDICE
    ((100, 100, 205), None, True, "hwb"),  # ABU
    ((256, 256, 31), None, True, "hwb"),  # CAVE
]


@pytest.mark.parametrize(("shape", "wavelengths", "matlab", "expected"), AXIS_RULE_CASES)
def test_the_band_axis_rule(shape, wavelengths, matlab: bool, expected: str | None) -> None:
    from hsidenoise.errors import CubeShapeError
    from hsidenoise.io.base import infer_axes

    if expected is not None:
        assert infer_axes(shape, wavelengths, where="x", matlab=matlab) == expected
        return
    with pytest.raises(CubeShapeError, match="--axes") as error:
        infer_axes(shape, wavelengths, where="x", matlab=matlab)
    message = str(error.value)
    assert "\n" not in message
    assert "x".join(map(str, shape)) in message
    assert ("--axes bhw" in message or "--axes hbw" in message) and "--axes hwb" in message  # both readings


def test_a_plain_hdf5_array_without_a_clear_band_axis_is_refused(tmp_path: Path) -> None:
    array = bands_first(31, 64, 48)  # read as 48 bands of 31 x 64 before
    write_array(tmp_path / "c.h5", array)
    result = invoke("info", tmp_path / "c.h5", code=1)
    message = result.stderr.strip()
    assert message.count("\n") == 0
    assert "31 bands of 64x48 pixels (--axes bhw)" in message and "31x64 pixels of 48 bands (--axes hwb)" in message
    np.testing.assert_array_equal(read_cube(tmp_path / "c.h5", axes="bhw").data, array)


@pytest.mark.parametrize("suffix", [".mat", ".h5"])
def test_three_equal_axes_are_refused(tmp_path: Path, suffix: str) -> None:
    from hsidenoise.errors import CubeShapeError

    array = bands_first(6, 6, 6)
    write_array(tmp_path / f"c{suffix}", array)
    with pytest.raises(CubeShapeError, match="equal.*--axes"):
        read_cube(tmp_path / f"c{suffix}")
    np.testing.assert_array_equal(read_cube(tmp_path / f"c{suffix}", axes="bhw").data, array)


@pytest.mark.parametrize("suffix", [".mat", ".h5"])
def test_a_clearly_smallest_first_axis_holds_the_bands(tmp_path: Path, suffix: str) -> None:
    array = bands_first(5, 17, 13)  # not square: the square-image rule of before missed it
    write_array(tmp_path / f"c{suffix}", array)
    np.testing.assert_array_equal(read_cube(tmp_path / f"c{suffix}").data, array)


def test_a_clearly_smallest_last_axis_holds_the_bands_in_plain_hdf5(tmp_path: Path) -> None:
    array = bands_first(5, 17, 13)
    write_array(tmp_path / "c.h5", array.transpose(1, 2, 0))  # 17 x 13 x 5
    np.testing.assert_array_equal(read_cube(tmp_path / "c.h5").data, array)


def test_mat_files_keep_matlabs_layout_when_nothing_is_clear(tmp_path: Path) -> None:
    array = bands_first(9, 13, 17)
    write_array(tmp_path / "c.mat", array.transpose(1, 2, 0))  # 13 x 17 x 9: no axis clearly the smallest
    np.testing.assert_array_equal(read_cube(tmp_path / "c.mat").data, array)
    write_array(tmp_path / "c.h5", array.transpose(1, 2, 0))  # the same shape in plain HDF5 is refused
    with pytest.raises(Exception, match="--axes hwb"):
        read_cube(tmp_path / "c.h5")


def test_the_wavelengths_can_name_the_middle_axis(tmp_path: Path) -> None:
    array = bands_first(9, 11, 13)
    write_array(tmp_path / "c.h5", array.transpose(1, 0, 2), wavelength=np.linspace(400, 900, 9))  # 11 x 9 x 13
    np.testing.assert_array_equal(read_cube(tmp_path / "c.h5").data, array)


@pytest.mark.parametrize("suffix", [".mat", ".h5"])
def test_an_axes_attribute_or_variable_and_then_the_option_win(tmp_path: Path, suffix: str) -> None:
    array = bands_first(7, 13, 11)  # refused by shape alone in plain HDF5; "hwb" by MATLAB's convention
    write_array(tmp_path / f"c{suffix}", array, axes="bhw")
    np.testing.assert_array_equal(read_cube(tmp_path / f"c{suffix}").data, array)
    np.testing.assert_array_equal(read_cube(tmp_path / f"c{suffix}", axes="hwb").data, array.transpose(2, 0, 1))


@pytest.mark.parametrize(("name", "fmt"), [("x.h5", None), ("x.mat", "mat"), ("x.mat", "mat73")])
@pytest.mark.parametrize("shape", [(6, 6, 6), (5, 7, 13), (40, 23, 23)])
def test_our_own_outputs_never_depend_on_the_shape_rule(tmp_path: Path, name, fmt, shape) -> None:
    cube = Cube(bands_first(*shape).astype(np.float32), CubeMeta())
    write_cube(tmp_path / name, cube, fmt=fmt)
    np.testing.assert_array_equal(read_cube(tmp_path / name).data, cube.data)


def test_a_plain_hdf5_file_named_mat_is_read_as_hdf5(tmp_path: Path) -> None:
    import h5py

    array = bands_first(5, 17, 13)
    with h5py.File(tmp_path / "c.mat", "w") as file:  # what h5py users save under .mat
        file.create_dataset("cube", data=array.transpose(1, 2, 0))  # 17 x 13 x 5 in C order
    np.testing.assert_array_equal(read_cube(tmp_path / "c.mat").data, array)
    with h5py.File(tmp_path / "d.mat", "w") as file:
        file.create_dataset("cube", data=bands_first(7, 13, 11))  # the HDF5 rule applies: refused
    result = invoke("info", tmp_path / "d.mat", code=1)
    assert "--axes bhw" in result.stderr and "Unknown mat file type" not in result.stderr


# ---------------------------------------------------------------------------------------------- info


def test_info_shows_the_georeferencing(tmp_path: Path, tiny_cube) -> None:
    import json

    data = tiny_cube(bands=7, rows=21, cols=19)
    data.astype("<f4").tofile(tmp_path / "geo.img")
    (tmp_path / "geo.hdr").write_text(
        "ENVI\nsamples = 19\nlines = 21\nbands = 7\nheader offset = 0\ndata type = 4\ninterleave = bsq\n"
        "byte order = 0\nmap info = { UTM , 1 , 1 , 579717.180 , 3714550.700 , 16.900 , 16.900 , 11 , North , "
        "WGS-84 , units=Meters , rotation=34.0000 }\n"
    )
    facts = json.loads(invoke("info", tmp_path / "geo.hdr", "--json").stdout)
    geo = facts["georeferencing"]
    assert geo["crs"] == "EPSG:32611"
    assert geo["pixel_size"] == pytest.approx([16.9, 16.9])
    assert geo["rotation_degrees"] == pytest.approx(34.0)
    assert geo["origin"] == pytest.approx([579717.18, 3714550.7])
    text = invoke("info", tmp_path / "geo.hdr").stdout
    assert "EPSG:32611" in text and "rotated 34" in text
    write_cube(tmp_path / "plain.h5", Cube(data))
    assert json.loads(invoke("info", tmp_path / "plain.h5", "--json").stdout)["georeferencing"] is None


def test_memory_estimate_counts_the_method_and_its_sample() -> None:
    from hsidenoise.methods.memory import estimate_memory
    from hsidenoise.tiling import TileConfig

    config = TileConfig()
    tiny, small, large = (31, 40, 40), (31, 300, 300), (31, 1200, 1200)
    for shape in (tiny, small, large):
        assert estimate_memory(shape, "float32", config, method="lowrank") > estimate_memory(shape, "float32", config)
        assert estimate_memory(shape, "float32", config, method="identity") == estimate_memory(shape, "float32", config)
    # The method's fit works on a pixel sample that grows with the scene up to its fixed size.
    def method_part(shape):
        return estimate_memory(shape, "float32", config, method="lowrank") - estimate_memory(shape, "float32", config)

    assert method_part(tiny) < method_part(small) == method_part(large)


@pytest.mark.parametrize("fmt", ["mat", "mat73"])
def test_our_mat_files_read_back_when_cols_equal_bands(tmp_path, fmt):
    """A rows x cols x bands cube with cols == bands is ambiguous by shape (`infer_axes` refuses it), so our
    writers record the axis order in an ``axes`` variable and the reader follows it."""
    cube = Cube(np.random.default_rng(0).random((7, 9, 7)).astype(np.float32), CubeMeta())
    path = tmp_path / "x.mat"
    write_cube(path, cube, fmt=fmt)
    back = read_cube(path)
    np.testing.assert_array_equal(back.data, cube.data)


# ------------------------------------------------------------------------------ header values that are unusable


@pytest.mark.parametrize("factor", ["0", "-inf", "-2.5", "nan"])
def test_an_unusable_scale_factor_is_ignored_with_a_warning(tmp_path: Path, tiny_cube, caplog, factor) -> None:
    import logging

    write_cube(tmp_path / "x.hdr", Cube(tiny_cube()))
    header = tmp_path / "x.hdr"
    header.write_text(header.read_text() + f"reflectance scale factor = {factor}\n")
    with caplog.at_level(logging.WARNING, logger="hsidenoise"):
        cube = read_cube(header)
    assert cube.meta.scale_factor is None
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "reflectance scale factor" in warnings[0]
    write_cube(tmp_path / "y.hdr", cube)
    assert "scale factor" not in (tmp_path / "y.hdr").read_text()  # not copied into outputs


def test_a_usable_scale_factor_is_kept(tmp_path: Path, tiny_cube) -> None:
    write_cube(tmp_path / "x.hdr", Cube(tiny_cube(), CubeMeta(scale_factor=10000.0)))
    assert read_cube(tmp_path / "x.hdr").meta.scale_factor == 10000.0


def test_noise_creates_a_missing_output_folder(tmp_path: Path, tiny_cube) -> None:
    write_cube(tmp_path / "clean.h5", Cube(tiny_cube()))
    invoke("noise", tmp_path / "clean.h5", "-o", tmp_path / "new" / "dir" / "x.h5", "--recipe", "gauss",
           "--write-clean", tmp_path / "other" / "c.h5")  # fmt: skip
    assert read_cube(tmp_path / "new" / "dir" / "x.h5").shape == (5, 7, 13)
    assert read_cube(tmp_path / "other" / "c.h5").shape == (5, 7, 13)
    # A refused run leaves no folder behind: the second output exists already.
    invoke("noise", tmp_path / "clean.h5", "-o", tmp_path / "gone" / "x.h5", "--recipe", "gauss",
           "--write-clean", tmp_path / "clean.h5", code=1)  # fmt: skip
    assert not (tmp_path / "gone").exists()
