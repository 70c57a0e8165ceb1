"""Bad data and bad usage through every command: exit 1 or 2, one line on stderr, nothing left behind.

Through Typer's CliRunner (helpers and fixtures in ``cli_support.py``). A failure must give the documented exit
code (1 bad data or a failed run, 2 bad usage), one line on stderr without a traceback, nothing on stdout, no
output or temporary file, and an untouched input.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from cli_support import assert_refused, snapshot

from hsidenoise.cli import app

# --------------------------------------------------------------------------------------------------- bad input


def _truncate(work: Path) -> list[str]:
    data = (work / "clean.img").read_bytes()
    (work / "clean.img").write_bytes(data[: len(data) // 3])
    return ["info", "clean.hdr"]


def _drop_header_key(work: Path) -> list[str]:
    header = work / "clean.hdr"
    header.write_text("\n".join(line for line in header.read_text().splitlines() if not line.startswith("samples")))
    return ["run", "clean.hdr", "-o", "out.hdr", "--method", "identity"]


def _mat(work: Path, name: str, **arrays: np.ndarray) -> str:
    from scipy.io import savemat

    savemat(work / name, arrays)
    return name


def _put(work: Path, name: str, content: bytes | None = None) -> str:
    """Create ``work/name``: a file holding ``content``, or a folder when it is None."""
    if content is None:
        (work / name).mkdir()
    else:
        (work / name).write_bytes(content)
    return name


def _h5(work: Path, name: str, **arrays: np.ndarray) -> str:
    import h5py

    with h5py.File(work / name, "w") as file:
        for key, value in arrays.items():
            file[key] = value
    return name


CUBE = np.random.default_rng(0).random((6, 5, 7))
BAD_DATA = {
    "truncated ENVI data file": (_truncate, "truncated"),
    "ENVI header missing samples": (_drop_header_key, "samples"),
    "ambiguous MAT variable": (lambda w: ["info", _mat(w, "two.mat", x=CUBE, y=CUBE[:, :, :4])], "several"),
    "wrong MAT variable": (
        lambda w: ["run", _mat(w, "one.mat", x=CUBE), "--var", "nope", "-o", "o.tif", "--method", "identity"],
        "nope",
    ),
    "2-D MAT array": (lambda w: ["info", _mat(w, "flat.mat", x=CUBE[0])], "3-D"),
    "ambiguous HDF5 dataset": (lambda w: ["convert", _h5(w, "two.h5", a=CUBE, b=CUBE), "-o", "o.tif"], "several"),
    "2-D HDF5 dataset": (lambda w: ["noise", _h5(w, "flat.h5", a=CUBE[0]), "-o", "o.tif", "--recipe", "gauss"], "3-D"),
    "unknown input suffix": (lambda w: ["info", _put(w, "cube.xyz", b"\0" * 64)], "suffix"),
    "unknown output suffix": (lambda w: ["run", "clean.hdr", "-o", "out.xyz", "--method", "identity"], "suffix"),
    "missing input": (lambda w: ["run", "nope.hdr", "-o", "o.hdr", "--method", "identity"], "does not exist"),
    "missing input (info)": (lambda w: ["info", "nope.tif"], "no such file"),
    "glob matching nothing": (lambda w: ["run", "none/*.hdr", "-o", "o", "--method", "identity"], "matches"),
    "directory as input": (lambda w: ["info", _put(w, "dir.tif")], "not a regular file"),
    "garbage GeoTIFF": (lambda w: ["info", _put(w, "junk.tif", b"garbage" * 40)], "junk.tif"),
    "garbage HDF5": (lambda w: ["info", _put(w, "junk.h5", b"garbage" * 40)], "junk.h5"),
    "garbage MAT": (lambda w: ["info", _put(w, "junk.mat", b"garbage" * 40)], "junk.mat"),
    "short garbage MAT": (lambda w: ["info", _put(w, "short.mat", b"garbage" * 10)], "short.mat"),
    "output is the input": (
        lambda w: ["run", "clean.hdr", "-o", "clean.hdr", "--method", "identity", "--overwrite"],
        "input",
    ),
    "output is the ENVI data file": (
        lambda w: ["run", "clean.hdr", "-o", "clean.img", "--method", "identity", "--overwrite"],
        "input",
    ),
    "output is a symlink to the input": (
        lambda w: (
            (w / "link.tif").symlink_to(w / "clean.tif")
            or ["run", "clean.tif", "-o", "link.tif", "--method", "identity", "--overwrite"]
        ),
        "input",
    ),
    "output is the input via another path": (
        lambda w: (
            _put(w, "sub") and ["run", "clean.tif", "-o", "sub/../clean.tif", "--method", "identity", "--overwrite"]
        ),
        "input",
    ),
    "convert onto the input's data file": (
        lambda w: ["convert", "clean.hdr", "-o", "clean.img", "--overwrite"],
        "input",
    ),
    "noise onto the input's data file": (
        lambda w: ["noise", "clean.hdr", "-o", "clean.img", "--recipe", "gauss", "--overwrite"],
        "input",
    ),
    "batch into the input folder": (
        lambda w: ["run", "clean.hdr", "clean.tif", "-o", ".", "--method", "identity", "--overwrite"],
        "input",
    ),
    "existing output (run)": (lambda w: ["run", "clean.tif", "-o", "ints.hdr", "--method", "identity"], "exists"),
    "existing output (convert)": (lambda w: ["convert", "clean.tif", "-o", "ints.img"], "exists"),
    "existing output (noise)": (lambda w: ["noise", "clean.tif", "-o", "dirty.hdr", "--recipe", "gauss"], "exists"),
}


@pytest.mark.parametrize("case", list(BAD_DATA))
def test_bad_data_exits_1_with_one_line_and_leaves_nothing(runner, work, case, monkeypatch):
    make, words = BAD_DATA[case]
    args = make(work)
    before = snapshot(work)
    monkeypatch.chdir(work)
    line = assert_refused(runner.invoke(app, args), 1, before, work)
    assert line.startswith("error:") and words in line


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root reads files without read permission")
def test_unreadable_file_exits_1(runner, work):
    (work / "clean.tif").chmod(0)
    try:
        result = runner.invoke(app, ["run", str(work / "clean.tif"), "-o", str(work / "o.tif"), "--method", "identity"])
    finally:
        (work / "clean.tif").chmod(0o644)
    assert result.exit_code == 1 and "permission" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not (work / "o.tif").exists()


BAD_OPTIONS = {
    "tile smaller than twice the overlap": (
        ["run", "clean.hdr", "-o", "o.hdr", "--method", "identity", "--tile", 16, "--overlap", 12],
        True,
    ),
    "unknown preset": (["run", "clean.hdr", "-o", "o.hdr", "--model", "nosuch"], True),
    "band window not the model's": (
        ["run", "clean.hdr", "-o", "o.hdr", "--model", "paper", "--random-weights", "--band-window", 7,
         "--band-stride", 4],
        True,
    ),
    "band stride above the window": (
        ["run", "clean.hdr", "-o", "o.hdr", "--method", "identity", "--band-window", 5, "--band-stride", 6],
        True,
    ),
    "unknown noise recipe": (["noise", "clean.hdr", "-o", "o.hdr", "--recipe", "bogus"], True),
    "several inputs into a file name": (["run", "clean.hdr", "clean.tif", "-o", "o.hdr", "--method", "identity"], True),
    "tile below the minimum": (["run", "clean.hdr", "-o", "o.hdr", "--method", "identity", "--tile", 4], False),
    "unknown method": (["run", "clean.hdr", "-o", "o.hdr", "--method", "bm3d"], False),
    "unknown format": (["info", "clean.hdr", "--format", "bogus"], False),
    "unknown dtype": (["convert", "clean.hdr", "-o", "o.tif", "--dtype", "int7"], False),
    "missing -o": (["run", "clean.hdr", "--method", "identity"], False),
    "unknown option": (["info", "clean.hdr", "--jsn"], False),
}


@pytest.mark.parametrize("case", list(BAD_OPTIONS))
def test_bad_usage_exits_2_and_leaves_nothing(runner, work, case, monkeypatch):
    args, ours = BAD_OPTIONS[case]
    before = snapshot(work)
    monkeypatch.chdir(work)
    line = assert_refused(runner.invoke(app, [str(a) for a in args]), 2, before, work, ours=ours)
    if ours:
        assert line.startswith("error:")


def test_error_messages_are_not_read_as_markup(runner, work):
    """A message holding '[/]' (from a path or a variable name) is printed as it is, not parsed by rich."""
    name = _mat(work, "x.mat", x=CUBE)
    before = snapshot(work)
    result = runner.invoke(app, ["info", str(work / name), "--var", "[/]"])
    assert "'[/]'" in assert_refused(result, 1, before, work)
