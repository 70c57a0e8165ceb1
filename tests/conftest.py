"""Shared fixtures: tiny synthetic cubes of odd shapes and the real data folder.

The real cubes live in ``../shared/data`` next to the repository, which a fresh clone does not have. Tests that
read them use the ``shared_data`` fixture (and carry the ``shared_data`` marker): without the folder they are
skipped, all with the one reason :data:`SHARED_DATA_MISSING`, and the run ends with one line saying how many.
Where the data is required (``HSIDENOISE_REQUIRE_SHARED_DATA=1``, which ``.ci/run`` exports, or ``CI=true``)
they fail instead, so CI can never pass without them.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

pytest_plugins = ["cli_support"]  # the CLI tests' runner and tiny cubes (fixtures)

SHARED_DATA_MISSING = (
    f"needs the real cubes of ../shared/data ({SHARED_DATA} not found); "
    "put the shared/ folder next to the repository to run it"
)
"""The one skip reason of every test that reads the real cubes."""


def shared_data_required() -> bool:
    """Whether a missing ``../shared/data`` fails the tests that need it instead of skipping them (CI)."""
    return os.environ.get("HSIDENOISE_REQUIRE_SHARED_DATA") == "1" or os.environ.get("CI", "").lower() == "true"


def shared_data_present() -> bool:
    return (SHARED_DATA / "MANIFEST.md").is_file()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test that uses the ``shared_data`` fixture; skip them all when the folder is missing and the
    data is not required."""
    skip = not shared_data_present() and not shared_data_required()
    for item in items:
        if "shared_data" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.shared_data)
        if skip and item.get_closest_marker("shared_data") is not None:
            item.add_marker(pytest.mark.skip(reason=SHARED_DATA_MISSING))


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    """One line at the end of a run that skipped the real-data tests."""
    skipped = [
        report for report in terminalreporter.stats.get("skipped", []) if SHARED_DATA_MISSING in str(report.longrepr)
    ]
    if skipped:
        terminalreporter.write_line(f"{len(skipped)} tests skipped: {SHARED_DATA_MISSING}")


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
    """The real cubes in ../shared/data (see its MANIFEST.md). Missing: the tests that use this were skipped at
    collection, unless the data is required (:func:`shared_data_required`); then this fails."""
    if not shared_data_present():
        pytest.fail(
            f"real test data not found at {SHARED_DATA}, and it is required here (HSIDENOISE_REQUIRE_SHARED_DATA=1 "
            "or CI=true); check out the shared/ folder next to the repository"
        )
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
