"""Metrics against hand-computed cases, a brute-force SSIM and scikit-image."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from hsidenoise.errors import ConfigError, CubeShapeError
from hsidenoise.quality.metrics import (
    ergas,
    estimate_noise_mad,
    evaluate,
    mpsnr,
    psnr_per_band,
    sam,
    ssim_per_band,
)


def _pair(shape: tuple[int, int, int] = (5, 23, 17), seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    ref = rng.random(shape)
    return np.clip(ref + 0.1 * rng.standard_normal(shape), 0, 1), ref


def _skimage_ssim(x: np.ndarray, ref: np.ndarray, **kwargs: object) -> object:
    return structural_similarity(
        x, ref, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0, **kwargs
    )


def _brute_force_ssim_index(x: np.ndarray, ref: np.ndarray) -> float:
    """Wang's ssim_index.m written out with loops: 11x11 fspecial Gaussian, L = 255 on x255 data, 'valid'."""
    offsets = np.arange(-5, 6)
    window = np.exp(-(offsets[:, None] ** 2 + offsets[None, :] ** 2) / (2 * 1.5**2))
    window /= window.sum()
    a, b = x * 255.0, ref * 255.0
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    values = []
    for row in range(a.shape[0] - 10):
        for col in range(a.shape[1] - 10):
            pa, pb = a[row : row + 11, col : col + 11], b[row : row + 11, col : col + 11]
            mu_a, mu_b = (window * pa).sum(), (window * pb).sum()
            var_a = (window * (pa - mu_a) ** 2).sum()
            var_b = (window * (pb - mu_b) ** 2).sum()
            cov = (window * (pa - mu_a) * (pb - mu_b)).sum()
            values.append(((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)))
    return float(np.mean(values))


def test_psnr_on_a_hand_computed_2x2x2_cube() -> None:
    ref = np.array([[[0.1, 0.1], [0.1, 0.1]], [[0.5, 0.5], [0.5, 0.5]]])
    x = np.array([[[0.0, 0.0], [0.0, 0.0]], [[0.5, 0.5], [0.5, 0.0]]])
    # band 0: MSE 0.01 -> 20 dB; band 1: one pixel off by 0.5 -> MSE 0.0625 -> 10 log10(16) dB
    np.testing.assert_allclose(psnr_per_band(x, ref), [20.0, 10 * math.log10(16)])
    assert mpsnr(x, ref) == pytest.approx((20.0 + 10 * math.log10(16)) / 2)
    np.testing.assert_allclose(psnr_per_band(x, ref, peak=2.0), [20.0 + 20 * math.log10(2), 10 * math.log10(64)])


def test_identical_bands_give_infinite_psnr_and_are_left_out_of_the_mean() -> None:
    """A dead band passed through unchanged must not make MPSNR infinite (issue 12): the mean is over the bands
    that differ; only cubes equal in every band give +inf."""
    x, ref = _pair((3, 4, 5))
    x[1] = ref[1]
    psnr = psnr_per_band(x, ref)
    assert np.isposinf(psnr[1]) and np.isfinite(psnr[[0, 2]]).all()
    assert mpsnr(x, ref) == pytest.approx(psnr[[0, 2]].mean())
    assert math.isinf(mpsnr(ref, ref))


