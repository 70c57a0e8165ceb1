"""Speed of the whole `hsidenoise run` process next to FastHyDe and BM4D on the same noisy cubes (issue 19).

Cubes (real data from ``../shared/data``, min-max normalised as a whole, then non-i.i.d. Gaussian noise
sigma_b ~ U(0, 95) / 255 per band from :mod:`hsidenoise.noise`, seed ``2026 + position in` :data:`CUBES`):

* ``example``: the README's cube, ``examples/santa_barbara.hdr`` (AVIRIS, 90 x 90 x 224, its own noise, no
  clean reference), as the user runs it;
* ``256x256x31``: CAVE ``real_and_fake_apples`` as it is;
* ``512x512x31``: a 2 x 2 mosaic of the two CAVE scenes (apples | chart / chart upside down | apples mirrored);
* ``512x512x224``: AVIRIS Santa Barbara (90 x 90 x 224) mirror-tiled to 512 x 512, its 43 zero-filled
  water-absorption bands filled by interpolation along the spectrum first;
* ``--scaling`` adds ``1024x1024x31`` and ``2048x2048x31``: the 512 x 512 mosaic mirror-tiled (time per
  pixel against size).

Rows, each in a fresh child process:

* ``hsidenoise``: the whole process ``python -m hsidenoise run IN.hdr -o OUT.hdr --quiet --json`` (default
  method; ``--method M`` for another) on the noisy cube written as ENVI float32: wall seconds from start to
  exit (imports, reading, statistics, fit, tiles, writing), the run's own stage timings, and the child's peak
  RSS (``VmHWM`` of its own address space, written by a three-line wrapper at exit: ``ru_maxrss`` would carry
  this bench's own high-water mark, cubes included, across fork and exec into the child); run by ``.venv/bin/python`` (``--python``), the
  README's install, while the anchors run in this interpreter (the one with the ``baselines`` extra);
* ``fasthyde``: hyde-images' FastHyDe (i.i.d. mode, ``bench/quality.py``'s call) and ``bm4d`` (oracle sigma:
  the RMS of the true band sigmas; by default on ``256x256x31`` only): the call alone, in its own child, on the
  same noisy array. The example has no true sigma (BM4D is skipped there) and 43 constant bands, on which
  FastHyDe's SVD fails: FastHyDe gets its 181 other bands, scaled to [0, 1].

The table gives each row's seconds, FastHyDe / hsidenoise and BM4D / hsidenoise (above 1: hsidenoise is
faster), microseconds per pixel, peak RSS and MPSNR against the clean cube. The anchors need the
``baselines`` extra: ``pip install -e '.[baselines]'`` (their rows say "skipped" without it).

Usage::

    .venv/bin/python bench/speed.py                                   # the four cubes
    .venv/bin/python bench/speed.py --cubes example 256x256x31 --no-bm4d
    .venv/bin/python bench/speed.py --scaling --cubes 256x256x31 512x512x31 --no-bm4d --no-fasthyde
    .venv/bin/python bench/speed.py --crop 64 --cubes 256x256x31      # a smoke run

Targets (issue 19, 2 cores): hsidenoise at least 3x faster than FastHyDe on every cube, 60x BM4D on
256x256x31, the example under 3 s, time per pixel flat from 256^2 to 2048^2.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(BENCH))

DATA = REPO.parent / "shared" / "data"
EXAMPLE = REPO / "examples" / "santa_barbara.hdr"
PROJECT_PYTHON = REPO / ".venv" / "bin" / "python"
"""hsidenoise runs as the README installs it: in an environment with the ``baselines`` extra, ``bm3d`` is
importable and the default ``--method lowrank`` picks BM3D for the eigen-images (``spatial="auto"``), a slower
method than the one users get."""
SEED = 2026
SIGMA_MAX = 95.0
CUBES = ("example", "256x256x31", "512x512x31", "512x512x224")
SCALING = ("1024x1024x31", "2048x2048x31")
BM4D_CUBES = ("256x256x31",)


# ---------------------------------------------------------------------------------------------------------
# Cubes
# ---------------------------------------------------------------------------------------------------------


def _read(relative: str) -> np.ndarray:
    from hsidenoise.io import read_cube

    path = DATA / relative
    if not path.is_file():
        raise SystemExit(f"cube {path} not found; the speed bench needs ../shared/data next to the repository")
    return np.asarray(read_cube(path).data, dtype=np.float64)


def _fill_zero_bands(cube: np.ndarray) -> np.ndarray:
    """(B, H, W) with every all-zero band replaced by linear interpolation from the nearest non-zero bands."""
    dead = ~np.any(cube != 0, axis=(1, 2))
    if not dead.any():
        return cube
    bands = np.arange(cube.shape[0])
    good = bands[~dead]
    flat = cube[good].reshape(good.size, -1)
    filled = cube.copy()
    for band in bands[dead]:
        right = int(np.searchsorted(good, band))
        left_band, right_band = good[max(right - 1, 0)], good[min(right, good.size - 1)]
        weight = 0.0 if right_band == left_band else (band - left_band) / (right_band - left_band)
        left_row, right_row = np.searchsorted(good, left_band), np.searchsorted(good, right_band)
        filled[band] = ((1 - weight) * flat[left_row] + weight * flat[right_row]).reshape(cube.shape[1:])
    return filled


def clean_cube(name: str) -> np.ndarray:
    """The clean (B, H, W) float32 cube ``name`` (a synthetic-noise cube of :data:`CUBES` or :data:`SCALING`),
    normalised to [0, 1] as a whole."""
    from hsidenoise.noise import normalise_cube

    if name == "256x256x31":
        cube = _read("cave_256/real_and_fake_apples_ms_256.mat")
    elif name.endswith("x31"):  # 512 and up: the CAVE mosaic, mirror-tiled to the size asked
        apples = _read("cave_256/real_and_fake_apples_ms_256.mat")
        chart = _read("cave_256/chart_and_stuffed_toy_ms_256.mat")
        top = np.concatenate([apples, chart], axis=2)
        bottom = np.concatenate([chart[:, ::-1, :], apples[:, :, ::-1]], axis=2)
        cube = np.concatenate([top, bottom], axis=1)
        side = int(name.split("x")[0])
        cube = np.pad(cube, ((0, 0), (0, side - 512), (0, side - 512)), mode="symmetric")
    elif name == "512x512x224":
        scene = _fill_zero_bands(_read("aviris_santa_barbara_lacumbre_224/a_hsi_img_for_VI_demo.mat"))
        _, height, width = scene.shape
        cube = np.pad(scene, ((0, 0), (0, 512 - height), (0, 512 - width)), mode="symmetric")
    else:
        raise SystemExit(f"unknown cube {name!r}; choose from {', '.join(CUBES + SCALING)}")
    return normalise_cube(cube)[0].astype(np.float32)


def make_cube(name: str, folder: Path, crop: int | None) -> dict[str, Any]:
    """Write the noisy cube ``name`` as ENVI (and its arrays as .npy) under ``folder``; returns where."""
    from hsidenoise.api import write_cube
    from hsidenoise.cube import Cube, CubeMeta
    from hsidenoise.noise import NoiseSpec, add_noise

    folder.mkdir(parents=True, exist_ok=True)
    if name == "example":
        from hsidenoise.io import read_cube

        noisy = np.asarray(read_cube(EXAMPLE).data, dtype=np.float32)
        if crop is not None:
            noisy = np.ascontiguousarray(noisy[:, :crop, :crop])
        np.save(folder / "noisy.npy", noisy)
        header = EXAMPLE if crop is None else folder / "noisy.hdr"
        if crop is not None:
            write_cube(header, Cube(noisy, CubeMeta(dtype=np.dtype(np.float32))))
        return {"header": str(header), "noisy": str(folder / "noisy.npy"), "clean": None, "sigma": None}
    clean = clean_cube(name)
    if crop is not None:
        clean = np.ascontiguousarray(clean[:, :crop, :crop])
    position = (CUBES + SCALING).index(name)
    noise = add_noise(clean, NoiseSpec("noniid", sigma_max=SIGMA_MAX), np.random.default_rng(SEED + position))
    noisy = np.asarray(noise.noisy, dtype=np.float32)
    header = folder / "noisy.hdr"
    write_cube(header, Cube(noisy, CubeMeta(dtype=np.dtype(np.float32))))
    np.save(folder / "noisy.npy", noisy)
    np.save(folder / "clean.npy", clean)
    np.save(folder / "sigma.npy", np.asarray(noise.sigma, dtype=np.float64))
    return {"header": str(header), "noisy": str(folder / "noisy.npy"), "clean": str(folder / "clean.npy"),
            "sigma": str(folder / "sigma.npy")}


# ---------------------------------------------------------------------------------------------------------
# Measurements, each in a child process
# ---------------------------------------------------------------------------------------------------------


PEAK_WRAPPER = (
    "import atexit, runpy, sys\n"
    "def _peak():\n"
    "    with open('/proc/self/status') as status:\n"
    "        sys.stderr.write(''.join('\\n' + line for line in status if line.startswith('VmHWM:')))\n"
    "atexit.register(_peak)\n"
    "sys.argv[0] = 'hsidenoise'\n"
    "runpy.run_module('hsidenoise', run_name='__main__', alter_sys=True)\n"
)
"""``python -c`` program that runs ``python -m hsidenoise ARGS`` and writes its own peak RSS (``VmHWM`` line of
/proc/self/status) to stderr at exit."""


def _peak_rss_mib(stderr_text: str, usage: Any) -> float:
    """The child's own peak RSS in MiB: its ``VmHWM`` line, else ``ru_maxrss`` (no /proc: an upper bound)."""
    for line in reversed(stderr_text.splitlines()):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return usage.ru_maxrss / 1024


