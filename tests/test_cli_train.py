"""`hsidenoise models`, `train`, `finetune`: weights, card, checkpoint, resume, and running the result.

Through Typer's CliRunner (helpers and fixtures in ``cli_support.py``). A failure must give the documented exit
code (1 bad data or a failed run, 2 bad usage), one line on stderr without a traceback, nothing on stdout, no
output or temporary file, and an untouched input.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from cli_support import assert_refused, invoke, smooth_cube, snapshot

from hsidenoise.cli import app
from hsidenoise.cube import Cube, CubeMeta
from hsidenoise.io import read_cube, write_cube

# ------------------------------------------------------------------------------------- models / train / finetune


def test_models_json(runner):
    document = json.loads(invoke(runner, "models", "--json").stdout)
    presets = {item["name"]: item for item in document["presets"]}
    assert set(presets) == {"paper", "subspace", "dctcsc", "dctcsc-coupled"}  # lite retired
    assert presets["paper"]["parameters"] == pytest.approx(4.29e6, rel=0.01)
    assert 0 < presets["subspace"]["parameters"] < presets["paper"]["parameters"]
    assert isinstance(document["weights"], list)
    assert "paper" in invoke(runner, "models").stdout


def test_models_states_what_the_shipped_weights_gain_on_validation_and_on_cubes_the_network_never_saw(runner):
    card = json.loads((Path(__file__).resolve().parents[1] / "weights" / "decsc-dctcsc-coupled.json").read_text())
    measured = card["measured"]
    more, unseen = measured["front_end_heldout_cubes"], measured["front_end_heldout_cubes"]["unseen_by_network"]
    assert more["training_cubes_among_them"] + len(unseen["cubes"]) == more["cubes"]
    text = " ".join(invoke(runner, "models").stdout.split())  # rich wraps long lines
    assert f"{measured['mean_gain_db']:+.3f} dB MPSNR on average" in text
    assert f"{more['training_cubes_among_them']} of them in its training data" in text
    assert f"cubes it never saw: {unseen['mean_gain_db']:+.3f} dB on average" in text


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


def test_train_scores_whole_validation_cubes_with_validation_crop_zero(runner, trained, tmp_path):
    held_out = tmp_path / "held_out.hdr"
    write_cube(held_out, Cube(smooth_cube(33, 19, 21, seed=5), CubeMeta()))
    out = tmp_path / "run"
    document = json.loads(invoke(
        runner, "train", "--data", trained["data"], "--validation", held_out, "--validation-crop", 0, "--out", out,
        "--epochs", 1, *TRAIN_ARGS,
    ).stdout)
    assert document["validation"]["per_case"]
    card = json.loads(Path(document["weights"]).with_suffix(".json").read_text())["card"]
    assert card["validation_crop"] == 0 and len(card["validation_gain_history"]) == 1
    before = snapshot(tmp_path)
    result = runner.invoke(app, ["train", "--data", str(trained["data"]), "--out", str(tmp_path / "o"),
                                 "--validation-crop", "-1", "--epochs", "1"])
    assert "--validation-crop" in assert_refused(result, 2, before, tmp_path, ours=False) + result.stderr


def test_train_refuses_missing_data(runner, tmp_path):
    before = snapshot(tmp_path)
    result = runner.invoke(
        app, ["train", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o"), "--epochs", "1"]
    )
    assert "does not exist" in assert_refused(result, 1, before, tmp_path)
