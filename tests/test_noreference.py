"""No-reference quality: the removed/noise ratio, the calibrated whiteness flag, the MPSNR estimate's reasons,
SURE (library) is unbiased, and the CLI end to end (the subspace MSE estimate itself: test_subspace_mse.py)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage
from typer.testing import CliRunner

from hsidenoise.cli import app
from hsidenoise.cube import Cube, CubeMeta
from hsidenoise.denoise import denoise_array
from hsidenoise.denoiser import DenoiserBase
from hsidenoise.errors import ConfigError, CubeShapeError
from hsidenoise.io import write_cube
from hsidenoise.subspace import LowRankConfig, LowRankDenoiser
from hsidenoise.quality.noreference import marginal_from_partial, no_reference_quality, sure_mse, whiteness

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def smooth_cube(bands: int, rows: int, cols: int, seed: int = 0) -> np.ndarray:
    """(B, H, W) float64 in about [0.1, 0.9]: three smooth spectra mixed by smooth abundances (rank 3)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:rows, 0:cols] / max(rows, cols)
    abundances = np.stack([np.sin(3 * x + 1) ** 2, np.cos(2 * y) ** 2, x * y])
    spectra = 0.2 + 0.25 * (
        1 + np.sin(np.linspace(0, 3, bands)[:, None] * rng.uniform(0.5, 2, 3) + rng.uniform(0, 3, 3))
    )
    return np.einsum("bk,khw->bhw", spectra, abundances) / 2.2 + 0.1


class BoxSmoother(DenoiserBase):
    """A linear denoiser: a 3 x 3 mean filter per band (its divergence is known, its SURE exact on average)."""

    name = "box"

    def prepare(self, stats) -> None:
        """Nothing to fit."""

    def denoise_tile(self, tile: np.ndarray) -> np.ndarray:
        return ndimage.uniform_filter(np.asarray(tile, dtype=np.float64), size=(1, 3, 3), mode="reflect").astype(
            np.float32
        )


def test_sure_of_a_linear_smoother_is_unbiased() -> None:
    clean = smooth_cube(13, 33, 35)
    sigma = np.linspace(0.02, 0.08, 13)
    method = BoxSmoother()
    sure, truth = [], []
    for draw in range(16):
        noisy = clean + sigma[:, None, None] * np.random.default_rng(draw).standard_normal(clean.shape)
        estimate = sure_mse(noisy, method, sigma, seed=draw)
        sure.append(estimate.mse)
        truth.append(((method.denoise_tile(noisy.astype(np.float32)) - clean) ** 2).mean(axis=(1, 2)))
        assert not estimate.clamped.any() and estimate.excluded_fraction.max() < 0.01
    sure, truth = np.mean(sure, axis=0), np.mean(truth, axis=0)
    assert sure.mean() == pytest.approx(truth.mean(), rel=0.03)
    # one draw's SURE has a spread of about sigma^2 sqrt(2 / n) (35 % of this MSE); 16 draws: about 9 %
    np.testing.assert_allclose(sure, truth, rtol=0.35)


def test_ratio_is_one_for_pure_noise_removal_and_an_edge_removal_is_flagged() -> None:
    rng = np.random.default_rng(3)
    clean = smooth_cube(13, 45, 51, seed=2)
    noise = 0.03 * rng.standard_normal(clean.shape)
    noisy = clean + noise
    white = no_reference_quality(noisy, clean, crop=45)  # the perfect denoiser removed exactly the noise
    assert white.flagged_bands == () and white.flagged_pairs == ()
    np.testing.assert_allclose(white.removed_ratio, 1.0, atol=0.15)  # HySime sigma is 12 % high on an edge band
    assert white.to_dict()["flagged_bands"] == [] and white.to_dict()["flag_reasons"] == {}
    lossy = clean.copy()
    lossy[4:9, :, 25:] -= 0.06  # the "denoiser" lost an edge in bands 4-8: it shows in what was removed
    flagged = no_reference_quality(noisy, lossy, crop=45)
    assert set(flagged.flagged_bands) == {4, 5, 6, 7, 8}
    assert np.all(flagged.removed_ratio[4:9] > 1.3) and np.all(np.abs(flagged.removed_ratio[:4] - 1) < 0.15)
    assert all("structure was removed" in flagged.flag_reasons[band] for band in range(4, 9))
    assert flagged.to_dict()["flagged_bands"] == [4, 5, 6, 7, 8]


