"""SIGKILL at chosen commit points of `run` and `convert`: the output is absent or complete, a re-run finishes it.

The child stops itself (SIGSTOP) at a named point when ``HSIDENOISE_TEST_PAUSE_AT`` names it
(:func:`hsidenoise.io.staging.pause_point`); the test waits until it is stopped and kills it there, so no kill
depends on timing. Each case costs a subprocess or two (~2 s each), so there are only a handful.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hsidenoise.cube import Cube, CubeMeta
from hsidenoise.io import read_cube, write_cube
from hsidenoise.io.staging import STAGED_PATTERN, TEST_PAUSE_ENV

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGSTOP"), reason="needs POSIX signals")

STAGED_ANY = re.compile(STAGED_PATTERN.format(name=".+"))


def hsidenoise(*args: object, pause_at: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess | None:
    """Run the CLI in a subprocess; with `pause_at`, wait until it stops there and SIGKILL it (returns None)."""
    env = {key: value for key, value in os.environ.items() if key != TEST_PAUSE_ENV}
    if pause_at is not None:
        env[TEST_PAUSE_ENV] = pause_at
    command = [sys.executable, "-m", "hsidenoise", *map(str, args)]
    if pause_at is None:
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
    child = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status = os.waitpid(child.pid, os.WUNTRACED)  # returns when the child stops itself (or ends)
    if not os.WIFSTOPPED(status):
        message = child.stderr.read().decode(errors="replace")
        pytest.fail(f"the child ended before reaching {pause_at!r}: {message}")
    os.kill(child.pid, signal.SIGKILL)
    os.waitpid(child.pid, 0)
    child.returncode = -signal.SIGKILL
    child.stderr.close()
    return None


def staged_files(folder: Path) -> list[str]:
    return sorted(name for name in os.listdir(folder) if STAGED_ANY.fullmatch(name))


@pytest.fixture
def scene(tmp_path: Path) -> tuple[Path, np.ndarray]:
    data = np.random.default_rng(3).standard_normal((5, 23, 19)).astype(np.float32)
    source = tmp_path / "in" / "scene.hdr"
    source.parent.mkdir()
    write_cube(source, Cube(data, CubeMeta()))
    return source, data


@pytest.mark.parametrize("point", ["block-written", "before-commit", "between-renames"])
def test_killed_convert_to_envi_leaves_nothing_usable_and_a_rerun_completes(tmp_path, scene, point):
    source, data = scene
    out = tmp_path / "out"
    out.mkdir()
    before = source.with_suffix(".img").read_bytes()
    hsidenoise("convert", source, "-o", out / "x.hdr", pause_at=point)
    assert staged_files(out), "the kill should leave staged files behind (or the hook did not pause)"
    assert not (out / "x.hdr").exists()  # the header is renamed last: no header, no output
    if point == "between-renames":
        assert (out / "x.img").exists()  # the data file was renamed: the state the issue describes
    result = hsidenoise("convert", source, "-o", out / "x.hdr", "--quiet")
    assert result.returncode == 0, result.stderr
    assert staged_files(out) == []  # the killed run's staged files are gone
    assert sorted(os.listdir(out)) == ["x.hdr", "x.img"]
    np.testing.assert_array_equal(read_cube(out / "x.hdr").data, data)
    assert source.with_suffix(".img").read_bytes() == before


def test_killed_convert_to_hdf5_rerun_removes_only_our_staged_files(tmp_path, scene):
    source, data = scene
    out = tmp_path / "out"
    out.mkdir()
    bystanders = [".x.h5.backup.tmp", ".x.h5.hsidenoise-12-abc.tmp", "notes.txt"]  # not of our exact pattern
    for name in bystanders:
        (out / name).write_text("keep me")
    hsidenoise("convert", source, "-o", out / "x.h5", pause_at="block-written")
    assert not (out / "x.h5").exists()
    assert len(staged_files(out)) == 1
    result = hsidenoise("convert", source, "-o", out / "x.h5", "--quiet")
    assert result.returncode == 0, result.stderr
    assert sorted(os.listdir(out)) == sorted(["x.h5", *bystanders])
    np.testing.assert_array_equal(read_cube(out / "x.h5").data, data)


def test_killed_run_between_envi_renames_is_redone_not_refused(tmp_path, scene):
    source, _ = scene
    out = tmp_path / "clean.hdr"
    hsidenoise("run", source, "-o", out, "--method", "identity", pause_at="between-renames")
    assert out.with_suffix(".img").exists() and not out.exists()
    result = hsidenoise("run", source, "-o", out, "--method", "identity", "--quiet")
    assert result.returncode == 0, result.stderr  # not "already exists": the data file alone is no output
    assert staged_files(tmp_path) == []
    np.testing.assert_array_equal(read_cube(out).data, read_cube(source).data)


def test_killed_overwrite_between_envi_renames_never_pairs_the_old_header_with_new_data(tmp_path):
    """Replacing an ENVI output with --overwrite: the old header is removed before the new data file is renamed
    in, so a kill between the renames leaves a data file without a header (absent), never the old header over
    the new data; the re-run, without --overwrite, replaces it."""
    rng = np.random.default_rng(5)
    source = tmp_path / "in.hdr"
    old = rng.integers(0, 1000, (4, 13, 11)).astype(np.int16)
    write_cube(source, Cube(old, CubeMeta()), dtype="same")
    out = tmp_path / "out.hdr"
    first = hsidenoise("run", source, "-o", out, "--method", "identity", "--dtype", "float32", "--quiet")
    assert first.returncode == 0, first.stderr
    hsidenoise("run", source, "-o", out, "--method", "identity", "--dtype", "same", "--overwrite",
               pause_at="between-renames")  # fmt: skip
    assert out.with_suffix(".img").exists() and not out.exists()
    again = hsidenoise("run", source, "-o", out, "--method", "identity", "--dtype", "same", "--quiet")
    assert again.returncode == 0, again.stderr
    back = read_cube(out)
    assert back.data.dtype == np.int16 and staged_files(tmp_path) == []
    np.testing.assert_array_equal(back.data, old)


def test_killed_batch_resumes_without_redoing_finished_outputs(tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    for number in range(3):
        data = np.random.default_rng(number).standard_normal((3, 11 + number, 9)).astype(np.float32)
        write_cube(inputs / f"s{number}.hdr", Cube(data, CubeMeta()))
    out = tmp_path / "out"
    # Stopped after the second cube's data file was renamed, before its header: s0 is done, s1 half, s2 not.
    hsidenoise("run", f"{inputs}/*.hdr", "-o", out, "--method", "identity", pause_at="between-renames#2")
    assert (out / "s0.hdr").exists() and (out / "s1.img").exists() and not (out / "s1.hdr").exists()
    first = {path.name: (path.stat().st_ino, path.stat().st_mtime_ns) for path in out.glob("s0.*")}
    result = hsidenoise("run", f"{inputs}/*.hdr", "-o", out, "--method", "identity", "--quiet")
    assert result.returncode == 0, result.stderr
    assert staged_files(out) == []
    assert {path.name: (path.stat().st_ino, path.stat().st_mtime_ns) for path in out.glob("s0.*")} == first
    for number in range(3):
        np.testing.assert_array_equal(
            read_cube(out / f"s{number}.hdr").data, read_cube(inputs / f"s{number}.hdr").data
        )
