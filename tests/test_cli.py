"""The command line end to end through Typer's CliRunner: every command, its JSON, its files, and bad input.

Cubes are tiny synthetic ones of odd shapes written with `hsidenoise.io.write_cube`, plus crops of real cubes
from ../shared/data. A failure must give the documented exit code (1 bad data or a failed run, 2 bad usage),
one line on stderr without a traceback, nothing on stdout, no output or temporary file, and an untouched input.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from hsidenoise import __version__
from hsidenoise.cli import app
from hsidenoise.cube import Cube, CubeMeta
from hsidenoise.io import read_cube, write_cube
from hsidenoise.tiling import TileConfig, plan_tiles

RECIPES = ("gauss", "noniid", "corr", "stripe", "deadline", "impulse", "mixture")
FORMAT_SUFFIXES = {"envi": ".hdr", "geotiff": ".tif", "mat": ".mat", "hdf5": ".h5"}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def runner() -> CliRunner:
    return CliRunner()


def invoke(runner: CliRunner, *args: object, code: int = 0):
    """Run the CLI in-process; check the exit code (print what it said when it is not the expected one)."""
    result = runner.invoke(app, [str(arg) for arg in args])
    assert result.exit_code == code, (
        f"exit {result.exit_code} (expected {code}) for {args}\nstdout: {result.stdout}\nstderr: {result.stderr}"
        + (
            f"\nexception: {result.exception!r}"
            if result.exception and not isinstance(result.exception, SystemExit)
            else ""
        )
    )
    return result


def snapshot(folder: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under ``folder``, hidden ones included."""
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def assert_refused(result, code: int, before: dict[str, str], folder: Path, *, ours: bool = True) -> str:
    """A refusal: the exit code, nothing on stdout, no traceback, the folder exactly as it was, and (for our
    own messages, not Typer's usage errors) exactly one line on stderr. Returns the last line of stderr."""
    assert result.exit_code == code, f"exit {result.exit_code}, expected {code}; stderr: {result.stderr}"
    assert "Traceback" not in result.stderr + result.stdout
    assert result.stdout == ""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines, "nothing on stderr"
    if ours:
        assert len(lines) == 1, result.stderr
    assert snapshot(folder) == before, "a file was written, left behind or changed"
    return lines[-1]


