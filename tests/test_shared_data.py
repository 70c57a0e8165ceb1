"""The real-data tests on a clone without ../shared: skipped with one line, or failed where CI requires them.

The repository's conftest is copied into a folder with no ``shared/`` two levels up, with one test that reads
the real cubes, and run by a fresh pytest three ways.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent

NEEDS_DATA = '''
def test_reads_a_real_cube(shared_data):
    assert (shared_data / "MANIFEST.md").is_file()


def test_needs_nothing():
    pass
'''


def _run_pytest(folder: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in ("CI", "HSIDENOISE_REQUIRE_SHARED_DATA")}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-o", "addopts=", str(folder)],
        cwd=folder, env={**clean, **env}, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_missing_shared_data_skips_with_one_line_or_fails_where_required(tmp_path: Path) -> None:
    folder = tmp_path / "clone" / "tests"
    folder.mkdir(parents=True)
    for name in ("conftest.py", "cli_support.py"):
        shutil.copy(TESTS / name, folder / name)
    (folder / "test_real.py").write_text(NEEDS_DATA, encoding="utf-8")
    assert not (tmp_path / "shared").exists()

    plain = _run_pytest(folder)
    assert plain.returncode == 0, plain.stdout[-2000:]
    assert "1 passed, 1 skipped" in plain.stdout
    summary = [line for line in plain.stdout.splitlines() if "tests skipped: needs the real cubes" in line]
    assert len(summary) == 1 and summary[0].startswith("1 tests skipped"), plain.stdout[-2000:]

    for required in ({"HSIDENOISE_REQUIRE_SHARED_DATA": "1"}, {"CI": "true"}):
        strict = _run_pytest(folder, **required)
        assert strict.returncode == 1, (required, strict.stdout[-2000:])
        assert "1 passed" in strict.stdout and "1 error" in strict.stdout and "it is required here" in strict.stdout
