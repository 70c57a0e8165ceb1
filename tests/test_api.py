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
