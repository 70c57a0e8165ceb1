"""Stripes in the fit's pixel sample: found by column, subtracted before the subspace is fitted."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from hsidenoise import device
from hsidenoise.cube import CubeMeta
from hsidenoise.io.memory import ArrayReader
from hsidenoise.statistics import PixelPositions, compute_statistics, neighbour_pairs
from hsidenoise.subspace import LowRankConfig, fit_lowrank
from hsidenoise.subspace.noise_estimate import fit_band_regression
from hsidenoise.subspace.pipeline import sample_pixels_where
from hsidenoise.subspace import outliers, stripes
from hsidenoise.subspace.stripes import MIN_SAMPLE_STRIPE_LINES, destripe_sample, subspace_complement

CONFIG = LowRankConfig(spatial="dct")
BANDS, ROWS, COLS = 37, 59, 61
STRIPED = {5: [3, 11, 12, 30, 47, 58], 20: [0, 9, 25, 26, 40, 44]}


def cubes(seed: int = 0) -> tuple[np.ndarray, np.ndarray, dict[int, np.ndarray]]:
    """(noisy, striped, offsets): a rank-4 cube with non-i.i.d. noise, and the same with column stripes in two
    quiet bands (offsets per striped band, one per column)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:ROWS, 0:COLS] / 40.0
    maps = np.stack([np.sin(5 * yy + 1) ** 2, np.cos(4 * xx) ** 2, (xx > 0.5) * 0.6, np.sin(9 * xx * yy) ** 2])
    clean = 0.1 + np.einsum("bk,khw->bhw", rng.uniform(0.05, 0.25, (BANDS, 4)), maps)
    sigma = rng.uniform(0.01, 0.04, BANDS)
    sigma[list(STRIPED)] = 0.002  # quiet bands: whitened by their small Gaussian sigma, stripes and all
    noisy = clean + sigma[:, None, None] * rng.standard_normal(clean.shape)
    striped = noisy.copy()
    offsets = {}
    for band, columns in STRIPED.items():
        offsets[band] = np.zeros(COLS)
        offsets[band][columns] = rng.choice([-1.0, 1.0], len(columns)) * rng.uniform(0.08, 0.2, len(columns))
        striped[band] += offsets[band][None, :]
    return noisy, striped, offsets


def test_the_sample_stripes_are_found_in_their_bands_only() -> None:
    _, striped, offsets = cubes()
    spectra, positions = sample_pixels_where(striped, 65536, 0)
    regression = fit_band_regression(spectra, CONFIG)
    destriped, subtracted = destripe_sample(spectra, positions, regression, None, CONFIG.stripe_threshold)
    per_column = np.zeros((BANDS, COLS))
    per_column[:, positions.cols] = subtracted.T
    assert set(np.flatnonzero(np.abs(per_column).max(axis=1) > 0)) == set(STRIPED)
    for band, truth in offsets.items():  # every striped column found, no other; the size within 20 %
        np.testing.assert_array_equal(per_column[band] != 0, truth != 0)
        np.testing.assert_allclose(per_column[band], truth, rtol=0.2, atol=0.005)
    np.testing.assert_array_equal(destriped, spectra - subtracted)


def test_stripes_do_not_become_components_and_a_cube_without_them_fits_as_before() -> None:
    noisy, striped, _ = cubes()

    def fit(cube: np.ndarray, with_positions: bool):
        spectra, positions = sample_pixels_where(cube, 65536, 0)
        return fit_lowrank(spectra, CONFIG, neighbour_pairs(cube, seed=1), positions if with_positions else None)

    reference = fit(noisy, True)
    blind = fit(striped, False)
    assert blind.rank > reference.rank  # the stripes made components of their own
    assert fit(striped, True).rank == reference.rank
    plain = fit(noisy, False)  # no stripe: the positions change nothing
    np.testing.assert_array_equal(reference.basis, plain.basis)
    np.testing.assert_array_equal(reference.sigma, plain.sigma)


