"""`hsidenoise noise`: every recipe reproducible per seed, the Gaussian level, refusals.

Through Typer's CliRunner (helpers and fixtures in ``cli_support.py``). A failure must give the documented exit
code (1 bad data or a failed run, 2 bad usage), one line on stderr without a traceback, nothing on stdout, no
output or temporary file, and an untouched input.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from cli_support import RECIPES, assert_refused, invoke, snapshot

from hsidenoise.cli import app
from hsidenoise.io import read_cube

# ----------------------------------------------------------------------------------------------------- noise


@pytest.mark.parametrize("recipe", RECIPES)
def test_noise_recipe_is_reproducible_per_seed(runner, work, recipe):
    source = work / "clean.hdr"
    invoke(
        runner,
        "noise",
        source,
        "-o",
        work / "a.hdr",
        "--recipe",
        recipe,
        "--seed",
        7,
        "--write-clean",
        work / "ref.tif",
    )
    document = json.loads(
        invoke(runner, "noise", source, "-o", work / "b.tif", "--recipe", recipe, "--seed", 7, "--json").stdout
    )
    invoke(runner, "noise", source, "-o", work / "c.hdr", "--recipe", recipe, "--seed", 8, "-q")
    first, again, other = (read_cube(work / name).data for name in ("a.hdr", "b.tif", "c.hdr"))
    reference = read_cube(work / "ref.tif")
    raw = read_cube(source).data.astype(np.float64)
    expected = (raw - raw.min()) / (raw.max() - raw.min())
    np.testing.assert_allclose(reference.data, expected, atol=1e-6)
    assert reference.meta.wavelengths is not None and len(reference.meta.wavelengths) == 9
    assert first.shape == (9, 23, 29) and first.dtype == np.float32
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    assert np.abs(first - reference.data).max() > 0.01
    assert document["recipe"] == recipe and document["seed"] == 7
    assert document["outputs"] == [str(work / "b.tif")]
    assert len(document["sigma_per_band"]) == 9


def test_noise_gauss_level_is_sigma_over_255(runner, work):
    invoke(
        runner,
        "noise",
        work / "clean.hdr",
        "-o",
        work / "n.hdr",
        "--recipe",
        "gauss",
        "--sigma-max",
        25,
        "--write-clean",
        work / "c.hdr",
    )
    difference = read_cube(work / "n.hdr").data - read_cube(work / "c.hdr").data
    assert difference.std() == pytest.approx(25 / 255, rel=0.05)


def test_noise_refuses_a_second_output_without_leaving_the_first(runner, work):
    before = snapshot(work)
    result = runner.invoke(
        app,
        [
            "noise",
            str(work / "clean.hdr"),
            "-o",
            str(work / "new.hdr"),
            "--recipe",
            "gauss",
            "--write-clean",
            str(work / "ints.hdr"),
        ],
    )
    assert "exists" in assert_refused(result, 1, before, work)
    result = runner.invoke(
        app,
        [
            "noise",
            str(work / "clean.hdr"),
            "-o",
            str(work / "x.hdr"),
            "--recipe",
            "gauss",
            "--write-clean",
            str(work / "x.img"),
        ],
    )
    assert "same cube" in assert_refused(result, 2, before, work)