def smooth_cube(bands: int, rows: int, cols: int, seed: int = 0) -> np.ndarray:
    """(B, H, W) float32 in about [0.1, 0.9]: three smooth spectra mixed by smooth abundances, plus 1 % noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:rows, 0:cols] / max(rows, cols)
    abundances = np.stack([np.sin(3 * x + 1) ** 2, np.cos(2 * y) ** 2, x * y])  # (3, H, W)
    spectra = 0.2 + 0.25 * (
        1 + np.sin(np.linspace(0, 3, bands)[:, None] * rng.uniform(0.5, 2, 3) + rng.uniform(0, 3, 3))
    )
    cube = np.einsum("bk,khw->bhw", spectra, abundances) / 2.2 + 0.1
    return (cube + 0.01 * rng.standard_normal(cube.shape)).astype(np.float32)


def wavelength_meta(bands: int) -> CubeMeta:
    return CubeMeta(wavelengths=np.linspace(450.0, 850.0, bands), wavelength_units="nm")


DEAD, NAN = 2, 5


@pytest.fixture(scope="module")
def cubes(tmp_path_factory) -> Path:
    """A folder of tiny cubes: clean.hdr (9 x 23 x 29), dirty.hdr (the same with a constant band 2 and an
    all-NaN band 5), ints.hdr (int16 11 x 19 x 17), clean.tif (7 x 21 x 25), all with wavelengths."""
    folder = tmp_path_factory.mktemp("cubes")
    clean = smooth_cube(9, 23, 29)
    write_cube(folder / "clean.hdr", Cube(clean, wavelength_meta(9)))
    dirty = clean.copy()
    dirty[DEAD] = 0.25
    dirty[NAN] = np.nan
    write_cube(folder / "dirty.hdr", Cube(dirty, wavelength_meta(9)))
    ints = np.round(smooth_cube(11, 19, 17, seed=1) * 3000 - 200).astype(np.int16)
    write_cube(folder / "ints.hdr", Cube(ints, wavelength_meta(11)), dtype="same")
    write_cube(folder / "clean.tif", Cube(smooth_cube(7, 21, 25, seed=2), wavelength_meta(7)))
    return folder


@pytest.fixture
def work(tmp_path: Path, cubes: Path) -> Path:
    """A fresh folder holding copies of the tiny cubes (tests may damage them)."""
    for path in cubes.iterdir():
        (tmp_path / path.name).write_bytes(path.read_bytes())
    return tmp_path


@pytest.fixture(scope="module")
def real_crop(tmp_path_factory, shared_data: Path) -> Path:
    """A 31 x 40 x 44 uint16 crop of CAVE real_and_fake_apples, as ENVI with its 400-700 nm wavelengths."""
    source = shared_data / "cave_256" / "real_and_fake_apples_ms_256.mat"
    cube = read_cube(source)
    assert cube.shape == (31, 256, 256) and cube.data.dtype == np.uint16
    path = tmp_path_factory.mktemp("real") / "apples.hdr"
    crop = np.ascontiguousarray(cube.data[:, 100:140, 90:134])
    write_cube(
        path, Cube(crop, CubeMeta(wavelengths=np.arange(400.0, 701.0, 10.0), wavelength_units="nm")), dtype="same"
    )
    return path


# ----------------------------------------------------------------------------------------- version / help


def test_version(runner):
    result = invoke(runner, "--version")
    assert result.stdout == f"hsidenoise {__version__}\n"
    done = subprocess.run(
        [sys.executable, "-m", "hsidenoise", "--version"], capture_output=True, text=True, timeout=120, check=False
    )
    assert (done.returncode, done.stdout) == (0, f"hsidenoise {__version__}\n")


def test_help_of_every_command_imports_no_heavy_module():
    """`hsidenoise --help` (and each command's) builds without importing torch, rasterio, h5py or matplotlib."""
    script = (
        "import json, sys\n"
        "from typer.main import get_command\n"
        "from typer.testing import CliRunner\n"
        "import hsidenoise.cli as cli\n"
        "names = sorted(get_command(cli.app).commands)\n"
        "runner = CliRunner()\n"
        "codes = [runner.invoke(cli.app, args).exit_code for args in [['--help']] + [[n, '--help'] for n in names]]\n"
        "heavy = [m for m in ('torch', 'rasterio', 'h5py', 'matplotlib') if m in sys.modules]\n"
        "print(json.dumps({'names': names, 'codes': codes, 'heavy': heavy}))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    facts = json.loads(done.stdout)
    assert facts["names"] == sorted(["noise", "eval", "info", "convert", "run", "train", "finetune", "models"])
    assert facts["codes"] == [0] * (len(facts["names"]) + 1)
    assert facts["heavy"] == []


def test_format_choices_are_the_io_formats(runner):
    from hsidenoise.cli.options import FormatChoice
    from hsidenoise.io import FORMATS

    assert [choice.value for choice in FormatChoice] == list(FORMATS)


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
    invoke(runner, "convert", work / "ints.tif", "-o", work / "floats.h5", "-q")  # float32 is the default
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


def test_run_decsc_lite_on_a_real_crop_with_report(runner, real_crop, tmp_path):
    """The untrained lite preset through the whole pipeline: 4 tiles, solver statistics per tile."""
    report = tmp_path / "report"
    result = invoke(
        runner,
        "run",
        real_crop,
        "-o",
        tmp_path / "apples_out.hdr",
        "--model",
        "lite",
        "--random-weights",
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
    assert document["method"] == "decsc" and document["method_info"]["preset"] == "lite"
    assert document["tiling"]["tiles"] == 4
    # at most --max-iter evaluations in the solve, plus the initial point and lite's two phantom steps
    assert 1 <= document["solver"]["evaluations_max"] <= 4 + 3
    facts = json.loads((report / "report.json").read_text())
    assert [tile["rows"] for tile in facts["tiles"]] == [[0, 32], [0, 32], [8, 40], [8, 40]]
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


# ------------------------------------------------------------------------------------- models / train / finetune


def test_models_json(runner):
    document = json.loads(invoke(runner, "models", "--json").stdout)
    presets = {item["name"]: item for item in document["presets"]}
    assert {"paper", "lite"} <= set(presets)
    assert presets["paper"]["parameters"] == pytest.approx(4.29e6, rel=0.01)
    assert 0 < presets["lite"]["parameters"] < presets["paper"]["parameters"]
    assert isinstance(document["weights"], list)
    assert "paper" in invoke(runner, "models").stdout


TRAIN_ARGS = (
    "--steps-per-epoch",
    2,
    "--patch-size",
    16,
    "--patches-per-cube",
    4,
    "--batch-size",
    2,
    "--json",
    "--quiet",
)


@pytest.fixture(scope="module")
def trained(runner, tmp_path_factory) -> dict[str, Path | dict]:
    """Two tiny training cubes (ENVI 33 bands, GeoTIFF 31 bands) and one epoch of two steps of the default preset (subspace)."""
    folder = tmp_path_factory.mktemp("train")
    data = folder / "data"
    data.mkdir()
    write_cube(data / "a.hdr", Cube(smooth_cube(33, 27, 29, seed=3), CubeMeta()))
    write_cube(data / "b.tif", Cube(smooth_cube(31, 25, 23, seed=4), CubeMeta()))
    out = folder / "run"
    document = json.loads(invoke(runner, "train", "--data", data, "--out", out, "--epochs", 1, *TRAIN_ARGS).stdout)
    return {"data": data, "out": out, "first": document}


def test_train_writes_weights_card_and_checkpoint(trained):
    out, document = trained["out"], trained["first"]
    assert document["steps"] == 2 and document["epochs"] == 1
    weights = Path(document["weights"])
    assert weights.parent == out and weights.suffix == ".safetensors" and weights.stat().st_size > 0
    card = json.loads(weights.with_suffix(".json").read_text())
    assert card["preset"] == "subspace"  # the default preset of train
    assert Path(document["checkpoint"]).is_file()


def test_train_resume_continues_from_the_checkpoint(runner, trained):
    document = json.loads(
        invoke(
            runner, "train", "--data", trained["data"], "--out", trained["out"], "--epochs", 2, "--resume", *TRAIN_ARGS
        ).stdout
    )
    assert document["steps"] == 4 and document["epochs"] == 2


def test_finetune_from_trained_weights(runner, trained, tmp_path):
    document = json.loads(
        invoke(
            runner,
            "finetune",
            "--data",
            trained["data"],
            "--out",
            tmp_path / "ft",
            "--from",
            trained["first"]["weights"],
            "--epochs",
            1,
            *TRAIN_ARGS,
        ).stdout
    )
    weights = Path(document["weights"])
    assert weights.parent == tmp_path / "ft" and weights.is_file() and weights.with_suffix(".json").is_file()
    assert document["steps"] == 2


def test_run_with_trained_weights(runner, trained, work):
    weights = trained["out"] / "decsc-subspace.safetensors"
    document = json.loads(
        invoke(
            runner,
            "run",
            work / "clean.tif",
            "-o",
            work / "w.hdr",
            "--model",
            weights,
            "--tile",
            32,
            "--overlap",
            8,
            "--max-iter",
            3,
            "--json",
        ).stdout
    )
    assert document["method"] == "decsc" and document["method_info"]["preset"] == "subspace"
    out = read_cube(work / "w.hdr").data
    assert out.shape == (7, 21, 25) and np.isfinite(out).all()


def test_train_refuses_missing_data(runner, tmp_path):
    before = snapshot(tmp_path)
    result = runner.invoke(
        app, ["train", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o"), "--epochs", "1"]
    )
    assert "does not exist" in assert_refused(result, 1, before, tmp_path)


# --------------------------------------------------------------------------------------------------- bad input


def _truncate(work: Path) -> list[str]:
    data = (work / "clean.img").read_bytes()
    (work / "clean.img").write_bytes(data[: len(data) // 3])
    return ["info", "clean.hdr"]


def _drop_header_key(work: Path) -> list[str]:
    header = work / "clean.hdr"
    header.write_text("\n".join(line for line in header.read_text().splitlines() if not line.startswith("samples")))
    return ["run", "clean.hdr", "-o", "out.hdr", "--method", "identity"]


def _mat(work: Path, name: str, **arrays: np.ndarray) -> str:
    from scipy.io import savemat

    savemat(work / name, arrays)
    return name


def _put(work: Path, name: str, content: bytes | None = None) -> str:
    """Create ``work/name``: a file holding ``content``, or a folder when it is None."""
    if content is None:
        (work / name).mkdir()
    else:
        (work / name).write_bytes(content)
    return name


def _h5(work: Path, name: str, **arrays: np.ndarray) -> str:
    import h5py

    with h5py.File(work / name, "w") as file:
        for key, value in arrays.items():
            file[key] = value
    return name


CUBE = np.random.default_rng(0).random((6, 5, 7))
BAD_DATA = {
    "truncated ENVI data file": (_truncate, "truncated"),
    "ENVI header missing samples": (_drop_header_key, "samples"),
    "ambiguous MAT variable": (lambda w: ["info", _mat(w, "two.mat", x=CUBE, y=CUBE[:, :, :4])], "several"),
    "wrong MAT variable": (
        lambda w: ["run", _mat(w, "one.mat", x=CUBE), "--var", "nope", "-o", "o.tif", "--method", "identity"],
        "nope",
    ),
    "2-D MAT array": (lambda w: ["info", _mat(w, "flat.mat", x=CUBE[0])], "3-D"),
    "ambiguous HDF5 dataset": (lambda w: ["convert", _h5(w, "two.h5", a=CUBE, b=CUBE), "-o", "o.tif"], "several"),
    "2-D HDF5 dataset": (lambda w: ["noise", _h5(w, "flat.h5", a=CUBE[0]), "-o", "o.tif", "--recipe", "gauss"], "3-D"),
    "unknown input suffix": (lambda w: ["info", _put(w, "cube.xyz", b"\0" * 64)], "suffix"),
    "unknown output suffix": (lambda w: ["run", "clean.hdr", "-o", "out.xyz", "--method", "identity"], "suffix"),
    "missing input": (lambda w: ["run", "nope.hdr", "-o", "o.hdr", "--method", "identity"], "does not exist"),
    "missing input (info)": (lambda w: ["info", "nope.tif"], "no such file"),
    "glob matching nothing": (lambda w: ["run", "none/*.hdr", "-o", "o", "--method", "identity"], "matches"),
    "directory as input": (lambda w: ["info", _put(w, "dir.tif")], "not a regular file"),
    "garbage GeoTIFF": (lambda w: ["info", _put(w, "junk.tif", b"garbage" * 40)], "junk.tif"),
    "garbage HDF5": (lambda w: ["info", _put(w, "junk.h5", b"garbage" * 40)], "junk.h5"),
    "garbage MAT": (lambda w: ["info", _put(w, "junk.mat", b"garbage" * 40)], "junk.mat"),
    "short garbage MAT": (lambda w: ["info", _put(w, "short.mat", b"garbage" * 10)], "short.mat"),
    "output is the input": (
        lambda w: ["run", "clean.hdr", "-o", "clean.hdr", "--method", "identity", "--overwrite"],
        "input",
    ),
    "output is the ENVI data file": (
        lambda w: ["run", "clean.hdr", "-o", "clean.img", "--method", "identity", "--overwrite"],
        "input",
    ),
    "output is a symlink to the input": (
        lambda w: (
            (w / "link.tif").symlink_to(w / "clean.tif")
            or ["run", "clean.tif", "-o", "link.tif", "--method", "identity", "--overwrite"]
        ),
        "input",
    ),
    "output is the input via another path": (
        lambda w: (
            _put(w, "sub") and ["run", "clean.tif", "-o", "sub/../clean.tif", "--method", "identity", "--overwrite"]
        ),
        "input",
    ),
    "convert onto the input's data file": (
        lambda w: ["convert", "clean.hdr", "-o", "clean.img", "--overwrite"],
        "input",
    ),
    "noise onto the input's data file": (
        lambda w: ["noise", "clean.hdr", "-o", "clean.img", "--recipe", "gauss", "--overwrite"],
        "input",
    ),
    "batch into the input folder": (
        lambda w: ["run", "clean.hdr", "clean.tif", "-o", ".", "--method", "identity", "--overwrite"],
        "input",
    ),
    "existing output (run)": (lambda w: ["run", "clean.tif", "-o", "ints.hdr", "--method", "identity"], "exists"),
    "existing output (convert)": (lambda w: ["convert", "clean.tif", "-o", "ints.img"], "exists"),
    "existing output (noise)": (lambda w: ["noise", "clean.tif", "-o", "dirty.hdr", "--recipe", "gauss"], "exists"),
}


@pytest.mark.parametrize("case", list(BAD_DATA))
def test_bad_data_exits_1_with_one_line_and_leaves_nothing(runner, work, case, monkeypatch):
    make, words = BAD_DATA[case]
    args = make(work)
    before = snapshot(work)
    monkeypatch.chdir(work)
    line = assert_refused(runner.invoke(app, args), 1, before, work)
    assert line.startswith("error:") and words in line


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root reads files without read permission")
def test_unreadable_file_exits_1(runner, work):
    (work / "clean.tif").chmod(0)
    try:
        result = runner.invoke(app, ["run", str(work / "clean.tif"), "-o", str(work / "o.tif"), "--method", "identity"])
    finally:
        (work / "clean.tif").chmod(0o644)
    assert result.exit_code == 1 and "permission" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not (work / "o.tif").exists()


BAD_OPTIONS = {
    "tile smaller than twice the overlap": (
        ["run", "clean.hdr", "-o", "o.hdr", "--method", "identity", "--tile", 16, "--overlap", 12],
        True,
    ),
    "unknown preset": (["run", "clean.hdr", "-o", "o.hdr", "--model", "nosuch"], True),
    "band window not the model's": (
        ["run", "clean.hdr", "-o", "o.hdr", "--model", "lite", "--band-window", 7, "--band-stride", 4],
        True,
    ),
    "band stride above the window": (
        ["run", "clean.hdr", "-o", "o.hdr", "--method", "identity", "--band-window", 5, "--band-stride", 6],
        True,
    ),
    "unknown noise recipe": (["noise", "clean.hdr", "-o", "o.hdr", "--recipe", "bogus"], True),
    "several inputs into a file name": (["run", "clean.hdr", "clean.tif", "-o", "o.hdr", "--method", "identity"], True),
    "tile below the minimum": (["run", "clean.hdr", "-o", "o.hdr", "--method", "identity", "--tile", 4], False),
    "unknown method": (["run", "clean.hdr", "-o", "o.hdr", "--method", "bm3d"], False),
    "unknown format": (["info", "clean.hdr", "--format", "bogus"], False),
    "unknown dtype": (["convert", "clean.hdr", "-o", "o.tif", "--dtype", "int7"], False),
    "missing -o": (["run", "clean.hdr", "--method", "identity"], False),
    "unknown option": (["info", "clean.hdr", "--jsn"], False),
}


@pytest.mark.parametrize("case", list(BAD_OPTIONS))
def test_bad_usage_exits_2_and_leaves_nothing(runner, work, case, monkeypatch):
    args, ours = BAD_OPTIONS[case]
    before = snapshot(work)
    monkeypatch.chdir(work)
    line = assert_refused(runner.invoke(app, [str(a) for a in args]), 2, before, work, ours=ours)
    if ours:
        assert line.startswith("error:")


def test_error_messages_are_not_read_as_markup(runner, work):
    """A message holding '[/]' (from a path or a variable name) is printed as it is, not parsed by rich."""
    name = _mat(work, "x.mat", x=CUBE)
    before = snapshot(work)
    result = runner.invoke(app, ["info", str(work / name), "--var", "[/]"])
    assert "'[/]'" in assert_refused(result, 1, before, work)


def test_run_creates_the_output_folder_of_a_single_output(runner, work, monkeypatch):
    monkeypatch.chdir(work)
    result = runner.invoke(app, ["run", "clean.tif", "-o", "new/deeper/out.tif", "--method", "identity", "--quiet"])
    assert result.exit_code == 0, result.output
    assert (work / "new" / "deeper" / "out.tif").is_file()