def test_a_band_with_fewer_striped_columns_than_the_floor_is_left_alone() -> None:
    noisy, _, _ = cubes()
    few = noisy.copy()
    few[5][:, [4, 33][: MIN_SAMPLE_STRIPE_LINES - 1]] += 0.15
    spectra, positions = sample_pixels_where(few, 65536, 0)
    _, subtracted = destripe_sample(spectra, positions, fit_band_regression(spectra, CONFIG), None, 5.0)
    assert not subtracted.any()


def test_statistics_keep_where_their_sampled_pixels_lie() -> None:
    cube = np.random.default_rng(4).random((6, 23, 19)).astype(np.float32)
    cube[2, 5, 7] = np.nan  # an invalid pixel leaves the sample, and its position with it
    stats = compute_statistics(ArrayReader(cube, CubeMeta(dtype=cube.dtype)), max_sample_pixels=200, seed=2)
    positions = stats.sample_positions
    assert isinstance(positions, PixelPositions) and (positions.height, positions.width) == (23, 19)
    assert len(positions.rows) == len(stats.sample_spectra)
    np.testing.assert_array_equal(stats.sample_spectra, cube[:, positions.rows, positions.cols].T)


def test_the_subspace_complement_gives_an_offset_to_its_own_band_and_ignores_the_signal() -> None:
    noisy, _, _ = cubes()
    spectra, positions = sample_pixels_where(noisy, 65536, 0)
    subspace = fit_lowrank(spectra, CONFIG, neighbour_pairs(noisy, seed=1), positions)
    pixels = noisy.reshape(BANDS, -1)
    predictor, usable, residuals = subspace_complement(pixels, subspace.mean, subspace.sigma, subspace.basis)
    # whitened, the two quiet bands (sigma 0.002) carry most of the signal's components: an offset there is mostly
    # inside the subspace, so they are left to the regression's search; every other band takes part
    assert not usable[list(STRIPED)].any()
    assert np.delete(usable, list(STRIPED)).all()
    np.testing.assert_allclose(predictor.residuals(pixels), residuals)
    moved = pixels.copy()
    moved[9] += 0.5  # an offset in band 9 (a band with noise, not a quiet one)
    echo = predictor.residuals(moved) - residuals
    np.testing.assert_allclose(echo[9], 0.5, rtol=1e-9)
    # signal inside the subspace leaves no residual: the complement sees what the components do not explain
    inside = subspace.sigma[:, None] * subspace.basis[:, :1] * 0.3
    np.testing.assert_allclose(predictor.residuals(pixels + inside), residuals, atol=1e-9)


def test_a_component_on_one_band_keeps_that_band_out_of_the_complement_search() -> None:
    basis = np.zeros((6, 2))
    basis[:, 0] = 1 / np.sqrt(6)
    basis[3, 1] = 1.0  # component 2 is band 3 alone: an offset there is inside the subspace
    basis[:, 0] -= basis[:, 1] * (basis[:, 1] @ basis[:, 0])
    basis[:, 0] /= np.linalg.norm(basis[:, 0])
    values = np.random.default_rng(0).normal(size=(6, 50))
    _, usable, _ = subspace_complement(values, np.zeros(6), np.ones(6), basis)
    np.testing.assert_array_equal(usable, [True, True, True, False, True, True])