def time_hsidenoise(
    cube: dict[str, Any], output: Path, method: str | None, timeout: float, python: str, device: str = "auto"
) -> dict[str, Any]:
    """The whole ``hsidenoise run`` process on ``cube``: wall seconds, stage timings, peak RSS, output path."""
    command = [python, "-c", PEAK_WRAPPER, "run", cube["header"], "-o", str(output), "--quiet", "--json",
               "--overwrite"]
    if method:
        command += ["--method", method]
    if device != "auto":
        command += ["--device", device]
    stdout_path, stderr_path = output.with_suffix(".stdout"), output.with_suffix(".stderr")
    with open(stdout_path, "w") as stdout, open(stderr_path, "w") as stderr:  # files: a pipe could fill up
        started = time.perf_counter()
        child = subprocess.Popen(command, stdout=stdout, stderr=stderr, text=True, cwd=REPO)
        while True:  # wait4: this child's CPU time (its rusage)
            pid, status, usage = os.wait4(child.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() - started > timeout:
                child.kill()
                os.wait4(child.pid, 0)
                return {"timeout": timeout}
            time.sleep(0.002)
        wall = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        said = [line for line in stderr_path.read_text().splitlines() if line.strip() and not line.startswith("VmHWM:")]
        tail = said[-1:] or stdout_path.read_text().strip().splitlines()[-1:] or ["no output"]
        return {"error": f"exit {child.returncode}: {tail[0][:200]}"}
    record = json.loads(stdout_path.read_text())
    record = record["runs"][0] if "runs" in record else record
    info = record.get("method_info") or {}
    return {
        "seconds": wall,
        "cpu_seconds": usage.ru_utime + usage.ru_stime,
        "peak_rss_mib": _peak_rss_mib(stderr_path.read_text(), usage),
        "timings_s": record.get("timings_s", {}),
        "rank": info.get("rank") or (info.get("front_end") or {}).get("rank"),
        "device": info.get("device") or (info.get("front_end") or {}).get("device") or "cpu",
        "output": str(output),
    }


def anchor_child(spec: dict[str, Any]) -> dict[str, Any]:
    """In the child: run FastHyDe or BM4D on the noisy array, save the output, return the call's seconds."""
    import warnings

    import quality  # bench/quality.py: the baselines' calls

    warnings.simplefilter("ignore")
    noisy = np.load(spec["noisy"])
    sigma = np.load(spec["sigma"]) if spec["sigma"] else None
    kept = np.ones(noisy.shape[0], dtype=bool)
    if spec["method"] == "fasthyde" and sigma is None:  # the example: constant bands out, [0, 1] scale
        kept = noisy.reshape(noisy.shape[0], -1).std(axis=1) > 0
        low, high = float(noisy[kept].min()), float(noisy[kept].max())
        noisy = (noisy[kept] - low) / (high - low)
    run = quality.run_fasthyde if spec["method"] == "fasthyde" else quality.run_bm4d
    started = time.perf_counter()
    try:
        output = run(noisy, SimpleNamespace(sigma=sigma))
    except quality.Skipped as reason:
        return {"skipped": str(reason)}
    seconds = time.perf_counter() - started
    if spec["sigma"]:
        np.save(spec["output"], np.asarray(output, dtype=np.float32))
    with open("/proc/self/status") as status:
        peak = next((int(line.split()[1]) / 1024 for line in status if line.startswith("VmHWM")), float("nan"))
    return {"seconds": seconds, "peak_rss_mib": peak, "bands": int(kept.sum()), "output": spec["output"]}


def time_anchor(method: str, cube: dict[str, Any], output: Path, timeout: float) -> dict[str, Any]:
    spec_path, result_path = output.with_suffix(".spec.json"), output.with_suffix(".result.json")
    spec_path.write_text(json.dumps({**cube, "method": method, "output": str(output)}))
    command = [sys.executable, str(Path(__file__).resolve()), "--anchor", str(spec_path), "--result", str(result_path)]
    try:
        completed = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=REPO)
    except subprocess.TimeoutExpired:
        return {"timeout": timeout}
    if completed.returncode != 0 or not result_path.is_file():
        tail = (completed.stderr or completed.stdout).strip().splitlines()[-1:] or ["no output"]
        return {"error": f"exit {completed.returncode}: {tail[0][:200]}"}
    return json.loads(result_path.read_text())


