"""Shared fixtures: tiny synthetic cubes of odd shapes and the real data folder."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture
def tiny_cube() -> Callable[..., np.ndarray]:
    """Factory for small (B, H, W) cubes; odd default sizes so nothing divides a window evenly.

    ``tiny_cube(bands=5, rows=7, cols=13, dtype="float32", seed=0)``: floats are standard
    normal (negative values included); integers are uniform over the type's whole range, with
    its minimum and maximum present, so clipping and byte-order mistakes show.
    """

    def make(
        bands: int = 5, rows: int = 7, cols: int = 13, dtype: str | np.dtype = "float32", seed: int = 0
    ) -> np.ndarray:
        rng = np.random.default_rng(seed)
        dtype = np.dtype(dtype)
        shape = (bands, rows, cols)
        if dtype.kind == "f":
            return rng.standard_normal(shape).astype(dtype)
        info = np.iinfo(dtype)
        data = rng.integers(info.min, info.max, size=shape, dtype=dtype, endpoint=True)
        data.flat[0], data.flat[-1] = info.min, info.max
        return data

    return make


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real cubes in ../shared/data (see its MANIFEST.md); fails, never skips, when missing."""
    if not (SHARED_DATA / "MANIFEST.md").is_file():
        pytest.fail(f"real test data not found at {SHARED_DATA}; check out the shared/ folder next to the repo")
    return SHARED_DATA


@pytest.fixture
def threads_restored(monkeypatch: pytest.MonkeyPatch):
    """Leave torch's thread count and the thread-pool variables (OMP/MKL/OPENBLAS) as they were."""
    import torch

    from hsidenoise.cli.process import THREAD_VARIABLES

    before = torch.get_num_threads()
    for name in THREAD_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    yield monkeypatch
    torch.set_num_threads(before)
