"""The subspace DECSC: model, training pairs, training loop and inference, on tiny synthetic cubes."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from hsidenoise.training.data import TrainingCube, make_rng
from hsidenoise.subspace import LowRankConfig
from hsidenoise.model import PRESETS, build_model
from hsidenoise.model.subspace_decsc import SUBSPACE_PRESETS, SubspaceDECSC, SubspaceDECSCConfig
from hsidenoise.noise import NoiseSpec
from hsidenoise.model.solver import SolverConfig
from hsidenoise.training.subspace_pairs import SubspaceSampler, SubspaceSamplerConfig, eigen_region

torch.set_num_threads(1)

TINY = SubspaceDECSCConfig(
    gic_atoms=4, gic_kernel=3, lsu_atoms=3, lsu_kernel=3, prior_width=4, solver=SolverConfig(max_iter=2, phantom_steps=1)
)


def _inputs(k: int, rows: int = 13, cols: int = 11, n: int = 2, seed: int = 0) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(seed)
    target = 3 * torch.randn(n, k, rows, cols, generator=generator)
    eigen = target + torch.randn(n, k, rows, cols, generator=generator)
    pilot = 0.8 * target
    eigenvalues = torch.logspace(3, 0.1, k).expand(n, k).clone()
    return eigen, pilot, eigenvalues, target


def _trained_like(model: SubspaceDECSC) -> SubspaceDECSC:
    """Non-zero synthesis dictionaries, as after training (at initialisation they are zero)."""
    with torch.no_grad():
        for layer in (model.gic, model.lsu):
            layer.synthesis.copy_(0.1 * torch.randn_like(layer.synthesis))
    return model


@pytest.mark.parametrize("name", sorted(SUBSPACE_PRESETS))
@pytest.mark.parametrize("k", [1, 2, 7, 32])
def test_every_subspace_preset_gives_finite_output_of_the_input_shape_for_any_rank(name: str, k: int) -> None:
    model = _trained_like(build_model(name)).eval()
    eigen, pilot, eigenvalues, _ = _inputs(k, rows=17, cols=9, n=1)
    with torch.no_grad():
        corrected, stats = model(eigen, pilot, eigenvalues)
    assert corrected.shape == eigen.shape
    assert torch.isfinite(corrected).all()
    assert stats.evaluations.shape == (1,)


@pytest.mark.parametrize("name", sorted(SUBSPACE_PRESETS))
def test_every_parameter_of_a_subspace_preset_gets_a_gradient(name: str) -> None:
    torch.manual_seed(0)
    model = _trained_like(build_model(name)).train()
    eigen, pilot, eigenvalues, target = _inputs(5, rows=16, cols=16)
    corrected, _ = model(eigen, pilot, eigenvalues)
    (corrected - target).square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all() or not p.grad.abs().sum() > 0]
    assert not missing


def test_an_untrained_subspace_model_returns_the_pilot_exactly() -> None:
    model = build_model(TINY).eval()
    eigen, pilot, eigenvalues, _ = _inputs(4)
    with torch.no_grad():
        corrected, _ = model(eigen, pilot, eigenvalues)
    assert torch.equal(corrected, pilot)


def test_padded_components_do_not_change_the_real_ones() -> None:
    torch.manual_seed(1)
    model = _trained_like(build_model(TINY)).eval()
    eigen, pilot, eigenvalues, _ = _inputs(3, n=1)
    pad = (0, 0, 0, 0, 0, 2)
    padded_eigen = torch.nn.functional.pad(eigen, pad, value=5.0)  # garbage in the padded slots
    padded_pilot = torch.nn.functional.pad(pilot, pad, value=-3.0)
    padded_values = torch.cat([eigenvalues, torch.full((1, 2), 50.0)], dim=1)
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0, 0.0]])
    with torch.no_grad():
        alone, _ = model(eigen, pilot, eigenvalues)
        padded, _ = model(padded_eigen, padded_pilot, padded_values, mask)
    torch.testing.assert_close(padded[:, :3], alone, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(padded[:, 3:], padded_pilot[:, 3:])


def test_subspace_config_round_trips_and_rejects_bad_sizes() -> None:
    from hsidenoise.errors import ConfigError
    from hsidenoise.model.decsc import config_from_dict

    assert config_from_dict(TINY.to_dict()) == TINY
    assert config_from_dict(PRESETS["paper"].to_dict()) == PRESETS["paper"]
    with pytest.raises(ConfigError):
        SubspaceDECSCConfig(gic_kernel=4)
    with pytest.raises(ConfigError):
        SubspaceDECSCConfig.from_dict({**TINY.to_dict(), "bogus": 1})


def test_rank_above_the_slots_is_a_clear_error() -> None:
    from hsidenoise.errors import CubeShapeError

    model = build_model(replace(TINY, max_components=3))
    eigen, pilot, eigenvalues, _ = _inputs(4)
    with pytest.raises(CubeShapeError, match="1 <= k <= 3"):
        model(eigen, pilot, eigenvalues)


# ---------------------------------------------------------------------------------------------------------
# Training pairs
# ---------------------------------------------------------------------------------------------------------


def low_rank_cube(bands: int, rows: int, cols: int, seed: int = 0) -> np.ndarray:
    """(B, H, W) in [0, 1], exactly rank 3 (three spectra times smooth, textured maps)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:rows, 0:cols] / max(rows, cols)
    maps = np.stack([np.sin(7 * yy + 1) ** 2, np.cos(5 * xx) ** 2, (xx > 0.5) * 0.5 + 0.3 * np.sin(11 * xx * yy)])
    spectra = np.abs(rng.normal(size=(bands, 3))) + np.linspace(0.2, 1.0, bands)[:, None]
    cube = np.einsum("bk,khw->bhw", spectra, maps)
    return ((cube - cube.min()) / (cube.max() - cube.min())).astype(np.float32)