def test_spatially_correlated_noise_removed_is_not_flagged() -> None:
    """A sensor whose noise is correlated along the rows: removing exactly that noise is not a flag."""
    rng = np.random.default_rng(8)
    clean = smooth_cube(15, 64, 60, seed=3)
    white = rng.standard_normal(clean.shape)
    correlated = (white + np.roll(white, 1, axis=1) + np.roll(white, 2, axis=1)) / np.sqrt(3)  # lag-1 r = 2/3
    noisy = clean + 0.03 * correlated
    report = no_reference_quality(noisy, clean, crop=60)
    assert np.nanmin(report.autocorr_rows) > 0.5  # the removed part is strongly correlated ...
    # ... like the input noise, so (almost) nothing is flagged: the edge band's regression residual carries a
    # little signal (its neighbours are on one side only), which may flag it; the target is at most 10 %
    assert len(report.flagged_bands) <= 1 and set(report.flagged_bands) <= {0, 14}
    assert np.nanmax(np.abs(report.autocorr_rows - report.noise_autocorr_rows)) < 0.1


def test_noise_correlated_along_the_spectrum_removed_is_not_flagged() -> None:
    """AR(1) noise along the spectrum (neighbouring bands correlate 0.5): removing exactly it is not a flag, although
    the removed parts of neighbouring bands correlate; judged against white noise every pair would be."""
    rng = np.random.default_rng(9)
    clean = smooth_cube(17, 64, 64, seed=5)
    white = rng.standard_normal(clean.shape)
    noise = np.empty_like(white)
    noise[0] = white[0]
    for band in range(1, 17):
        noise[band] = 0.5 * noise[band - 1] + np.sqrt(0.75) * white[band]
    report = no_reference_quality(clean + 0.03 * noise, clean, crop=64)
    assert np.nanmin(report.spectral_corr) > 0.35  # the removed parts do correlate ...
    np.testing.assert_allclose(np.nanmedian(report.noise_spectral_corr), 0.5, atol=0.08)  # ... as the noise does
    assert report.flagged_pairs == () and len(report.flagged_bands) <= 1


def test_texture_shared_by_neighbouring_bands_removed_is_flagged_by_the_spectral_check() -> None:
    """A "denoiser" that removed a pixel-scale texture of bands 4-8 (spatially white, so the lag-1 check cannot see
    it, but the same in those bands, as a material's texture is): the spectral check flags bands 4-8 only."""
    rng = np.random.default_rng(4)
    clean = smooth_cube(13, 48, 48, seed=2)
    texture = 0.03 * rng.standard_normal(clean.shape[1:])
    clean[4:9] += texture
    noisy = clean + 0.03 * rng.standard_normal(clean.shape)
    lossy = clean.copy()
    lossy[4:9] -= texture
    report = no_reference_quality(noisy, lossy, crop=48)
    assert set(report.flagged_pairs) == {4, 5, 6, 7}
    assert set(report.flagged_bands) == {4, 5, 6, 7, 8}
    assert all("share more than their noise" in report.flag_reasons[band] for band in range(4, 9))
    assert report.to_dict()["whiteness"]["flagged_band_pairs"] == [[4, 5], [5, 6], [6, 7], [7, 8]]


