"""`hsidenoise run`: identity, lowrank and DECSC end to end, reports, batches, failures, output folders.

Through Typer's CliRunner (helpers and fixtures in ``cli_support.py``). A failure must give the documented exit
code (1 bad data or a failed run, 2 bad usage), one line on stderr without a traceback, nothing on stdout, no
output or temporary file, and an untouched input.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from cli_support import (
    DEAD,
    NAN,
    PNG_MAGIC,
    assert_refused,
    invoke,
    smooth_cube,
    snapshot,
)

from hsidenoise.cli import app
from hsidenoise.cube import Cube, CubeMeta
from hsidenoise.io import read_cube, write_cube
from hsidenoise.tiling import TileConfig, plan_tiles

# ------------------------------------------------------------------------------------------------------- run


def test_run_identity_envi_and_geotiff_keep_the_cube(runner, work):
    document = json.loads(
        invoke(
            runner,
            "run",
            work / "dirty.hdr",
            "-o",
            work / "out.hdr",
            "--method",
            "identity",
            "--tile",
            16,
            "--overlap",
            4,
            "--json",
        ).stdout
    )
    original = read_cube(work / "dirty.hdr")
    out = read_cube(work / "out.hdr")
    np.testing.assert_allclose(out.data, original.data, atol=1e-6)  # NaN band compared as NaN
    np.testing.assert_allclose(out.meta.wavelengths, original.meta.wavelengths)
    assert document["untouched_bands"] == {"dead": [DEAD], "nan_or_nodata": [NAN]}
    assert document["tiling"]["tile"] == 16
    assert document["tiling"]["tiles"] == len(plan_tiles(23, 29, TileConfig(tile=16, overlap=4)))
    assert "tiles" not in document  # the per-tile list goes to the report
    invoke(
        runner, "run", work / "ints.hdr", "-o", work / "ints_out.tif", "--method", "identity", "--dtype", "same", "-q"
    )
    ints = read_cube(work / "ints_out.tif")
    assert ints.data.dtype == np.int16
    np.testing.assert_array_equal(ints.data, read_cube(work / "ints.hdr").data)
    invoke(runner, "run", work / "ints.hdr", "-o", work / "ints_out.hdr", "--method", "identity", "-q")
    assert read_cube(work / "ints_out.hdr").data.dtype == np.float32


def test_run_lowrank_geotiff_with_report(runner, work):
    report = work / "report"
    result = invoke(
        runner,
        "run",
        work / "dirty.hdr",
        "-o",
        work / "low.tif",
        "--method",
        "lowrank",
        "--tile",
        32,
        "--overlap",
        8,
        "--report",
        report,
    )
    assert result.stdout == ""
    assert "wrote" in result.stderr
    out = read_cube(work / "low.tif").data
    original = read_cube(work / "dirty.hdr").data
    valid = [b for b in range(9) if b not in (DEAD, NAN)]
    assert np.isfinite(out[valid]).all()
    np.testing.assert_array_equal(out[DEAD], original[DEAD])
    assert np.isnan(out[NAN]).all()
    assert 0 < np.abs(out[valid] - original[valid]).mean() < 0.05  # it changed the cube, not beyond the noise
    facts = json.loads((report / "report.json").read_text())
    assert facts["method"] == "lowrank"
    assert facts["untouched_bands"] == {"dead": [DEAD], "nan_or_nodata": [NAN]}
    assert facts["tiling"]["tiles"] == len(facts["tiles"]) == 1
    assert set(facts["timings_s"]) >= {"statistics", "prepare", "method", "write", "total"}
    assert len(facts["noise_estimate"]["before"]) == 9
    assert facts["profile_bands"] and not {DEAD, NAN} & set(facts["profile_bands"])  # only denoised bands plotted
    for name in ("row_mean_profiles.png", "quicklook.png", "noise_before_after.png"):
        assert (report / name).read_bytes()[:8] == PNG_MAGIC


def test_run_band_window_decsc_on_a_real_crop_with_report(runner, real_crop, noise_aware_weights, tmp_path):
    """The untrained noise-aware band-window network through the whole pipeline: 4 tiles, solver statistics per
    tile."""
    report = tmp_path / "report"
    result = invoke(
        runner,
        "run",
        real_crop,
        "-o",
        tmp_path / "apples_out.hdr",
        "--model",
        noise_aware_weights,
        "--tile",
        32,
        "--overlap",
        8,
        "--max-iter",
        4,
        "--report",
        report,
        "--json",
    )
    document = json.loads(result.stdout)  # the whole of stdout is one JSON document
    assert document["method"] == "decsc" and document["method_info"]["preset"] == "custom"  # not a preset
    assert document["tiling"]["tiles"] == 4
    # at most --max-iter evaluations in the solve, plus the initial point and the model's two phantom steps
    assert 1 <= document["solver"]["evaluations_max"] <= 4 + 3
    facts = json.loads((report / "report.json").read_text())
    assert [tile["rows"] for tile in facts["tiles"]] == [[0, 24], [0, 24], [16, 40], [16, 40]]
    assert all(1 <= tile["evaluations"] <= 4 + 3 and tile["max_residual"] >= 0 for tile in facts["tiles"])
    assert facts["solver"] == document["solver"]
    out = read_cube(tmp_path / "apples_out.hdr")
    source = read_cube(real_crop).data.astype(np.float64)
    assert out.shape == (31, 40, 44) and out.data.dtype == np.float32 and np.isfinite(out.data).all()
    assert np.abs(out.data - source).mean() < 0.1 * (source.max() - source.min())
    np.testing.assert_allclose(out.meta.wavelengths, np.arange(400.0, 701.0, 10.0))
    assert (report / "quicklook.png").read_bytes()[:8] == PNG_MAGIC


def test_run_several_inputs_and_a_glob_into_a_folder_skips_then_overwrites(runner, work):
    other = work / "more"
    other.mkdir()
    for name in ("a.hdr", "b.hdr"):
        write_cube(other / name, Cube(smooth_cube(5, 13, 11, seed=len(name)), CubeMeta()))
    (other / "notes.txt").write_text("not a cube")
    out = work / "batch"
    args = ("run", work / "clean.tif", work / "ints.hdr", f"{other}/*", "-o", out, "--method", "identity")
    first = json.loads(invoke(runner, *args, "--json").stdout)
    names = ["clean.tif", "ints.hdr", "a.hdr", "b.hdr"]
    assert [Path(run["output"]).name for run in first["runs"]] == names
    assert sorted(p.name for p in out.iterdir()) == sorted(names + ["ints.img", "a.img", "b.img"])
    np.testing.assert_array_equal(read_cube(out / "a.hdr").data, read_cube(other / "a.hdr").data)
    written = snapshot(out)
    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    second = json.loads(invoke(runner, *args, "--json").stdout)
    assert [run.get("skipped") for run in second["runs"]] == ["output exists"] * 4
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == stamps
    assert "skipped 4" in invoke(runner, *args).stderr
    (out / "b.hdr").unlink()
    (out / "b.img").unlink()  # as if the batch had been killed before b
    resumed = json.loads(invoke(runner, *args, "--json").stdout)
    assert [run.get("skipped") for run in resumed["runs"]] == ["output exists"] * 3 + [None]
    data_before = {name: read_cube(out / name).data for name in names}
    third = json.loads(invoke(runner, *args, "--overwrite", "--json", "--report", work / "reports").stdout)
    assert all("skipped" not in run for run in third["runs"])
    # same data rewritten: the raw data files are byte-identical; headers and GeoTIFF tags differ only in the
    # provenance (this run's command line and date), so the cubes are compared as read back
    assert snapshot(out).keys() == written.keys()
    assert {k: v for k, v in snapshot(out).items() if k.endswith(".img")} == {
        k: v for k, v in written.items() if k.endswith(".img")
    }
    for name in names:
        np.testing.assert_array_equal(read_cube(out / name).data, data_before[name])
    assert sorted(p.name for p in (work / "reports").iterdir()) == ["a", "b", "clean", "ints"]


def test_run_report_folders_of_inputs_with_the_same_stem(runner, work):
    invoke(
        runner,
        "run",
        work / "clean.hdr",
        work / "clean.tif",
        "-o",
        work / "o",
        "--method",
        "identity",
        "--report",
        work / "r",
        "-q",
    )
    assert sorted(p.name for p in (work / "r").iterdir()) == ["clean_hdr", "clean_tif"]
    assert json.loads((work / "r" / "clean_tif" / "report.json").read_text())["input"] == str(work / "clean.tif")


def test_run_failure_mid_way_leaves_nothing(runner, work, monkeypatch):
    """A method that fails on the third tile: exit 1, one line, no output and no temporary file."""
    from hsidenoise.denoiser import IdentityDenoiser

    calls = []

    def failing(self, tile):
        calls.append(tile.shape)
        if len(calls) == 3:
            raise RuntimeError("simulated crash")
        return np.array(tile, dtype=np.float32)

    monkeypatch.setattr(IdentityDenoiser, "denoise_tile", failing)
    before = snapshot(work)
    result = runner.invoke(
        app,
        [
            "run",
            str(work / "clean.hdr"),
            "-o",
            str(work / "out.tif"),
            "--method",
            "identity",
            "--tile",
            "8",
            "--overlap",
            "2",
            "--batch-size",
            "1",
        ],
    )
    line = assert_refused(result, 1, before, work)
    assert line.startswith("internal error: RuntimeError: simulated crash") and len(calls) == 3
    monkeypatch.setattr(IdentityDenoiser, "denoise_tile", lambda self, tile: (_ for _ in ()).throw(KeyboardInterrupt))
    result = runner.invoke(
        app,
        ["run", str(work / "clean.hdr"), "-o", str(work / "batch"), str(work / "clean.tif"), "--method", "identity"],
    )
    assert result.exit_code == 130 and "interrupted" in result.stderr
    assert snapshot(work) == before and not (work / "batch").exists()


def test_run_creates_the_output_folder_of_a_single_output(runner, work, monkeypatch):
    monkeypatch.chdir(work)
    result = runner.invoke(app, ["run", "clean.tif", "-o", "new/deeper/out.tif", "--method", "identity", "--quiet"])
    assert result.exit_code == 0, result.output
    assert (work / "new" / "deeper" / "out.tif").is_file()
