"""DECSC inference paths: the optimised and the naive path agree, per-window and batch-wide convergence agree,
fewer bands than the window, tiles batched or one at a time, the solver's work reported, out-of-memory back-off."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from hsidenoise.denoise import denoise_array
from hsidenoise.errors import ConfigError
from hsidenoise.subspace import LowRankConfig, LowRankDenoiser
from hsidenoise.model import build_model
from hsidenoise.methods.decsc_bands import DECSCDenoiser, InferenceConfig
from small_models import NOISE_AWARE
from hsidenoise.tiling import mirror_bands
from hsidenoise.model.diffconv import DifferenceConv3d
from hsidenoise.tiling import TileConfig

torch.set_num_threads(1)

TILES = TileConfig(tile=24, overlap=6)
"""Four equal tiles (22 x 23) on the 37 x 40 test cube."""


def smooth_cube(bands: int = 45, rows: int = 37, cols: int = 40, seed: int = 0) -> np.ndarray:
    """(bands, rows, cols) float32: spectra smooth along bands plus white noise; odd sizes, 45 bands = 2 windows."""
    rng = np.random.default_rng(seed)
    signal = np.cumsum(rng.standard_normal((bands, rows, cols)), axis=0) * 0.05 + 0.5
    return (signal + 0.1 * rng.standard_normal(signal.shape)).astype(np.float32)


def network(**solver: float | int):
    """The noise-aware band-window network (the retired ``lite`` architecture), untrained but with full-size corrections (synthesis_init 1) so that the model visibly
    changes the front end's estimate, and a deterministic initialisation."""
    torch.manual_seed(0)
    config = replace(NOISE_AWARE, synthesis_init=1.0)
    if solver:
        config = replace(config, solver=replace(config.solver, **solver))
    return build_model(config)


def run(model, cube: np.ndarray, config: InferenceConfig, batch_size: int, tiles: TileConfig = TILES):
    denoiser = DECSCDenoiser(model, config=config, band_stride=tiles.band_stride)
    return denoise_array(cube, denoiser, tiles, batch_size=batch_size), denoiser


@pytest.fixture(scope="module")
def front_end_only() -> np.ndarray:
    """What the low-rank front end alone gives on the test cube: the model's output must differ from it."""
    return denoise_array(smooth_cube(), LowRankDenoiser(LowRankConfig(spatial="dct")), TILES)


def test_the_optimised_and_naive_paths_agree_to_1e_3(front_end_only):
    cube = smooth_cube()
    model = network()
    optimised, denoiser = run(model, cube, InferenceConfig(window_batch=5), batch_size=3)
    naive, _ = run(model, cube, InferenceConfig(naive=True), batch_size=1)
    assert np.all(np.isfinite(optimised))
    assert np.abs(optimised - front_end_only).max() > 5e-3  # the model does work: agreeing means something
    assert np.abs(optimised - naive).max() <= 1e-3
    # the naive path left the model as it found it: folded kernels, class forward, per-sample solver config
    convolutions = [m for m in model.modules() if isinstance(m, DifferenceConv3d)]
    assert convolutions and all(m.folded is not None and "forward" not in m.__dict__ for m in convolutions)
    assert model.deq.config.per_sample == NOISE_AWARE.solver.per_sample


def test_the_naive_path_runs_the_unfolded_definition_one_window_per_call(monkeypatch):
    cube = smooth_cube()
    calls = {"unfolded": 0, "sizes": []}
    unfolded = DifferenceConv3d.forward_unfolded

    def counting_unfolded(self, x):
        calls["unfolded"] += 1
        return unfolded(self, x)

    monkeypatch.setattr(DifferenceConv3d, "forward_unfolded", counting_unfolded)
    model = network()
    forward = model.forward

    def counting(noisy, **kwargs):
        calls["sizes"].append(noisy.shape[0])
        assert not torch.is_inference_mode_enabled() and not torch.is_grad_enabled()
        return forward(noisy, **kwargs)

    monkeypatch.setattr(model, "forward", counting)
    _, denoiser = run(model, cube, InferenceConfig(naive=True), batch_size=4)
    assert set(calls["sizes"]) == {1} and len(calls["sizes"]) == 4 * 2  # 4 tiles x 2 band windows
    assert calls["unfolded"] > 0
    assert denoiser.info()["inference"] == {
        "window_batch": 1, "bf16": False, "per_window_convergence": False, "fold": False, "inference_mode": False,
        "naive": False,
    }


def test_per_window_convergence_matches_batch_wide_stopping_with_fewer_evaluations():
    cube = smooth_cube()
    cube[:, :22] = 0.2 * smooth_cube(seed=5)[:, :22] + 0.4  # quiet upper tiles (rows 0-21): their windows converge sooner
    model = network(tol=1e-2, max_iter=10)
    per_window, fast = run(model, cube, InferenceConfig(per_window_convergence=True), batch_size=4)
    batch_wide, slow = run(model, cube, InferenceConfig(per_window_convergence=False), batch_size=4)
    assert fast.info()["evaluations_per_tile"] < slow.info()["evaluations_per_tile"]
    assert np.abs(per_window - batch_wide).max() <= 5e-3