def score(row: dict[str, Any], cube: dict[str, Any]) -> None:
    """MPSNR of the row's output against the clean cube, where both exist."""
    from hsidenoise.quality.metrics import mpsnr

    output = row.get("output")
    if not cube["clean"] or not output or not Path(output).is_file():
        return
    if output.endswith(".hdr"):
        from hsidenoise.io import read_cube

        denoised = np.asarray(read_cube(output).data, dtype=np.float32)
    else:
        denoised = np.load(output)
    row["mpsnr"] = mpsnr(denoised, np.load(cube["clean"]))


# ---------------------------------------------------------------------------------------------------------
# The bench
# ---------------------------------------------------------------------------------------------------------


def _cell(row: dict[str, Any], key: str = "seconds", digits: int = 2) -> str:
    for note in ("skipped", "error"):
        if note in row:
            return note
    if "timeout" in row:
        return f"> {row['timeout']:.0f} (timed out)"
    value = row.get(key)
    return "–" if value is None else f"{value:.{digits}f}"


def _ratio(anchor: dict[str, Any], ours: dict[str, Any]) -> str:
    if "seconds" not in ours:
        return "–"
    if "timeout" in anchor:
        return f"> {anchor['timeout'] / ours['seconds']:.1f}×"
    if "seconds" not in anchor:
        return "–"
    return f"{anchor['seconds'] / ours['seconds']:.1f}×"


