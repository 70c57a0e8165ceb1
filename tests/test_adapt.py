"""Self-supervised adaptation (hsidenoise.model.adapt): SURE in whitened units, the held-out guard, run --adapt."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from hsidenoise.model.adapt import AdaptConfig, EigenCrop, adapt, sure
from hsidenoise.subspace import LowRankConfig, spatial_denoiser
from hsidenoise.model import build_model
from hsidenoise.model.subspace_decsc import SubspaceDECSCConfig
from hsidenoise.model.solver import SolverConfig

torch.set_num_threads(1)
TINY = SubspaceDECSCConfig(
    gic_atoms=4, gic_kernel=3, lsu_atoms=3, lsu_kernel=3, prior_width=4, solver=SolverConfig(max_iter=2, phantom_steps=1)
)
DCT = LowRankConfig(spatial="dct")


def pilot_of(eigen: np.ndarray) -> np.ndarray:
    return spatial_denoiser(DCT).denoise(eigen, 1.0)


def clean_eigen(k: int = 2, side: int = 32) -> np.ndarray:
    yy, xx = np.mgrid[0:side, 0:side] / side
    images = [6 * np.sin(5 * yy + 3 * xx), 3 * (xx > 0.4) - 1.5]
    return np.stack(images[:k])


def _trained_like(seed: int = 0):
    torch.manual_seed(seed)
    model = build_model(TINY)
    with torch.no_grad():
        for layer in (model.gic, model.lsu):
            layer.synthesis.copy_(0.1 * torch.randn_like(layer.synthesis))
    return model.eval()


def test_sure_matches_the_true_mse_on_average_over_noise_draws() -> None:
    model = _trained_like()
    clean = clean_eigen()
    values = torch.tensor([[40.0, 10.0]])
    rng = np.random.default_rng(0)
    estimates, truths = [], []
    for _ in range(24):
        eigen = clean + rng.standard_normal(clean.shape)
        crop = EigenCrop(eigen, pilot_of(eigen))
        with torch.no_grad():
            estimates.append(float(sure(model, crop, values, pilot_of, rng.choice([-1.0, 1.0], clean.shape), 1e-2)))
            output, _ = model(torch.from_numpy(eigen).float()[None], torch.from_numpy(crop.pilot).float()[None], values)
        truths.append(float(((output[0].double().numpy() - clean) ** 2).mean()))
    assert np.mean(estimates) == pytest.approx(np.mean(truths), abs=0.03 + 0.1 * np.mean(truths))
    assert np.mean(truths) < 0.9  # the denoiser does something, so the check is not trivial (noise MSE is 1)


def _crops(count: int = 6, seed: int = 1) -> list[EigenCrop]:
    rng = np.random.default_rng(seed)
    crops = []
    for _ in range(count):
        eigen = clean_eigen(side=24) + rng.standard_normal((2, 24, 24))
        crops.append(EigenCrop(eigen, pilot_of(eigen)))
    return crops


def test_zero_seconds_is_no_adaptation() -> None:
    model = _trained_like()
    used, result = adapt(model, _crops(), np.array([40.0, 10.0]), pilot_of, AdaptConfig(seconds=0))
    assert used is model and not result.kept and result.steps == 0


def test_a_harmful_adaptation_is_rejected_by_the_held_out_check() -> None:
    model = _trained_like()
    before = {name: value.clone() for name, value in model.state_dict().items()}
    config = AdaptConfig(seconds=60, lr=5.0, max_steps=2)  # a forced bad step
    used, result = adapt(model, _crops(), np.array([40.0, 10.0]), pilot_of, config)
    assert result.steps == 2
    assert result.holdout_after > result.holdout_before
    assert used is model and not result.kept
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), name  # the original weights are untouched


def test_a_helpful_adaptation_is_kept() -> None:
    """With the identity as the pilot (all of the noise left to remove), SURE steps lower the held-out SURE."""
    model = build_model(TINY).eval()

    def identity(eigen: np.ndarray) -> np.ndarray:
        return eigen

    rng = np.random.default_rng(3)
    crops = []
    for _ in range(8):
        eigen = clean_eigen(side=24) + rng.standard_normal((2, 24, 24))
        crops.append(EigenCrop(eigen, eigen))
    config = AdaptConfig(seconds=120, lr=1e-2, max_steps=15, batch_size=2)
    used, result = adapt(model, crops, np.array([40.0, 10.0]), identity, config)
    assert result.kept and used is not model
    assert result.holdout_after < 0.95 * result.holdout_before


def test_run_adapt_from_the_cli_reports_what_it_did(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from hsidenoise.cli import app
    from hsidenoise.io import write_cube
    from hsidenoise.cube import Cube, CubeMeta
    from hsidenoise.model import save_weights
    from hsidenoise.noise import NoiseSpec, add_noise

    from tests.test_subspace import low_rank_cube

    weights = save_weights(build_model(TINY), TINY, tmp_path / "tiny", {"front_end": {"spatial": "dct"}})
    noisy = add_noise(low_rank_cube(13, 70, 66), NoiseSpec("noniid", sigma_max=50.0), np.random.default_rng(0)).noisy
    source = tmp_path / "noisy.hdr"
    write_cube(source, Cube(noisy, CubeMeta()))
    runner = CliRunner()
    out = tmp_path / "clean.hdr"
    result = runner.invoke(
        app, ["run", str(source), "-o", str(out), "--model", str(weights), "--adapt", "--adapt-seconds", "3", "--json"]
    )
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    adaptation = document["method_info"]["adaptation"]
    assert adaptation["steps"] >= 1 and adaptation["holdout_before"] is not None
    assert out.exists()
    refused = runner.invoke(app, ["run", str(source), "-o", str(tmp_path / "x.hdr"), "--method", "lowrank", "--adapt"])
    assert refused.exit_code == 2 and "adapt" in refused.output


def test_self_supervised_sampler_adds_no_noise_and_hides_no_target() -> None:
    from hsidenoise.training.data import TrainingCube, make_rng
    from hsidenoise.training.subspace_pairs import SubspaceSampler, SubspaceSamplerConfig

    from tests.test_subspace import low_rank_cube

    cube = TrainingCube.from_array(low_rank_cube(15, 40, 40), name="noisy-as-is")
    config = SubspaceSamplerConfig(
        patch_size=16, region_size=40, patches_per_round=6, front_end=DCT, self_supervised=True, real_fraction=1.0
    )
    first = SubspaceSampler([cube], config, rng=make_rng(0)).next_batch(6)
    second = SubspaceSampler([cube], config, rng=make_rng(5)).next_batch(6)
    assert torch.count_nonzero(first.target) == 0  # nothing clean is ever handed to the loss
    assert first.eigen.abs().sum() > 0
    # no synthetic noise: the eigen-images of a crop depend on the cube only, not on the generator's noise
    assert first.eigen.shape[1] == second.eigen.shape[1]


def test_finetune_self_supervised_runs_on_noisy_cubes_and_says_so(tmp_path: Path) -> None:
    from scipy.io import savemat
    from typer.testing import CliRunner

    from hsidenoise.cli import app
    from hsidenoise.model import save_weights
    from hsidenoise.noise import NoiseSpec, add_noise

    from tests.test_subspace import low_rank_cube

    data = tmp_path / "noisy"
    data.mkdir()
    for seed in (1, 2):
        clean = low_rank_cube(17, 40, 38, seed=seed)
        noisy = add_noise(clean, NoiseSpec("noniid", sigma_max=40.0), np.random.default_rng(seed)).noisy
        savemat(data / f"scene{seed}.mat", {"cube": noisy.transpose(1, 2, 0)})
    weights = save_weights(build_model(TINY), TINY, tmp_path / "tiny", {"front_end": {"spatial": "dct"}})
    out = tmp_path / "run"
    arguments = [
        "finetune", "--data", str(data), "--from", str(weights), "--out", str(out), "--self-supervised",
        "--epochs", "1", "--steps-per-epoch", "2", "--batch-size", "2", "--patch-size", "16",
        "--patches-per-cube", "4", "--json",
    ]  # fmt: skip
    result = CliRunner().invoke(app, arguments)
    assert result.exit_code == 0, result.output
    card = json.loads((out / "tiny-finetuned.json").read_text())["card"]
    assert card["self_supervised"] is True and card["clean_reference_used"] is False and card["loss"] == "sure"
    band_window = CliRunner().invoke(
        app, [*arguments[:3], "--from", "paper", *arguments[5:7], str(tmp_path / "r2"), *arguments[7:]]
    )
    assert band_window.exit_code != 0
