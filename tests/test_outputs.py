"""Writing outputs safely: values clipped to the output type and counted, free space checked up front, a full
disk, read-only or missing folders, outputs that are inputs, and staged files of killed runs."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections import namedtuple
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from hsidenoise.cli import app
from hsidenoise.cube import Cube, CubeMeta
from hsidenoise.errors import CubeWriteError, ResourceError
from hsidenoise.io import create_cube, read_cube, staging, write_cube
from hsidenoise.io.dtypes import cast_and_count
from hsidenoise.io.staging import StagedFile, leftover_staging, unfinished_commit

OUTPUTS = ["x.hdr", "x.tif", "x.mat", "x.h5"]
"""One output per writer (MAT v7.3 is the HDF5 writer's subclass, checked where it differs)."""


def cli(*args: object) -> tuple[int, str]:
    result = CliRunner().invoke(app, [str(arg) for arg in args])
    return result.exit_code, result.stderr if result.stderr_bytes is not None else result.output


def one_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, text
    assert "Traceback" not in text and "internal error" not in text
    return lines[0]


@pytest.fixture
def scene(tmp_path: Path) -> Path:
    data = np.random.default_rng(0).standard_normal((4, 9, 11)).astype(np.float32)
    path = tmp_path / "in" / "scene.hdr"
    path.parent.mkdir()
    write_cube(path, Cube(data, CubeMeta()))
    return path


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------------------------------ output range


def test_float64_beyond_float32_becomes_the_largest_float32_and_is_counted():
    limit = np.finfo(np.float32).max
    values, clipped = cast_and_count(np.array([1e39, -5e38, 1.0, np.inf, np.nan]), np.float32)
    assert clipped == 2
    np.testing.assert_array_equal(values[:3], [limit, -limit, 1.0])
    assert np.isposinf(values[3]) and np.isnan(values[4])  # non-finite input stays as it was, not counted


@pytest.mark.parametrize("dtype", ["uint8", "int16", "uint16", "int64", "uint64"])
def test_integer_outputs_clip_to_their_range_and_count(dtype):
    info = np.iinfo(dtype)
    block = np.array([-1e30, float(info.min), 3.4, float(info.max) / 2, 1e30, np.nan])
    values, clipped = cast_and_count(block, np.dtype(dtype))
    assert clipped == 2
    assert values[0] == info.min and values[-2] >= info.max // 2 and values[2] == 3
    assert values.dtype == np.dtype(dtype)


def test_integer_input_into_a_narrower_integer_is_counted():
    values, clipped = cast_and_count(np.array([-5, 7, 70000], dtype=np.int32), np.dtype(np.uint16))
    assert clipped == 2 and values.tolist() == [0, 7, 65535]


def test_convert_to_float32_of_huge_float64_is_finite_warned_and_counted(tmp_path):
    data = np.ones((3, 5, 7))
    data[0, 0, 0], data[2, 4, 6] = 1e39, -4e38
    source = tmp_path / "huge.hdr"
    write_cube(source, Cube(data, CubeMeta()), dtype="same")
    code, err = cli("convert", source, "-o", tmp_path / "out.tif", "--dtype", "float32")
    assert code == 0
    assert "2 value(s)" in err and "clipped" in err
    out = read_cube(tmp_path / "out.tif").data
    assert np.isfinite(out).all() and out.max() == np.finfo(np.float32).max
    result = CliRunner().invoke(
        app, ["convert", str(source), "-o", str(tmp_path / "out.h5"), "--json", "--dtype", "float32"]
    )
    assert result.exit_code == 0 and '"clipped_values": 2' in result.stdout
    code, err = cli("convert", source, "-o", tmp_path / "quiet.h5", "--quiet", "--dtype", "float32")
    assert code == 0 and "2 value(s)" in err  # --quiet silences progress, not a clip
    code, err = cli("convert", source, "-o", tmp_path / "kept.h5", "--quiet")  # the input's type by default
    assert code == 0 and err.strip() == ""
    np.testing.assert_array_equal(read_cube(tmp_path / "kept.h5").data, data)


def test_run_counts_values_clipped_to_the_output_type(tmp_path):
    from hsidenoise.denoise import denoise
    from hsidenoise.methods import build_method

    data = np.random.default_rng(1).uniform(0, 300, (3, 9, 8))
    source = tmp_path / "wide.hdr"
    write_cube(source, Cube(data, CubeMeta()), dtype="same")
    result = denoise(source, tmp_path / "out.hdr", build_method("identity"), dtype="uint8")
    assert result.clipped_values == int(np.count_nonzero(np.rint(data) > 255))
    assert result.clipped_values > 0
    assert read_cube(tmp_path / "out.hdr").data.max() == 255


# ------------------------------------------------------------------------------------------ free space


@pytest.mark.parametrize("name", [*OUTPUTS, "y.mat73"])
def test_too_little_free_space_is_refused_before_writing(tmp_path, monkeypatch, name):
    fmt = "mat73" if name.endswith("mat73") else None
    path = tmp_path / name.replace(".mat73", ".mat")
    Usage = namedtuple("Usage", "total used free")
    monkeypatch.setattr(staging.shutil, "disk_usage", lambda _: Usage(10**9, 10**9 - 1000, 1000))  # a fake statvfs
    with pytest.raises(ResourceError, match="not enough disk space"):
        create_cube(path, (4, 9, 11), meta=CubeMeta(), fmt=fmt)
    assert os.listdir(tmp_path) == []


FILL_SCRIPT = textwrap.dedent(
    """
    import os, sys
    import numpy as np
    from hsidenoise.cube import CubeMeta
    from hsidenoise.errors import HsiDenoiseError
    from hsidenoise.io import create_cube

    out, fmt = sys.argv[1], sys.argv[2] or None
    data = np.random.default_rng(0).standard_normal((31, 101, 97))
    try:
        with create_cube(out, data.shape, meta=CubeMeta(), fmt=fmt) as writer:
            with open(os.path.join(os.path.dirname(out), "filler"), "wb", buffering=0) as filler:
                try:  # another program fills the disk after the up-front check
                    while True:
                        filler.write(b"x" * 65536)
                except OSError:
                    pass
            for top in range(0, 101, 16):
                writer.write(data[:, top : top + 16], slice(top, min(top + 16, 101)), slice(0, 97))
    except HsiDenoiseError as error:
        print(error, file=sys.stderr)
        sys.exit(1)
    """
)


@pytest.fixture
def small_tmpfs(tmp_path: Path):
    """A 4 MiB tmpfs (needs root and mount permission; skipped otherwise)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


@pytest.mark.parametrize("name", [*OUTPUTS, "y.mat73"])
def test_disk_full_during_the_write_is_one_line_and_leaves_nothing(small_tmpfs, name):
    fmt = "mat73" if name.endswith("mat73") else ""
    out = small_tmpfs / name.replace(".mat73", ".mat")
    done = subprocess.run([sys.executable, "-c", FILL_SCRIPT, str(out), fmt], capture_output=True, text=True)
    assert done.returncode == 1, done.stderr  # not a segfault (-11), not a traceback
    assert "disk is full" in done.stderr.strip().splitlines()[-1]
    assert "Traceback" not in done.stderr
    assert os.listdir(small_tmpfs) == ["filler"]


# ------------------------------------------------------------------------------------------ folders, links


def test_run_and_convert_both_create_a_missing_output_folder(tmp_path, scene):
    code, err = cli("convert", scene, "-o", tmp_path / "new" / "deep" / "x.h5", "--quiet")
    assert code == 0, err
    code, err = cli("run", scene, "-o", tmp_path / "other" / "x.hdr", "--method", "identity", "--quiet")
    assert code == 0, err
    assert (tmp_path / "new" / "deep" / "x.h5").is_file() and (tmp_path / "other" / "x.hdr").is_file()


def test_a_failed_convert_removes_the_folder_it_created(tmp_path, scene, monkeypatch):
    Usage = namedtuple("Usage", "total used free")
    monkeypatch.setattr(staging.shutil, "disk_usage", lambda _: Usage(10**9, 10**9 - 10, 10))
    code, err = cli("convert", scene, "-o", tmp_path / "new" / "deep" / "x.hdr")
    assert code == 1 and "not enough disk space" in one_line(err)
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("command", ["convert", "run"])
def test_an_output_below_a_file_is_one_line(tmp_path, scene, command):
    blocker = tmp_path / "plain.txt"
    blocker.write_text("not a folder")
    before = snapshot(tmp_path)
    extra = ["--method", "identity"] if command == "run" else []
    code, err = cli(command, scene, "-o", blocker / "x.h5", *extra)
    assert code == 1
    assert "is a file, not a folder" in one_line(err)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("command", ["convert", "run"])
def test_a_read_only_output_folder_is_one_line_and_leaves_nothing(tmp_path, scene, command):
    folder = tmp_path / "locked"
    folder.mkdir()
    if os.geteuid() == 0:  # root ignores permissions; a read-only mount still stops it
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)], capture_output=True)
        if done.returncode != 0:
            pytest.skip("running as root (permissions are ignored) and cannot mount a read-only tmpfs")
    else:
        folder.chmod(0o555)
    try:
        before = scene.with_suffix(".img").read_bytes()
        extra = ["--method", "identity"] if command == "run" else []
        code, err = cli(command, scene, "-o", folder / "x.hdr", *extra)
        assert code == 1
        assert "not writable" in one_line(err) or "read-only" in one_line(err)
        assert os.listdir(folder) == []
        assert scene.with_suffix(".img").read_bytes() == before
    finally:
        if os.geteuid() == 0:
            subprocess.run(["umount", str(folder)], check=False)
        else:
            folder.chmod(0o755)


@pytest.mark.parametrize("command", ["convert", "run"])
@pytest.mark.parametrize("link", ["symlink", "hardlink"])
def test_an_output_linked_to_the_input_is_refused(tmp_path, scene, command, link):
    target = tmp_path / "in" / "scene.img"
    alias = tmp_path / "alias.img"
    (os.symlink if link == "symlink" else os.link)(target, alias)
    before = snapshot(tmp_path)
    extra = ["--method", "identity"] if command == "run" else []
    code, err = cli(command, scene, "-o", alias, "--overwrite", *extra)
    assert code == 1
    assert "it is the input" in one_line(err)
    assert snapshot(tmp_path) == before


def test_existing_output_message_names_the_flag(tmp_path, scene):
    out = tmp_path / "x.h5"
    out.write_bytes(b"old")
    for args in (["convert", scene, "-o", out], ["run", scene, "-o", out, "--method", "identity"]):
        code, err = cli(*args)
        line = one_line(err)
        assert code == 1 and "--overwrite" in line and "overwrite=True" not in line
    assert out.read_bytes() == b"old"


def test_a_batch_into_its_own_input_folder_is_refused(tmp_path):
    folder = tmp_path / "scenes"
    folder.mkdir()
    for number in range(2):
        write_cube(folder / f"s{number}.hdr", Cube(np.ones((2, 5, 3), np.float32) * number, CubeMeta()))
    before = snapshot(folder)
    code, err = cli("run", f"{folder}/*.hdr", "-o", folder, "--method", "identity")
    assert code == 1
    assert "it is the input" in one_line(err)
    assert snapshot(folder) == before


# ------------------------------------------------------------------------------------------ staged files


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", ""])
    child.wait()
    return child.pid


def test_staged_files_of_dead_processes_are_removed_and_nothing_else(tmp_path):
    final = tmp_path / "x.tif"
    dead, alive = _dead_pid(), os.getppid()
    ours = [f".x.tif.hsidenoise-{dead}-0123abcd.tmp", f".x.tif.hsidenoise-{dead}-0123abcd.tmp.aux.xml"]
    kept = [
        f".x.tif.hsidenoise-{alive}-0123abcd.tmp",  # a running process may still be writing it
        f".y.tif.hsidenoise-{dead}-0123abcd.tmp",  # another output's
        f".x.tif.hsidenoise-{dead}-0123abcd.tmp.bak",
        ".x.tif.0123abcd.tmp",
        "x.tif.hsidenoise-1-0123abcd.tmp",
    ]
    for name in ours + kept:
        (tmp_path / name).write_text("x")
    assert [p.name for p in leftover_staging(final)] == sorted(ours)
    staged = StagedFile(final)
    staged.discard()
    assert sorted(os.listdir(tmp_path)) == sorted(kept)


def test_a_data_file_without_its_header_counts_as_absent_and_is_replaced(tmp_path):
    data, header = tmp_path / "x.img", tmp_path / "x.hdr"
    assert not unfinished_commit([data, header])  # nothing there: nothing unfinished
    data.write_bytes(b"\0" * 64)
    assert unfinished_commit([data, header])  # the header is renamed last: a lone data file is no output
    write_cube(header, Cube(np.ones((1, 4, 4), np.float32), CubeMeta()))
    assert sorted(os.listdir(tmp_path)) == ["x.hdr", "x.img"]
    assert not unfinished_commit([data, header])
    np.testing.assert_array_equal(read_cube(header).data, 1.0)
    with pytest.raises(CubeWriteError, match="already exists"):  # a complete output is still protected
        create_cube(header, (1, 4, 4), meta=CubeMeta(), dtype="float32")
