"""`hsidenoise eval`: JSON and report files, dead bands out of the means, shape refusals.

Through Typer's CliRunner (helpers and fixtures in ``cli_support.py``). A failure must give the documented exit
code (1 bad data or a failed run, 2 bad usage), one line on stderr without a traceback, nothing on stdout, no
output or temporary file, and an untouched input.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from cli_support import PNG_MAGIC, assert_refused, invoke, snapshot

from hsidenoise.cli import app
from hsidenoise.cube import Cube, CubeMeta
from hsidenoise.io import read_cube, write_cube

# ------------------------------------------------------------------------------------------------------ eval


def test_eval_json_and_report_files(runner, work):
    invoke(
        runner,
        "noise",
        work / "clean.hdr",
        "-o",
        work / "noisy.hdr",
        "--recipe",
        "gauss",
        "--sigma-max",
        20,
        "--write-clean",
        work / "ref.hdr",
    )
    ref = read_cube(work / "ref.hdr").data.astype(np.float64)
    noisy = read_cube(work / "noisy.hdr").data.astype(np.float64)
    # a "denoised" cube halfway between the noisy one and the reference
    write_cube(work / "half.tif", Cube(((ref + noisy) / 2).astype(np.float32), CubeMeta()))
    out = work / "scores"
    document = json.loads(
        invoke(
            runner,
            "eval",
            work / "half.tif",
            "--ref",
            work / "ref.hdr",
            "--noisy",
            work / "noisy.hdr",
            "-o",
            out,
            "--json",
        ).stdout
    )
    expected = np.mean([10 * np.log10(1 / np.mean((noisy[b] - ref[b]) ** 2)) for b in range(9)])
    assert document["noisy"]["mpsnr"] == pytest.approx(expected, abs=0.01)
    assert document["denoised"]["mpsnr"] == pytest.approx(expected + 20 * np.log10(2), abs=0.05)
    assert document["denoised"]["sam_rad"] < document["noisy"]["sam_rad"]
    assert sorted(p.name for p in out.iterdir()) == ["metrics.csv", "metrics.json", "per_band.png"]
    assert json.loads((out / "metrics.json").read_text())["denoised"]["mpsnr"] == pytest.approx(
        document["denoised"]["mpsnr"]
    )
    csv_lines = (out / "metrics.csv").read_text().strip().splitlines()
    assert len(csv_lines) >= 1 + 9
    assert (out / "per_band.png").read_bytes()[:8] == PNG_MAGIC
    table = invoke(runner, "eval", work / "half.tif", "--ref", work / "ref.hdr", "--ssim", "matlab").stdout
    assert "MPSNR" in table and f"{document['denoised']['mpsnr']:.2f}" in table


def test_eval_leaves_dead_bands_passed_through_out_of_the_means(runner, tmp_path):
    """`eval out.hdr --ref scene.hdr` on a real run's output: its dead bands were passed through unchanged and
    gave MPSNR inf (table) and null (JSON). The means are over the bands that differ, a note lists the others;
    --quiet prints nothing; --peak's help says what the default is."""
    rng = np.random.default_rng(11)
    ref = rng.random((7, 13, 17)).astype(np.float32) * 900.0 - 20.0  # raw units with negative values
    ref[[0, 4]] = 0.0  # dead bands
    denoised = ref + rng.normal(0, 3.0, ref.shape).astype(np.float32)
    denoised[[0, 4]] = 0.0  # passed through unchanged
    write_cube(tmp_path / "ref.hdr", Cube(ref, CubeMeta()))
    write_cube(tmp_path / "out.hdr", Cube(denoised, CubeMeta()))
    result = invoke(runner, "eval", tmp_path / "out.hdr", "--ref", tmp_path / "ref.hdr", "--json")
    scores = json.loads(result.stdout)["denoised"]
    differ = [1, 2, 3, 5, 6]
    peak = float(ref.max() - ref.min())
    errors = (denoised.astype(np.float64) - ref) ** 2
    expected = np.mean([10 * np.log10(peak**2 / errors[b].mean()) for b in differ])
    assert scores["mpsnr"] == pytest.approx(expected, abs=1e-6)
    assert scores["identical_bands"] == [0, 4] and scores["all_identical"] is False
    assert any("left out of the means" in note for note in scores["notes"])
    table = invoke(runner, "eval", tmp_path / "out.hdr", "--ref", tmp_path / "ref.hdr")
    assert f"{expected:.2f}" in table.stdout and "inf" not in table.stdout
    assert "left out of the means" in " ".join(table.stderr.split())
    same = invoke(runner, "eval", tmp_path / "ref.hdr", "--ref", tmp_path / "ref.hdr")
    assert "identical" in same.stdout and "every band is identical" in " ".join(same.stderr.split())
    quiet = invoke(runner, "eval", tmp_path / "out.hdr", "--ref", tmp_path / "ref.hdr", "--quiet", "-o", tmp_path / "s")
    assert quiet.stdout == "" and quiet.stderr == "" and (tmp_path / "s" / "metrics.json").is_file()
    help_result = runner.invoke(app, ["eval", "--help"], env={"COLUMNS": "2000"})
    help_text = " ".join(help_result.stdout.split())
    assert "max - min when it has negative values" in help_text and "--quiet" in help_text


def test_eval_refuses_cubes_of_different_shapes(runner, work):
    before = snapshot(work)
    result = runner.invoke(app, ["eval", str(work / "clean.hdr"), "--ref", str(work / "clean.tif"), "--json"])
    assert "shape" in assert_refused(result, 1, before, work)


def test_eval_warns_when_the_cube_and_the_reference_are_on_different_scales(runner, tmp_path):
    """A cube that `hsidenoise noise` normalised to 0..1, scored against the raw scene it came from: the scores
    are meaningless, and one warning line says why and what to use instead; cubes on the same scale get none."""
    rng = np.random.default_rng(3)
    raw = rng.uniform(40.0, 35000.0, (5, 11, 13)).astype(np.float32)
    normalised = (raw - raw.min()) / (raw.max() - raw.min())
    write_cube(tmp_path / "raw.hdr", Cube(raw, CubeMeta()))
    write_cube(tmp_path / "unit.tif", Cube(normalised + rng.normal(0, 0.01, raw.shape).astype(np.float32), CubeMeta()))
    write_cube(tmp_path / "unit_ref.tif", Cube(normalised, CubeMeta()))
    result = invoke(runner, "eval", tmp_path / "unit.tif", "--ref", tmp_path / "raw.hdr")
    warning = " ".join(result.stderr.split())
    assert "different scales" in warning and "--write-clean" in warning
    assert sum("different scales" in line for line in result.stderr.splitlines()) == 1
    same = invoke(runner, "eval", tmp_path / "unit.tif", "--ref", tmp_path / "unit_ref.tif")
    assert "different scales" not in same.stderr
    # a no-data fill far outside the data (5 % of the pixels) is not the reference's scale
    filled = normalised.copy()
    filled[:, :3, :] = -9999.0
    write_cube(tmp_path / "filled_ref.hdr", Cube(filled, CubeMeta(nodata=-9999.0)))
    nodata = invoke(runner, "eval", tmp_path / "unit.tif", "--ref", tmp_path / "filled_ref.hdr")
    assert "different scales" not in nodata.stderr