def test_a_removed_part_without_the_noises_coarse_part_is_flagged_by_the_coarse_scale_check() -> None:
    """What a low-pass filter removes lacks the noise's coarse part. A 1.5-pixel blur of a smooth cube, and a
    "denoiser" that removed the noise but kept each 4 x 4 block's mean of it (its removed part is nearly white at
    lag 1: correlation -1/15 within blocks): every band flagged by the coarse-scale check."""
    rng = np.random.default_rng(12)
    clean = smooth_cube(13, 96, 96, seed=4)
    noise = 0.03 * rng.standard_normal(clean.shape)
    noisy = clean + noise
    blurred = no_reference_quality(noisy, ndimage.gaussian_filter(noisy, sigma=(0, 1.5, 1.5)), crop=96)
    assert np.nanmax(blurred.coarse_energy) < 0.7 and np.nanmin(blurred.noise_coarse_energy) > 0.8
    assert sum("coarse part" in blurred.flag_reasons.get(band, "") for band in range(13)) >= 12
    assert blurred.to_dict()["whiteness"]["coarse_energy"].shape == (13,)
    block_means = noise.reshape(13, 24, 4, 24, 4).mean(axis=(2, 4), keepdims=True)
    kept_means = np.broadcast_to(block_means, (13, 24, 4, 24, 4)).reshape(13, 96, 96)
    fine_only = no_reference_quality(noisy, clean + kept_means, crop=96)
    assert np.nanmax(fine_only.coarse_energy) < 0.05
    assert all("coarse part" in fine_only.flag_reasons.get(band, "") for band in range(13))
    exact = no_reference_quality(noisy, clean, crop=96)  # the noise itself removed: coarse energy about 1
    np.testing.assert_allclose(exact.coarse_energy, 1.0, atol=0.3)
    assert not any("coarse part" in reason for reason in exact.flag_reasons.values())


def test_coarse_scale_check_is_capped_at_white_noise_where_the_residual_carries_signal() -> None:
    """A band with a smooth pattern that no other band explains: its regression residual (the noise reference) has
    coarse-scale energy far above 1. A denoiser that removed exactly the (white) noise is not flagged for it."""
    rng = np.random.default_rng(13)
    clean = smooth_cube(13, 96, 96, seed=6)
    y, x = np.mgrid[0:96, 0:96] / 96.0
    clean[6] += 0.05 * np.sin(9 * x) * np.cos(7 * y)  # band 6 only: unexplained by the others
    noisy = clean + 0.03 * rng.standard_normal(clean.shape)
    report = no_reference_quality(noisy, clean, crop=96)
    assert report.noise_coarse_energy[6] > 2.0  # the reference reads the pattern ...
    assert report.coarse_energy[6] - report.noise_coarse_energy[6] < -report.coarse_threshold[6]  # ... a gap
    assert not any("coarse part" in reason for reason in report.flag_reasons.values())  # capped at 1: no flag


def test_marginal_from_partial_inverts_the_ar1_partial_correlation() -> None:
    rho = np.array([-0.6, 0.0, 0.2, 0.5, 0.8, np.nan])
    found, slope = marginal_from_partial(rho / (1 + rho**2))
    np.testing.assert_allclose(found, rho, atol=1e-12)
    assert slope[1] == pytest.approx(1.0) and np.all(slope[:-1] >= 1.0) and np.all(slope[:-1] <= 4.0)
    assert marginal_from_partial(np.array([0.7]))[0][0] == 1.0  # beyond AR(1): fully correlated


def test_mpsnr_estimate_is_withheld_with_a_reason() -> None:
    clean = smooth_cube(9, 33, 31, seed=1)
    rng = np.random.default_rng(2)
    noisy = clean + 0.02 * rng.standard_normal(clean.shape)
    hits = rng.random(clean.shape) < 0.1
    noisy[hits] = rng.choice([0.0, 1.0], size=int(hits.sum()))  # impulse noise
    report = no_reference_quality(noisy, clean, method="lowrank", outliers_removed=True)
    facts = report.to_dict()
    assert facts["estimated_mpsnr_db"] is None
    assert "not estimated" in facts["estimated_mpsnr_reason"] and "impulses" in facts["estimated_mpsnr_reason"]
    assert facts["estimated_mpsnr_peak"] == pytest.approx(float(clean.max() - clean.min()))  # the output's range
    unknown = no_reference_quality(noisy, clean).to_dict()
    assert unknown["estimated_mpsnr_db"] is None and "unknown" in unknown["estimated_mpsnr_reason"]


def test_whiteness_of_constant_residual_is_undefined_not_flagged() -> None:
    result = whiteness(np.zeros((3, 9, 11)))
    assert np.isnan(result["rows"]).all() and np.isnan(result["spectral"]).all()


def test_lowrank_removes_about_the_noise_and_flags_few_bands() -> None:
    clean = smooth_cube(17, 64, 64, seed=4)
    sigma = np.linspace(0.02, 0.06, 17)
    noisy = (clean + sigma[:, None, None] * np.random.default_rng(5).standard_normal(clean.shape)).astype(np.float32)
    denoised = denoise_array(noisy, LowRankDenoiser(LowRankConfig(spatial="dct")))
    report = no_reference_quality(noisy, denoised, method="lowrank", crop=64)
    np.testing.assert_allclose(report.sigma_before, sigma, rtol=0.2)
    np.testing.assert_allclose(report.removed_ratio, 1.0, atol=0.2)
    assert len(report.flagged_bands) <= 0.1 * 17


