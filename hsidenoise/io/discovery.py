"""Which paths are cubes: one rule for every command that takes folders or globs (``run``, ``train``).

A file is a cube when its suffix belongs to a format of :data:`hsidenoise.io.formats.FORMATS`, except the data
file of an ENVI pair whose header is beside it (:func:`is_cube_file`). :func:`expand_inputs` applies it to a
command line (globs and folders, not recursive), :func:`find_cube_files` to training folders (recursive), and
:func:`cube_files` names the files one cube path stands for (both files of an ENVI pair), so that outputs can be
checked against inputs.
"""

from __future__ import annotations

import glob
from collections.abc import Iterable, Sequence
from pathlib import Path

from hsidenoise.errors import CubeReadError, HsiDenoiseError


def expand_inputs(patterns: Iterable[str | Path]) -> list[Path]:
    """Expand globs (``scenes/*.hdr``) and folders (``scenes/``) and keep plain paths; the order is kept,
    duplicates dropped.

    A glob or a folder keeps only the files whose suffix a format claims (so ``scenes/*`` skips ``README.txt``
    and GDAL's ``.aux.xml`` side files) and, of an ENVI pair, only the header (``a.img`` is dropped when
    ``a.hdr`` is next to it); a folder gives the cube files directly in it, sorted. Plain paths are kept as
    given: an unknown suffix is then an error when the cube is opened.

    Raises:
        CubeReadError: a plain path that does not exist, or a glob or folder that holds no cube file.
    """
    found: list[Path] = []
    for pattern in map(str, patterns):
        if glob.has_magic(pattern) or Path(pattern).is_dir():
            if glob.has_magic(pattern):
                matches = [Path(p) for p in sorted(glob.glob(pattern, recursive=True)) if Path(p).is_file()]
                where = repr(pattern)
                hint = "check the pattern (quote it to stop the shell expanding it)"
            else:
                matches = sorted(path for path in Path(pattern).iterdir() if path.is_file())
                where = f"folder {pattern}"
                hint = "pass a folder of cube files, or the cubes themselves"
            cubes = [path for path in matches if is_cube_file(path)]
            if not cubes:
                what = f"{len(matches)} file(s), none of them a cube" if matches else "nothing"
                verb = "holds" if where.startswith("folder") else "matches"
                raise CubeReadError(f"{where} {verb} {what}; {hint}")
            found.extend(cubes)
        else:
            path = Path(pattern)
            if not path.exists() and not path.is_symlink():
                raise CubeReadError(f"input {path} does not exist; pass an existing cube file")
            found.append(path)
    return list(dict.fromkeys(found))


def several_inputs(patterns: Sequence[str | Path]) -> bool:
    """Whether a command line's inputs mean several-input mode: more than one, or any glob or folder.

    In that mode the output is a folder (created when missing) and the summary has the same shape however
    many cubes matched (:func:`batch_document`), so a script can rely on it.
    """
    return len(patterns) > 1 or any(glob.has_magic(str(p)) or Path(p).is_dir() for p in patterns)


def is_cube_file(path: Path) -> bool:
    """Whether a file found in a glob or folder is a cube: a suffix a format claims, and not the data file of an
    ENVI pair whose header is beside it (the header stands for the pair)."""
    from hsidenoise.io.envi import DATA_SUFFIXES
    from hsidenoise.io.formats import FORMATS

    suffix = path.suffix.lower()
    if not any(suffix in format_.suffixes for format_ in FORMATS.values()):
        return False
    if suffix != ".hdr" and suffix in FORMATS["envi"].suffixes + DATA_SUFFIXES:
        return not any(candidate.is_file() for candidate in _envi_headers(path))
    return True


def _envi_headers(data_path: Path) -> list[Path]:
    return [data_path.with_suffix(".hdr"), data_path.with_name(data_path.name + ".hdr"), data_path.with_suffix(".HDR")]


def cube_files(path: Path, *, existing: bool) -> list[Path]:
    """The files a cube path stands for: both files of an ENVI pair, else the path itself.

    Args:
        path: a cube path (ENVI: header or data file).
        existing: True for an input (the data file is looked up as the reader would), False for an output
            (the files the writer would create).
    """
    from hsidenoise.io.formats import format_for

    try:
        is_envi = format_for(path).name == "envi"
    except HsiDenoiseError:
        return [path]
    if not is_envi:
        return [path]
    from hsidenoise.io.envi import header_and_data_paths, output_paths

    if existing:
        try:
            return list(header_and_data_paths(path))
        except HsiDenoiseError:  # the reader reports a missing half later, with the full message
            return [path]
    header, data, _ = output_paths(path)
    return [header, data]


def find_cube_files(paths: Sequence[Path]) -> list[Path]:
    """Cube files under ``paths`` (files are kept as given, directories searched recursively with
    :func:`is_cube_file`), sorted.

    Raises:
        CubeReadError: a path does not exist.
    """
    found: list[Path] = []
    for path in map(Path, paths):
        if path.is_file():
            found.append(path)
            continue
        if not path.is_dir():
            raise CubeReadError(f"training data {path} does not exist; pass cube files or directories of cubes")
        found.extend(candidate for candidate in sorted(path.rglob("*")) if candidate.is_file() and is_cube_file(candidate))
    return sorted(dict.fromkeys(found))