def test_tiles_batched_or_one_at_a_time_give_the_same_output():
    cube = smooth_cube(seed=1)
    model = network()
    batched, _ = run(model, cube, InferenceConfig(window_batch=16), batch_size=4)
    single, _ = run(model, cube, InferenceConfig(window_batch=16), batch_size=1)
    windows_one_by_one, _ = run(model, cube, InferenceConfig(window_batch=1), batch_size=4)
    assert np.abs(batched - single).max() <= 1e-4
    assert np.abs(batched - windows_one_by_one).max() <= 1e-4


def test_fewer_bands_than_the_window_are_mirrored_and_cut_back(front_end_only):
    assert mirror_bands(np.arange(4), 9).tolist() == [0, 1, 2, 3, 2, 1, 0, 1, 2]
    cube = smooth_cube(bands=13, rows=29, cols=23, seed=2)
    model = network()
    optimised, denoiser = run(model, cube, InferenceConfig(), batch_size=2, tiles=TileConfig(tile=20, overlap=5))
    naive, _ = run(model, cube, InferenceConfig(naive=True), batch_size=1, tiles=TileConfig(tile=20, overlap=5))
    assert optimised.shape == cube.shape and np.all(np.isfinite(optimised))
    assert np.abs(optimised - naive).max() <= 1e-3
    assert np.abs(optimised - cube).max() > 1e-2


def test_info_reports_solver_evaluations_per_tile():
    cube = smooth_cube()
    denoiser = DECSCDenoiser(network(max_iter=3), band_stride=TILES.band_stride)
    tiles = [cube[:, :24, :24], cube[:, :24, 16:], cube[:, 13:, :24]]
    denoiser.prepare(_statistics(cube))
    results = denoiser.denoise_tiles(tiles)
    lite = NOISE_AWARE.solver
    most = 1 + 3 + lite.phantom_steps  # initial point + at most max_iter solver evaluations + phantom steps
    for result in results:
        assert 1 + 1 + lite.phantom_steps <= result.info["evaluations"] <= most
        assert 0.0 <= result.info["converged"] <= 1.0 and result.info["max_residual"] >= 0
    info = denoiser.info()
    assert info["tiles"] == 3
    assert info["evaluations_per_tile"] == pytest.approx(np.mean([r.info["evaluations"] for r in results]))


def test_a_chunk_that_runs_out_of_memory_is_retried_with_half_the_windows(monkeypatch):
    cube = smooth_cube()
    model = network()
    reference, _ = run(model, cube, InferenceConfig(window_batch=8), batch_size=4)
    forward = model.forward
    sizes = []

    def small_memory(noisy, **kwargs):
        sizes.append(noisy.shape[0])
        if noisy.shape[0] > 2:
            raise torch.OutOfMemoryError("simulated: CUDA out of memory")
        return forward(noisy, **kwargs)

    monkeypatch.setattr(model, "forward", small_memory)
    output, _ = run(model, cube, InferenceConfig(window_batch=8), batch_size=4)
    assert sizes[:3] == [8, 4, 2] and max(sizes[3:]) == 2
    assert np.abs(output - reference).max() <= 1e-4


def test_window_batch_must_be_positive():
    with pytest.raises(ConfigError, match="window_batch"):
        InferenceConfig(window_batch=0)


def _statistics(cube: np.ndarray):
    """Whole-cube statistics of an in-memory cube, through a minimal reader."""
    from hsidenoise.cube import CubeMeta
    from hsidenoise.statistics import compute_statistics

    class Reader:
        shape, dtype, path, meta = cube.shape, cube.dtype, None, CubeMeta(nodata=None, dtype=cube.dtype)

        def read(self, rows=slice(None), cols=slice(None), bands=None):
            block = cube[:, rows, cols]
            return block if bands is None else block[bands]

    return compute_statistics(Reader())


def test_cuda_window_batch_follows_free_memory(monkeypatch):
    import torch

    from hsidenoise.methods.decsc_bands import BYTES_PER_WINDOW_VOXEL, MAX_CUDA_WINDOW_BATCH, cuda_window_batch

    per_window = BYTES_PER_WINDOW_VOXEL * 31 * 256 * 256
    for free, expected in ((10 * per_window, 6), (per_window // 3, 1), (10**6 * per_window, MAX_CUDA_WINDOW_BATCH)):
        monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device, free=free: (free, 2 * free))
        assert cuda_window_batch(torch.device("cuda"), 31, 256, 256) == expected
