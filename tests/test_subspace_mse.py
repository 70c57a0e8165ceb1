"""The output's MSE estimated in the whitened subspace (issue 18 item 3): right where its model holds (an exactly
low-rank cube with Gaussian noise), an interval that holds the truth, and withheld with a reason on impulse noise."""

from __future__ import annotations

import numpy as np
import pytest

from hsidenoise.cube import CubeMeta
from hsidenoise.errors import ConfigError, CubeShapeError
from hsidenoise.io.memory import ArrayReader
from hsidenoise.quality.noreference import no_reference_quality
from hsidenoise.quality.subspace_mse import MseEstimateConfig, estimate_subspace_mse
from hsidenoise.statistics import compute_statistics
from hsidenoise.subspace import LowRankConfig, LowRankDenoiser


def low_rank_cube(bands: int, side: int, seed: int) -> np.ndarray:
    """(B, side, side) float64 in about [0.1, 0.9]: three smooth spectra mixed by smooth abundances (rank 3 exactly)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:side, 0:side] / side
    abundances = np.stack([np.sin(3 * x + 1) ** 2, np.cos(2 * y) ** 2, x * y])
    phase = np.linspace(0, 3, bands)[:, None] * rng.uniform(0.5, 2, 3) + rng.uniform(0, 3, 3)
    spectra = 0.2 + 0.25 * (1 + np.sin(phase))
    return np.einsum("bk,khw->bhw", spectra, abundances) / 2.2 + 0.1


def prepared(noisy: np.ndarray, spatial: str) -> LowRankDenoiser:
    method = LowRankDenoiser(LowRankConfig(spatial=spatial))
    method.prepare(compute_statistics(ArrayReader(noisy, CubeMeta())))
    return method


def mpsnr(mse: np.ndarray, peak: float) -> float:
    with np.errstate(divide="ignore"):
        return float(np.mean(10 * np.log10(peak**2 / mse)))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_projection_only_estimate_matches_the_truth(seed: int) -> None:
    # the projection alone keeps exactly the eigen-images' noise: what SURE with the components' covariance says
    clean = low_rank_cube(16, 96, seed)
    rng = np.random.default_rng(seed + 10)
    sigma = 0.02 * rng.uniform(0.5, 1.5, clean.shape[0])
    noisy = (clean + sigma[:, None, None] * rng.standard_normal(clean.shape)).astype(np.float32)
    method = prepared(noisy, "none")
    output = method.denoise_tile(noisy).astype(np.float64)
    peak = float(output.max() - output.min())
    truth = np.mean((output - clean).reshape(clean.shape[0], -1) ** 2, axis=1)
    estimate = estimate_subspace_mse(noisy, method)
    assert estimate.divergence == pytest.approx(np.ones(method.subspace.rank), abs=1e-3)  # f = z
    assert abs(mpsnr(estimate.mse, peak) - mpsnr(truth, peak)) < 0.4
    assert mpsnr(estimate.high, peak) <= mpsnr(truth, peak) <= mpsnr(estimate.low, peak)
    assert estimate.cleaned_entries == 0 and estimate.component_noise == pytest.approx(1.0, abs=0.03)


def test_dct_interval_holds_the_truth_and_the_report_prints_only_a_narrow_one() -> None:
    clean = low_rank_cube(16, 96, 3)
    rng = np.random.default_rng(4)
    sigma = 0.03 * rng.uniform(0.5, 1.5, clean.shape[0])
    noisy = (clean + sigma[:, None, None] * rng.standard_normal(clean.shape)).astype(np.float32)
    method = prepared(noisy, "dct")
    output = method.denoise_tile(noisy).astype(np.float64)
    truth = np.mean((output - clean).reshape(clean.shape[0], -1) ** 2, axis=1)
    estimate = estimate_subspace_mse(noisy, method)
    report = no_reference_quality(noisy, output, method=method, mse_estimate=estimate)
    assert np.all(estimate.high >= truth) and np.all(estimate.low <= truth)
    low, high = mpsnr(estimate.high, report.peak), mpsnr(estimate.low, report.peak)
    if high - low <= 1.0:
        assert report.estimated_mpsnr_db == pytest.approx(mpsnr(estimate.mse, report.peak))
    else:
        assert report.estimated_mpsnr_db is None and report.estimated_mpsnr_reason.startswith("withheld: uncertain")
        assert f"{low:.1f} dB" in report.estimated_mpsnr_reason


def test_impulse_noise_is_withheld_with_a_reason() -> None:
    clean = low_rank_cube(12, 64, 5)
    rng = np.random.default_rng(6)
    noisy = clean + 0.02 * rng.standard_normal(clean.shape)
    hits = rng.random(clean.shape) < 0.05
    hits[6:] = False  # salt and pepper in half of the bands
    noisy[hits] = rng.choice([0.0, 1.0], size=int(hits.sum()))
    noisy = noisy.astype(np.float32)
    method = prepared(noisy, "dct")
    estimate = estimate_subspace_mse(noisy, method)
    assert estimate.cleaned_entries > 0
    report = no_reference_quality(noisy, method.denoise_tile(noisy), method=method, mse_estimate=estimate)
    assert report.estimated_mpsnr_db is None
    assert report.estimated_mpsnr_reason.startswith("withheld: the front end replaced")
    assert "Gaussian noise only" in report.estimated_mpsnr_reason


def test_estimate_refuses_an_unprepared_front_end_and_other_bands() -> None:
    noisy = low_rank_cube(8, 32, 7).astype(np.float32)
    with pytest.raises(ConfigError):
        estimate_subspace_mse(noisy, LowRankDenoiser(LowRankConfig(spatial="dct")))
    method = prepared((noisy + 0.01 * np.random.default_rng(8).standard_normal(noisy.shape)).astype(np.float32), "dct")
    with pytest.raises(CubeShapeError):
        estimate_subspace_mse(noisy[:5], method)
    with pytest.raises(ConfigError):
        MseEstimateConfig(probes=0)
