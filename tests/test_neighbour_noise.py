"""The noise estimate refined by each pixel's spatial neighbours (hsidenoise.subspace.neighbour_noise).

The band regression alone over-estimates the sigma of a band whose noise is near zero (its residual is then the
signal the other, noisy bands cannot predict); the neighbours resolve it. Noise correlated in space must not be
under-estimated. Truth known by construction.
"""

from __future__ import annotations

import numpy as np
import pytest

from hsidenoise.cube import CubeMeta
from hsidenoise.io.memory import ArrayReader
from hsidenoise.statistics import NeighbourPairs, compute_statistics, neighbour_pairs, pair_positions
from hsidenoise.subspace import LowRankConfig, LowRankDenoiser, fit_lowrank
from hsidenoise.subspace.neighbour_noise import MAX_REDUCTION
from tests.test_lowrank import FAST, add_band_noise, low_rank_cube, mpsnr, spectra_of

QUIET = [5, 20]


def quiet_band_cube(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(clean, noisy, sigma): 37 bands, 61 x 73, rank 5; two bands with near-zero noise."""
    clean = low_rank_cube(37, 61, 73, rank=5, seed=seed)
    sigma = np.random.default_rng(seed + 10).uniform(0.02, 0.08, 37)
    sigma[QUIET] = [0.0005, 0.001]
    return clean, add_band_noise(clean, sigma, seed=seed + 20), sigma


@pytest.mark.parametrize("seed", [0, 2])
def test_neighbours_resolve_near_zero_noise(seed: int) -> None:
    _, noisy, sigma = quiet_band_cube(seed)
    spectral = fit_lowrank(spectra_of(noisy), FAST).gaussian_sigma / sigma
    refined = fit_lowrank(spectra_of(noisy), FAST, neighbour_pairs(noisy)).gaussian_sigma / sigma
    assert spectral[QUIET[0]] > 5.0  # the defect: the band regression alone
    assert refined[QUIET[0]] < 2.0
    others = np.delete(refined, QUIET)
    assert np.all(np.abs(others - 1.0) < 0.06)
    assert np.all(refined <= spectral * (1 + 1e-12))  # only ever lowers


def test_neighbours_improve_the_denoised_cube() -> None:
    clean, noisy, _ = quiet_band_cube(0)
    plain = LowRankDenoiser(FAST)
    plain.prepare(type("Stats", (), {"sample_spectra": spectra_of(noisy)})())
    from hsidenoise.subspace import lowrank_denoise

    with_neighbours, _ = lowrank_denoise(noisy, FAST)
    without = plain.denoise_tile(noisy.astype(np.float32))
    assert mpsnr(clean, with_neighbours) > mpsnr(clean, without) + 0.2


def test_noise_correlated_in_space_is_not_under_estimated() -> None:
    clean = low_rank_cube(37, 61, 73, rank=5, seed=0)
    sigma = np.random.default_rng(10).uniform(0.02, 0.08, 37)
    white = np.random.default_rng(5).standard_normal((37, 61, 74))
    correlated = (white[:, :, :-1] + white[:, :, 1:]) / np.sqrt(2)  # lag-one correlation 0.5 along rows
    noisy = clean + sigma[:, None, None] * correlated
    refined = fit_lowrank(spectra_of(noisy), FAST, neighbour_pairs(noisy)).gaussian_sigma / sigma
    assert np.median(refined) > 0.95  # uncalibrated, the neighbours would say 0.57


def test_reduction_is_bounded() -> None:
    _, noisy, sigma = quiet_band_cube(1)
    spectral = fit_lowrank(spectra_of(noisy), FAST).gaussian_sigma
    refined = fit_lowrank(spectra_of(noisy), FAST, neighbour_pairs(noisy)).gaussian_sigma
    assert np.all(refined >= spectral / MAX_REDUCTION * (1 - 1e-12))


def test_streamed_pairs_equal_the_in_memory_ones() -> None:
    _, noisy, _ = quiet_band_cube(0)
    noisy = noisy.astype(np.float32)
    noisy[3, 10, 20] = np.nan  # the pixel (10, 21) loses its left neighbour, (10, 19) its right one
    stats = compute_statistics(ArrayReader(noisy, CubeMeta()), rows_per_chunk=7, seed=4)
    expected = neighbour_pairs(noisy, seed=5)
    assert stats.neighbour_pairs is not None
    streamed, in_memory = stats.neighbour_pairs.finite(), expected.finite()
    np.testing.assert_allclose(streamed.pixels, in_memory.pixels)
    np.testing.assert_allclose(streamed.neighbours, in_memory.neighbours, rtol=1e-6)
    assert streamed.count == pair_positions(61, 73, 10**6, 5).size - 3  # the pixel and its two neighbours' pairs


def test_narrow_cube_has_no_pairs_and_still_fits() -> None:
    assert pair_positions(50, 2, 100, 0).size == 0
    clean = low_rank_cube(9, 300, 2, rank=2)
    noisy = add_band_noise(clean, np.full(9, 0.01))
    subspace = fit_lowrank(spectra_of(noisy), LowRankConfig(spatial="dct"), neighbour_pairs(noisy))
    assert np.all(np.isfinite(subspace.sigma))


def test_pairs_must_match() -> None:
    from hsidenoise.errors import CubeShapeError

    with pytest.raises(CubeShapeError):
        NeighbourPairs(np.zeros((4, 3)), np.zeros((4, 2)))


@pytest.mark.parametrize("seed", [0, 2])
def test_component_noise_range_holds_the_true_level(seed: int) -> None:
    # the quiet bands' sigma is resolved by neither estimate: the range must reach down to the truth there
    _, noisy, sigma = quiet_band_cube(seed)
    subspace = fit_lowrank(spectra_of(noisy), FAST, neighbour_pairs(noisy))
    truth = np.sqrt((sigma / subspace.sigma) ** 2 @ subspace.basis**2)  # the eigen-images' true noise std
    low, high = subspace.component_noise_range()
    assert np.all(low <= truth) and np.all(truth <= high)
    assert np.all(low <= subspace.component_noise) and np.all(subspace.component_noise <= high)
    leaning = (subspace.basis[QUIET] ** 2).sum(axis=0) > 0.5  # components made of the quiet bands
    assert leaning.any() and np.all(high[leaning] < 1.2)  # bounded above by the spatial estimate
    assert np.all(high[~leaning] / low[~leaning] < 1.2)  # resolved elsewhere: a narrow range
