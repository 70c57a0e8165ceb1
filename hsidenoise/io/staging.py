"""Safe output files: the checks before writing, staged temporary files and their atomic commit.

`check_output` refuses an output that would replace an input, exists without ``overwrite``, or does not fit on
disk (`estimated_size`); `make_output_folder` and `output_folder` create the folders above it. Writers stage
everything in hidden temporary files next to the target (`StagedFile`; `staged` for one file outside the cube
writers, such as reports and weights); `StagedFile.commit` renames them into place, `StagedFile.discard` deletes
them.

Staged files are named ``.<final name>.hsidenoise-<pid>-<8 hex digits>.tmp`` (`STAGED_PATTERN`). A killed
process leaves them behind; the next writer of the same output removes those of dead processes (only
names of exactly that pattern, never another file). A two-file output (ENVI) is renamed in order, the
header last, so a data file whose header is missing (`unfinished_commit`) is never a complete output: it is the
trace of a kill between the renames (or a stray raw file no reader can open) and counts as absent.

Inputs are protected in two ways: paths passed as ``inputs=`` to `check_output`, and every
file held open by a `hsidenoise.io.base.CubeReader` (readers register the files they read with
`protect_inputs` until closed), so a pipeline that reads and writes at the same time cannot write over its
source even with ``overwrite=True`` and even through another path or a symlink.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import secrets
import shutil
import signal
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

from hsidenoise.errors import CubeWriteError, ResourceError

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]

_open_inputs: Counter[Path] = Counter()
"""Resolved paths of the files held open by readers, counted (a file may be open twice)."""


# ------------------------------------------------------------------------------------- inputs


def protect_inputs(files: Sequence[Path]) -> None:
    """Count the resolved paths `files` as open inputs: `check_output` refuses them until `release_inputs`."""
    _open_inputs.update(files)


def release_inputs(files: Sequence[Path]) -> None:
    """Undo one `protect_inputs` of `files` (a file another reader still holds stays protected)."""
    _open_inputs.subtract(files)
    for path in files:
        if _open_inputs[path] <= 0:
            del _open_inputs[path]


def same_file(a: PathLike, b: PathLike) -> bool:
    """Whether two paths name the same file: equal after resolving symlinks, or the same inode."""
    a, b = Path(a), Path(b)
    try:
        if a.resolve() == b.resolve():
            return True
    except (OSError, RuntimeError):  # a symlink loop (RuntimeError before Python 3.13) names no file
        return False
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet)
        return False


# ------------------------------------------------------------------------------------ outputs


def check_output(
    paths: Sequence[Path], *, overwrite: bool, inputs: Iterable[PathLike] = (), nbytes: int = 0
) -> None:
    """Refuse an output that would replace an input, exists without `overwrite`, or does not fit on disk.

    Args:
        paths: every file the writer will create, in commit order (ENVI: data file, then header).
        overwrite: allow replacing existing files that are not inputs.
        inputs: paths that must never be written, besides the files open in readers.
        nbytes: expected size of the output (`estimated_size`); compared with the free space of its folder.

    An existing file left by a commit that a kill interrupted (`unfinished_commit`) does not count as existing.

    Raises:
        CubeWriteError: an output is an input, exists, is a directory, or its folder is missing, is a file or is
            not writable.
        ResourceError: the target filesystem has less than `nbytes` free.
    """
    protected = [Path(p) for p in inputs] + list(_open_inputs)
    interrupted = unfinished_commit(paths)
    for path in paths:
        for source in protected:
            if same_file(path, source):
                raise CubeWriteError(
                    f"refusing to write {path}: it is the input {source}; choose another output path"
                )
        if path.is_dir():
            raise CubeWriteError(f"{path} is a directory; give a file name with a cube suffix")
        if (path.exists() or path.is_symlink()) and not overwrite and not interrupted:
            raise CubeWriteError(f"{path} already exists; use --overwrite to replace it")
        directory = path.parent
        if not directory.is_dir():
            blocker = _first_existing(directory)
            if blocker is not None and not blocker.is_dir():
                raise CubeWriteError(f"cannot write {path}: {blocker} is a file, not a folder; choose another path")
            raise CubeWriteError(f"output folder {directory} does not exist; create it first")
        if not os.access(directory, os.W_OK):
            raise CubeWriteError(f"output folder {directory} is not writable; fix its permissions or write elsewhere")
    if paths and nbytes:
        free = shutil.disk_usage(paths[0].parent).free
        if free < nbytes:
            raise ResourceError(
                f"not enough disk space for {paths[0]}: need {_mib(nbytes)} MiB, "
                f"{_mib(free)} MiB free; free space or write elsewhere"
            )


def _mib(nbytes: int) -> str:
    return f"{nbytes / 2**20:.2f}" if nbytes < 10 * 2**20 else f"{nbytes / 2**20:.0f}"


def estimated_size(shape: Sequence[int], dtype: np.dtype, *, compressed: bool = False) -> int:
    """Bytes to have free before writing a (B, H, W) cube of `dtype`.

    Uncompressed formats need exactly the values' bytes (plus a header page). For compressed formats (GeoTIFF,
    HDF5, MAT) the same bound is used, plus 1 % and 1 MiB for chunk indexes and deflate's worst case: noisy
    floating-point data hardly compress, and finding out after hours that the disk is full costs more.
    """
    values = int(np.prod([int(n) for n in shape])) * np.dtype(dtype).itemsize
    if not compressed:
        return values + 4096
    return values + values // 100 + 2**20


def _first_existing(path: Path) -> Path | None:
    """`path` or its nearest ancestor that exists (as anything), or None."""
    for candidate in (path, *path.parents):
        if candidate.exists() or candidate.is_symlink():
            return candidate
    return None


def make_output_folder(path: PathLike) -> Path | None:
    """Create the missing folders above the output `path` (``-o new/dir/x.hdr`` works, as in GDAL); safe when
    another process creates them at the same time.

    Returns:
        the topmost folder this call created (to remove if the write fails), or None when it existed.

    Raises:
        CubeWriteError: a path above `path` is a file, or the folder cannot be created (permissions, read-only).
    """
    directory = Path(path).parent
    if directory.is_dir():
        return None
    blocker = _first_existing(directory)
    if blocker is not None and not blocker.is_dir():
        raise CubeWriteError(f"cannot write {path}: {blocker} is a file, not a folder; choose another path")
    missing = [d for d in (directory, *directory.parents) if not d.exists()]
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise CubeWriteError(
            f"cannot create the output folder {directory}: {describe_os_error(error)}"
        ) from None
    return missing[-1] if missing else None


@contextlib.contextmanager
def output_folder(path: PathLike) -> Iterator[Path | None]:
    """`make_output_folder` for the time of a write: if the block raises, the folders created are removed again
    (when still empty)."""
    created = make_output_folder(path)
    try:
        yield created
    except BaseException:
        if created is not None:
            for folder in (Path(path).parent, *Path(path).parent.parents):  # deepest first, up to `created`
                with contextlib.suppress(OSError):
                    folder.rmdir()  # only empty folders go
                if folder == created:
                    break
        raise


# ----------------------------------------------------------------------------------- staging

STAGED_PATTERN = r"\.{name}\.hsidenoise-(?P<pid>[0-9]+)-[0-9a-f]{{8}}\.tmp(?:\.aux\.xml)?"
"""Names of staged files (``{name}``: the final file's name, escaped), and of the side file GDAL may add."""

TEST_PAUSE_ENV = "HSIDENOISE_TEST_PAUSE_AT"
"""Test hook (tests/test_kill.py): a `pause_point` name, optionally ``name#n`` for its n-th passage."""

_pauses: Counter[str] = Counter()


def pause_point(name: str) -> None:
    """Stop this process (SIGSTOP) at a named point of a commit when ``HSIDENOISE_TEST_PAUSE_AT`` names it.

    Only for kill tests: the test waits until the child is stopped, then SIGKILLs it there, with no timing
    guess. Points: ``block-written`` (after each written block), ``before-commit`` (files complete, nothing
    renamed), ``between-renames`` (a multi-file output, i.e. ENVI, after each rename but the last),
    ``committed`` (after the last rename). Nothing happens when the variable is unset.
    """
    wanted = os.environ.get(TEST_PAUSE_ENV)
    if not wanted or not hasattr(signal, "SIGSTOP"):
        return
    _pauses[name] += 1
    point, _, count = wanted.partition("#")
    if point == name and (not count or (count.isdigit() and int(count) == _pauses[name])):
        os.kill(os.getpid(), signal.SIGSTOP)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: alive, someone else's
        return True
    return True


def leftover_staging(final: PathLike) -> list[Path]:
    """The staged files for `final` that a process no longer running left behind (see `STAGED_PATTERN`)."""
    final = Path(final)
    pattern = re.compile(STAGED_PATTERN.format(name=re.escape(final.name)))
    try:
        names = os.listdir(final.parent)
    except OSError:
        return []
    found = []
    for name in names:
        match = pattern.fullmatch(name)
        if match and int(match["pid"]) != os.getpid() and not _process_alive(int(match["pid"])):
            found.append(final.parent / name)
    return sorted(found)


def remove_leftover_staging(final: PathLike) -> list[Path]:
    """Delete `leftover_staging(final)` (files of killed runs of the same output); return what was removed."""
    removed = []
    for path in leftover_staging(final):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            removed.append(path)
    if removed:
        logger.info("removed %d staged file(s) a killed run left for %s", len(removed), final)
    return removed


def unfinished_commit(finals: Sequence[PathLike]) -> bool:
    """Whether the files of a multi-file output are an unfinished commit (they then count as absent).

    `finals` are in commit order; the last one (the ENVI header) is renamed last. True when that last file is
    missing while an earlier one exists: a kill between the renames, or a data file without its header, which
    no reader can open. Inputs are protected separately (`check_output` refuses them first).
    """
    if len(finals) < 2:
        return False
    *earlier, last = map(Path, finals)
    if last.exists() or last.is_symlink():
        return False
    return any(path.exists() or path.is_symlink() for path in earlier)


class StagedFile:
    """A hidden temporary file in the target directory that becomes `final` on `commit`.

    The temporary name is ``.<final name>.hsidenoise-<pid>-<random>.tmp`` (`STAGED_PATTERN`); staged files of
    the same output that killed processes left are removed first. It is created with the usual permissions
    (0o666 minus the umask) so the committed file looks like any other.

    Raises:
        CubeWriteError: the file cannot be created (read-only folder, permissions, disk full).
    """

    def __init__(self, final: Path) -> None:
        self.final = Path(final)
        remove_leftover_staging(self.final)
        self.temp = self.final.with_name(f".{self.final.name}.hsidenoise-{os.getpid()}-{secrets.token_hex(4)}.tmp")
        try:
            fd = os.open(self.temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except OSError as error:
            raise CubeWriteError(
                f"cannot write {self.final}: {error.strerror or error}; check the folder's permissions and free space"
            ) from None
        os.close(fd)

    def commit(self) -> None:
        """Flush the temporary file to disk and rename it over `final` (atomic on one filesystem)."""
        try:
            fd = os.open(self.temp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(self.temp, self.final)
        except OSError as error:
            raise CubeWriteError(f"cannot write {self.final}: {describe_os_error(error)}") from None
        _fsync_directory(self.final.parent)

    def discard(self) -> None:
        """Delete the temporary file (no error if it is already gone)."""
        for path in (self.temp, self.temp.with_name(self.temp.name + ".aux.xml")):  # GDAL may add a side file
            with contextlib.suppress(OSError):
                path.unlink(missing_ok=True)


def describe_os_error(error: Exception) -> str:
    """An OSError (or a library's error) as the end of a one-line message, with what to do for a full disk."""
    code = getattr(error, "errno", None)
    if code in (errno.ENOSPC, errno.EDQUOT) or "No space left on device" in str(error):
        return "the disk is full (no space left on device); free space or write elsewhere"
    if code == errno.EROFS:
        return "the file system is read-only; write elsewhere"
    if code == errno.EFBIG:
        return "the file is larger than this file system or limit allows; write elsewhere"
    text = " ".join(str(getattr(error, "strerror", None) or error).split())
    return text.split(" (file ")[0]  # HDF5 appends the whole low-level call


@contextlib.contextmanager
def staged(final: PathLike) -> Iterator[Path]:
    """Write ``final`` atomically: yield a :class:`StagedFile`'s temporary path, rename it onto ``final`` when the
    block ends normally, delete it when the block raises. For single files outside the cube writers (reports,
    weights); no overwrite or input checks, the caller does those."""
    item = StagedFile(Path(final))
    try:
        yield item.temp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(item.temp, 0o666 & ~umask)  # a library may have re-created the file privately (safetensors does)
        item.commit()
    except BaseException:
        item.discard()
        raise


def retire_final(final: Path) -> None:
    """Remove an existing output file before the files of its replacement are renamed in (and make the removal
    durable), so that a kill between the renames never leaves an old header next to new data."""
    try:
        final.unlink()
    except FileNotFoundError:
        return
    _fsync_directory(final.parent)


def _fsync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # some platforms cannot open directories; the rename is still done
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def discard_all(staged: list[StagedFile]) -> None:
    """Delete the temporary files of `staged` (a writer's abort, or its finaliser)."""
    for item in staged:
        item.discard()
