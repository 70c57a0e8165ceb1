"""Degenerate but valid cubes (issue 10, item 2): they run, never give a non-finite value from finite input, and
pass through unchanged, with a warning saying why, where nothing can be denoised.

Through :func:`hsidenoise.denoise.denoise_array` for ``lowrank`` and the subspace DECSC (an untrained network:
what matters here is the pipeline around it), and through ``hsidenoise run`` in-process for the report: exit 0,
the warning in the JSON, one plain line on stderr (none with ``--quiet``), no Python warning text.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from hsidenoise.cli import app
from hsidenoise.cube import Cube, CubeMeta
from hsidenoise.denoise import denoise_array
from hsidenoise.io import read_cube, write_cube
from hsidenoise.subspace import LowRankConfig, LowRankDenoiser
from hsidenoise.tiling import TileConfig

CONFIG = TileConfig(tile=16, overlap=4)
FAST = LowRankConfig(spatial="dct", regression_iterations=2, loading_iterations=3)


def lowrank() -> LowRankDenoiser:
    return LowRankDenoiser(FAST)


def subspace_decsc() -> LowRankDenoiser:
    from hsidenoise.methods import build_method

    return build_method("decsc", model="subspace", device="cpu")


METHODS = {"lowrank": lowrank, "decsc-subspace": subspace_decsc}


def noisy_low_rank(bands: int = 9, rows: int = 13, cols: int = 15, seed: int = 0) -> np.ndarray:
    """(bands, rows, cols) float64: two smooth abundance maps times two spectra plus noise, max |x| in [0.5, 1)."""
    rng = np.random.default_rng(seed)
    r, c = np.mgrid[0:rows, 0:cols] / max(rows, cols)
    maps = np.stack([np.sin(3 * r) + c, np.cos(2 * c) * r])
    spectra = rng.random((bands, 2))
    cube = np.einsum("bk,khw->bhw", spectra, maps) + 0.05 * rng.standard_normal((bands, rows, cols))
    return cube / (np.abs(cube).max() / 0.75)


def two_spectra(bands: int = 9, rows: int = 11, cols: int = 13) -> np.ndarray:
    """Every pixel is one of two spectra, exactly: no noise for the band regression to find."""
    rng = np.random.default_rng(1)
    first, second = rng.random(bands), rng.random(bands)
    pick = rng.random((rows, cols)) > 0.5
    return np.where(pick[None], first[:, None, None], second[:, None, None]).astype(np.float32)


def one_valid_band() -> np.ndarray:
    cube = np.full((4, 9, 11), 2.0, np.float32)
    cube[1] = np.random.default_rng(2).random((9, 11))
    return cube


def nan_in_every_pixel() -> np.ndarray:
    cube = np.random.default_rng(3).random((6, 9, 9)).astype(np.float32)
    pixel = np.arange(81)
    cube.reshape(6, -1)[pixel % 6, pixel] = np.nan
    return cube


PASS_THROUGH: dict[str, tuple[Callable[[], np.ndarray], str]] = {
    "constant": (lambda: np.full((5, 7, 9), 3.0, np.float32), "every band is constant"),
    "zero": (lambda: np.zeros((3, 8, 5), np.float32), "every band is constant"),
    "int16-single-value": (lambda: np.full((4, 6, 7), 7, np.int16), "every band is constant"),
    "one-pixel": (lambda: np.random.default_rng(4).random((7, 1, 1)).astype(np.float32), "one pixel"),
    "one-band": (lambda: np.random.default_rng(5).random((1, 9, 11)).astype(np.float32), "one band"),
    "one-valid-band": (one_valid_band, "one band"),
    "all-nan": (lambda: np.full((5, 6, 7), np.nan, np.float32), "no band has a valid value"),
    "nan-in-every-pixel": (nan_in_every_pixel, "fewer than 2 pixels"),
    "duplicated-two-valued-bands": (
        lambda: np.repeat((np.random.default_rng(6).random((1, 12, 13)) > 0.5).astype(np.float32), 7, axis=0),
        "no noise found",
    ),
    "two-spectra": (two_spectra, "no noise found"),
    "fewer-pixels-than-bands": (
        lambda: np.random.default_rng(7).integers(0, 4000, (31, 5, 5)).astype(np.int16),
        "25 pixels for 31 bands",
    ),
}

DENOISED: dict[str, Callable[[], np.ndarray]] = {
    "two-bands": lambda: noisy_low_rank(bands=2).astype(np.float32),
    "one-row": lambda: noisy_low_rank(rows=1, cols=17).astype(np.float32),
    "one-column": lambda: noisy_low_rank(rows=17, cols=1).astype(np.float32),
    "nan-bands": lambda: np.concatenate([noisy_low_rank(), np.full((2, 13, 15), np.nan)]).astype(np.float32),
    "two-valued": lambda: (np.random.default_rng(8).random((7, 12, 11)) > 0.5).astype(np.uint8),
    "huge-float32": lambda: (noisy_low_rank() * 4.0e38).astype(np.float32),
    "huge-float64": lambda: noisy_low_rank() * 1e300,
    "tiny-float32": lambda: (noisy_low_rank() * 1e-38).astype(np.float32),
    "subnormal-float32": lambda: (np.random.default_rng(9).integers(1, 60, (5, 9, 10)) * 1e-45).astype(np.float32),
}


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("case", PASS_THROUGH)
def test_nothing_to_denoise_passes_through_unchanged_with_a_warning(case: str, method: str) -> None:
    make, reason = PASS_THROUGH[case]
    cube = make()
    with pytest.warns(UserWarning, match=f"{reason}.*passed through unchanged"):
        out = denoise_array(cube, METHODS[method](), CONFIG)
    np.testing.assert_array_equal(out, cube.astype(out.dtype))


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("case", DENOISED)
def test_degenerate_cubes_that_can_be_denoised_stay_finite_and_warn_nothing(case: str, method: str) -> None:
    cube = DENOISED[case]()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no numpy overflow/invalid warning, no pass-through warning
        out = denoise_array(cube, METHODS[method](), CONFIG)
    finite = np.isfinite(cube)
    assert np.isfinite(out[finite]).all()
    np.testing.assert_array_equal(out[~finite], cube[~finite].astype(out.dtype))


@pytest.mark.parametrize(
    ("dtype", "factor"), [("float64", 2.0**996), ("float32", 2.0**126), ("float64", 2.0**-110)]
)
def test_extreme_values_are_denoised_as_the_same_cube_scaled_by_a_power_of_two(dtype: str, factor: float) -> None:
    base = noisy_low_rank().astype(dtype)  # max |x| in [0.5, 1): the scale brings the extreme cube back to it
    expected = denoise_array(base, lowrank(), CONFIG).astype(np.float64) * factor
    out = denoise_array(base * np.array(factor, dtype), lowrank(), CONFIG)
    assert out.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(out, expected.astype(dtype))


# ------------------------------------------------------------------------------------------------- CLI


def write_envi(path: Path, cube: np.ndarray) -> Path:
    write_cube(path, Cube(cube, CubeMeta()), dtype="same")
    return path


def run_cli(tmp_path: Path, cube: np.ndarray, *options: str):
    source = write_envi(tmp_path / "in.hdr", cube)
    output = tmp_path / "out.hdr"
    result = CliRunner().invoke(app, ["run", str(source), "-o", str(output), "--dtype", "same", "--json", *options])
    assert result.exit_code == 0, result.stderr
    return result, json.loads(result.stdout), read_cube(output).data


def assert_no_python_warning(text: str) -> None:
    assert "Warning" not in text and "Traceback" not in text and ".py:" not in text, text


@pytest.mark.parametrize("method", ["lowrank", "decsc"])
def test_cli_one_band_passes_through_with_the_warning_in_json_and_one_line_on_stderr(
    tmp_path: Path, method: str
) -> None:
    cube = np.random.default_rng(10).random((1, 11, 13)).astype(np.float32)
    result, record, written = run_cli(tmp_path, cube, "--method", method)
    np.testing.assert_array_equal(written, cube)
    assert record["passed_through"] is True
    assert record["warnings"] == ["one band: nothing to regress against; passed through unchanged"]
    assert result.stderr.strip().splitlines() == record["warnings"]
    assert_no_python_warning(result.stderr)


def test_cli_constant_cube_with_quiet_says_nothing_and_reports_the_warning(tmp_path: Path) -> None:
    cube = np.full((5, 9, 8), 4.0, np.float32)
    report = tmp_path / "report"
    result, record, written = run_cli(tmp_path, cube, "--quiet", "--report", str(report))
    np.testing.assert_array_equal(written, cube)
    assert result.stderr == ""
    assert record["warnings"] == ["every band is constant: nothing to denoise; passed through unchanged"]
    assert json.loads((report / "report.json").read_text())["warnings"] == record["warnings"]


def test_cli_float64_beyond_float32_range_is_denoised_finite(tmp_path: Path) -> None:
    cube = noisy_low_rank() * 1e300
    result, record, written = run_cli(tmp_path, cube)
    assert written.dtype == np.float64 and np.isfinite(written).all()
    assert record["warnings"] == [] and record["passed_through"] is False and record["value_scale"] < 1e-290
    assert record["clipped_values"] == 0
    assert result.stderr == ""  # --json: no "wrote" line, and nothing to warn about


def test_statistics_of_float64_values_near_their_maximum_stay_finite(tmp_path: Path) -> None:
    from hsidenoise.io import open_cube
    from hsidenoise.statistics import compute_statistics

    cube = np.full((2, 5, 6), 1.5e308)
    cube[1] = -1.7e308
    cube[1, 0, :3] = -1.6e308
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the overflowing float64 sum is redone scaled, without a warning
        with open_cube(write_envi(tmp_path / "big.hdr", cube)) as reader:
            stats = compute_statistics(reader)
    np.testing.assert_allclose(stats.mean, [1.5e308, 0.9 * -1.7e308 + 0.1 * -1.6e308], rtol=1e-12)
    assert stats.dead_bands.tolist() == [0] and stats.pixel_count == 0  # beyond float32: no spectrum sampled


# ------------------------------------------------------------------- gross outliers, two-valued cubes (review)


def with_gross_outlier(value: float, dtype: str) -> np.ndarray:
    """A noisy low-rank cube with one entry (band 5, row 5, col 5) set to ``value``: a flipped exponent bit."""
    cube = noisy_low_rank(bands=9, rows=13, cols=15).astype(dtype)
    cube[5, 5, 5] = value
    return cube


@pytest.mark.parametrize(("value", "dtype"), [(1e10, "float32"), (1e20, "float32"), (-1e30, "float32"), (1e300, "float64")])
def test_one_gross_outlier_is_an_impulse_written_unchanged_that_spreads_to_no_other_value(value: float, dtype: str) -> None:
    cube = with_gross_outlier(value, dtype)
    ordinary = np.ones(cube.shape, bool)
    ordinary[5, 5, 5] = False
    with pytest.warns(UserWarning, match=r"^1 value\(s\) far outside their band's range .*treated as impulses"):
        out = denoise_array(cube, lowrank(), CONFIG)
    assert out[5, 5, 5] == cube[5, 5, 5]
    low, high = cube[ordinary].min(), cube[ordinary].max()
    margin = 0.25 * (high - low)
    assert low - margin <= out[ordinary].min() and out[ordinary].max() <= high + margin


def test_the_value_scale_ignores_a_gross_outlier_and_the_run_reports_it(tmp_path: Path) -> None:
    cube = with_gross_outlier(1e37, "float32")  # beyond 2**120: alone it used to scale the whole cube
    result, record, written = run_cli(tmp_path, cube)
    assert record["value_scale"] == 1.0
    assert len(record["warnings"]) == 1 and "treated as impulses" in record["warnings"][0]
    assert result.stderr.strip().splitlines() == record["warnings"]
    assert written[5, 5, 5] == cube[5, 5, 5] and np.abs(np.delete(written.ravel(), 5 * 13 * 15 + 5 * 15 + 5)).max() < 2


@pytest.mark.parametrize("threads", [1, 3])
def test_no_gross_outlier_is_found_in_an_ordinary_cube_or_a_sparse_band(
    threads: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hsidenoise import device
    from hsidenoise.statistics import gross_limits

    monkeypatch.setattr(device, "threads_in_effect", lambda: threads)

    cube = noisy_low_rank()
    sparse = np.zeros((1, *cube.shape[1:]))
    sparse[0, 3, 4] = 1e6  # a band that is zero but for one pixel has no central spread: no limits
    spectra = np.concatenate([cube, sparse]).reshape(cube.shape[0] + 1, -1).T
    lower, upper = gross_limits(spectra)
    assert ((spectra >= lower) & (spectra <= upper)).all()
    assert np.isinf(lower[-1]) and np.isinf(upper[-1])
    # the limits are order statistics of each band: numpy's quantiles of the same ranks, on any number of threads
    from hsidenoise import statistics

    count = spectra.shape[0]
    trim = max(1, int(np.ceil(statistics.GROSS_QUANTILE * count)))
    ordered = np.sort(spectra, axis=0)
    low, median, high = ordered[trim], ordered[count // 2], ordered[count - 1 - trim]
    spread = high - low
    expected = np.where(spread > 0, median - statistics.GROSS_FACTOR * spread, -np.inf)
    np.testing.assert_array_equal(lower, expected)


@pytest.mark.parametrize("spatial", ["dct", "none"])
def test_a_two_valued_noise_cube_is_never_amplified(spatial: str) -> None:
    from hsidenoise.subspace import fit_lowrank

    cube = (np.random.default_rng(2).random((30, 40, 12)) > 0.5).astype(np.float32).transpose(2, 0, 1).copy()
    config = LowRankConfig(spatial=spatial)
    sigma = fit_lowrank(cube.reshape(12, -1).T, config).sigma
    assert (sigma > 0.25).all() and (sigma < 1.0).all(), sigma  # the noise is the whole band: sd 0.5
    out = denoise_array(cube, LowRankDenoiser(config), CONFIG)
    assert (out.reshape(12, -1).std(axis=1) <= cube.reshape(12, -1).std(axis=1)).all()
    assert out.min() >= -1.0 and out.max() <= 2.0


def run_cli_float32(tmp_path: Path, cube: np.ndarray, command: str = "run"):
    source = write_envi(tmp_path / "in.hdr", cube)
    output = tmp_path / "out.hdr"
    extra = ["--method", "lowrank"] if command == "run" else ["--dtype", "float32"]
    result = CliRunner().invoke(app, [command, str(source), "-o", str(output), "--json", *extra])
    assert result.exit_code == 0, result.stderr
    return result, json.loads(result.stdout), read_cube(output).data


def test_run_into_float32_warns_about_clipped_values(tmp_path: Path) -> None:
    cube = 1e300 + 1e300 * np.random.default_rng(11).random((5, 9, 8))
    result, record, written = run_cli_float32(tmp_path, cube)
    assert written.dtype == np.float32 and record["clipped_values"] == cube.size
    assert len(record["warnings"]) == 1 and f"{cube.size} value(s) did not fit" in record["warnings"][0]
    assert result.stderr.strip().splitlines() == record["warnings"]


@pytest.mark.parametrize("command", ["run", "convert"])
def test_values_that_underflow_float32_are_counted_and_warned_about(tmp_path: Path, command: str) -> None:
    cube = 1e-300 * (1.0 + np.random.default_rng(12).random((5, 9, 8)))
    result, record, written = run_cli_float32(tmp_path, cube, command)
    assert not written.any() and record["underflowed_values"] == cube.size
    if command == "run":
        assert len(record["warnings"]) == 1 and "too small for the output type" in record["warnings"][0]
        assert result.stderr.strip().splitlines() == record["warnings"]
    else:  # convert says it on stderr even with --json
        assert f"{cube.size} non-zero value(s) were too small for the output type" in result.stderr
