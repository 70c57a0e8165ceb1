"""Missing entries re-imputed from the band's own neighbourhood where a leave-one-out check says it is better."""

from __future__ import annotations

import numpy as np
import pytest

from hsidenoise.subspace import LowRankConfig, fit_lowrank, remove_outliers, sample_pixels
from hsidenoise.subspace import outliers as outliers_module
from hsidenoise.subspace.spatial_fill import _window_sums, fill_from_neighbourhood

CONFIG = LowRankConfig(spatial="dct")


@pytest.mark.parametrize("radius", [1, 2])
def test_window_sums_leave_out_the_entry_row_and_column(radius: int) -> None:
    values = np.random.default_rng(0).standard_normal((2, 9, 13))
    sums = _window_sums(values, radius)
    padded = np.pad(values, ((0, 0), (radius, radius), (radius, radius)))
    for row, col in [(0, 0), (4, 6), (8, 12), (3, 0)]:
        window = padded[:, row : row + 2 * radius + 1, col : col + 2 * radius + 1].copy()
        window[:, radius, :] = 0.0  # the entry's row
        window[:, :, radius] = 0.0  # and column
        np.testing.assert_allclose(sums[:, row, col], window.sum(axis=(1, 2)))


def _cube(smooth: bool, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(B, h, w) rank-3 cube of 23 bands plus, in band 7, a part of its own that no other band has; and sigma."""
    rng = np.random.default_rng(seed)
    bands, height, width = 23, 47, 53
    if smooth:
        yy, xx = np.mgrid[0:height, 0:width] / 40.0
        maps = np.stack([np.sin(3 * yy + 1) ** 2, np.cos(2 * xx) ** 2, np.sin(4 * xx * yy) ** 2])
        own = 0.05 * np.cos(3 * xx + 2 * yy)
    else:  # no spatial structure at all: every pixel its own mixture
        maps = rng.uniform(0.0, 1.0, (3, height, width))
        own = np.zeros((height, width))
    clean = 0.1 + np.einsum("bk,khw->bhw", rng.uniform(0.1, 0.3, (bands, 3)), maps)
    clean[7] += own
    sigma = rng.uniform(0.01, 0.03, bands)
    sigma[7] = 0.001  # a quiet band: its neighbours know it far better than the other, noisier bands
    return clean, sigma


@pytest.mark.parametrize("smooth", [True, False])
def test_dead_columns_of_a_quiet_band_are_filled_from_beside_them_only_where_that_is_better(smooth: bool) -> None:
    clean, sigma = _cube(smooth)
    rng = np.random.default_rng(1)
    noisy = clean + sigma[:, None, None] * rng.standard_normal(clean.shape)
    dead = [5, 6, 20, 41]
    noisy[7][:, dead] = 0.0
    subspace = fit_lowrank(sample_pixels(noisy, 65536, 0), CONFIG)
    cleaned, missing = remove_outliers(noisy, subspace, CONFIG)
    assert missing[7][:, dead].all()

    original = outliers_module.fill_from_neighbourhood
    try:  # the same tile with the spectral imputation alone
        outliers_module.fill_from_neighbourhood = lambda values, gaps, regression: (values, None)
        spectral, spectral_missing = remove_outliers(noisy, subspace, CONFIG)
    finally:
        outliers_module.fill_from_neighbourhood = original
    np.testing.assert_array_equal(missing, spectral_missing)
    np.testing.assert_array_equal(cleaned[~missing], spectral[~missing])  # observed entries never change

    def error(values: np.ndarray) -> float:
        return float(np.sqrt(np.mean((values[7][:, dead] - clean[7][:, dead]) ** 2)))

    if smooth:  # the spectral prediction misses band 7's own part; the columns beside the dead ones have it
        assert error(cleaned) < 0.3 * error(spectral)
    else:  # beside a pixel is another mixture: the neighbourhood knows nothing, the prediction stays
        np.testing.assert_array_equal(cleaned, spectral)


def test_fill_changes_nothing_without_missing_entries() -> None:
    clean, _ = _cube(True)
    subspace = fit_lowrank(sample_pixels(clean + 0.01, 65536, 0), CONFIG)
    values = clean.copy()
    out, fill = fill_from_neighbourhood(values, np.zeros(clean.shape, bool), subspace.regression)
    assert fill.bands.size == 0
    np.testing.assert_array_equal(out, clean)