def test_the_target_is_the_clean_cube_projected_on_the_noisy_cubes_basis() -> None:
    from hsidenoise.subspace import back_project
    from hsidenoise.noise import add_noise

    clean = low_rank_cube(23, 61, 59)
    noisy = add_noise(clean, NoiseSpec("noniid", sigma_max=30.0), np.random.default_rng(4)).noisy
    config = SubspaceSamplerConfig(front_end=LowRankConfig(spatial="none"))
    region, subspace = eigen_region(clean, noisy, slice(None), slice(None), config, seed=0)
    # a rank-3 clean cube lies in the noisy cube's subspace: its projection reproduces it closely
    assert region.rank >= 3
    plain = replace(subspace, intercept=None, loadings=None)
    np.testing.assert_allclose(back_project(region.target, plain), clean, atol=0.02)
    # and what the noisy eigen-images add to the target is white noise of variance 1 (whitening is exact)
    residual = (region.eigen - region.target)[:3]
    assert np.var(residual) == pytest.approx(1.0, abs=0.15)


def test_synthetic_examples_get_fresh_unit_noise_and_real_ones_keep_the_front_end() -> None:
    cube = TrainingCube.from_array(low_rank_cube(19, 40, 44), name="cube")
    config = SubspaceSamplerConfig(
        noise=((NoiseSpec("noniid", sigma_max=40.0), 1.0),),
        patch_size=16,
        region_size=32,
        patches_per_round=40,
        real_fraction=0.5,
        front_end=LowRankConfig(spatial="dct"),
    )
    sampler = SubspaceSampler([cube], config, rng=make_rng(0))
    batch = sampler.next_batch(40)
    synthetic = sampler._round.examples[:, 4].astype(bool)
    assert synthetic.any() and (~synthetic).any()
    noise = (batch.eigen - batch.target) * batch.mask[:, :, None, None]
    fresh = noise[torch.from_numpy(synthetic)]
    assert float(fresh.square().sum() / (batch.mask[torch.from_numpy(synthetic)].sum() * 256)) == pytest.approx(1.0, abs=0.1)
    assert not torch.equal(fresh[0], fresh[1])  # one draw per example


def test_subspace_sampler_replays_exactly_after_a_restart() -> None:
    cubes = [TrainingCube.from_array(low_rank_cube(17, 36, 36, seed=s), name=f"c{s}") for s in (1, 2)]
    config = SubspaceSamplerConfig(patch_size=12, region_size=24, patches_per_round=5, front_end=LowRankConfig(spatial="dct"))
    first = SubspaceSampler(cubes, config, rng=make_rng(7))
    for _ in range(3):
        first.next_batch(4)
    state = first.state_dict()
    expected = [first.next_batch(4) for _ in range(3)]
    second = SubspaceSampler(cubes, config, rng=make_rng(99))
    second.load_state_dict(state)
    for want in expected:
        got = second.next_batch(4)
        assert torch.equal(got.eigen, want.eigen) and torch.equal(got.target, want.target)


# ---------------------------------------------------------------------------------------------------------
# Training loop and inference
# ---------------------------------------------------------------------------------------------------------


@pytest.fixture
def cube_files(tmp_path: Path) -> tuple[Path, Path]:
    from scipy.io import savemat

    data = tmp_path / "cubes"
    data.mkdir()
    savemat(data / "first.mat", {"cube": low_rank_cube(21, 40, 40, seed=1).transpose(1, 2, 0)})
    savemat(data / "second.mat", {"cube": low_rank_cube(13, 36, 38, seed=2).transpose(1, 2, 0)})
    savemat(data / "held_out.mat", {"cube": low_rank_cube(17, 29, 31, seed=3).transpose(1, 2, 0)})
    return data, data / "held_out.mat"


