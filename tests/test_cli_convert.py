"""`hsidenoise convert`: between formats with data and wavelengths kept, output types, a real cube.

Through Typer's CliRunner (helpers and fixtures in ``cli_support.py``). A failure must give the documented exit
code (1 bad data or a failed run, 2 bad usage), one line on stderr without a traceback, nothing on stdout, no
output or temporary file, and an untouched input.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from cli_support import FORMAT_SUFFIXES, invoke

from hsidenoise.io import read_cube

# --------------------------------------------------------------------------------------------------- convert


@pytest.mark.parametrize(("source", "target"), [(a, b) for a in FORMAT_SUFFIXES for b in FORMAT_SUFFIXES if a != b])
def test_convert_between_formats_keeps_data_and_wavelengths(runner, work, source, target):
    """Every ordered pair of formats; the source is made from the ENVI cube first when it is not ENVI."""
    original = read_cube(work / "dirty.hdr")
    start = work / f"start{FORMAT_SUFFIXES[source]}"
    if source != "envi":
        invoke(runner, "convert", work / "dirty.hdr", "-o", start, "-q")
    else:
        start = work / "dirty.hdr"
    out = work / f"out{FORMAT_SUFFIXES[target]}"
    document = json.loads(invoke(runner, "convert", start, "-o", out, "--json").stdout)
    assert document["output"] == str(out)
    converted = read_cube(out)
    assert converted.shape == original.shape and converted.data.dtype == np.float32
    np.testing.assert_array_equal(converted.data, original.data)  # NaN band included
    np.testing.assert_allclose(converted.meta.wavelengths, original.meta.wavelengths)
    assert converted.meta.wavelength_units == "nm"


def test_convert_dtype_same_and_float32_and_mat73(runner, work):
    original = read_cube(work / "ints.hdr")
    invoke(runner, "convert", work / "ints.hdr", "-o", work / "ints.tif", "--dtype", "same", "-q")
    kept = read_cube(work / "ints.tif")
    assert kept.data.dtype == np.int16
    np.testing.assert_array_equal(kept.data, original.data)
    invoke(runner, "convert", work / "ints.tif", "-o", work / "same.h5", "-q")  # the input's type is the default
    assert read_cube(work / "same.h5").data.dtype == np.int16
    invoke(runner, "convert", work / "ints.tif", "-o", work / "floats.h5", "--dtype", "float32", "-q")
    assert read_cube(work / "floats.h5").data.dtype == np.float32
    invoke(runner, "convert", work / "ints.hdr", "-o", work / "v73.mat", "--to", "mat73", "-q")
    with open(work / "v73.mat", "rb") as file:
        assert b"MATLAB 7.3" in file.read(128)
    np.testing.assert_array_equal(read_cube(work / "v73.mat").data, original.data)


def test_convert_real_cave_cube(runner, tmp_path, shared_data):
    source = shared_data / "cave_256" / "real_and_fake_apples_ms_256.mat"
    invoke(runner, "convert", source, "-o", tmp_path / "apples.tif", "--dtype", "same", "-q")
    converted = read_cube(tmp_path / "apples.tif")
    assert converted.data.dtype == np.uint16
    np.testing.assert_array_equal(converted.data, read_cube(source).data)


def test_convert_keeps_float64_by_default_and_reports_a_clip_even_when_quiet(runner, tmp_path):
    from hsidenoise.cube import Cube, CubeMeta
    from hsidenoise.io import write_cube

    huge = np.full((3, 5, 4), 1e300, dtype=np.float64)
    huge[1] = np.arange(20, dtype=np.float64).reshape(5, 4)
    write_cube(tmp_path / "huge.h5", Cube(huge, CubeMeta()), dtype="same")
    kept = invoke(runner, "convert", tmp_path / "huge.h5", "-o", tmp_path / "kept.mat", "--to", "mat73", "--quiet")
    assert kept.stderr == ""
    np.testing.assert_array_equal(read_cube(tmp_path / "kept.mat").data, huge)
    clipped = invoke(runner, "convert", tmp_path / "huge.h5", "-o", tmp_path / "f32.mat", "--to", "mat73",
                     "--dtype", "float32", "--quiet")
    assert "40 value(s)" in clipped.stderr and "clipped" in clipped.stderr