def test_the_complement_search_finds_noisy_bands_stripes_that_the_regression_misses(monkeypatch) -> None:
    """Half the bands striped, noise up to 0.08: the regression's search alone misses stripes of the noisy bands
    (the other bands' stripes echo into them); the search against the subspace's complement finds more, never
    a false one, and the offsets left get smaller."""
    bands, rows, cols = 41, 67, 73
    for seed in (0, 2):
        rng = np.random.default_rng(seed)
        yy, xx = np.mgrid[0:rows, 0:cols] / 40.0
        maps = np.stack([np.sin(5 * yy + 1) ** 2, np.cos(4 * xx) ** 2, (xx > 0.5) * 0.6, np.sin(9 * xx * yy) ** 2])
        clean = 0.1 + np.einsum("bk,khw->bhw", rng.uniform(0.05, 0.25, (bands, 4)), maps)
        sigma = rng.uniform(0.002, 0.08, bands)
        offsets = np.zeros((bands, cols))
        for band in rng.choice(bands, bands // 2, replace=False):
            columns = rng.choice(cols, rng.integers(4, 11), replace=False)
            offsets[band, columns] = rng.choice([-1.0, 1.0], columns.size) * rng.uniform(0.02, 0.12, columns.size)
        striped = clean + sigma[:, None, None] * rng.standard_normal(clean.shape) + offsets[:, None, :]
        spectra, positions = sample_pixels_where(striped, 65536, 0)
        subspace = fit_lowrank(spectra, CONFIG, neighbour_pairs(striped, seed=1), positions)

        def found(complement: bool) -> tuple[np.ndarray, float]:
            with monkeypatch.context() as patch:
                if not complement:
                    patch.setattr(outliers, "_subtract_complement_stripes", lambda *args: None)
                cleaned, _ = outliers.remove_outliers(striped, subspace, CONFIG)
            estimate = np.median(striped - cleaned, axis=1)  # (B, w) the column offsets subtracted
            return estimate != 0, float(np.sqrt(((estimate - offsets) ** 2).mean()))

        (alone, left_alone), (both, left_both) = found(False), found(True)
        assert not (both & (offsets == 0)).any()
        assert (both & (offsets != 0)).sum() > (alone & (offsets != 0)).sum()
        assert left_both < left_alone


@pytest.mark.parametrize("height", [37, 38])
@pytest.mark.parametrize("with_missing", [False, True])
@pytest.mark.parametrize("threads", [1, 3])
def test_line_medians_are_numpys_medians_on_one_thread_or_several(
    height: int, with_missing: bool, threads: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(device, "threads_in_effect", lambda: threads)
    monkeypatch.setattr(stripes, "PARALLEL_MIN_ENTRIES", 1)  # split even this small grid
    rng = np.random.default_rng(height)
    values = rng.standard_normal((7, height, 11))
    missing = rng.random(values.shape) < 0.3 if with_missing else None
    if missing is not None:
        missing[2, :, 4] = True  # a line without an entry: NaN
        missing[3] = False  # a band without a missing entry (partitioned)
        missing[5] = True  # a band without any entry (NaN throughout)
        with pytest.warns(RuntimeWarning, match="All-NaN slice"):
            expected = np.nanmedian(np.where(missing, np.nan, values), axis=1)
    else:
        expected = np.median(values, axis=1)
    with np.errstate(all="ignore"):
        medians = stripes.line_medians(values, missing)
        single = stripes.line_medians(values.astype(np.float32), missing)
    np.testing.assert_array_equal(medians, expected)
    assert single.dtype == np.float32  # the values' own type, as numpy's medians keep it


def test_line_medians_of_no_band_are_empty() -> None:
    for missing in (None, np.zeros((0, 4, 3), bool)):
        assert stripes.line_medians(np.zeros((0, 4, 3)), missing).shape == (0, 3)


def test_line_medians_keep_the_callers_error_state_in_their_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(device, "threads_in_effect", lambda: 2)
    monkeypatch.setattr(stripes, "PARALLEL_MIN_ENTRIES", 1)
    values = np.zeros((4, 2, 3))
    values[:, 0], values[:, 1] = np.inf, -np.inf  # each even line's middle pair sums to NaN: "invalid"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with np.errstate(invalid="ignore"):
            medians = stripes.line_medians(values)
        with pytest.raises(RuntimeWarning), np.errstate(invalid="warn"):
            stripes.line_medians(values)
    assert np.isnan(medians).all()
