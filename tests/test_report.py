"""Report files: they exist, parse, hold what they claim, and PNGs are real images with content."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread
from matplotlib.text import Text

import hsidenoise.quality.plots as report_module
from hsidenoise.quality.artefacts import choose_profile_bands, measure_band_artefacts, spectral_band_noise
from hsidenoise.cube import CubeMeta
from hsidenoise.errors import ConfigError, CubeShapeError, CubeWriteError
from hsidenoise.quality.metrics import evaluate
from hsidenoise.quality.labels import value_units_of, wavelength_unit_symbol
from hsidenoise.quality.plots import (
    _write_atomically,
    pick_rgb_bands,
    plot_noise_before_after,
    plot_row_mean_profiles,
    write_json,
    write_metrics_report,
    write_quicklook,
    write_run_report,
)


def _strict_json(path: Path) -> object:
    def refuse(constant: str) -> None:
        raise ValueError(f"non-standard JSON constant {constant}")

    return json.loads(path.read_text(), parse_constant=refuse)


def _assert_real_image(path: Path) -> np.ndarray:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    colours = np.unique(image[..., :3].reshape(-1, 3), axis=0)
    assert len(colours) > 20 and image[..., :3].std() > 0.02
    return image


def _cubes(shape: tuple[int, int, int] = (9, 31, 37), seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    rows = np.linspace(0, 1, shape[1])[:, None]
    cols = np.linspace(0, 1, shape[2])[None, :]
    clean = np.stack([0.5 + 0.3 * np.sin(4 * rows + b) * np.cos(3 * cols) for b in range(shape[0])])
    noisy = clean + 0.1 * rng.standard_normal(shape)
    denoised = clean + 0.01 * rng.standard_normal(shape)
    return clean, noisy, denoised


def _only_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_metrics_report_writes_json_csv_and_plot(tmp_path: Path) -> None:
    clean, noisy, denoised = _cubes()
    wavelengths = np.linspace(450.0, 900.0, 9)
    paths = write_metrics_report(
        evaluate(denoised, clean), tmp_path / "out", noisy_report=evaluate(noisy, clean), wavelengths=wavelengths
    )
    assert set(paths) == {"json", "csv", "plot"}
    assert _only_files(tmp_path / "out") == ["metrics.csv", "metrics.json", "per_band.png"]

    data = _strict_json(paths["json"])
    assert data["denoised"]["mpsnr"] > data["noisy"]["mpsnr"]
    assert data["wavelengths"] == pytest.approx(wavelengths.tolist())
    assert len(data["denoised"]["per_band"]["ssim"]) == 9

    with paths["csv"].open() as stream:
        rows = list(csv.DictReader(stream))
    assert len(rows) == 9
    assert float(rows[4]["wavelength"]) == pytest.approx(675.0)
    expected = 10 * math.log10(1.0 / np.mean((denoised[4] - clean[4]) ** 2))
    assert float(rows[4]["psnr"]) == pytest.approx(expected, rel=1e-5)
    assert float(rows[4]["noisy_psnr"]) < float(rows[4]["psnr"])
    _assert_real_image(paths["plot"])


def test_metrics_report_of_identical_cubes_writes_null_not_infinity(tmp_path: Path) -> None:
    clean, _, _ = _cubes((3, 12, 14))
    paths = write_metrics_report(evaluate(clean, clean), tmp_path)
    data = _strict_json(paths["json"])
    assert data["denoised"]["mpsnr"] is None and data["denoised"]["identical_bands"] == [0, 1, 2]
    with paths["csv"].open() as stream:
        assert [row["psnr"] for row in csv.DictReader(stream)] == ["inf"] * 3


def test_metrics_report_refuses_wavelengths_of_the_wrong_length(tmp_path: Path) -> None:
    clean, _, denoised = _cubes((3, 12, 14))
    with pytest.raises(CubeShapeError, match="3 wavelengths"):
        write_metrics_report(evaluate(denoised, clean), tmp_path, wavelengths=[500.0, 600.0])


def test_row_mean_profiles_plot(tmp_path: Path) -> None:
    clean, noisy, denoised = _cubes()
    noisy[2, :, 5] = np.nan  # a NaN column must not blank the curve
    path = plot_row_mean_profiles(noisy, denoised, [0, 2, 8], tmp_path / "profiles.png", clean=clean)
    assert path == tmp_path / "profiles.png"
    image = _assert_real_image(path)
    assert image.shape[0] > image.shape[1]  # one panel per band, stacked
    with pytest.raises(ConfigError, match=r"\[0, 8\]"):
        plot_row_mean_profiles(noisy, denoised, [9], tmp_path / "bad.png")
    with pytest.raises(CubeShapeError):
        plot_row_mean_profiles(noisy, denoised[:3], [0], tmp_path / "bad.png")
    assert not (tmp_path / "bad.png").exists()


def test_rgb_bands_come_from_wavelengths_or_are_spread() -> None:
    nanometres = [445.0, 470.0, 548.0, 600.0, 652.0, 700.0]
    assert pick_rgb_bands(6, nanometres) == (4, 2, 0)
    assert pick_rgb_bands(6, [w / 1000 for w in nanometres]) == (4, 2, 0)  # micrometres
    assert pick_rgb_bands(37) == (27, 18, 9)
    assert pick_rgb_bands(1) == (0, 0, 0)


def test_quicklook_shows_noisy_and_denoised_side_by_side(tmp_path: Path) -> None:
    _, noisy, denoised = _cubes((9, 40, 50))
    path = write_quicklook(noisy, denoised, tmp_path / "quicklook.png", wavelengths=np.linspace(400, 800, 9))
    image = _assert_real_image(path)
    assert image.shape[1] > image.shape[0]
    half = image.shape[1] // 2
    left, right = image[:, :half, :3], image[:, half : 2 * half, :3]
    assert np.abs(left - right).mean() > 0.01  # the noise is visible before, not after
    with pytest.raises(ConfigError, match="three"):
        write_quicklook(noisy, denoised, tmp_path / "bad.png", rgb_bands=[0, 1])


def test_noise_before_after_plot(tmp_path: Path) -> None:
    before = np.linspace(0.01, 0.2, 12)
    path = plot_noise_before_after(before, before / 10, tmp_path / "noise.png", wavelengths=np.arange(12) * 10 + 400.0)
    _assert_real_image(path)
    with pytest.raises(CubeShapeError):
        plot_noise_before_after(before, before[:5], tmp_path / "bad.png")


def test_run_report_bundle(tmp_path: Path) -> None:
    _, noisy, denoised = _cubes((9, 33, 35))
    summary = {"timings_s": {"total": 1.5}, "tile_plan": {"tiles": 4}, "untouched_bands": [3]}
    paths = write_run_report(tmp_path / "report", noisy, denoised, summary=summary)
    expected = ["noise_before_after.png", "quicklook.png", "removed.png", "report.json", "row_mean_profiles.png",
                "spectra.png"]
    assert len(_strict_json(paths["json"])["spectra"]["pixels"]) == 4
    assert _only_files(tmp_path / "report") == expected
    data = _strict_json(paths["json"])
    assert data["tile_plan"] == {"tiles": 4} and data["untouched_bands"] == [3]
    before, removed = np.array(data["noise_estimate"]["before"]), np.array(data["noise_estimate"]["removed_std"])
    assert before.shape == (9,) and removed.shape == (9,) and "after" not in data["noise_estimate"]
    assert len(data["profile_bands"]) == 3
    for key in ("profiles", "quicklook", "noise"):
        _assert_real_image(paths[key])


def _artefact_cube(seed: int = 0) -> np.ndarray:
    """(11, 37, 41): one smooth scene in every band, white noise, and planted artefacts.

    Band 8 is heavily textured (the noisiest by a texture-sensitive estimate, which is what used to pick the
    profile bands), band 5 has row stripes (one offset per row), band 2 column stripes, band 9 three times the
    noise of the others. A vertical edge crosses every band (scene, not stripes).
    """
    rng = np.random.default_rng(seed)
    bands, height, width = 11, 37, 41
    rows = np.linspace(0, 1, height)[:, None]
    cols = np.linspace(0, 1, width)[None, :]
    scene = 0.4 + 0.2 * np.sin(5 * rows) * np.cos(4 * cols) + 0.15 * (cols > 0.6)
    cube = np.stack([(1.0 + 0.05 * b) * scene for b in range(bands)])
    cube += 0.01 * rng.standard_normal((bands, height, width))
    cube[8] += 0.08 * rng.standard_normal((height, width))  # band-specific texture, fine-grained
    cube[5] += 0.04 * rng.standard_normal((height, 1))  # row stripes
    cube[2] += 0.04 * rng.standard_normal((1, width))  # column stripes
    cube[9] += 0.02 * rng.standard_normal((height, width))  # extra noise
    return cube


def test_planted_stripes_are_measured_in_their_band_and_orientation() -> None:
    artefacts = measure_band_artefacts(_artefact_cube())
    assert int(np.nanargmax(artefacts.row_stripes)) == 5
    assert int(np.nanargmax(artefacts.column_stripes)) == 2
    others = np.delete(np.arange(11), [2, 5])
    assert artefacts.row_stripes[5] > 3 * np.nanmax(artefacts.row_stripes[others])
    assert artefacts.column_stripes[2] > 3 * np.nanmax(artefacts.column_stripes[others])


def test_profile_bands_are_the_striped_and_the_noisy_ones_with_their_reasons() -> None:
    chosen = choose_profile_bands(measure_band_artefacts(_artefact_cube()))
    assert [item.band for item in chosen][:1] in ([5], [2])  # the stronger stripes come first
    reasons = {item.band: item.reason for item in chosen}
    assert set(reasons) == {5, 2, 8} or set(reasons) == {5, 2, 9}
    assert "row stripes" in reasons[5] and "column stripes" in reasons[2]
    noisy_band = (set(reasons) - {2, 5}).pop()
    assert "noisiest" in reasons[noisy_band]


def test_a_scene_without_stripes_gets_its_noisiest_bands_not_zero_stripes() -> None:
    artefacts = measure_band_artefacts(_artefact_cube())
    artefacts.row_stripes[:] = 0.0  # as measured on a scene without stripes
    artefacts.column_stripes[:] = 0.0
    chosen = choose_profile_bands(artefacts)
    assert len(chosen) == 3 and all("noisiest" in item.reason and "stripes" not in item.reason for item in chosen)
    assert chosen[0].band == int(np.nanargmax(artefacts.noise))


def test_profile_bands_leave_out_excluded_bands_and_stop_when_none_is_left() -> None:
    artefacts = measure_band_artefacts(_artefact_cube())
    chosen = [item.band for item in choose_profile_bands(artefacts, count=5, exclude=[5])]
    assert 5 not in chosen and len(chosen) == 5 and len(set(chosen)) == 5
    assert choose_profile_bands(artefacts, exclude=range(11)) == []


def test_run_report_plots_the_band_with_planted_stripes_and_says_why(tmp_path: Path) -> None:
    noisy = _artefact_cube()
    denoised = np.stack([band - np.median(band, axis=1, keepdims=True) + np.median(band) for band in noisy])
    paths = write_run_report(tmp_path, noisy, denoised, summary={"input": "/data/scene.hdr", "method": "decsc"})
    data = _strict_json(paths["json"])
    assert 5 in data["profile_bands"] and 2 in data["profile_bands"]
    choice = {item["band"]: item for item in data["profile_band_choice"]["bands"]}
    assert set(choice) == set(data["profile_bands"])
    assert "row stripes" in choice[5]["reason"]
    assert choice[5]["after"]["row_stripes"] < choice[5]["before"]["row_stripes"]  # the row offsets were removed
    assert data["profile_band_choice"]["measure"]
    _assert_real_image(paths["profiles"])


def test_explicit_profile_bands_override_the_measured_choice(tmp_path: Path) -> None:
    noisy = _artefact_cube()
    paths = write_run_report(tmp_path / "a", noisy, noisy, summary={}, profile_bands=[7, 1])
    data = _strict_json(paths["json"])
    assert data["profile_bands"] == [7, 1]
    assert [item["reason"] for item in data["profile_band_choice"]["bands"]] == ["asked for", "asked for"]
    with pytest.raises(ConfigError, match=r"\[0, 10\]"):
        write_run_report(tmp_path / "b", noisy, noisy, summary={}, profile_bands=[11])
    assert not (tmp_path / "b").exists()  # refused before anything is written


def test_run_report_with_no_band_to_profile_still_writes_a_figure(tmp_path: Path) -> None:
    noisy = _artefact_cube()
    paths = write_run_report(tmp_path, noisy, noisy, summary={}, untouched_bands=range(11))
    assert _strict_json(paths["json"])["profile_bands"] == []
    assert paths["profiles"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_run_report_plots_name_the_file_the_method_the_units_and_the_bands(tmp_path: Path, monkeypatch) -> None:
    figures = {}
    save = report_module._save_figure

    def keep(figure, path):
        figures[Path(path).name] = {text.get_text() for text in figure.findobj(Text) if text.get_text()}
        return save(figure, path)

    monkeypatch.setattr(report_module, "_save_figure", keep)
    noisy = _artefact_cube()
    wavelengths = np.linspace(420.0, 980.0, 11)
    write_run_report(
        tmp_path,
        noisy,
        noisy * 0.5 + 0.2,
        summary={"input": "/data/scene.hdr", "method": "decsc", "preview_step": 2},
        wavelengths=wavelengths,
        wavelength_units="Nanometers",
        value_units="reflectance",
    )
    assert set(figures) == {"row_mean_profiles.png", "quicklook.png", "noise_before_after.png"}
    for name, texts in figures.items():
        assert any("scene.hdr" in text and "decsc" in text for text in texts), name  # title: file and method
        assert "before (input)" in texts, name  # legends or panel titles
        if name == "noise_before_after.png":
            assert "std of what was removed (input - output)" in texts
        else:
            assert "after (decsc)" in texts, name
    profiles = figures["row_mean_profiles.png"]
    assert "row index (pixel; preview of every 2nd row)" in profiles
    assert "column index (pixel; preview of every 2nd column)" in profiles
    assert {"row mean (reflectance)", "column mean (reflectance)"} <= profiles
    assert any(text.startswith(f"band 5 ({wavelengths[5]:.5g} nm)") for text in profiles)
    assert "wavelength (nm)" in figures["noise_before_after.png"]
    assert "noise std (reflectance)" in figures["noise_before_after.png"]
    red = pick_rgb_bands(11, wavelengths)[0]
    assert any(f"band {red} ({wavelengths[red]:.5g} nm)" in text for text in figures["quicklook.png"])


def test_units_come_from_the_metadata() -> None:
    assert wavelength_unit_symbol("Micrometers") == "µm" and wavelength_unit_symbol("nanometers") == "nm"
    assert wavelength_unit_symbol("Unknown") is None and wavelength_unit_symbol("furlongs") == "furlongs"
    assert value_units_of(CubeMeta(extra={"data units": "W/(m2 sr um)"})) == "W/(m2 sr um)"
    assert value_units_of(CubeMeta(scale_factor=10000.0)) == "reflectance × 10000"
    assert value_units_of(CubeMeta()) is None


def test_write_json_converts_numpy_and_non_finite_values(tmp_path: Path) -> None:
    payload = {"a": np.arange(3), "b": np.float32(np.nan), "c": [np.inf, 1.5], "d": np.bool_(True)}
    path = write_json(payload, tmp_path / "x.json")
    assert _strict_json(path) == {"a": [0, 1, 2], "b": None, "c": [None, 1.5], "d": True}


def test_failed_write_leaves_neither_file_nor_temporary(tmp_path: Path) -> None:
    def fail(stream: object) -> None:
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError):
        _write_atomically(tmp_path / "metrics.json", fail)
    assert _only_files(tmp_path) == []


def test_unwritable_directory_gives_a_write_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(CubeWriteError, match="cannot write"):
        write_json({"a": 1}, blocker / "out" / "x.json")


def _textured_scene_with_one_noisy_band(seed: int = 0) -> np.ndarray:
    """(12, 40, 44): every band is a mix of three spatial patterns, one of them fine-grained texture that
    band 3 carries three to six times more of (scene, shared with the other bands); band 7 alone has extra
    noise."""
    rng = np.random.default_rng(seed)
    rows = np.linspace(0, 1, 40)[:, None]
    cols = np.linspace(0, 1, 44)[None, :]
    patterns = np.stack([np.sin(3 * rows) * np.cos(2 * cols), (cols > 0.5) + 0.0 * rows, rng.standard_normal((40, 44))])
    weights = rng.uniform(0.5, 1.0, (12, 3)) * np.array([1.0, 0.3, 0.05])
    weights[3, 2] = 0.15
    cube = np.einsum("bk,khw->bhw", weights, patterns) + 0.002 * rng.standard_normal((12, 40, 44))
    cube[7] += 0.01 * rng.standard_normal((40, 44))
    return cube


def test_the_noisiest_profile_band_is_the_noisy_one_not_the_textured_one() -> None:
    cube = _textured_scene_with_one_noisy_band()
    spatial = measure_band_artefacts(cube)
    assert int(np.nanargmax(spatial.noise)) == 3  # a spatial estimate takes band 3's texture for noise
    spectral = spectral_band_noise(cube)
    assert spectral is not None and int(np.nanargmax(spectral)) == 7
    chosen = choose_profile_bands(spatial.with_noise(spectral))
    noisiest = [item.band for item in chosen if item.reason.startswith("noisiest")]
    assert noisiest == [7]
    assert spectral_band_noise(cube[:1]) is None  # one band: nothing to regress against