def test_no_reference_quality_refuses_bad_input() -> None:
    cube = smooth_cube(5, 12, 13)
    with pytest.raises(CubeShapeError):
        no_reference_quality(cube, cube[:, :10])
    with pytest.raises(ConfigError):
        no_reference_quality(cube, cube, crop=4)
    with pytest.raises(ConfigError):
        no_reference_quality(cube, cube, bands=[7])


def test_dead_and_nan_bands_are_left_out() -> None:
    clean = smooth_cube(9, 21, 23)
    noisy = clean + 0.02 * np.random.default_rng(0).standard_normal(clean.shape)
    noisy[2] = 0.25
    noisy[5] = np.nan
    report = no_reference_quality(noisy, np.where(np.isfinite(noisy), clean, np.nan))
    assert 2 not in report.bands and 5 not in report.bands and len(report.bands) == 7
    assert np.isnan(report.sigma_before[[2, 5]]).all() and np.isfinite(report.sigma_before[[0, 8]]).all()


# --------------------------------------------------------------------------------------------------- CLI


@pytest.fixture
def pair(tmp_path: Path) -> Path:
    """noisy.tif, half.tif (halfway to the clean cube) and small.tif (another shape), 13 bands, 37 x 35."""
    clean = smooth_cube(13, 37, 35, seed=6)
    noisy = (clean + 0.04 * np.random.default_rng(7).standard_normal(clean.shape)).astype(np.float32)
    meta = CubeMeta(wavelengths=np.linspace(450.0, 850.0, 13), wavelength_units="nm")
    write_cube(tmp_path / "noisy.tif", Cube(noisy, meta))
    write_cube(tmp_path / "half.tif", Cube(((noisy + clean) / 2).astype(np.float32), meta))
    write_cube(tmp_path / "small.tif", Cube(noisy[:, :20], meta))
    return tmp_path


def test_cli_eval_without_reference_json_and_files(pair: Path) -> None:
    runner = CliRunner()
    out = pair / "scores"
    args = ["eval", str(pair / "half.tif"), "--noisy", str(pair / "noisy.tif"), "-o", str(out), "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    section = document["no_reference"]
    assert len(section["noise"]["sigma_before"]) == 13 and 0.2 < section["noise"]["median_removed_ratio"] < 1.0
    assert set(section["whiteness"]) >= {"autocorr_rows", "noise_autocorr_rows", "threshold"}
    assert isinstance(section["flagged_bands"], list) and section["estimated_mpsnr_db"] is None
    assert sorted(p.name for p in out.iterdir()) == ["no_reference.csv", "no_reference.json", "no_reference.png"]
    assert (out / "no_reference.png").read_bytes()[:8] == PNG_MAGIC
    with open(out / "no_reference.csv", newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert len(rows) == 13 and {"sigma_before", "removed_ratio", "autocorr_rows", "flagged", "wavelength"} <= set(rows[0])

    result = runner.invoke(
        app,
        ["eval", str(pair / "half.tif"), "--noisy", str(pair / "noisy.tif"), "--method", "lowrank",
         "--spatial", "dct", "--crop", "24", "--json"],
    )
    assert result.exit_code == 0, result.stderr
    section = json.loads(result.stdout)["no_reference"]
    assert section["estimated_mpsnr_db"] is None and "not estimated" in section["estimated_mpsnr_reason"]
    table = runner.invoke(app, ["eval", str(pair / "half.tif"), "--noisy", str(pair / "noisy.tif")])
    assert table.exit_code == 0 and "removed / noise ratio" in table.stdout


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["eval", "half.tif"], 2),  # neither --ref nor --noisy
        (["eval", "half.tif", "--noisy", "small.tif"], 1),  # shapes differ
        (["eval", "half.tif", "--noisy", "missing.tif"], 1),
        (["eval", "half.tif", "--ref", "noisy.tif", "--method", "lowrank"], 2),
        (["eval", "half.tif", "--noisy", "noisy.tif", "--model", "paper"], 2),  # --model without --method decsc
    ],
)
def test_cli_eval_without_reference_refuses_with_one_line(pair: Path, args: list[str], code: int, monkeypatch) -> None:
    monkeypatch.chdir(pair)
    before = sorted(p.name for p in pair.iterdir())
    result = CliRunner().invoke(app, [*args, "-o", "scores", "--json"])
    assert result.exit_code == code, result.stderr
    assert result.stdout == "" and "Traceback" not in result.stderr
    assert len([line for line in result.stderr.splitlines() if line.strip()]) == 1
    assert sorted(p.name for p in pair.iterdir()) == before