def markdown(rows: list[dict[str, Any]], label: str) -> str:
    lines = [
        f"| cube (shape, device) | {label} s (process) | statistics / fit / method / write s | µs per pixel | peak RSS MiB "
        "| FastHyDe s | FastHyDe / ours | BM4D s | BM4D / ours | MPSNR ours / FastHyDe / BM4D |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for entry in rows:
        ours, fasthyde, bm4d = entry["hsidenoise"], entry.get("fasthyde", {}), entry.get("bm4d", {})
        stages = ours.get("timings_s") or {}
        split = " / ".join(f"{stages.get(key, float('nan')):.2f}" for key in ("statistics", "prepare", "method", "write"))
        per_pixel = ours["seconds"] / entry["pixels"] * 1e6 if "seconds" in ours else None
        scores = " / ".join(f"{row['mpsnr']:.2f}" if "mpsnr" in row else "–" for row in (ours, fasthyde, bm4d))
        lines.append(
            f"| {entry['cube']} ({entry['shape']}, {ours.get('device', '?')}) | {_cell(ours)} | {split if stages else '–'} "
            f"| {'–' if per_pixel is None else f'{per_pixel:.1f}'} | {_cell(ours, 'peak_rss_mib', 0)} "
            f"| {_cell(fasthyde) if fasthyde else 'not run'} | {_ratio(fasthyde, ours) if fasthyde else '–'} "
            f"| {_cell(bm4d) if bm4d else 'not run'} | {_ratio(bm4d, ours) if bm4d else '–'} | {scores} |"
        )
    return "\n".join(lines)


def environment(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "load_average_before": os.getloadavg(),
        "args": {key: str(value) for key, value in vars(args).items() if key not in ("anchor", "result")},
        "seed": SEED,
        "noise": {"recipe": "noniid", "sigma_max": SIGMA_MAX},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cubes", nargs="+", default=list(CUBES), choices=list(CUBES + SCALING))
    parser.add_argument("--scaling", action="store_true", help=f"also {', '.join(SCALING)} (time per pixel)")
    parser.add_argument("--method", help="hsidenoise --method (default: the tool's default)")
    parser.add_argument(
        "--python", default=str(PROJECT_PYTHON if PROJECT_PYTHON.is_file() else sys.executable),
        help="interpreter that runs hsidenoise (default: the README's .venv, without the baselines extra)",
    )
    parser.add_argument("--device", default="auto", help="hsidenoise --device (auto: CUDA where there is a GPU)")
    parser.add_argument("--no-fasthyde", dest="fasthyde", action="store_false", help="skip FastHyDe")
    parser.add_argument("--no-bm4d", dest="bm4d", action="store_false", help="skip BM4D")
    parser.add_argument("--bm4d-cubes", nargs="+", default=list(BM4D_CUBES), help="cubes BM4D runs on")
    parser.add_argument("--crop", type=int, help="keep the top-left CROP x CROP pixels of every cube (smoke runs)")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per measurement (default 1800)")
    parser.add_argument("--workdir", type=Path, help="where cubes and outputs go (default: a temporary folder)")
    parser.add_argument("--json", type=Path, help="also write every number to this JSON file")
    parser.add_argument("--anchor", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.anchor is not None:
        args.result.write_text(json.dumps(anchor_child(json.loads(args.anchor.read_text()))))
        return 0

    names = list(dict.fromkeys(list(args.cubes) + (list(SCALING) if args.scaling else [])))
    label = f"hsidenoise{' --method ' + args.method if args.method else ''}"
    report: dict[str, Any] = {"environment": environment(args), "rows": []}
    with tempfile.TemporaryDirectory(prefix="hsidenoise-speed-", dir=args.workdir) as workdir:
        for name in names:
            folder = Path(workdir) / name
            cube = make_cube(name, folder, args.crop)
            shape = np.load(cube["noisy"], mmap_mode="r").shape
            entry: dict[str, Any] = {"cube": name, "shape": "×".join(map(str, shape)), "pixels": shape[1] * shape[2]}
            entry["hsidenoise"] = time_hsidenoise(cube, folder / "denoised.hdr", args.method, args.timeout, args.python, args.device)
            if args.fasthyde:
                entry["fasthyde"] = time_anchor("fasthyde", cube, folder / "fasthyde.npy", args.timeout)
            if args.bm4d and name in args.bm4d_cubes and cube["sigma"]:
                entry["bm4d"] = time_anchor("bm4d", cube, folder / "bm4d.npy", args.timeout)
            for key in ("hsidenoise", "fasthyde", "bm4d"):
                if key in entry:
                    score(entry[key], cube)
                    entry[key].pop("output", None)
            report["rows"].append(entry)
            print(markdown([entry], label).splitlines()[-1], flush=True)
    report["environment"]["load_average_after"] = os.getloadavg()
    print()
    print(f"load average before / after: {report['environment']['load_average_before'][0]:.2f} / "
          f"{report['environment']['load_average_after'][0]:.2f} (2 cores: above 0.5 the machine was shared)")
    print(markdown(report["rows"], label))
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2, default=str) + "\n")
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
