"""The notebook API (`hsidenoise.api`): read, denoise in memory, write — the README's example, on small cubes."""

from __future__ import annotations

import numpy as np
import pytest

from hsidenoise.api import Cube, CubeMeta, denoise, read_cube, write_cube
from hsidenoise.errors import HsiDenoiseError

from test_lowrank import add_band_noise, low_rank_cube, mpsnr


def _noisy_pair(bands: int = 23, rows: int = 37, cols: int = 41):
    clean = low_rank_cube(bands, rows, cols, rank=3)
    sigma = np.linspace(0.01, 0.04, bands)
    return clean, add_band_noise(clean, sigma).astype(np.float32)


def test_denoise_a_cube_in_memory_brings_it_closer_to_the_clean_one():
    clean, noisy = _noisy_pair()
    result = denoise(Cube(noisy, CubeMeta(dtype=noisy.dtype)), tile=24, overlap=6)
    assert isinstance(result, Cube)
    assert result.data.shape == noisy.shape and result.data.dtype == np.float32
    assert mpsnr(clean, result.data) > mpsnr(clean, noisy) + 3.0


def test_a_plain_array_is_accepted_and_identity_returns_it():
    _, noisy = _noisy_pair(bands=7, rows=9, cols=11)
    result = denoise(noisy, method="identity")
    np.testing.assert_array_equal(result.data, noisy)
    assert result.meta.dtype == noisy.dtype


def test_read_denoise_write_round_trip_keeps_metadata_and_missing_values(tmp_path):
    clean, noisy = _noisy_pair(bands=11, rows=21, cols=19)
    noisy[4] = np.nan  # an all-NaN band passes through
    meta = CubeMeta(wavelengths=np.linspace(400.0, 900.0, 11), wavelength_units="Nanometers")
    write_cube(tmp_path / "in.hdr", Cube(noisy, meta))
    cube = read_cube(tmp_path / "in.hdr")
    result = denoise(cube)
    assert np.isnan(result.data[4]).all()
    assert np.isfinite(np.delete(result.data, 4, axis=0)).all()
    write_cube(tmp_path / "out.h5", result)
    back = read_cube(tmp_path / "out.h5")
    np.testing.assert_allclose(back.meta.wavelengths, meta.wavelengths)
    np.testing.assert_array_equal(back.data, result.data)


def test_bad_arguments_are_our_errors():
    _, noisy = _noisy_pair(bands=5, rows=9, cols=9)
    with pytest.raises(HsiDenoiseError, match="unknown method"):
        denoise(noisy, method="bogus")
    with pytest.raises(HsiDenoiseError, match="3-D"):
        denoise(noisy[0])


def test_evaluate_scores_files_with_and_without_a_reference(tmp_path):
    """`api.evaluate` is what `hsidenoise eval` prints: full-reference scores, or no-reference figures."""
    from hsidenoise.api import evaluate
    from hsidenoise.errors import ConfigError
    from hsidenoise.quality.metrics import mpsnr as library_mpsnr

    clean, noisy = _noisy_pair(bands=9, rows=24, cols=24)
    clean = clean.astype(np.float32)
    write_cube(tmp_path / "clean.h5", Cube(clean, CubeMeta()))
    write_cube(tmp_path / "noisy.h5", Cube(noisy, CubeMeta()))
    denoised = denoise(noisy, tile=24, overlap=6)
    write_cube(tmp_path / "denoised.h5", denoised)
    scored = evaluate(tmp_path / "denoised.h5", ref=tmp_path / "clean.h5", noisy=tmp_path / "noisy.h5")
    assert scored.denoised.mpsnr == pytest.approx(library_mpsnr(denoised.data, clean, peak=scored.peak.peak))
    assert scored.denoised.mpsnr > scored.noisy.mpsnr
    assert scored.to_dict()["peak"]["source"] in {"0..1 data", "reference"}
    blind = evaluate(tmp_path / "denoised.h5", noisy=tmp_path / "noisy.h5", out_dir=tmp_path / "report")
    noise = blind.to_dict()["no_reference"]["noise"]
    assert 0.5 < noise["median_removed_ratio"] < 2.0  # the method removed about the noise
    assert blind.to_dict()["no_reference"]["estimated_mpsnr_db"] is None
    assert (tmp_path / "report" / "no_reference.json").is_file()
    with pytest.raises(ConfigError, match="--ref REFERENCE"):
        evaluate(tmp_path / "denoised.h5")
