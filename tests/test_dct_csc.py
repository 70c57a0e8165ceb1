"""DCT-CSC (presets ``dctcsc``, ``dctcsc-coupled``): untrained it is the front end's DCT eigen-image denoiser, with
each eigen-image's own noise level; its equilibrium is a contraction that every tile solves; it trains.

Exactness is checked in float64 (the model's DCT atoms are computed in the working precision, so a float64
model matches the numpy front end to rounding); the float32 default is checked at a tolerance that a threshold
decision flipped by float32 rounding stays within.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from hsidenoise.errors import ConfigError
from hsidenoise.model import build_model, load_weights, save_weights
from hsidenoise.model.dct_csc import DCTCSC, DCTCSC_PRESETS, DCTCSCConfig, dct_atoms, operator_norm, synthesise
from hsidenoise.subspace import eigenimages
from hsidenoise.subspace.eigenimages import DCTDenoiser

REPO = Path(__file__).resolve().parents[1]
LEVELS = np.array([1.0, 0.83, 0.71, 0.6, 0.52, 0.9])
"""Per-component noise levels that are not all 1 (the pipeline's eigen-images carry 0.5 to 1.0)."""


@pytest.fixture(autouse=True)
def _float64_dct(monkeypatch: pytest.MonkeyPatch) -> None:
    """The numpy DCT in float64 here: exactness is about the model's arithmetic, not the front end's float32
    speed choice (whose hard thresholds flip on a few borderline coefficients: 4e-5 of the range)."""
    monkeypatch.setattr(eigenimages, "DCT_DTYPE", np.float64)


def smooth_images(count: int, rows: int, cols: int, seed: int = 0) -> np.ndarray:
    """(count, rows, cols) textured images of decreasing scale (like eigen-images), float64."""
    rng = np.random.default_rng(seed)
    walk = np.cumsum(np.cumsum(rng.standard_normal((count, rows, cols)), axis=1), axis=2)
    return walk / walk.std(axis=(1, 2), keepdims=True) * np.geomspace(30.0, 1.0, count)[:, None, None]


def trained_like(config: DCTCSCConfig = DCTCSCConfig(), seed: int = 0) -> DCTCSC:
    """A model moved far from its start: the equilibrium's gate at its maximum, a perturbed dictionary, etc."""
    torch.manual_seed(seed)
    model = build_model(config).double()
    with torch.no_grad():
        model.gate.fill_(config.gate_max)
        model.mix.fill_(0.1)
        model.dictionary_rotation.add_(0.05 * torch.randn_like(model.dictionary_rotation))
        model.wiener.add_(0.2 * torch.randn_like(model.wiener))
        model.rho.add_(0.3 * torch.randn_like(model.rho))
        model.snr_gain.add_(0.3 * torch.randn_like(model.snr_gain))
    return model.eval()


def run(model: DCTCSC, eigen: np.ndarray, levels: np.ndarray, eigenvalues: np.ndarray | None = None):
    eigenvalues = np.geomspace(900.0, 2.0, eigen.shape[0]) if eigenvalues is None else eigenvalues
    dtype = next(model.parameters()).dtype

    def tensor(array: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.asarray(array), dtype=dtype)[None]

    with torch.no_grad():
        out, stats = model(tensor(eigen), None, tensor(eigenvalues), noise=tensor(levels))
    return out[0].numpy(), stats


# ---------------------------------------------------------------------------------------------- exactness


def test_the_dct_atoms_are_a_tight_frame() -> None:
    atoms = dct_atoms()
    gram = atoms.flatten(1) @ atoms.flatten(1).T
    np.testing.assert_allclose(gram.numpy(), np.eye(64), atol=1e-12)
    assert float(operator_norm(atoms)) == pytest.approx(8.0, rel=1e-9)


@pytest.mark.parametrize("preset", sorted(DCTCSC_PRESETS))
@pytest.mark.parametrize("shape", [(33, 27), (5, 12)])  # the second is padded as the front end pads
def test_untrained_model_is_the_dct_denoiser_with_each_components_level(preset: str, shape: tuple[int, int]) -> None:
    eigen = smooth_images(len(LEVELS), *shape) + LEVELS[:, None, None] * np.random.default_rng(1).standard_normal(
        (len(LEVELS), *shape)
    )
    expected = DCTDenoiser(threshold=2.7).denoise(eigen, LEVELS)
    got, stats = run(build_model(preset).double().eval(), eigen, LEVELS)
    assert np.abs(got - expected).max() < 1e-9 * np.abs(expected).max()
    assert bool(stats.converged.all()) and int(stats.evaluations.max()) == 1  # f is constant: solved at once
    unit, _ = run(build_model(preset).double().eval(), eigen, np.ones(len(LEVELS)))
    assert np.abs(unit - got).max() > 1e-3  # the level is really used


def test_padded_components_come_back_unchanged_and_do_not_change_the_others() -> None:
    model = trained_like(DCTCSCConfig(coupling=True))
    eigen = torch.as_tensor(smooth_images(4, 20, 20), dtype=torch.float64)[None]
    eigenvalues = torch.tensor([[500.0, 50, 5, 1.0]], dtype=torch.float64)
    mask = torch.tensor([[1.0, 1, 1, 0]], dtype=torch.float64)
    with torch.no_grad():
        full, _ = model(eigen, None, eigenvalues, mask, noise=torch.full((1, 4), 0.7, dtype=torch.float64))
        cut, _ = model(eigen[:, :3], None, eigenvalues[:, :3], noise=torch.full((1, 3), 0.7, dtype=torch.float64))
    assert torch.equal(full[0, 3], eigen[0, 3])
    torch.testing.assert_close(full[:, :3], cut, rtol=1e-12, atol=1e-10)


class _Levels:
    """Wraps an eigen-image denoiser so that the pipeline's call gets per-component levels (not all 1)."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.name = inner.name

    def __getattr__(self, name):  # prepare, last_facts, info, ...
        return getattr(self.inner, name)

    def denoise(self, eigen_images: np.ndarray, noise) -> np.ndarray:
        return self.inner.denoise(eigen_images, LEVELS[np.arange(eigen_images.shape[0]) % len(LEVELS)])

    def denoise_parts(self, eigen_images: np.ndarray, noise, perturbation: np.ndarray):
        levels = LEVELS[np.arange(eigen_images.shape[0]) % len(LEVELS)]
        return self.inner.denoise_parts(eigen_images, levels, perturbation)


def noisy_cube(bands: int = 12, rows: int = 41, cols: int = 37, seed: int = 3) -> np.ndarray:
    """(B, H, W) float32 in [0, 1]-ish: four spectra times textured maps, band-dependent Gaussian noise."""
    rng = np.random.default_rng(seed)
    maps = np.abs(smooth_images(4, rows, cols, seed)) / 10
    spectra = rng.uniform(0.1, 1.0, (bands, 4)) / 4
    clean = np.einsum("bk,khw->bhw", spectra, maps)
    sigma = rng.uniform(0.002, 0.02, bands)
    return (clean + sigma[:, None, None] * rng.standard_normal(clean.shape)).astype(np.float32)


def test_untrained_model_through_the_real_pipeline_equals_lowrank() -> None:
    from hsidenoise.denoise import denoise_array
    from hsidenoise.methods.decsc import DECSCEigenImageDenoiser
    from hsidenoise.subspace import LowRankConfig, LowRankDenoiser, spatial_denoiser
    from hsidenoise.tiling import TileConfig

    # per-component levels (the wrapper assigns them by position in the stack, which the component blend, running
    # the denoiser again on a few components, does not keep: it is off here and on in tests/test_component_blend.py)
    tiles = TileConfig(tile=24, overlap=6)
    cube, config = noisy_cube(), LowRankConfig(spatial="dct", component_blend=False)
    front_end = denoise_array(cube, LowRankDenoiser(config, _Levels(spatial_denoiser(config))), tiles)
    eigen_denoiser = DECSCEigenImageDenoiser(build_model("dctcsc").double(), pilot=spatial_denoiser(config))
    pipeline = LowRankDenoiser(config, _Levels(eigen_denoiser), name="decsc")
    ours = denoise_array(cube, pipeline, tiles)
    assert pipeline.subspace is not None and pipeline.subspace.rank >= 2
    assert np.abs(ours.astype(np.float64) - front_end).max() < 1e-6 * np.abs(front_end).max()  # float32 output
    assert eigen_denoiser.info()["tiles"] > 1 and eigen_denoiser.last_facts["converged"] == 1.0


def test_cli_run_of_the_untrained_preset_matches_lowrank_and_converges_everywhere(tmp_path) -> None:
    from hsidenoise.cli import app
    from hsidenoise.cube import Cube
    from hsidenoise.io import read_cube, write_cube

    source = tmp_path / "scene.hdr"
    write_cube(source, Cube(noisy_cube()))
    runner = CliRunner()
    common = ("--tile", "24", "--overlap", "6", "--json", "--quiet")
    decsc = runner.invoke(
        app, ["run", str(source), "-o", str(tmp_path / "d.hdr"), "--model", "dctcsc", "--random-weights", *common]
    )
    lowrank = runner.invoke(app, ["run", str(source), "-o", str(tmp_path / "l.hdr"), "--method", "lowrank", *common])
    assert decsc.exit_code == 0 and lowrank.exit_code == 0, decsc.output + lowrank.output
    solver = json.loads(decsc.stdout)["solver"]
    assert solver["tiles"] > 1 and solver["tiles_not_converged"] == 0
    ours, theirs = read_cube(tmp_path / "d.hdr").data, read_cube(tmp_path / "l.hdr").data
    # float32 model: a threshold decision may flip by rounding; far below anything a metric sees
    assert np.abs(ours - theirs).max() < 1e-3 * np.abs(theirs).max()


# ---------------------------------------------------------------------------------------------- equilibrium


@pytest.mark.parametrize("coupling", [False, True])
def test_the_layer_is_a_contraction_by_construction(coupling: bool) -> None:
    model = trained_like(DCTCSCConfig(coupling=coupling), seed=4)
    bound = model.contraction
    assert 0 < bound <= model.config.gate_max * (1 + 1e-3)
    generator = torch.Generator().manual_seed(0)
    z, front = (torch.randn(3, 1, 30, 30, generator=generator, dtype=torch.float64) * 5 for _ in range(2))
    threshold = model.thresholds(torch.tensor([1.0, 0.7, 0.5], dtype=torch.float64), torch.zeros(3, dtype=torch.float64))
    with torch.no_grad():
        for _ in range(5):
            a, b = (torch.randn(3, 1, 30, 30, generator=generator, dtype=torch.float64) * 10 for _ in range(2))
            change = (model.layer(a, z, front, threshold) - model.layer(b, z, front, threshold)).flatten(1).norm(dim=1)
            assert bool((change <= bound * (a - b).flatten(1).norm(dim=1) * (1 + 1e-2)).all())


@pytest.mark.parametrize("rotated", [False, True])
def test_the_equilibrium_dictionary_reconstructs_up_to_the_edges(rotated: bool) -> None:
    """With the gate open and nothing thresholded, f(x) = (1 - alpha) FE + alpha x at every pixel, edges included,
    also once training has rotated the dictionary (it stays a tight frame)."""
    model = build_model("dctcsc").double()
    with torch.no_grad():
        if rotated:
            model.dictionary_rotation.add_(0.3 * torch.randn_like(model.dictionary_rotation))
        model.gate.fill_(0.5)
        model.mix.fill_(0.0)
        model.rho.fill_(-30.0)  # softplus ~ 0: no threshold
    x, front = (torch.randn(2, 1, 19, 23, dtype=torch.float64) * 50 for _ in range(2))
    threshold = model.thresholds(torch.ones(2, dtype=torch.float64), torch.zeros(2, dtype=torch.float64))
    with torch.no_grad():
        torch.testing.assert_close(model.layer(x, x, front, threshold), 0.5 * front + 0.5 * x, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("padding", [0, 7])
def test_synthesis_is_the_transposed_convolution(padding: int) -> None:
    generator = torch.Generator().manual_seed(3)
    codes = torch.randn(3, 64, 13, 17, generator=generator, dtype=torch.float64)
    atoms = torch.randn(64, 1, 8, 8, generator=generator, dtype=torch.float64)
    torch.testing.assert_close(
        synthesise(codes, atoms, padding), torch.nn.functional.conv_transpose2d(codes, atoms, padding=padding)
    )


def test_the_solved_correction_is_the_layer_minus_the_front_end() -> None:
    """``correction`` (what the solver iterates, free of cancellation) is f(FE + d) - FE exactly (float64)."""
    model = trained_like(DCTCSCConfig(coupling=True), seed=5)
    generator = torch.Generator().manual_seed(1)
    z, front, delta = (torch.randn(3, 1, 21, 18, generator=generator, dtype=torch.float64) * s for s in (20, 20, 1))
    threshold = model.thresholds(torch.tensor([1.0, 0.7, 0.5], dtype=torch.float64), torch.zeros(3, dtype=torch.float64))
    analysis = model._layer_parts()[0]
    front_codes = torch.nn.functional.conv2d(front, analysis, padding=7)
    with torch.no_grad():
        torch.testing.assert_close(
            model.correction(delta, z - front, front_codes, threshold),
            model.layer(front + delta, z, front, threshold) - front,
            rtol=1e-9, atol=1e-9,
        )


def test_float32_solves_the_strongest_eigenimages_as_float64_does() -> None:
    """Eigen-images of std ~2.5e5 (a bright real scene's first components, whitened): the float32 solve converges
    in as many evaluations as the float64 one and lands on its fixed point (before the correction was computed
    without cancellation, float32 stalled at a relative residual of 0.017 after 30 evaluations)."""
    model = trained_like(DCTCSCConfig(coupling=True), seed=6)
    eigen = smooth_images(4, 40, 44, seed=2) / 30.0 * np.array([2.5e5, 3e4, 400, 5])[:, None, None]
    eigen += np.random.default_rng(8).standard_normal(eigen.shape)
    levels, eigenvalues = np.ones(4), np.array([6e10, 1e9, 1.6e5, 30.0])
    out64, stats64 = run(model, eigen, levels, eigenvalues)
    out32, stats32 = run(model.float(), eigen, levels, eigenvalues)
    assert bool(stats64.converged.all()) and bool(stats32.converged.all())
    assert stats32.evaluations.tolist() == stats64.evaluations.tolist()
    error = np.sqrt(((out32 - out64) ** 2).mean(axis=(1, 2)))
    assert float(error.max()) < 0.1  # unit noise; the float32 front end's own rounding on the strongest image


@pytest.mark.parametrize("coupling", [False, True])
def test_a_trained_like_equilibrium_converges_and_more_iterations_change_nothing(coupling: bool) -> None:
    from dataclasses import replace

    model = trained_like(DCTCSCConfig(coupling=coupling), seed=1)
    clean = smooth_images(len(LEVELS), 36, 36, seed=5)
    eigen = clean + LEVELS[:, None, None] * np.random.default_rng(6).standard_normal(clean.shape)
    out, stats = run(model, eigen, LEVELS)
    assert bool(stats.converged.all()) and float(stats.residual.max()) < model.config.solver.tol
    model.deq.config = replace(model.deq.config, max_iter=2 * int(stats.evaluations.max()), tol=1e-12)
    longer, more = run(model, eigen, LEVELS)
    assert int(more.evaluations.min()) == 2 * int(stats.evaluations.max())

    def psnr(x: np.ndarray) -> float:
        return 10 * math.log10(float(np.abs(clean).max()) ** 2 / float(np.mean((x - clean) ** 2)))

    assert abs(psnr(out) - psnr(longer)) < 0.01
    assert np.abs(out - DCTDenoiser(2.7).denoise(eigen, LEVELS)).max() > 1e-2  # it really moved


def test_gradients_reach_the_equilibrium_at_initialisation() -> None:
    model = build_model("dctcsc-coupled").train()
    eigen = torch.as_tensor(smooth_images(3, 24, 24), dtype=torch.float32)[None]
    out, _ = model(eigen, None, torch.tensor([[400.0, 40, 4]]), noise=torch.tensor([[0.9, 0.7, 0.6]]))
    (out - 0.9 * eigen).square().mean().backward()
    assert float(model.gate.grad.abs()) > 0 and float(model.wiener.grad.abs().max()) > 0
    assert float(model.coupling.grad.abs().max()) > 0
    assert model.analysis_delta.grad is None  # fixed DCT filters in the presets


# ---------------------------------------------------------------------------------------------- config, weights


def test_config_round_trip_weights_and_errors(tmp_path) -> None:
    model = trained_like(DCTCSCConfig(coupling=True, max_components=8)).float()
    path = save_weights(model, model.config, tmp_path / "w", {"note": "test"})
    loaded, config, card = load_weights(path)
    assert isinstance(loaded, DCTCSC) and config == model.config and card == {"note": "test"}
    for name, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value)
    with pytest.raises(ConfigError, match="gate_max"):
        DCTCSCConfig(gate_max=1.0)
    with pytest.raises(ConfigError, match="unknown DCT-CSC config keys"):
        DCTCSCConfig.from_dict({**DCTCSCConfig().to_dict(), "bogus": 1})


def test_the_presets_are_listed_with_their_family() -> None:
    from hsidenoise.model import list_presets

    rows = {row["name"]: row for row in list_presets()}
    assert rows["dctcsc"]["family"] == "dctcsc" and rows["dctcsc-coupled"]["parameters"] > rows["dctcsc"]["parameters"]
    assert {"subspace", "paper"} <= set(rows)


# ---------------------------------------------------------------------------------------------- training


def test_synthetic_pairs_carry_levels_drawn_from_the_range_and_real_pairs_their_measured_level() -> None:
    from hsidenoise.training.data import TrainingCube
    from hsidenoise.training.subspace_pairs import SubspaceSampler, SubspaceSamplerConfig

    clean = np.clip(noisy_cube(bands=10, rows=48, cols=48, seed=8), 0, None)
    cube = TrainingCube(name="t", source=None, data=clean.astype(np.float32), kept_bands=np.arange(clean.shape[0]))
    config = SubspaceSamplerConfig(
        patch_size=24, region_size=48, patches_per_round=16, synthetic_noise=(0.5, 1.0), real_noise="true"
    )
    batch = SubspaceSampler([cube], config, rng=np.random.default_rng(0)).next_batch(16)
    real = batch.mask > 0
    assert batch.noise.shape == batch.mask.shape
    levels = batch.noise[real].numpy()
    assert (levels > 0).all() and np.isfinite(levels).all() and levels.std() > 0.01
    residual = ((batch.eigen - batch.target) * batch.mask[:, :, None, None]).square().mean(dim=(2, 3)).sqrt()
    np.testing.assert_allclose(residual[real].numpy(), levels, rtol=0.35)  # each example's noise is its level
    nominal = SubspaceSampler([cube], replace(config, real_noise="pipeline"), rng=np.random.default_rng(0)).next_batch(16)
    synthetic = (nominal.noise != 1.0).any(dim=1)  # drawn levels; real examples carry the pipeline's 1
    assert bool(synthetic.any()) and bool((~synthetic).any())
    assert torch.equal(nominal.noise[synthetic], batch.noise[synthetic])
    with pytest.raises(ConfigError, match="synthetic_noise"):
        SubspaceSamplerConfig(synthetic_noise=(1.0, 0.5))
    with pytest.raises(ConfigError, match="real_noise"):
        SubspaceSamplerConfig(real_noise="guess")


@pytest.mark.shared_data
def test_gpu_script_trains_the_new_preset_on_cpu(shared_data, tmp_path) -> None:
    """``PRESETS=dctcsc bench/gpu_train.sh OUT 8 2``: a few steps on CPU with the ``mpsnr`` loss, weights, log and
    inference timing."""
    env = {**os.environ, "PRESETS": "dctcsc", "PYTHON": sys.executable, "DATA": str(shared_data), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        ["bash", str(REPO / "bench" / "gpu_train.sh"), str(tmp_path / "out"), "8", "2"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    out = tmp_path / "out"
    assert (out / "dctcsc" / "decsc-dctcsc.safetensors").is_file() and (out / "train-dctcsc.log").is_file()
    assert "dctcsc inference" in (out / "timings.txt").read_text()
    card = json.loads((out / "dctcsc" / "decsc-dctcsc.json").read_text())
    assert card["preset"] == "dctcsc" and card["card"]["steps"] >= 1
    assert card["card"]["loss"] == "mpsnr"  # the script's default loss: the users' metric
