"""What the per-command CLI tests share (``test_cli_<command>.py``): the in-process runner, ``invoke``, the
refusal check, and tiny synthetic cubes (plus a crop of a real one) as fixtures.

A test module imports the fixtures it uses from here (pytest finds fixtures in the module's namespace).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from hsidenoise.cli import app
from hsidenoise.cube import Cube, CubeMeta
from hsidenoise.io import read_cube, write_cube

RECIPES = ("gauss", "noniid", "corr", "stripe", "deadline", "impulse", "mixture")
FORMAT_SUFFIXES = {"envi": ".hdr", "geotiff": ".tif", "mat": ".mat", "hdf5": ".h5"}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def runner() -> CliRunner:
    return CliRunner()


def invoke(runner: CliRunner, *args: object, code: int = 0):
    """Run the CLI in-process; check the exit code (print what it said when it is not the expected one)."""
    result = runner.invoke(app, [str(arg) for arg in args])
    assert result.exit_code == code, (
        f"exit {result.exit_code} (expected {code}) for {args}\nstdout: {result.stdout}\nstderr: {result.stderr}"
        + (
            f"\nexception: {result.exception!r}"
            if result.exception and not isinstance(result.exception, SystemExit)
            else ""
        )
    )
    return result


def snapshot(folder: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under ``folder``, hidden ones included."""
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def assert_refused(result, code: int, before: dict[str, str], folder: Path, *, ours: bool = True) -> str:
    """A refusal: the exit code, nothing on stdout, no traceback, the folder exactly as it was, and (for our
    own messages, not Typer's usage errors) exactly one line on stderr. Returns the last line of stderr."""
    assert result.exit_code == code, f"exit {result.exit_code}, expected {code}; stderr: {result.stderr}"
    assert "Traceback" not in result.stderr + result.stdout
    assert result.stdout == ""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines, "nothing on stderr"
    if ours:
        assert len(lines) == 1, result.stderr
    assert snapshot(folder) == before, "a file was written, left behind or changed"
    return lines[-1]


def smooth_cube(bands: int, rows: int, cols: int, seed: int = 0) -> np.ndarray:
    """(B, H, W) float32 in about [0.1, 0.9]: three smooth spectra mixed by smooth abundances, plus 1 % noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:rows, 0:cols] / max(rows, cols)
    abundances = np.stack([np.sin(3 * x + 1) ** 2, np.cos(2 * y) ** 2, x * y])  # (3, H, W)
    spectra = 0.2 + 0.25 * (
        1 + np.sin(np.linspace(0, 3, bands)[:, None] * rng.uniform(0.5, 2, 3) + rng.uniform(0, 3, 3))
    )
    cube = np.einsum("bk,khw->bhw", spectra, abundances) / 2.2 + 0.1
    return (cube + 0.01 * rng.standard_normal(cube.shape)).astype(np.float32)


def wavelength_meta(bands: int) -> CubeMeta:
    return CubeMeta(wavelengths=np.linspace(450.0, 850.0, bands), wavelength_units="nm")


DEAD, NAN = 2, 5


@pytest.fixture(scope="module")
def cubes(tmp_path_factory) -> Path:
    """A folder of tiny cubes: clean.hdr (9 x 23 x 29), dirty.hdr (the same with a constant band 2 and an
    all-NaN band 5), ints.hdr (int16 11 x 19 x 17), clean.tif (7 x 21 x 25), all with wavelengths."""
    folder = tmp_path_factory.mktemp("cubes")
    clean = smooth_cube(9, 23, 29)
    write_cube(folder / "clean.hdr", Cube(clean, wavelength_meta(9)))
    dirty = clean.copy()
    dirty[DEAD] = 0.25
    dirty[NAN] = np.nan
    write_cube(folder / "dirty.hdr", Cube(dirty, wavelength_meta(9)))
    ints = np.round(smooth_cube(11, 19, 17, seed=1) * 3000 - 200).astype(np.int16)
    write_cube(folder / "ints.hdr", Cube(ints, wavelength_meta(11)), dtype="same")
    write_cube(folder / "clean.tif", Cube(smooth_cube(7, 21, 25, seed=2), wavelength_meta(7)))
    return folder


@pytest.fixture
def work(tmp_path: Path, cubes: Path) -> Path:
    """A fresh folder holding copies of the tiny cubes (tests may damage them)."""
    for path in cubes.iterdir():
        (tmp_path / path.name).write_bytes(path.read_bytes())
    return tmp_path


@pytest.fixture(scope="module")
def real_crop(tmp_path_factory, shared_data: Path) -> Path:
    """A 31 x 40 x 44 uint16 crop of CAVE real_and_fake_apples, as ENVI with its 400-700 nm wavelengths."""
    source = shared_data / "cave_256" / "real_and_fake_apples_ms_256.mat"
    cube = read_cube(source)
    assert cube.shape == (31, 256, 256) and cube.data.dtype == np.uint16
    path = tmp_path_factory.mktemp("real") / "apples.hdr"
    crop = np.ascontiguousarray(cube.data[:, 100:140, 90:134])
    write_cube(
        path, Cube(crop, CubeMeta(wavelengths=np.arange(400.0, 701.0, 10.0), wavelength_units="nm")), dtype="same"
    )
    return path



@pytest.fixture(scope="session")
def noise_aware_weights(tmp_path_factory) -> Path:
    """Untrained weights of the noise-aware band-window network (the retired ``lite`` architecture,
    :data:`small_models.NOISE_AWARE`), seeded, for ``--model PATH``: the band-window method end to end at a
    fraction of the ``paper`` preset's cost."""
    import torch

    from hsidenoise.model import build_model, save_weights
    from small_models import NOISE_AWARE

    torch.manual_seed(0)
    model = build_model(NOISE_AWARE)
    return save_weights(model, model.config, tmp_path_factory.mktemp("weights") / "decsc-noise-aware", {})
