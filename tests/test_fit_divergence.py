"""The fit's share of the band blend's divergence (``hsidenoise.subspace.fit_divergence``) against finite
differences through the fit itself."""

from __future__ import annotations

import dataclasses

import numpy as np

from hsidenoise.cube import CubeMeta
from hsidenoise.io.memory import ArrayReader
from hsidenoise.statistics import compute_statistics
from hsidenoise.subspace import LowRankConfig, LowRankDenoiser
from hsidenoise.subspace.fit_divergence import fit_path_divergence
from hsidenoise.subspace.signal_subspace import fit_subspace


def one_component_tile(seed: int, bands: int = 6, rows: int = 11, cols: int = 9) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    sigma = rng.uniform(0.5, 2.0, bands)
    loading = rng.standard_normal(bands)
    scores = 6.0 * rng.standard_normal((rows, cols))
    tile = 3.0 + loading[:, None, None] * scores + sigma[:, None, None] * rng.standard_normal((bands, rows, cols))
    return tile, sigma


def test_the_term_is_the_trace_of_the_synthesis_rows_moving_with_each_entry() -> None:
    """One component, so every eigenvector pair crosses the subspace's boundary and the term is exact to first
    order: sum_p d L_b / d y_b(p) (P d)(p), each entry moved in turn and the subspace refitted."""
    tile, sigma = one_component_tile(3)
    bands, rows, cols = tile.shape
    spectra = tile.reshape(bands, -1).T
    subspace = fit_subspace(spectra, sigma)
    assert subspace.rank == 1
    rng = np.random.default_rng(4)
    change = (0.3 * rng.standard_normal((1, rows, cols)) + 0.1 * tile[:1]) / sigma[0]
    centred = (change - change.mean(axis=1, keepdims=True)).reshape(-1)
    step = 1e-4
    finite = np.zeros(bands)
    for band in range(bands):
        for pixel in range(spectra.shape[0]):
            rows_moved = []
            for sign in (1.0, -1.0):
                moved = spectra.copy()
                moved[pixel, band] += sign * step * sigma[band]
                refit = fit_subspace(moved, sigma)
                assert refit.rank == 1
                column = refit.basis[:, 0] * np.sign(refit.basis[:, 0] @ subspace.basis[:, 0])
                rows_moved.append(sigma[band] * column[band])
            finite[band] += (rows_moved[0] - rows_moved[1]) / (2 * step * sigma[band]) * centred[pixel]
    analytic = fit_path_divergence(tile, change[None], subspace)[0]
    np.testing.assert_allclose(analytic, finite, rtol=1e-4, atol=1e-6 * np.abs(finite).max())
    assert np.abs(finite).max() > 1e-3  # a term worth testing


def test_a_sampled_fit_spreads_each_pixels_share_over_the_cube_it_was_drawn_from() -> None:
    tile, _ = one_component_tile(5, bands=7, rows=30, cols=20)
    reader = ArrayReader(tile.astype(np.float32), CubeMeta())
    full, sampled = LowRankDenoiser(LowRankConfig(spatial="dct")), LowRankDenoiser(LowRankConfig(spatial="dct"))
    full.prepare(compute_statistics(reader))
    sampled.prepare(compute_statistics(reader, max_sample_pixels=150))
    assert full.subspace.population == 600
    assert sampled.subspace.population == 600  # 150 sampled of 600, each counted as 1 / 600 in expectation


def test_without_the_fits_eigenvectors_or_outside_directions_the_term_is_zero() -> None:
    tile, sigma = one_component_tile(6)
    subspace = fit_subspace(tile.reshape(tile.shape[0], -1).T, sigma)
    change = np.ones((2, 1, *tile.shape[1:]))
    assert np.all(fit_path_divergence(tile, change, dataclasses.replace(subspace, eigenvectors=None)) == 0)
    full_rank = dataclasses.replace(subspace, basis=subspace.eigenvectors, eigenvalues=subspace.eigenvalues)
    assert np.all(fit_path_divergence(tile, np.ones((1, tile.shape[0], *tile.shape[1:])), full_rank) == 0)
