"""Statistics of the synthetic noise recipes on seeded draws, checked against the published definitions."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from hsidenoise.errors import ConfigError, CubeShapeError
from hsidenoise.noise import NOISES, NoiseSpec, add_noise, get_noise, normalise_cube


def _clean(shape: tuple[int, int, int], seed: int = 0, low: float = 0.2, high: float = 0.8) -> np.ndarray:
    return np.random.default_rng(seed).uniform(low, high, shape).astype(np.float32)


def _column_range(width: int) -> tuple[int, int]:
    """5-15 % of the columns, as documented: [ceil(0.05 W), floor(0.15 W)]."""
    return math.ceil(0.05 * width), math.floor(0.15 * width)


def test_gauss_uses_sigma_max_in_every_band_and_the_noise_has_that_std() -> None:
    clean = _clean((7, 61, 67))
    result = add_noise(clean, NoiseSpec("gauss", sigma_max=30.0), np.random.default_rng(1))
    np.testing.assert_allclose(result.sigma, np.full(7, 30.0 / 255.0))
    measured = (result.noisy.astype(np.float64) - clean).std(axis=(1, 2))
    np.testing.assert_allclose(measured, result.sigma, rtol=0.05)
    assert result.noisy.dtype == np.float32 and result.mask is None


def test_noniid_sigmas_are_uniform_on_zero_to_sigma_max_and_match_the_noise() -> None:
    clean = _clean((400, 23, 29))
    result = add_noise(clean, NoiseSpec("noniid", sigma_max=55.0), np.random.default_rng(2))
    scaled = result.sigma * 255.0 / 55.0
    assert scaled.min() >= 0.0 and scaled.max() <= 1.0
    assert stats.kstest(scaled, "uniform").pvalue > 1e-3
    assert len(np.unique(scaled)) == 400  # continuous, not QRNN3D's discrete {10, 30, 50, 70}
    measured = (result.noisy.astype(np.float64) - clean).std(axis=(1, 2))
    np.testing.assert_allclose(measured, result.sigma, rtol=0.08, atol=2e-4)


def test_corr_follows_the_t3sc_bell_with_the_published_summary_numbers() -> None:
    # peers-and-conventions.md 4.3: for B = 31, sigma min 1.83, max 23.02, mean 12.53 (0-255 scale)
    clean = _clean((31, 64, 64))
    result = add_noise(clean, NoiseSpec("corr"), np.random.default_rng(3))
    sigma255 = result.sigma * 255.0
    assert sigma255.min() == pytest.approx(1.83, abs=0.01)
    assert sigma255.max() == pytest.approx(23.02, abs=0.01)
    assert sigma255.mean() == pytest.approx(12.53, abs=0.01)
    assert int(np.argmax(sigma255)) == 15
    measured = (result.noisy.astype(np.float64) - clean).std(axis=(1, 2))
    np.testing.assert_allclose(measured, result.sigma, rtol=0.06)


def test_corr_ignores_sigma_max() -> None:
    clean = _clean((9, 12, 12))
    a = add_noise(clean, NoiseSpec("corr", sigma_max=95.0), np.random.default_rng(4))
    b = add_noise(clean, NoiseSpec("corr", sigma_max=15.0), np.random.default_rng(4))
    np.testing.assert_array_equal(a.noisy, b.noisy)


def test_stripes_are_column_constant_offsets_on_a_third_of_the_bands() -> None:
    bands, height, width = 37, 19, 101
    clean = _clean((bands, height, width))
    result = add_noise(clean, NoiseSpec("stripe", sigma_max=0.0), np.random.default_rng(5))
    offset = result.noisy.astype(np.float64) - clean
    hit = np.flatnonzero(np.abs(offset).max(axis=(1, 2)) > 1e-6)
    assert hit.size == bands // 3
    np.testing.assert_array_equal(hit, result.bands["stripe"])
    low, high = _column_range(width)
    for band in hit:
        np.testing.assert_allclose(offset[band], np.broadcast_to(offset[band, :1], (height, width)), atol=1e-6)
        columns = np.abs(offset[band, 0]) > 1e-6
        assert low <= columns.sum() <= high
        assert np.abs(offset[band, 0]).max() <= 0.25
    assert result.mask is None


def test_stripe_offsets_are_uniform_between_minus_and_plus_amplitude() -> None:
    clean = np.full((60, 2, 400), 0.5, dtype=np.float32)
    result = add_noise(clean, NoiseSpec("stripe", sigma_max=0.0), np.random.default_rng(6))
    offsets = (result.noisy[:, 0] - clean[:, 0]).ravel()
    offsets = offsets[np.abs(offsets) > 1e-7].astype(np.float64)
    assert offsets.size > 300
    assert stats.kstest(offsets, "uniform", args=(-0.25, 0.5)).pvalue > 1e-3


def test_deadlines_zero_whole_columns_on_a_third_of_the_bands() -> None:
    bands, height, width = 31, 13, 87
    clean = _clean((bands, height, width))
    result = add_noise(clean, NoiseSpec("deadline", sigma_max=0.0), np.random.default_rng(7))
    zero = result.noisy == 0.0
    np.testing.assert_array_equal(zero, result.mask)
    hit = np.flatnonzero(zero.any(axis=(1, 2)))
    assert hit.size == bands // 3
    np.testing.assert_array_equal(hit, result.bands["deadline"])
    low, high = _column_range(width)
    for band in hit:
        whole_columns = zero[band].all(axis=0)
        np.testing.assert_array_equal(zero[band].any(axis=0), whole_columns)
        assert low <= whole_columns.sum() <= high
    untouched = np.setdiff1d(np.arange(bands), hit)
    np.testing.assert_array_equal(result.noisy[untouched], clean[untouched])


def test_impulse_density_comes_from_the_published_set_and_is_half_salt() -> None:
    bands, height, width = 30, 120, 110
    clean = _clean((bands, height, width))
    result = add_noise(clean, NoiseSpec("impulse", sigma_max=0.0), np.random.default_rng(8))
    replaced = result.noisy != clean
    np.testing.assert_array_equal(replaced, result.mask)
    hit = np.flatnonzero(replaced.any(axis=(1, 2)))
    assert hit.size == 10
    np.testing.assert_array_equal(hit, result.bands["impulse"])
    for band in hit:
        density = replaced[band].mean()
        assert min(abs(density - d) for d in (0.1, 0.3, 0.5, 0.7)) < 0.02
        values = result.noisy[band][replaced[band]]
        assert set(np.unique(values)) <= {0.0, 1.0}
        assert abs((values == 1.0).mean() - 0.5) < 0.04


@pytest.mark.parametrize("disjoint", [False, True])
def test_mixture_puts_each_noise_on_its_own_third(disjoint: bool) -> None:
    bands, height, width = 31, 40, 60
    clean = _clean((bands, height, width))
    result = add_noise(clean, NoiseSpec("mixture", sigma_max=0.0, disjoint=disjoint), np.random.default_rng(9))
    groups = result.bands
    assert set(groups) == {"impulse", "stripe", "deadline"}
    assert all(group.size == 10 for group in groups.values())
    if disjoint:
        assert len(set(np.concatenate(list(groups.values())).tolist())) == 30
    changed = np.flatnonzero((result.noisy != clean).any(axis=(1, 2)))
    np.testing.assert_array_equal(changed, np.unique(np.concatenate(list(groups.values()))))
    for band in groups["deadline"]:
        assert (result.noisy[band] == 0).all(axis=0).any()
    for band in np.setdiff1d(groups["stripe"], np.concatenate([groups["impulse"], groups["deadline"]])):
        offset = result.noisy[band].astype(np.float64) - clean[band]
        np.testing.assert_allclose(offset, np.broadcast_to(offset[:1], offset.shape), atol=1e-6)
    for band in np.setdiff1d(groups["impulse"], np.concatenate([groups["stripe"], groups["deadline"]])):
        values = result.noisy[band][result.noisy[band] != clean[band]]
        assert set(np.unique(values)) <= {0.0, 1.0}


def test_overlapping_mixture_groups_do_overlap_sometimes() -> None:
    clean = _clean((31, 8, 20))
    overlaps = 0
    for seed in range(5):
        groups = add_noise(clean, NoiseSpec("mixture"), np.random.default_rng(seed)).bands
        all_bands = np.concatenate(list(groups.values()))
        overlaps += len(set(all_bands.tolist())) < all_bands.size
    assert overlaps > 0


@pytest.mark.parametrize("recipe", sorted(NOISES))
def test_same_seed_same_output_different_seed_different(recipe: str) -> None:
    clean = _clean((11, 9, 23))
    spec = NoiseSpec(recipe, sigma_max=40.0)
    first = add_noise(clean, spec, np.random.default_rng(42))
    again = add_noise(clean, spec, np.random.default_rng(42))
    other = add_noise(clean, spec, np.random.default_rng(43))
    np.testing.assert_array_equal(first.noisy, again.noisy)
    np.testing.assert_array_equal(first.sigma, again.sigma)
    assert not np.array_equal(first.noisy, other.noisy)
    assert first.noisy.shape == clean.shape and first.noisy.dtype == np.float32 and first.sigma.shape == (11,)


def test_input_is_not_modified() -> None:
    clean = _clean((6, 10, 30))
    before = clean.copy()
    add_noise(clean, NoiseSpec("mixture"), np.random.default_rng(0))
    np.testing.assert_array_equal(clean, before)


def test_tiny_band_counts_still_get_structured_noise() -> None:
    clean = _clean((2, 5, 40))
    result = add_noise(clean, NoiseSpec("deadline", sigma_max=0.0), np.random.default_rng(0))
    assert result.bands["deadline"].size == 1 and result.mask.any()


def test_unknown_recipe_lists_the_valid_names() -> None:
    with pytest.raises(ConfigError, match="gauss.*noniid.*corr.*stripe.*deadline.*impulse.*mixture"):
        get_noise("pepper")
    with pytest.raises(ConfigError, match="unknown noise recipe"):
        NoiseSpec("pepper")


@pytest.mark.parametrize(
    "kwargs", [{"sigma_max": -1.0}, {"sigma_max": math.inf}, {"column_fraction": (0.2, 0.1)}, {"impulse_densities": ()}]
)
def test_bad_parameters_are_refused(kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        NoiseSpec("mixture", **kwargs)


def test_add_noise_refuses_a_2d_array() -> None:
    with pytest.raises(CubeShapeError, match="bands, rows, cols"):
        add_noise(np.zeros((4, 4)), NoiseSpec("gauss"), np.random.default_rng(0))


def test_normalise_cube_uses_the_finite_range_of_the_whole_cube() -> None:
    cube = np.array([[[-1.0, 0.0], [3.0, np.nan]], [[1.0, 1.0], [np.inf, 2.0]]])
    x01, lo, hi = normalise_cube(cube)
    assert (lo, hi) == (-1.0, 3.0)
    np.testing.assert_allclose(x01[0, 0], [0.0, 0.25])
    np.testing.assert_allclose(x01[1], [[0.5, 0.5], [np.inf, 0.75]])
    assert np.isnan(x01[0, 1, 1]) and x01.dtype == np.float32


def test_normalise_cube_maps_a_constant_cube_to_zero() -> None:
    x01, lo, hi = normalise_cube(np.full((3, 4, 5), 7, dtype=np.int16))
    assert lo == hi == 7.0
    np.testing.assert_array_equal(x01, np.zeros((3, 4, 5), dtype=np.float32))
