"""Defaults a new user meets (issue 12): a preset without weights is refused unless random weights are asked
for, and `eval` picks the PSNR peak from the data instead of assuming 0..1."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from hsidenoise.cli import app
from hsidenoise.cube import Cube, CubeMeta
from hsidenoise.io import read_cube, write_cube
from hsidenoise.quality.metrics import evaluate
from hsidenoise.model import PRESETS, weights_dir


@pytest.fixture(scope="module")
def runner() -> CliRunner:
    return CliRunner()


def presets_without_weights() -> list[str]:
    return [name for name in PRESETS if not (weights_dir() / f"decsc-{name}.safetensors").is_file()]


# ----------------------------------------------------------------------------------------- --model PRESET


@pytest.mark.parametrize("preset", presets_without_weights())
def test_a_preset_without_weights_is_refused_with_how_to_get_them(runner, tmp_path, preset) -> None:
    write_cube(tmp_path / "c.hdr", Cube(np.random.default_rng(0).random((31, 17, 19)).astype(np.float32), CubeMeta()))
    result = runner.invoke(app, ["run", str(tmp_path / "c.hdr"), "-o", str(tmp_path / "o.hdr"), "--model", preset])
    assert result.exit_code == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert "no trained weights" in lines[0] and "hsidenoise train" in lines[0] and "--random-weights" in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.hdr", "c.img"]


def test_paper_has_no_shipped_weights_so_the_refusal_is_tested() -> None:
    assert "paper" in presets_without_weights()


def test_random_weights_run_the_untrained_preset_and_need_a_preset(runner, tmp_path) -> None:
    """``paper`` (the authors' network, no shipped weights) runs untrained; the smallest cube keeps it quick."""
    write_cube(tmp_path / "c.hdr", Cube(np.random.default_rng(0).random((31, 9, 11)).astype(np.float32), CubeMeta()))
    run = ["run", str(tmp_path / "c.hdr"), "-o", str(tmp_path / "o.hdr")]
    result = runner.invoke(app, [*run, "--model", "paper", "--random-weights", "--max-iter", "1", "--json"])
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["method_info"]["preset"] == "paper" and document["tiling"]["tiles"] == 1
    assert np.isfinite(read_cube(tmp_path / "o.hdr").data).all()
    refused = runner.invoke(app, [*run, "--method", "decsc", "--random-weights", "--overwrite"])
    assert refused.exit_code == 2 and "--random-weights needs --model PRESET" in refused.stderr


def test_a_preset_with_shipped_weights_loads_them() -> None:
    from hsidenoise.cli.options import resolve_model

    shipped = [name for name in PRESETS if name not in presets_without_weights()]
    if not shipped:
        pytest.fail(f"no preset has shipped weights in {weights_dir()}; the weights/ folder is missing")
    for name in shipped:
        assert resolve_model(name) == str(weights_dir() / f"decsc-{name}.safetensors")
        assert resolve_model(name, random_weights=True) == name


# --------------------------------------------------------------------------------------------- eval --peak


def pair(tmp_path: Path, scale: float) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    clean = (0.1 + 0.8 * rng.random((5, 23, 21))) * scale
    noisy = clean + 0.05 * scale * rng.standard_normal(clean.shape)
    write_cube(tmp_path / "ref.hdr", Cube(clean.astype(np.float32), CubeMeta()))
    write_cube(tmp_path / "x.hdr", Cube(noisy.astype(np.float32), CubeMeta()))
    return noisy.astype(np.float32), clean.astype(np.float32)


def test_eval_on_raw_units_takes_the_reference_maximum_and_says_so(runner, tmp_path) -> None:
    noisy, clean = pair(tmp_path, 4095.0)
    result = runner.invoke(app, ["eval", str(tmp_path / "x.hdr"), "--ref", str(tmp_path / "ref.hdr"), "--json"])
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    peak = float(clean.max())
    assert document["peak"]["source"] == "reference"
    assert document["peak"]["value"] == pytest.approx(peak, rel=1e-6)
    expected = evaluate(noisy / peak, clean / peak)  # the same data in 0..1
    assert document["denoised"]["mpsnr"] == pytest.approx(expected.mpsnr, abs=1e-6)
    assert document["denoised"]["mssim"] == pytest.approx(expected.mssim, abs=1e-6)
    assert any("reference's maximum" in note for note in document["denoised"]["notes"])
    assert result.stderr.strip() == ""


def test_eval_warns_once_when_peak_1_is_given_for_raw_units(runner, tmp_path) -> None:
    pair(tmp_path, 4095.0)
    args = ["eval", str(tmp_path / "x.hdr"), "--ref", str(tmp_path / "ref.hdr"), "--json", "--peak", "1"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "--peak 1" in lines[0] and "not 0..1" in lines[0]
    peak = json.loads(result.stdout)["peak"]
    assert (peak["value"], peak["source"]) == (1.0, "--peak") and peak["data_range"][1] > 2


def test_eval_on_unit_data_keeps_peak_1_without_a_warning(runner, tmp_path) -> None:
    noisy, clean = pair(tmp_path, 1.0)
    result = runner.invoke(app, ["eval", str(tmp_path / "x.hdr"), "--ref", str(tmp_path / "ref.hdr"), "--json"])
    assert result.exit_code == 0 and result.stderr.strip() == ""
    document = json.loads(result.stdout)
    assert document["peak"]["source"] == "0..1 data" and document["peak"]["value"] == 1.0
    assert document["denoised"]["mpsnr"] == pytest.approx(evaluate(noisy, clean).mpsnr, abs=1e-6)
