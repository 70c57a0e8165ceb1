"""The classical pipeline (hsidenoise.subspace) on tiny synthetic cubes whose truth is known by construction."""

from __future__ import annotations

import dataclasses
import importlib.util
from types import SimpleNamespace

import numpy as np
import pytest

from hsidenoise.errors import ConfigError, CubeShapeError, HsiDenoiseError
from hsidenoise.subspace import eigenimages
from hsidenoise.subspace import (
    LowRankConfig,
    LowRankDenoiser,
    dct_denoise,
    estimate_band_noise,
    fit_lowrank,
    fit_subspace,
    lowrank_denoise,
    project,
    remove_outliers,
)

FAST = LowRankConfig(spatial="dct")


def smooth_maps(rank: int, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """(rank, h, w) smooth, linearly independent abundance-like maps in [0, 1]."""
    rows, cols = np.mgrid[0:height, 0:width] / max(height, width)
    maps = []
    for _ in range(rank):
        fy, fx, phase = rng.uniform(0.5, 3.0), rng.uniform(0.5, 3.0), rng.uniform(0, 2 * np.pi)
        maps.append(0.5 + 0.5 * np.sin(2 * np.pi * (fy * rows + fx * cols) + phase))
    return np.stack(maps)


def low_rank_cube(bands: int, height: int, width: int, rank: int, seed: int = 0) -> np.ndarray:
    """(B, h, w) float64 cube = spectra (B, rank) @ smooth maps (rank, h*w): rank exactly ``rank``."""
    rng = np.random.default_rng(seed)
    spectra = rng.uniform(0.1, 1.0, (bands, rank)) / rank
    maps = smooth_maps(rank, height, width, rng)
    return (spectra @ maps.reshape(rank, -1)).reshape(bands, height, width)


def add_band_noise(cube: np.ndarray, sigma: np.ndarray, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return cube + sigma[:, None, None] * rng.standard_normal(cube.shape)


def mpsnr(reference: np.ndarray, estimate: np.ndarray) -> float:
    mse = ((reference - estimate) ** 2).reshape(reference.shape[0], -1).mean(axis=1)
    return float(np.mean(10 * np.log10(1.0 / mse)))


def spectra_of(cube: np.ndarray) -> np.ndarray:
    return cube.reshape(cube.shape[0], -1).T


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    import torch

    torch.set_num_threads(1)


def test_noise_estimate_recovers_band_sigmas() -> None:
    cube = low_rank_cube(37, 60, 70, rank=4)
    sigma = np.random.default_rng(3).uniform(0.005, 0.05, 37)
    estimate = estimate_band_noise(spectra_of(add_band_noise(cube, sigma)), FAST)
    np.testing.assert_allclose(estimate, sigma, rtol=0.10)


def test_noise_estimate_ignores_impulses_on_some_bands() -> None:
    cube = low_rank_cube(37, 60, 70, rank=4)
    sigma = np.random.default_rng(3).uniform(0.005, 0.05, 37)
    noisy = add_band_noise(cube, sigma)
    rng = np.random.default_rng(4)
    for band, density in zip((2, 11, 30), (0.1, 0.2, 0.3)):
        hit = rng.random(noisy.shape[1:]) < density
        noisy[band][hit] = rng.integers(0, 2, hit.sum()).astype(float)  # salt (1) or pepper (0)
    estimate = estimate_band_noise(spectra_of(noisy), FAST)
    np.testing.assert_allclose(estimate, sigma, rtol=0.10)


def test_noise_estimate_survives_duplicate_bands() -> None:
    cube = low_rank_cube(12, 30, 31, rank=3)
    cube = np.concatenate([cube, cube[:3]])  # three exact duplicates: a singular Gram matrix without ridge
    sigma = np.full(cube.shape[0], 0.02)
    estimate = estimate_band_noise(spectra_of(add_band_noise(cube, sigma)), FAST)
    assert np.isfinite(estimate).all() and (estimate > 0).all()
    # a band and its duplicate cannot be told apart: both must still carry a noise of the right order
    assert np.all((estimate > 0.5 * sigma) & (estimate < 2.0 * sigma))


@pytest.mark.parametrize("rank", [1, 3, 5])
def test_rank_equals_true_rank(rank: int) -> None:
    cube = low_rank_cube(37, 50, 53, rank=rank)
    sigma = np.random.default_rng(5).uniform(0.002, 0.02, 37)
    subspace = fit_lowrank(spectra_of(add_band_noise(cube, sigma)), FAST)
    assert subspace.rank == rank


def test_projection_of_noise_free_low_rank_cube_is_exact() -> None:
    cube = low_rank_cube(23, 17, 19, rank=3)
    sigma = np.linspace(0.01, 0.03, 23)
    subspace = fit_subspace(spectra_of(cube), sigma, FAST)
    assert subspace.rank == 3
    np.testing.assert_array_almost_equal(np.linalg.svd(subspace.basis, compute_uv=False), np.ones(3))
    eigen_images, projection = project(cube, subspace, FAST)
    assert eigen_images.shape == (3, 17, 19)
    np.testing.assert_allclose(projection, cube, atol=1e-10)


def test_dct_fallback_reduces_error_of_noisy_smooth_image() -> None:
    clean = smooth_maps(1, 45, 51, np.random.default_rng(6))[0]
    noisy = clean + 0.1 * np.random.default_rng(7).standard_normal(clean.shape)
    denoised = dct_denoise(noisy, 0.1, FAST.dct_threshold)
    assert denoised.shape == clean.shape
    assert np.mean((denoised - clean) ** 2) < 0.2 * np.mean((noisy - clean) ** 2)


def test_dct_fallback_handles_images_smaller_than_a_block() -> None:
    image = np.arange(15, dtype=float).reshape(3, 5)
    denoised = dct_denoise(image, 1e-6, FAST.dct_threshold)
    np.testing.assert_allclose(denoised, image, rtol=1e-6, atol=1e-6)  # float32 coefficients (DCT_DTYPE)


def test_dct_stack_goes_through_in_groups_with_the_same_result(monkeypatch: pytest.MonkeyPatch) -> None:
    images = np.random.default_rng(9).standard_normal((7, 23, 29)) + smooth_maps(7, 23, 29, np.random.default_rng(10))
    whole = eigenimages.dct_denoise_stack(images, 0.5, FAST.dct_threshold)  # one group: 7 small images
    groups: list[int] = []
    two_stages = eigenimages._dct_two_stages
    monkeypatch.setattr(eigenimages, "DCT_CHUNK_BYTES", 3 * 64 * (23 - 7) * (29 - 7) * eigenimages.DCT_ITEMSIZE)  # three images a group
    monkeypatch.setattr(
        eigenimages, "_dct_two_stages", lambda padded, *rest: groups.append(len(padded)) or two_stages(padded, *rest)
    )
    grouped = eigenimages.dct_denoise_stack(images, 0.5, FAST.dct_threshold)
    assert groups == [3, 3, 1]
    # the same up to float32 rounding (DCT_DTYPE): BLAS may sum a product's terms in another order per size
    np.testing.assert_allclose(grouped, whole, rtol=1e-5, atol=1e-6)
    one_by_one = np.stack([dct_denoise(image, 0.5, FAST.dct_threshold) for image in images])
    np.testing.assert_allclose(grouped, one_by_one, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("spatial", ["dct", "none"])
def test_lowrank_denoise_beats_noisy_input_with_band_varying_noise(spatial: str) -> None:
    cube = low_rank_cube(37, 48, 55, rank=4)
    sigma = np.random.default_rng(8).uniform(0.0, 0.3, 37)
    noisy = add_band_noise(cube, sigma).astype(np.float32)
    denoised, info = lowrank_denoise(noisy, LowRankConfig(spatial=spatial))
    assert denoised.dtype == np.float32 and denoised.shape == cube.shape
    assert info.spatial == spatial and info.rank == 4
    assert mpsnr(cube, denoised) > mpsnr(cube, noisy) + 10.0


def test_stripes_and_dead_lines_are_removed() -> None:
    cube = low_rank_cube(20, 40, 45, rank=3)
    sigma = np.full(20, 0.01)
    gaussian = add_band_noise(cube, sigma)
    corrupted = gaussian.copy()
    rng = np.random.default_rng(9)
    stripe_columns = rng.choice(45, 6, replace=False)
    corrupted[4][:, stripe_columns] += rng.uniform(0.05, 0.2, 6) * rng.choice([-1, 1], 6)
    corrupted[13][:, [7, 30]] = 0.0  # dead lines
    subspace = fit_lowrank(spectra_of(corrupted), FAST)
    cleaned, missing = remove_outliers(corrupted, subspace, FAST)
    assert missing[13][:, [7, 30]].all()
    for band in (4, 13):
        before = np.sqrt(np.mean((corrupted[band] - gaussian[band]) ** 2))
        after = np.sqrt(np.mean((cleaned[band] - gaussian[band]) ** 2))
        assert after < 0.15 * before
    # bands without corruption are left within their noise level
    untouched = [b for b in range(20) if b not in (4, 13)]
    assert np.abs(cleaned[untouched] - corrupted[untouched]).max() < 6 * 0.01 * 2


def test_dense_salt_and_pepper_band_is_recovered_from_the_others() -> None:
    cube = low_rank_cube(31, 48, 50, rank=3)
    noisy = add_band_noise(cube, np.full(31, 0.02))
    rng = np.random.default_rng(10)
    hit = rng.random(noisy.shape[1:]) < 0.7
    # salt and pepper spread over a narrow range (no exact pile-up): only the L1 synthesis rows see through it
    noisy[5][hit] = rng.integers(0, 2, hit.sum()) + rng.uniform(-0.01, 0.01, hit.sum())
    robust, _ = lowrank_denoise(noisy, FAST)
    plain, _ = lowrank_denoise(noisy, dataclasses.replace(FAST, loading_iterations=0))
    error_robust = np.sqrt(np.mean((robust[5] - cube[5]) ** 2))
    error_plain = np.sqrt(np.mean((plain[5] - cube[5]) ** 2))
    assert error_robust < 0.02 < error_plain


def test_exact_salt_and_pepper_is_found_as_stuck_values_without_the_l1_rows() -> None:
    cube = low_rank_cube(31, 48, 50, rank=3)
    noisy = add_band_noise(cube, np.full(31, 0.02))
    rng = np.random.default_rng(10)
    hit = rng.random(noisy.shape[1:]) < 0.7
    noisy[5][hit] = rng.integers(0, 2, hit.sum()).astype(float)
    plain, _ = lowrank_denoise(noisy, dataclasses.replace(FAST, loading_iterations=0))
    assert np.sqrt(np.mean((plain[5] - cube[5]) ** 2)) < 0.02


def test_denoiser_protocol_with_few_bands_and_odd_tiles() -> None:
    cube = low_rank_cube(5, 37, 41, rank=2)  # 5 bands: fewer than any DECSC window or DCT block
    sigma = np.array([0.01, 0.05, 0.02, 0.08, 0.03])
    noisy = add_band_noise(cube, sigma).astype(np.float32)
    denoiser = LowRankDenoiser(FAST)
    assert denoiser.name == "lowrank"
    denoiser.prepare(SimpleNamespace(sample_spectra=spectra_of(noisy), mean=noisy.mean(axis=(1, 2))))
    info = denoiser.info()
    assert info["spatial"] == "dct" and info["rank"] == 2 and len(info["sigma"]) == 5
    for top, bottom, left, right in [(0, 7, 0, 13), (3, 4, 2, 11), (10, 37, 5, 6), (0, 37, 0, 41)]:
        tile = noisy[:, top:bottom, left:right]
        out = denoiser.denoise_tile(tile)
        assert out.shape == tile.shape and out.dtype == np.float32 and np.isfinite(out).all()
        np.testing.assert_array_equal(out, denoiser.denoise_tile(tile.copy()))  # deterministic
    whole = denoiser.denoise_tile(noisy)
    assert mpsnr(cube, whole) > mpsnr(cube, noisy) + 6.0


def test_denoiser_refuses_misuse() -> None:
    denoiser = LowRankDenoiser(FAST)
    with pytest.raises(ConfigError):
        denoiser.denoise_tile(np.zeros((5, 8, 8), np.float32))
    cube = low_rank_cube(6, 20, 21, rank=2)
    denoiser.prepare(SimpleNamespace(sample_spectra=spectra_of(add_band_noise(cube, np.full(6, 0.01)))))
    with pytest.raises(CubeShapeError):
        denoiser.denoise_tile(np.zeros((5, 8, 8), np.float32))
    nan_tile = cube[:, :8, :8].astype(np.float32)
    nan_tile[0, 0, 0] = np.nan
    with pytest.raises(HsiDenoiseError):
        denoiser.denoise_tile(nan_tile)


def test_config_rejects_bad_values() -> None:
    with pytest.raises(ConfigError):
        LowRankConfig(spatial="wavelet")
    with pytest.raises(ConfigError):
        LowRankConfig(edge_margin=0.0)
    with pytest.raises(ConfigError):
        LowRankConfig(robust_passes=-1)


def test_spatial_auto_follows_bm3d_availability(monkeypatch: pytest.MonkeyPatch) -> None:
    real_find_spec = importlib.util.find_spec

    def pretend(installed: bool):  # find_spec as if bm3d were (not) installed
        return lambda name, *args: (object() if installed else None) if name == "bm3d" else real_find_spec(name, *args)

    monkeypatch.setattr(eigenimages.importlib.util, "find_spec", pretend(False))
    assert eigenimages.resolve_spatial("auto") == "dct"
    with pytest.raises(ConfigError):
        LowRankDenoiser(LowRankConfig(spatial="bm3d"))
    monkeypatch.setattr(eigenimages.importlib.util, "find_spec", pretend(True))
    assert eigenimages.resolve_spatial("auto") == "bm3d"


def test_denoiser_in_the_tiled_pipeline_skips_dead_bands() -> None:
    from hsidenoise.denoise import denoise_array
    from hsidenoise.tiling import TileConfig

    cube = low_rank_cube(9, 40, 45, rank=2)
    sigma = np.linspace(0.01, 0.1, 9)
    noisy = add_band_noise(cube, sigma).astype(np.float32)
    noisy[4] = 0.0  # a dead band: the pipeline hands the method the 8 others only
    out = denoise_array(noisy, LowRankDenoiser(FAST), TileConfig(tile=24, overlap=6))
    np.testing.assert_array_equal(out[4], noisy[4])
    live = [b for b in range(9) if b != 4]
    assert mpsnr(cube[live], out[live]) > mpsnr(cube[live], noisy[live]) + 6.0


def test_single_band_is_refused_and_constant_data_pass_through() -> None:
    with pytest.raises(CubeShapeError):
        fit_lowrank(np.random.default_rng(0).random((100, 1)), FAST)
    constant = np.full((5, 10, 11), 3.0, np.float32)
    denoised, _ = lowrank_denoise(constant, FAST)
    np.testing.assert_allclose(denoised, constant, rtol=1e-6)


@pytest.mark.parametrize("threads", [1, 3])
def test_column_median_over_kept_entries_matches_numpy(threads: int, monkeypatch: pytest.MonkeyPatch) -> None:
    from hsidenoise import device
    from hsidenoise.subspace import noise_estimate
    from hsidenoise.subspace.noise_estimate import column_median

    monkeypatch.setattr(device, "threads_in_effect", lambda: threads)
    monkeypatch.setattr(noise_estimate, "PARALLEL_MEDIAN_ENTRIES", 1)  # split even these small samples
    rng = np.random.default_rng(0)
    for _ in range(200):
        rows, columns = int(rng.integers(1, 40)), int(rng.integers(1, 6))
        values = np.round(rng.standard_normal((rows, columns)), 1)  # ties too
        missing = rng.random((rows, columns)) < rng.uniform(-0.3, 1)  # a third of the draws: nothing missing
        expected = [np.median(values[~missing[:, j], j]) if (~missing[:, j]).any() else np.nan for j in range(columns)]
        np.testing.assert_allclose(column_median(values, missing), expected, equal_nan=True)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_band_sigma_is_unbiased_with_few_pixels_per_band(seed: int) -> None:
    # 1200 pixels for 80 bands: the in-sample fit spends 80 degrees of freedom and its squared coefficients carry
    # sampling variance; both biased sigma low (median 0.94 of the truth) before band_noise corrected them
    from hsidenoise.subspace.noise_estimate import band_noise, fit_band_regression

    clean = low_rank_cube(80, 30, 40, rank=5, seed=seed)
    sigma = np.random.default_rng(seed + 5).uniform(0.02, 0.05, 80)
    regression = fit_band_regression(spectra_of(add_band_noise(clean, sigma, seed=seed + 9)), FAST)
    assert regression.sample_count == 1200
    assert 0.98 < np.median(band_noise(regression) / sigma) < 1.02
    uncorrected = band_noise(dataclasses.replace(regression, sample_count=None)) / sigma
    assert np.median(uncorrected) < 0.96


def test_nonnegative_least_squares_matches_scipy_on_leakage_and_general_systems() -> None:
    import scipy.optimize

    from hsidenoise.subspace.noise_estimate import leakage_solve, nonnegative_least_squares

    rng = np.random.default_rng(11)
    negatives = 0
    for trial in range(60):
        bands = int(rng.integers(2, 40))
        if trial % 2:  # leakage systems: 1 on the diagonal, squared regression coefficients off it
            matrix = rng.random((bands, bands)) ** 4 * rng.uniform(0.01, 0.6)
            np.fill_diagonal(matrix, 1.0)
            target = rng.uniform(0.0, 1.0, bands) ** 3  # some tiny residuals: negative exact variances
        else:  # any full-rank system
            matrix = rng.standard_normal((bands + int(rng.integers(0, 5)), bands))
            target = rng.standard_normal(matrix.shape[0])
        exact = np.linalg.lstsq(matrix, target, rcond=None)[0]
        negatives += int((exact < 0).any())
        expected = scipy.optimize.nnls(matrix, target)[0]
        ours = nonnegative_least_squares(matrix, target, exact > 0)
        assert (ours >= 0).all()
        np.testing.assert_allclose(ours, expected, rtol=1e-7, atol=1e-9 * max(np.abs(expected).max(), 1e-300))
        if matrix.shape[0] == bands and trial % 2:
            np.testing.assert_allclose(leakage_solve(matrix, np.sqrt(target)) ** 2, expected, rtol=1e-7, atol=1e-12)
    assert negatives > 20  # the constrained case is what is tested


def test_a_band_mostly_imputed_is_whitened_by_what_its_entries_carry() -> None:
    """with_imputed_share: the root mean square over a band's entries of its own sigma (measured entries) and the
    prediction's error (stuck entries, imputed); nothing changes without stuck entries. Through fit_lowrank, a quiet
    band with 70 % of its entries stuck at 0 or 1 is whitened by more than its Gaussian sigma, the others not."""
    from hsidenoise.subspace.signal_subspace import with_imputed_share

    sigma, scale = np.array([0.01, 0.02, 0.03]), np.array([0.05, 0.01, 0.03])
    np.testing.assert_array_equal(with_imputed_share(sigma, np.zeros(3), scale), sigma)
    np.testing.assert_allclose(
        with_imputed_share(sigma, np.full(3, 0.7), scale), np.sqrt(0.3 * sigma**2 + 0.7 * np.maximum(scale, sigma) ** 2)
    )
    assert with_imputed_share(sigma, np.full(3, 0.7), scale)[1] == sigma[1]  # a prediction better than the noise

    cube = low_rank_cube(31, 48, 50, rank=3)
    band_sigma = np.full(31, 0.02)
    band_sigma[5] = 0.002
    noisy = add_band_noise(cube, band_sigma)
    clean_fit = fit_lowrank(spectra_of(noisy), FAST)
    hit = np.random.default_rng(10).random(noisy.shape[1:]) < 0.7
    noisy[5][hit] = np.random.default_rng(11).integers(0, 2, hit.sum()).astype(float)
    fitted = fit_lowrank(spectra_of(noisy), FAST)
    assert fitted.sigma[5] > 1.15 * max(fitted.gaussian_sigma[5], clean_fit.sigma[5])
    others = np.arange(31) != 5
    np.testing.assert_allclose(fitted.sigma[others], clean_fit.sigma[others], rtol=0.1)
