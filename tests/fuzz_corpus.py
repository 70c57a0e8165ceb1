"""A seeded corpus of damaged and unusual cube files, and a runner that classifies what the CLI does with them.

Used by ``tests/test_fuzz.py`` (a few hundred cases in process) and ``bench/fuzz.py`` (a fresh, larger corpus).

`make_corpus(folder, seed, count)` writes `count` cases. Each starts from a small valid cube (odd sizes, a
random dtype, sometimes NaN / Inf / values near the float32 maximum / a constant or two-valued cube) written in
one of `KINDS` (ENVI bsq/bil/bip, GeoTIFF, MAT v5 plain and compressed, MAT v7.3, HDF5), and applies one
`MUTATIONS` entry: none, truncation, byte flips (in the header, the MAT tags or the data), wrong declared sizes,
junk header lines, huge declared dimensions, zero-size arrays, complex data, a wrong variable name, a symlink
loop, an empty file, HDF5 bytes under a ``.tif`` name.

`run_case(case, command, runner, out_dir)` runs ``hsidenoise info|convert|run --method lowrank`` on it through
Typer's CliRunner, with file descriptors 1 and 2 also captured (HDF5 and GDAL print from C), and returns an
`Outcome` classified as ok / clean error / internal error / usage exit / non-finite / leftover / noise.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import struct
import sys
import tempfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

KINDS = ("envi-bsq", "envi-bil", "envi-bip", "geotiff", "mat5", "mat5z", "mat73", "hdf5")
COMMANDS = ("info", "convert", "run")
OUTPUT_SUFFIXES = (".hdr", ".tif", ".mat", ".h5")
SPECIAL_VALUES = ("plain", "nan", "inf", "huge", "beyond-float32", "constant", "two-valued", "tiny")


@dataclass
class Case:
    """One corpus file: `path` is what the commands are given; `files` every file that belongs to it."""

    kind: str
    mutation: str
    path: Path
    files: list[Path]
    finite: bool
    """Whether every value of the cube as written was finite (then outputs must be finite too)."""
    extra_args: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.kind}/{self.mutation}:{self.path.name}"


@dataclass
class Outcome:
    case: Case
    command: str
    exit_code: int
    stderr: str
    verdict: str
    detail: str = ""


# ------------------------------------------------------------------------------------------ valid cubes


def _values(rng: np.random.Generator, shape: tuple[int, int, int], dtype: np.dtype, special: str) -> np.ndarray:
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        data = rng.integers(max(info.min, -1000), min(info.max, 1000), size=shape, endpoint=True).astype(dtype)
        if special == "constant":
            data[...] = data.flat[0]
        elif special == "two-valued":
            data = np.where(rng.random(shape) < 0.5, info.min, info.max).astype(dtype)
        return data
    data = (rng.standard_normal(shape) * 100 + 500).astype(dtype)
    if special == "nan":
        data[rng.integers(shape[0])] = np.nan
        data.flat[rng.integers(data.size)] = np.nan
    elif special == "inf":
        data.flat[rng.integers(data.size)] = np.inf
    elif special == "huge":
        top = np.finfo(np.float32).max
        data = (np.sign(rng.standard_normal(shape)) * top * rng.uniform(0.9, 1.0, shape)).astype(dtype)
    elif special == "beyond-float32" and dtype == np.float64:
        data = rng.standard_normal(shape) * 1e39
    elif special == "tiny":
        data = (rng.standard_normal(shape) * 1e-38).astype(dtype)
    elif special == "constant":
        data[...] = 0.25
    elif special == "two-valued":
        data = np.where(rng.random(shape) < 0.5, 0.0, 1.0).astype(dtype)
    return data


def _write_valid(kind: str, folder: Path, stem: str, cube: np.ndarray) -> tuple[Path, list[Path]]:
    """Write the (B, H, W) `cube` as `kind`; return (path to give the commands, all its files)."""
    from hsidenoise.cube import Cube, CubeMeta
    from hsidenoise.io import write_cube

    bands = cube.shape[0]
    meta = CubeMeta(wavelengths=np.linspace(400.0, 900.0, bands), wavelength_units="Nanometers")
    if kind.startswith("envi"):
        interleave = kind.split("-")[1]
        data = folder / f"{stem}.{interleave}"
        write_cube(data, Cube(cube, meta), dtype=cube.dtype)
        return data.with_suffix(".hdr"), [data.with_suffix(".hdr"), data]
    if kind == "geotiff":
        path = folder / f"{stem}.tif"
        write_cube(path, Cube(cube, meta), dtype=cube.dtype)
        return path, [path]
    if kind in ("mat5", "mat5z"):
        import scipy.io

        path = folder / f"{stem}.mat"
        variables = {"cube": np.ascontiguousarray(cube.transpose(1, 2, 0)), "wavelengths": meta.wavelengths}
        variables["description"] = "fuzz"
        scipy.io.savemat(path, variables, do_compression=kind == "mat5z")
        return path, [path]
    if kind == "mat73":
        path = folder / f"{stem}.mat"
        write_cube(path, Cube(cube, meta), fmt="mat73", dtype=cube.dtype)
        return path, [path]
    path = folder / f"{stem}.h5"
    write_cube(path, Cube(cube, meta), dtype=cube.dtype)
    return path, [path]


# ------------------------------------------------------------------------------------------ mutations


def _flip(data: bytearray, rng: np.random.Generator, low: int, high: int, count: int) -> None:
    high = max(low + 1, min(high, len(data)))
    for _ in range(count):
        position = int(rng.integers(low, high))
        if position < len(data):
            data[position] = int(rng.integers(256)) if rng.random() < 0.6 else data[position] ^ 0xFF


def _mat5_tag_positions(data: bytes) -> list[tuple[int, bool]]:
    """(offset of each top-level element tag, compressed?) of a MAT v5 file."""
    found, position = [], 128
    while position + 8 <= len(data):
        mdtype, count = struct.unpack("<II", data[position : position + 8])
        found.append((position, mdtype == 15))
        position += 8 + count
    return found


def _mutate_mat5(data: bytes, rng: np.random.Generator) -> bytes:
    """Flip one or two bytes among the first 64 of a (decompressed) variable, the tags and sizes."""
    elements = _mat5_tag_positions(data)
    out, position = bytearray(data[:128]), 128
    target = int(rng.integers(len(elements)))
    for index, (start, compressed) in enumerate(elements):
        count = struct.unpack("<I", data[start + 4 : start + 8])[0]
        body = data[start + 8 : start + 8 + count]
        if index == target:
            plain = bytearray(zlib.decompress(body) if compressed else body)
            _flip(plain, rng, 0, 64, int(rng.integers(1, 3)))
            body = zlib.compress(bytes(plain)) if compressed else bytes(plain)
        out += struct.pack("<II", 15 if compressed else 14, len(body)) + body
        position = start + 8 + count
    return bytes(out + data[position:])


def _envi_header_edit(header: Path, rng: np.random.Generator, mutation: str) -> None:
    text = header.read_text()
    lines = text.splitlines()
    if mutation == "wrong-size":
        key = ["samples", "lines", "bands"][int(rng.integers(3))]
        lines = [
            f"{key} = {int(line.split('=')[1]) + int(rng.choice([-1, 1, 7]))}" if line.startswith(key) else line
            for line in lines
        ]
    elif mutation == "huge-dims":
        key = ["samples", "lines", "bands"][int(rng.integers(3))]
        lines = [f"{key} = {10**int(rng.integers(6, 13))}" if line.startswith(key) else line for line in lines]
    elif mutation == "zero-size":
        key = ["samples", "lines", "bands"][int(rng.integers(3))]
        lines = [f"{key} = 0" if line.startswith(key) else line for line in lines]
    elif mutation == "junk-header":
        junk = ["=", "= 5", "junk", "bogus key = {unclosed", "key with spaces = 1", "\x00\x01", "=={}", "a=b=c"]
        for _ in range(int(rng.integers(1, 4))):
            lines.insert(int(rng.integers(1, len(lines) + 1)), str(rng.choice(junk)))
    elif mutation == "bad-values":
        key = ["data type", "byte order", "interleave", "header offset"][int(rng.integers(4))]
        value = str(rng.choice(["6", "99", "-3", "x", "", "2", "bsx", "999999999"]))
        lines = [f"{key} = {value}" if line.startswith(key) else line for line in lines]
    header.write_text("\n".join(lines) + "\n")


MUTATIONS = (
    "valid", "truncate", "flip-header", "flip-data", "empty-file", "wrong-size", "huge-dims", "zero-size",
    "junk-header", "bad-values", "complex", "wrong-var", "symlink-loop", "mat-tags", "hdf5-in-tif",
)  # fmt: skip


def _complex_file(kind: str, folder: Path, stem: str, cube: np.ndarray) -> tuple[Path, list[Path]]:
    import h5py
    import scipy.io

    value = (cube.astype(np.float32) + 1j).transpose(1, 2, 0)
    if kind.startswith("mat5"):
        path = folder / f"{stem}.mat"
        scipy.io.savemat(path, {"cube": value}, do_compression=kind == "mat5z")
        return path, [path]
    if kind == "mat73":
        path = folder / f"{stem}.mat"
        with h5py.File(path, "w", userblock_size=512) as file:
            compound = np.dtype([("real", "<f8"), ("imag", "<f8")])
            stored = np.empty(value.T.shape, compound)
            stored["real"], stored["imag"] = value.T.real, value.T.imag
            file.create_dataset("cube", data=stored).attrs["MATLAB_class"] = np.bytes_("double")
        _matlab_userblock(path)
        return path, [path]
    path = folder / f"{stem}.h5"
    with h5py.File(path, "w") as file:
        file.create_dataset("cube", data=value)
    return path, [path]


def _matlab_userblock(path: Path) -> None:
    header = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created by: fuzz".ljust(116, b" ")
    header += b"\x00" * 8 + struct.pack("<H", 0x0200) + b"IM"
    with open(path, "r+b") as file:
        file.write(header.ljust(512, b"\x00"))


def _zero_size_file(kind: str, folder: Path, stem: str) -> tuple[Path, list[Path]] | None:
    import h5py
    import scipy.io

    if kind.startswith("mat5"):
        path = folder / f"{stem}.mat"
        scipy.io.savemat(path, {"cube": np.zeros((0, 4, 3), np.float32)}, do_compression=kind == "mat5z")
        return path, [path]
    if kind in ("mat73", "hdf5"):
        path = folder / f"{stem}.{'mat' if kind == 'mat73' else 'h5'}"
        with h5py.File(path, "w", **({"userblock_size": 512} if kind == "mat73" else {})) as file:
            dataset = file.create_dataset("cube", shape=(3, 0, 5), dtype="f4")
            if kind == "mat73":
                dataset.attrs["MATLAB_class"] = np.bytes_("single")
        if kind == "mat73":
            _matlab_userblock(path)
        return path, [path]
    return None


def make_case(folder: Path, index: int, rng: np.random.Generator) -> Case:
    """Write one corpus case into `folder` (names start with its index)."""
    kind = KINDS[int(rng.integers(len(KINDS)))]
    mutation = MUTATIONS[int(rng.integers(len(MUTATIONS)))]
    dtype = np.dtype(str(rng.choice(["float32", "float32", "float64", "uint16", "int16", "uint8"])))
    special = str(rng.choice(SPECIAL_VALUES)) if dtype.kind == "f" else str(rng.choice(["plain", "constant"]))
    if mutation == "valid" and rng.random() < 0.3 and dtype.kind in "iu":
        special = "two-valued"
    shape = (int(rng.integers(1, 9)), int(rng.integers(1, 12)), int(rng.integers(1, 12)))
    if rng.random() < 0.7:
        shape = (int(rng.integers(3, 9)), int(rng.integers(5, 12)), int(rng.integers(5, 12)))
    cube = _values(rng, shape, dtype, special)
    finite = bool(np.isfinite(cube).all())
    stem = f"c{index:05d}"
    extra: list[str] = []
    if mutation == "complex" and not kind.startswith(("envi", "geotiff")):
        path, files = _complex_file(kind, folder, stem, cube)
        return Case(kind, mutation, path, files, finite)
    if mutation == "zero-size" and (made := _zero_size_file(kind, folder, stem)) is not None:
        return Case(kind, mutation, *made, finite)
    path, files = _write_valid(kind, folder, stem, cube)
    data_file = files[-1]
    if mutation == "truncate":
        size = data_file.stat().st_size
        with open(data_file, "r+b") as file:
            file.truncate(int(rng.integers(0, max(1, size))))
    elif mutation == "empty-file":
        data_file.write_bytes(b"")
    elif mutation in ("flip-header", "flip-data", "mat-tags"):
        raw = bytearray(data_file.read_bytes())
        if mutation == "mat-tags" and kind.startswith("mat5"):
            raw = bytearray(_mutate_mat5(bytes(raw), rng))
        elif mutation == "flip-header" and kind.startswith("envi"):
            header = bytearray(files[0].read_bytes())
            _flip(header, rng, 0, len(header), int(rng.integers(1, 4)))
            files[0].write_bytes(bytes(header))
        elif mutation == "flip-data":
            _flip(raw, rng, len(raw) // 2, len(raw), int(rng.integers(1, 6)))
        else:
            _flip(raw, rng, 0, 1024 if kind in ("mat73", "hdf5", "geotiff") else 256, int(rng.integers(1, 4)))
        data_file.write_bytes(bytes(raw))
    elif mutation in ("wrong-size", "huge-dims", "zero-size", "junk-header", "bad-values"):
        if kind.startswith("envi"):
            _envi_header_edit(files[0], rng, mutation)
        else:  # no header to edit: damage the bytes where the sizes are stored instead
            raw = bytearray(data_file.read_bytes())
            _flip(raw, rng, 0, 600, 2)
            data_file.write_bytes(bytes(raw))
    elif mutation == "wrong-var" and not kind.startswith(("envi", "geotiff")):
        extra = ["--var", str(rng.choice(["nope", "/missing/data", "wavelengths", "description"]))]
    elif mutation == "symlink-loop":
        loop_a, loop_b = folder / f"{stem}.loop_a{path.suffix}", folder / f"{stem}.loop_b{path.suffix}"
        os.symlink(loop_b.name, loop_a)
        os.symlink(loop_a.name, loop_b)
        if kind.startswith("envi"):  # the header itself becomes a loop; the data file stays
            files[0].unlink()
            os.symlink(files[0].name, files[0])
            return Case(kind, mutation, path, files, finite)
        return Case(kind, mutation, loop_a, [loop_a, loop_b], finite)
    elif mutation == "hdf5-in-tif":
        import h5py

        path = folder / f"{stem}.h5in.tif"
        with h5py.File(path, "w") as file:
            file.create_dataset("cube", data=cube)
        return Case(kind, mutation, path, [path] + files, finite)
    return Case(kind, mutation, path, files, finite, extra)


def make_corpus(folder: Path, seed: int, count: int) -> list[Case]:
    """Write `count` cases into `folder` (made if missing), seeded: the same seed gives the same files."""
    import warnings

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # writing NaN / huge values to integer types on purpose
        return [make_case(folder, index, rng) for index in range(count)]


# ------------------------------------------------------------------------------------------ running


def digest(files: list[Path]) -> dict[str, str | None]:
    """sha256 of each file (None for a missing one or a symlink loop), to prove inputs are unchanged."""
    out: dict[str, str | None] = {}
    for path in files:
        try:
            out[str(path)] = "link:" + os.readlink(path) if path.is_symlink() else hashlib.sha256(
                path.read_bytes()
            ).hexdigest()
        except OSError:
            out[str(path)] = None
    return out


@contextlib.contextmanager
def captured_fds() -> Iterator[list[str]]:
    """Capture what C libraries write to file descriptors 1 and 2 (the Python streams are the runner's)."""
    result: list[str] = []
    saved = [os.dup(1), os.dup(2)]
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            yield result
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            sink.seek(0)
            result.append(sink.read().decode("utf-8", errors="replace"))


NOISE = re.compile(r"Traceback|Warning:|warnings.warn|HDF5-DIAG|#\d{3}:|(?:ERROR|Warning) \d+:|Exception ignored")


def command_line(case: Case, command: str, out: Path | None) -> list[str]:
    if command == "info":
        return ["info", str(case.path), *case.extra_args]
    if command == "convert":
        return ["convert", str(case.path), "-o", str(out), "--quiet", *case.extra_args]
    return ["run", str(case.path), "-o", str(out), "--method", "lowrank", "--quiet", *case.extra_args]


def run_case(case: Case, command: str, runner, app, out_dir: Path, suffix: str) -> Outcome:
    """Run `command` on `case` in process; classify the result (see the module docstring)."""
    out = out_dir / f"{case.path.stem.replace('.', '_')}-{command}{suffix}" if command != "info" else None
    before = digest(case.files)
    listing = set(out_dir.iterdir())
    with captured_fds() as fds:
        result = runner.invoke(app, command_line(case, command, out))
    stderr = result.stderr if hasattr(result, "stderr") else ""
    text = stderr + fds[0]
    lines = [line for line in text.splitlines() if line.strip()]

    def outcome(verdict: str, detail: str = "") -> Outcome:
        return Outcome(case, command, result.exit_code, text, verdict, detail)

    if result.exception is not None and not isinstance(result.exception, SystemExit):
        return outcome("internal", f"{type(result.exception).__name__}: {result.exception}")
    if "internal error" in text:
        return outcome("internal", lines[-1] if lines else "")
    if digest(case.files) != before:
        return outcome("input-changed")
    created = set(out_dir.iterdir()) - listing
    if result.exit_code not in (0, 1):
        return outcome("usage-exit" if result.exit_code == 2 else "bad-exit", lines[-1] if lines else "")
    if NOISE.search(text):
        return outcome("noise", text[:300])
    if result.exit_code == 1:
        if created:
            return outcome("leftover", ", ".join(sorted(p.name for p in created)))
        errors = [line for line in lines if line.startswith("error:")]
        if len(errors) != 1 or not lines[-1].startswith("error:"):
            return outcome("noise", " | ".join(lines)[:300])
        return outcome("error", errors[0])
    # Success prints nothing on stderr with --quiet but hsidenoise's own warnings ("no band of the cube is
    # valid ..."); those are plain lines of ours, anything from a library was caught by NOISE above.
    if out is not None and case.finite:
        from hsidenoise.io import read_cube

        try:
            written = read_cube(out)
        except Exception as error:  # noqa: BLE001 - any failure here is the finding
            return outcome("unreadable-output", f"{type(error).__name__}: {error}")
        if not np.isfinite(written.data).all() and _input_finite(case):
            return outcome("non-finite", f"{int((~np.isfinite(written.data)).sum())} non-finite values")
    stray = [p.name for p in created if p.name.startswith(".")]
    if stray:
        return outcome("leftover", ", ".join(stray))
    return outcome("ok")


def _input_finite(case: Case) -> bool:
    """Whether the input, as the library reads it after the mutation, holds only finite values."""
    from hsidenoise.io import read_cube

    try:
        return bool(np.isfinite(read_cube(case.path, var=_var(case)).data).all())
    except Exception:  # noqa: BLE001 - an input that cannot be read has no values to compare
        return False


def _var(case: Case) -> str | None:
    return case.extra_args[1] if case.extra_args[:1] == ["--var"] else None


def run_corpus(cases: list[Case], out_dir: Path, commands=COMMANDS, seed: int = 0) -> list[Outcome]:
    """Every command on every case, in process; each command writes one output of a seeded random format."""
    from typer.testing import CliRunner

    from hsidenoise.cli import app

    try:
        runner = CliRunner(mix_stderr=False)
    except TypeError:  # click >= 8.2 keeps stderr apart by itself
        runner = CliRunner()
    rng = np.random.default_rng(seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    outcomes = []
    for case in cases:
        for command in commands:
            suffix = str(rng.choice(OUTPUT_SUFFIXES))
            outcomes.append(run_case(case, command, runner, app, out_dir, suffix))
            if command != "info":
                for path in out_dir.iterdir():  # keep the folder small; leftovers were counted already
                    if path.is_dir():
                        shutil.rmtree(path)
                    else:
                        path.unlink()
    return outcomes


def _main() -> None:  # pragma: no cover - `python tests/fuzz_corpus.py DIR SEED COUNT` for a quick look
    folder, seed, count = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    for outcome in run_corpus(make_corpus(folder / "in", seed, count), folder / "out", seed=seed):
        if outcome.verdict not in ("ok", "error"):
            print(outcome.verdict, outcome.command, outcome.case.name, outcome.detail[:200])


if __name__ == "__main__":
    _main()
