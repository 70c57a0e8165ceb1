"""The weights in weights/: they load, `run --method decsc` uses them with no --model on a real cube, `finetune`
starts from them; `run` with no flag runs the best measured method (lowrank)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from hsidenoise.cli import app
from hsidenoise.cube import Cube, CubeMeta
from hsidenoise.io import read_cube, write_cube
from hsidenoise.quality.metrics import mpsnr
from hsidenoise.model import find_default_weights, load_weights
from hsidenoise.noise import NoiseSpec, add_noise, normalise_cube

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def shipped() -> Path:
    path = find_default_weights()
    if path is None:
        pytest.fail(f"no shipped weights in {REPO / 'weights'} (decsc-dctcsc-coupled.safetensors + .json); they belong in the repo")
    return path


def test_shipped_weights_load_with_their_card(shipped):
    model, config, card = load_weights(shipped)
    assert config.kind == "dctcsc" and config.coupling and config.max_components == 32
    training = card  # load_weights returns the training card
    assert training["steps"] > 0 and training["validation"]["mpsnr"] > training["validation"]["noisy_mpsnr"] + 10
    held_out = {Path(p).name for p in training["validation_cubes"]}
    assert held_out.isdisjoint(entry["file"] for entry in training["data"])
    assert training["front_end"]["spatial"] == "dct"


@pytest.fixture(scope="module")
def noisy_real_crop(tmp_path_factory, shared_data: Path) -> dict[str, Path]:
    """A 162-band 60 x 70 crop of the held-out HYDICE cube, normalised, with non-i.i.d. noise (sigma <= 60/255)."""
    folder = tmp_path_factory.mktemp("shipped")
    cube = read_cube(shared_data / "hydice_urban_crop" / "hydice.mat")
    clean, _, _ = normalise_cube(cube.data[:, 5:65, 10:80].astype(np.float32))
    noisy = add_noise(clean, NoiseSpec("noniid", sigma_max=60), np.random.default_rng(7)).noisy
    paths = {"clean": folder / "clean.tif", "noisy": folder / "noisy.hdr", "folder": folder}
    write_cube(paths["clean"], Cube(clean, CubeMeta()))
    write_cube(paths["noisy"], Cube(noisy, CubeMeta()))
    return paths


def test_run_uses_the_shipped_weights_and_lands_close_to_the_clean_cube(noisy_real_crop):
    out = noisy_real_crop["folder"] / "out" / "denoised.hdr"
    arguments = ["run", str(noisy_real_crop["noisy"]), "-o", str(out), "--method", "decsc", "--json"]
    result = CliRunner().invoke(app, arguments)
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["method"] == "decsc" and document["method_info"]["preset"] == "dctcsc-coupled"
    clean = read_cube(noisy_real_crop["clean"]).data
    noisy = read_cube(noisy_real_crop["noisy"]).data
    denoised = read_cube(out).data
    assert denoised.shape == clean.shape
    assert mpsnr(denoised, clean) > mpsnr(noisy, clean) + 12
    assert mpsnr(denoised, clean) > 33


def test_run_without_a_method_runs_lowrank(noisy_real_crop):
    out = noisy_real_crop["folder"] / "default" / "denoised.hdr"
    result = CliRunner().invoke(app, ["run", str(noisy_real_crop["noisy"]), "-o", str(out), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["method"] == "lowrank"


def test_finetune_starts_from_the_shipped_weights(noisy_real_crop, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    clean = read_cube(noisy_real_crop["clean"]).data[:40, :48, :48]
    write_cube(data / "mine.tif", Cube(clean, CubeMeta()))
    result = CliRunner().invoke(
        app,
        [
            "finetune", "--data", str(data), "--out", str(tmp_path / "ft"), "--epochs", "1", "--steps-per-epoch", "2",
            "--patch-size", "32", "--patches-per-cube", "4", "--batch-size", "2", "--json",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    weights = Path(document["weights"])
    assert weights.name == "decsc-dctcsc-coupled-finetuned.safetensors" and weights.is_file()
    card = json.loads(weights.with_suffix(".json").read_text())
    assert Path(card["card"]["from_weights"]).resolve() == find_default_weights().resolve()
    _, before, _ = load_weights(find_default_weights())
    _, after, _ = load_weights(weights)
    assert after == before  # same architecture, new values