def _train_config(cube_files: tuple[Path, Path], out: Path, **overrides: object):
    from hsidenoise.training import TrainConfig

    data, held_out = cube_files
    settings = {
        "model": TINY,
        "data": (data,),
        "validation": (held_out,),
        "out_dir": out,
        "sampler": SubspaceSamplerConfig(
            noise=((NoiseSpec("noniid", sigma_max=60.0), 1.0),), patch_size=16, region_size=24, patches_per_round=6,
            front_end=LowRankConfig(spatial="dct"),
        ),
        "batch_size": 3,
        "lr": 1e-2,
        "epochs": 2,
        "steps_per_epoch": 3,
        "checkpoint_every_s": 0.0,
        "validation_crop": 24,
        **overrides,
    }
    return TrainConfig(**settings)


def test_subspace_training_lowers_the_loss_on_a_fixed_probe(cube_files: tuple[Path, Path], tmp_path: Path) -> None:
    from hsidenoise.training.data import load_training_set
    from hsidenoise.training.families import subspace_loss
    from hsidenoise.training import fit

    # with the identity as the pilot the model has all of the noise to remove: a loss it can visibly lower
    sampler = replace(_train_config(cube_files, tmp_path).sampler, front_end=LowRankConfig(spatial="none"))
    config = _train_config(cube_files, tmp_path / "run", epochs=1, steps_per_epoch=25, sampler=sampler)
    cubes = load_training_set(config.data, band_window=2, patch_size=16, exclude=config.validation).cubes
    probe = SubspaceSampler(cubes, config.sampler, rng=make_rng(123)).next_batch(12)

    def probe_loss(model: torch.nn.Module) -> float:
        with torch.no_grad():
            return float(subspace_loss(model.eval(), probe))

    torch.manual_seed(config.seed)
    before = probe_loss(build_model(config.model))
    result = fit(config)
    assert probe_loss(result.model) < 0.9 * before
    assert result.card["front_end"]["spatial"] == "none"


@pytest.mark.parametrize("killed_after", [3, 4])
def test_subspace_resume_after_a_kill_gives_bit_identical_weights(
    cube_files: tuple[Path, Path], tmp_path: Path, killed_after: int
) -> None:
    from hsidenoise.training import fit

    class Killed(Exception):
        pass

    straight = fit(_train_config(cube_files, tmp_path / "straight"))

    def kill(event) -> None:
        if event.event == "step" and event.step == killed_after:
            raise Killed

    interrupted = _train_config(cube_files, tmp_path / "interrupted")
    with pytest.raises(Killed):
        fit(interrupted, progress=kill)
    resumed = fit(interrupted, resume=True)
    assert resumed.steps == straight.steps == 6
    for name, value in straight.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[name]), name
    assert [s.per_case for s in resumed.history] == [s.per_case for s in straight.history]


def test_weights_round_trip_and_an_untrained_model_runs_as_its_front_end(tmp_path: Path) -> None:
    """Through the whole tiled pipeline, zero correction gives exactly ``--method lowrank``'s output."""
    from hsidenoise.denoise import denoise_array
    from hsidenoise.subspace import LowRankDenoiser
    from hsidenoise.methods import build_method
    from hsidenoise.model import load_weights, save_weights
    from hsidenoise.noise import add_noise
    from hsidenoise.tiling import TileConfig

    model = build_model(TINY)
    path = save_weights(model, model.config, tmp_path / "w", {"front_end": {"spatial": "dct"}})
    loaded, config, card = load_weights(path)
    assert isinstance(loaded, SubspaceDECSC) and config == TINY
    noisy = add_noise(low_rank_cube(19, 45, 37), NoiseSpec("mixture", sigma_max=50.0), np.random.default_rng(2)).noisy
    tiles = TileConfig(tile=24, overlap=6)
    method = build_method("decsc", model=str(path), device="cpu", config=tiles)
    ours = denoise_array(noisy, method, tiles)
    front_end = denoise_array(noisy, LowRankDenoiser(LowRankConfig(spatial="dct")), tiles)
    np.testing.assert_array_equal(ours, front_end)
    assert method.info()["tiles"] > 1


def test_a_trained_like_model_changes_the_result_and_stays_finite() -> None:
    from hsidenoise.denoise import denoise_array
    from hsidenoise.methods.decsc import build_subspace_decsc
    from hsidenoise.noise import add_noise

    torch.manual_seed(3)
    model = _trained_like(build_model(TINY))
    noisy = add_noise(low_rank_cube(11, 30, 26), NoiseSpec("noniid", sigma_max=50.0), np.random.default_rng(5)).noisy
    ours = denoise_array(noisy, build_subspace_decsc(model))
    assert ours.shape == noisy.shape and np.isfinite(ours).all()
    from hsidenoise.subspace import LowRankDenoiser

    assert not np.array_equal(ours, denoise_array(noisy, LowRankDenoiser(LowRankConfig(spatial="dct"))))
