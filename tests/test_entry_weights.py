"""Each pixel's imputed entries weighted in its projection (``hsidenoise.subspace.projection.entry_weights``,
``whiten_and_project``, ``reweight``) and the band blend's probe moved through the same weighted fit."""

from __future__ import annotations

import numpy as np

from hsidenoise.subspace.band_blend import probe_perturbation
from hsidenoise.subspace.noise_estimate import BandRegression
from hsidenoise.subspace.projection import DETECTED_ERROR_FACTOR, entry_weights, whiten_and_project
from hsidenoise.subspace.signal_subspace import Subspace

BANDS, RANK, ROWS, COLS = 7, 2, 9, 11


def model(rng: np.random.Generator, sigma: np.ndarray, scale: np.ndarray) -> Subspace:
    basis, _ = np.linalg.qr(rng.standard_normal((BANDS, RANK)))
    regression = BandRegression(mean=np.zeros(BANDS), coefficients=np.eye(BANDS), residual_scale=scale)
    return Subspace(
        sigma=sigma, mean=rng.standard_normal(BANDS), basis=basis, eigenvalues=np.ones(BANDS), edge=1.0,
        regression=regression,
    )


def test_weights_follow_how_well_the_imputation_is_known() -> None:
    rng = np.random.default_rng(0)
    sigma = np.array([0.01, 0.1, 0.1, 0.1, 0.5, 0.1, 0.1])
    scale = np.array([0.05, 0.1, 0.2, 0.1, 0.1, 0.1, 0.1])  # band 0 predicted 5x worse than its noise
    subspace = model(rng, sigma, scale)
    missing = np.zeros((BANDS, ROWS, COLS), bool)
    assert entry_weights(missing, missing, subspace) is None  # nothing imputed: the plain projection
    missing[:, 0, 0] = True
    known = missing.copy()
    known[:, 0, 0] = [True, True, True, False, True, False, False]
    weights = entry_weights(missing, known, subspace)
    np.testing.assert_allclose(weights[:, 0, 0], [0.04, 1.0, 0.25, 1 / DETECTED_ERROR_FACTOR**2, 1.0, 1 / 16, 1 / 16])
    assert np.all(weights[:, 1:, :] == 1.0)


def test_a_badly_imputed_quiet_entry_no_longer_drags_its_pixel() -> None:
    """A pixel exactly in the subspace; its quiet band's entry imputed far off. Plain projection moves every
    coefficient; the weighted fit nearly recovers them from the measured entries; pixels without an imputed
    entry come out bit for bit as the plain projection."""
    rng = np.random.default_rng(1)
    sigma = np.full(BANDS, 0.1)
    sigma[0] = 0.01
    scale = np.full(BANDS, 0.1)
    subspace = model(rng, sigma, scale)
    coefficients = rng.standard_normal((RANK, ROWS, COLS))
    clean = subspace.mean[:, None, None] + sigma[:, None, None] * np.einsum("bk,khw->bhw", subspace.basis, coefficients)
    cleaned = clean.copy()
    cleaned[0, 4, 5] += 0.3  # the imputation's error: 3 residual scales, 30 noise sigmas of the band
    missing = np.zeros(clean.shape, bool)
    missing[0, 4, 5] = True
    plain = whiten_and_project(cleaned, subspace)
    weighted = whiten_and_project(cleaned, subspace, entry_weights(missing, missing, subspace))
    plain_error = np.abs(plain[:, 4, 5] - coefficients[:, 4, 5]).max()
    weighted_error = np.abs(weighted[:, 4, 5] - coefficients[:, 4, 5]).max()
    assert plain_error > 1.0
    assert weighted_error < 0.05 * plain_error
    others = np.ones((ROWS, COLS), bool)
    others[4, 5] = False
    assert np.array_equal(weighted[:, others], plain[:, others])


def test_weighted_fit_is_the_generalised_least_squares_solution() -> None:
    rng = np.random.default_rng(2)
    subspace = model(rng, rng.uniform(0.05, 0.2, BANDS), rng.uniform(0.05, 0.4, BANDS))
    tile = rng.standard_normal((BANDS, ROWS, COLS))
    missing = rng.random(tile.shape) < 0.3
    known = missing & (rng.random(tile.shape) < 0.5)
    weights = entry_weights(missing, known, subspace)
    result = whiten_and_project(tile, subspace, weights)
    whitened = (tile - subspace.mean[:, None, None]) / subspace.sigma[:, None, None]
    basis = subspace.basis
    for row, col in [(0, 0), (3, 7), (8, 10)]:
        w = weights[:, row, col]
        expected = np.linalg.solve(basis.T @ (w[:, None] * basis), basis.T @ (w * whitened[:, row, col]))
        np.testing.assert_allclose(result[:, row, col], expected, rtol=1e-10, atol=1e-12)


def test_the_blend_probe_moves_the_eigen_images_as_the_weighted_projection_does() -> None:
    """The band blend's divergence needs the eigen-images' move under the probe exactly as the projection makes
    it: the weighted fit of the moved tile minus that of the tile (a linear map of the tile)."""
    rng = np.random.default_rng(3)
    subspace = model(rng, rng.uniform(0.05, 0.2, BANDS), rng.uniform(0.05, 0.4, BANDS))
    tile = rng.standard_normal((BANDS, ROWS, COLS))
    missing = rng.random(tile.shape) < 0.2
    weights = entry_weights(missing, missing, subspace)
    probe = np.where(missing, 0.0, rng.choice([-1.0, 1.0], tile.shape))
    step = 0.01
    moved = tile + step * subspace.sigma[:, None, None] * probe
    expected = whiten_and_project(moved, subspace, weights) - whiten_and_project(tile, subspace, weights)
    np.testing.assert_allclose(probe_perturbation(probe, subspace, step, weights), expected, atol=1e-12)
    plain = probe_perturbation(probe, subspace, step)
    assert np.abs(plain - expected).max() > 1e-4  # the weights matter where a pixel has an imputed entry


def test_imputations_far_worse_than_the_noise_keep_the_fit_finite() -> None:
    """A square basis (rank = bands) fits every pixel exactly whatever the weights, so the weighted fit must equal
    the plain projection; with a regression scale 10^12 times the band sigma the weights would reach 10^-24 and the
    normal matrices be singular in float64 (a fuzzed cube gave non-finite output before the weight floor)."""
    rng = np.random.default_rng(4)
    bands = 3
    basis, _ = np.linalg.qr(rng.standard_normal((bands, bands)))
    sigma = np.full(bands, 1e-3)
    regression = BandRegression(mean=np.zeros(bands), coefficients=np.eye(bands), residual_scale=np.full(bands, 1e9))
    subspace = Subspace(sigma=sigma, mean=np.zeros(bands), basis=basis, eigenvalues=np.ones(bands), edge=1.0,
                        regression=regression)
    tile = rng.standard_normal((bands, 4, 5))
    missing = rng.random(tile.shape) < 0.5
    weighted = whiten_and_project(tile, subspace, entry_weights(missing, missing, subspace))
    assert np.isfinite(weighted).all()
    np.testing.assert_allclose(weighted, whiten_and_project(tile, subspace), rtol=1e-6, atol=1e-6)