def test_psnr_matches_scikit_image() -> None:
    x, ref = _pair()
    expected = [peak_signal_noise_ratio(ref[b], x[b], data_range=1.0) for b in range(x.shape[0])]
    np.testing.assert_allclose(psnr_per_band(x, ref), expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("mode", ["wang", "matlab"])
def test_ssim_matches_scikit_image_wang_settings(mode: str) -> None:
    x, ref = _pair((5, 29, 13))
    expected = [_skimage_ssim(x[b], ref[b]) for b in range(x.shape[0])]
    np.testing.assert_allclose(ssim_per_band(x, ref, mode=mode), expected, rtol=0, atol=1e-6)


def test_matlab_ssim_matches_a_brute_force_ssim_index() -> None:
    x, ref = _pair((2, 14, 13), seed=3)
    expected = [_brute_force_ssim_index(x[b], ref[b]) for b in range(2)]
    np.testing.assert_allclose(ssim_per_band(x, ref, mode="matlab"), expected, rtol=0, atol=1e-9)


def test_ssim_of_identical_bands_is_one_and_too_small_bands_are_refused() -> None:
    _, ref = _pair((2, 12, 12))
    np.testing.assert_allclose(ssim_per_band(ref, ref), [1.0, 1.0])
    with pytest.raises(CubeShapeError, match="11x11"):
        ssim_per_band(ref[:, :10], ref[:, :10])
    with pytest.raises(ConfigError, match="wang, matlab"):
        ssim_per_band(ref, ref, mode="qrnn3d")


def test_ssim_skips_windows_that_touch_a_nan_pixel() -> None:
    x, ref = _pair((1, 25, 24), seed=5)
    _, ssim_map = _skimage_ssim(x[0], ref[0], full=True)
    x_nan = x.copy()
    x_nan[0, 12, 3] = np.nan
    interior = ssim_map[5:-5, 5:-5]
    rows, cols = np.meshgrid(np.arange(5, 20), np.arange(5, 19), indexing="ij")
    untouched = (np.abs(rows - 12) > 5) | (np.abs(cols - 3) > 5)
    assert ssim_per_band(x_nan, ref)[0] == pytest.approx(interior[untouched].mean(), abs=1e-9)


def test_sam_on_known_angles() -> None:
    # pixels: orthogonal (pi/2), 45 degrees (pi/4), both zero (skipped), scaled copy (0)
    x = np.array([[1.0, 1.0, 0.0, 2.0], [0.0, 1.0, 0.0, 4.0]])[:, None, :]
    ref = np.array([[0.0, 1.0, 0.0, 1.0], [1.0, 0.0, 0.0, 2.0]])[:, None, :]
    assert sam(x, ref) == pytest.approx((math.pi / 2 + math.pi / 4 + 0.0) / 3)


def test_sam_counts_a_pixel_with_one_zero_spectrum_as_orthogonal() -> None:
    x = np.array([[0.0, 3.0], [0.0, 4.0]])[:, None, :]
    ref = np.array([[1.0, 3.0], [1.0, 4.0]])[:, None, :]
    assert sam(x, ref) == pytest.approx(math.pi / 4)


def test_ergas_on_a_hand_computed_case() -> None:
    ref = np.stack([np.full((3, 4), 0.5), np.full((3, 4), 0.25)])
    x = np.stack([np.full((3, 4), 0.55), np.full((3, 4), 0.275)])
    # RMSE / mean = 0.1 in both bands -> 100 * sqrt(0.01) = 10
    assert ergas(x, ref) == pytest.approx(10.0)
    assert ergas(x, ref, ratio=0.25) == pytest.approx(2.5)
    assert ergas(ref, ref) == 0.0


def test_evaluate_excludes_and_lists_nan_bands_and_stays_json_safe() -> None:
    x, ref = _pair((4, 15, 16), seed=7)
    x[3] = ref[3]
    x[1] = np.nan
    report = evaluate(x, ref)
    assert report.excluded_bands == (1,)
    assert report.identical_bands == (3,)
    assert np.isnan(report.psnr[1]) and np.isnan(report.ssim[1])
    assert report.mpsnr == pytest.approx(report.psnr[[0, 2]].mean())  # the identical band 3 is left out
    expected_ssim = [_skimage_ssim(x[b], ref[b]) for b in (0, 2)]
    assert report.mssim == pytest.approx(np.mean(expected_ssim), abs=1e-9)
    assert report.sam == pytest.approx(sam(x[[0, 2]], ref[[0, 2]]))
    assert report.ergas == pytest.approx(ergas(x[[0, 2]], ref[[0, 2]]))
    assert any("identical" in note and "left out of the means" in note for note in report.notes)
    data = report.to_dict()
    text = json.dumps(data, allow_nan=False)
    assert json.loads(text)["per_band"]["psnr"][1] is None
    assert data["mpsnr"] == pytest.approx(report.mpsnr) and data["all_identical"] is False
    assert data["identical_bands"] == [3] and data["excluded_bands"] == [1]
    assert data["sam_deg"] == pytest.approx(math.degrees(report.sam))


def test_evaluate_notes_that_ssim_is_undefined_on_tiny_bands() -> None:
    x, ref = _pair((3, 7, 13))
    report = evaluate(x, ref)
    assert np.isnan(report.ssim).all() and any("SSIM undefined" in note for note in report.notes)
    assert math.isfinite(report.mpsnr)


def test_metrics_refuse_mismatched_shapes() -> None:
    with pytest.raises(CubeShapeError, match="same shape|one shape"):
        evaluate(np.zeros((2, 12, 12)), np.zeros((3, 12, 12)))


def test_noise_estimate_recovers_known_sigma_on_a_structured_scene() -> None:
    rng = np.random.default_rng(11)
    rows, cols = np.meshgrid(np.linspace(0, 1, 120), np.linspace(0, 1, 130), indexing="ij")
    scene = 0.5 + 0.3 * np.sin(3 * rows) * np.cos(2 * cols) + 0.2 * (cols > 0.5)  # smooth plus an edge
    sigmas = np.array([0.01, 0.03, 0.1])
    cube = scene[None] + sigmas[:, None, None] * rng.standard_normal((3, 120, 130))
    np.testing.assert_allclose(estimate_noise_mad(cube), sigmas, rtol=0.06)


def test_noise_estimate_ignores_stripes_and_nan_pixels() -> None:
    rng = np.random.default_rng(12)
    stripes = np.tile(rng.uniform(-0.25, 0.25, 90), (80, 1))
    cube = np.stack([stripes, 0.4 + 0.02 * rng.standard_normal((80, 90))])
    cube[1, 10:20, 10:20] = np.nan
    sigma = estimate_noise_mad(cube)
    assert sigma[0] == pytest.approx(0.0, abs=1e-12)
    assert sigma[1] == pytest.approx(0.02, rel=0.06)
    assert np.isnan(estimate_noise_mad(np.zeros((2, 2, 9)))).all()


def test_evaluate_of_cubes_equal_in_every_band_says_so() -> None:
    _, ref = _pair((3, 15, 16), seed=2)
    report = evaluate(ref.copy(), ref)
    assert math.isinf(report.mpsnr) and report.all_identical and report.identical_bands == (0, 1, 2)
    assert any("every band is identical" in note for note in report.notes)
    assert report.to_dict()["mpsnr"] is None and report.to_dict()["all_identical"] is True
