"""`hsidenoise info`: the table and JSON, dead and NaN bands, real cubes.

Through Typer's CliRunner (helpers and fixtures in ``cli_support.py``). A failure must give the documented exit
code (1 bad data or a failed run, 2 bad usage), one line on stderr without a traceback, nothing on stdout, no
output or temporary file, and an untouched input.
"""

from __future__ import annotations

import json

from cli_support import DEAD, NAN, invoke

# ------------------------------------------------------------------------------------------------------ info


def test_info_table_and_json_list_dead_and_nan_bands(runner, cubes):
    table = invoke(runner, "info", cubes / "dirty.hdr").stdout
    assert "9 bands x 23 rows x 29 cols" in table
    assert "450 - 850 nm" in table
    facts = json.loads(invoke(runner, "info", cubes / "dirty.hdr", "--json").stdout)
    assert facts["shape"] == {"bands": 9, "rows": 23, "cols": 29}
    assert facts["format"] == "envi" and facts["dtype"] == "float32"
    assert facts["dead_bands"] == [DEAD]
    assert facts["nan_or_nodata_bands"] == [NAN]
    assert facts["wavelength_range"] == [450.0, 850.0]
    sigma = facts["noise_sigma"]
    assert sigma["per_band"][DEAD] is None and sigma["per_band"][NAN] is None
    assert all(sigma["per_band"][b] > 0 for b in range(9) if b not in (DEAD, NAN))
    assert DEAD not in sigma["noisiest_bands"] and NAN not in sigma["noisiest_bands"]
    assert facts["memory_needed_bytes"]["whole_cube_float32"] == 9 * 23 * 29 * 4


def test_info_json_without_problem_bands(runner, cubes):
    facts = json.loads(invoke(runner, "info", cubes / "clean.tif", "--json").stdout)
    assert facts["format"] == "geotiff" and facts["shape"] == {"bands": 7, "rows": 21, "cols": 25}
    assert facts["dead_bands"] == [] and facts["nan_or_nodata_bands"] == []


def test_info_on_real_cubes_lists_their_dead_and_nan_bands(runner, shared_data):
    """The real AVIRIS cubes: 43 zero-filled bands (Santa Barbara), 20 NaN bands with bbl = 0 (Salton Sea)."""
    facts = json.loads(
        invoke(
            runner, "info", shared_data / "aviris_santa_barbara_lacumbre_224" / "a_hsi_img_for_VI_demo.mat", "--json"
        ).stdout
    )
    assert facts["shape"] == {"bands": 224, "rows": 90, "cols": 90}
    assert facts["dead_bands"] == [0, 1, *range(96, 116), *range(153, 171), 221, 222, 223]
    salton = shared_data / "aviris_salton_sea_224" / "salton_sea_roi.mat"
    facts = json.loads(invoke(runner, "info", salton, "--var", "I", "--json").stdout)
    nan_bands = [*range(107, 113), *range(153, 167)]
    assert facts["nan_or_nodata_bands"] == nan_bands
    assert facts["bad_band_list_zeros"] == nan_bands