def test_cli_run_report_has_the_no_reference_section(pair: Path) -> None:
    report = pair / "report"
    result = CliRunner().invoke(
        app,
        ["run", str(pair / "noisy.tif"), "-o", str(pair / "out.tif"), "--method", "lowrank", "--spatial", "dct",
         "--report", str(report), "-q"],
    )
    assert result.exit_code == 0, result.stderr
    facts = json.loads((report / "report.json").read_text())
    section = facts["no_reference"]
    assert len(section["noise"]["removed_ratio"]) == 13 and section["estimated_mpsnr_db"] is None
    assert section["estimated_mpsnr_reason"].startswith("withheld: uncertain")  # the subspace estimate ran
    assert section["crop"] == {"rows": [0, 37], "cols": [0, 35]}
    assert len(section["whiteness"]["autocorr_cols"]) == 13
    for name in ("no_reference.png", "row_mean_profiles.png", "quicklook.png"):
        assert (report / name).read_bytes()[:8] == PNG_MAGIC
    assert len((report / "no_reference.csv").read_text().strip().splitlines()) == 14


def test_cli_run_report_lists_outliers_and_stripes_and_profiles_the_destriped_band(tmp_path: Path) -> None:
    clean = smooth_cube(13, 48, 44, seed=9)
    rng = np.random.default_rng(10)
    noisy = clean + 0.01 * rng.standard_normal(clean.shape)
    noisy[6] += 0.15 * (rng.random(44) < 0.3)[None, :]  # column stripes in band 6
    hits = rng.random(noisy[3].shape) < 0.05
    noisy[3][hits] = 1.0  # impulses (saturated) in band 3
    write_cube(tmp_path / "noisy.tif", Cube(noisy.astype(np.float32), CubeMeta()))
    report = tmp_path / "report"
    result = CliRunner().invoke(
        app, ["run", str(tmp_path / "noisy.tif"), "-o", str(tmp_path / "out.tif"), "--method", "lowrank",
              "--spatial", "dct", "--report", str(report), "-q"],
    )
    assert result.exit_code == 0, result.stderr
    facts = json.loads((report / "report.json").read_text())
    cleaning = facts["front_end_cleaning"]
    assert len(cleaning["outlier_entries"]) == 13 and cleaning["outlier_entries"][3] >= 0.5 * hits.sum()
    assert 6 in cleaning["stripe_bands"] and cleaning["stripe_rms"][6] == max(cleaning["stripe_rms"])
    assert facts["profile_bands"][0] == 6
    assert "removed stripes" in facts["profile_band_choice"]["bands"][0]["reason"]
    assert all("front_end_cleaning" not in tile for tile in facts.get("tiles", []))


def test_no_ratio_to_a_noise_sigma_at_the_estimates_floor() -> None:
    """A band whose sigma sits at the noise estimate's floor (a thousandth of the median band's: not resolved, as
    on three Santa Barbara bands, where the ratio read 200) gets no removed/noise ratio; the others keep theirs."""
    from hsidenoise.subspace.noise_estimate import SIGMA_FLOOR

    clean = smooth_cube(7, 40, 40)
    sigma = np.full(7, 0.05)
    noisy = clean + sigma[:, None, None] * np.random.default_rng(3).standard_normal(clean.shape)
    stated = sigma.copy()
    stated[2] = SIGMA_FLOOR * np.median(sigma)
    report = no_reference_quality(noisy, clean, sigma=stated)
    assert np.isnan(report.removed_ratio[2])
    others = np.delete(report.removed_ratio, 2)
    assert np.all(np.abs(others - 1.0) < 0.1)
