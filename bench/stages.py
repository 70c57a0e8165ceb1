"""Where `hsidenoise run` spends its time, stage by stage, next to each stage's arithmetic floor on this machine.

For each cube (the speed bench's scenes with non-i.i.d. noise, plus the README example), the script writes the
noisy cube as ENVI, runs the whole process ``hsidenoise run IN -o OUT --json --quiet`` (default method) in a
child, and prints its wall time, the run's own stage timings (``timings_s``: statistics pass, model fit,
tiles through the method, writes) and the floor of each stage: the bytes it must move at this machine's
measured copy bandwidth, plus the flops it must do at its measured GEMM rate (float64, or float32 where the
stage computes in float32; all measured here first, on one thread):

* statistics: one read of the cube (N B 4 bytes);
* fit (``prepare``): one covariance of the regression sample and one B x B inverse, 2 n B^2 + B^3 flops
  (n = min(N, 16384));
* method, for the N pixels of the cube (the tiles' overlap is not counted): the band-regression residuals
  of the robust front end (one (B, B) product per pixel: 2 N B^2 flops), projection and back-projection
  (4 N B k flops), and the two-stage sliding DCT of k eigen-images in float32: four 8 x 8 transforms of every
  block, separable (4 x 2 x 2 x 8^3 = 8192 flops per pixel and component), and four passes over its 64 float32
  block coefficients per pixel (4 x 2 x 256 bytes per pixel and component);
* write: one write of the output (N B 4 bytes).

``--cpu`` runs the child with one thread (``--threads 1``) and its stage timings on the process's CPU clock
(``time.process_time`` in place of ``time.perf_counter`` in :mod:`hsidenoise.denoise`), and adds the child's
whole CPU time (user + system): the figures to compare on a machine shared with other jobs, where wall time
measures the load.

Usage::

    .venv/bin/python bench/stages.py                       # every cube
    .venv/bin/python bench/stages.py --cubes example 256x256x31
    .venv/bin/python bench/stages.py --cpu --cubes 512x512x224
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

CUBES = ("example", "256x256x31", "512x512x31", "512x512x224")


def machine_rates() -> tuple[float, float, float]:
    """(float64 GEMM flops per second, float32 GEMM flops per second, copy bytes per second), best of three.

    On the CPU clock (``time.process_time``): run with one BLAS thread (``OMP_NUM_THREADS=1``), these are one
    core's rates, whatever else the machine is doing.
    """
    a = np.random.default_rng(0).standard_normal((1024, 1024))
    single = a.astype(np.float32)
    best_gemm = best_single = best_copy = 0.0
    big = np.ones(64 << 17)  # 64 MiB
    for _ in range(3):
        started = time.process_time()
        a @ a
        best_gemm = max(best_gemm, 2 * 1024**3 / (time.process_time() - started))
        started = time.process_time()
        single @ single
        best_single = max(best_single, 2 * 1024**3 / (time.process_time() - started))
        started = time.process_time()
        big.copy()
        best_copy = max(best_copy, 2 * big.nbytes / (time.process_time() - started))
    return best_gemm, best_single, best_copy


def noisy_cube(name: str, folder: Path) -> Path:
    """Write cube ``name`` as ENVI under ``folder``; returns the header path."""
    if name == "example":
        return REPO / "examples" / "santa_barbara.hdr"
    from hsidenoise.api import write_cube
    from hsidenoise.cube import Cube, CubeMeta
    from hsidenoise.noise import NoiseSpec, add_noise
    from speed import SEED, SIGMA_MAX, clean_cube

    clean = clean_cube(name)
    noisy = add_noise(clean, NoiseSpec("noniid", sigma_max=SIGMA_MAX), np.random.default_rng(SEED)).noisy
    path = folder / f"{name}.hdr"
    write_cube(path, Cube(np.asarray(noisy, np.float32), CubeMeta(dtype=np.dtype(np.float32))))
    return path


CPU_CLOCK_CHILD = (
    "import sys, time, hsidenoise.denoise as d; from types import SimpleNamespace; "
    "d.time = SimpleNamespace(perf_counter=time.process_time); "
    "from hsidenoise.cli import app; sys.argv[0] = 'hsidenoise'; app()"
)
"""The ``--cpu`` child: ``hsidenoise`` with the stage timings of :mod:`hsidenoise.denoise` on the CPU clock."""


def measure(path: Path, folder: Path, cpu: bool = False) -> dict:
    output = folder / f"out-{path.stem}.hdr"
    arguments = ["run", str(path), "-o", str(output), "--json", "--quiet", "--overwrite"]
    command = [sys.executable, "-m", "hsidenoise", *arguments]
    if cpu:
        command = [sys.executable, "-c", CPU_CLOCK_CHILD, *arguments, "--threads", "1"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"run failed on {path}: {done.stderr.strip()}")
    record = json.loads(done.stdout)
    record = record["runs"][0] if "runs" in record else record
    record["wall_s"] = wall
    record["cpu_s"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cubes", nargs="+", default=list(CUBES), choices=CUBES)
    parser.add_argument("--cpu", action="store_true", help="one thread, stage timings and process on the CPU clock")
    args = parser.parse_args(argv)
    gemm, single, copy = machine_rates()
    print(f"machine: {os.cpu_count()} cores; one thread: float64 GEMM {gemm / 1e9:.1f} GFLOP/s, float32 GEMM "
          f"{single / 1e9:.1f} GFLOP/s, copy {copy / 1e9:.1f} GB/s")
    clock = "CPU s, one thread" if args.cpu else "wall s"
    print(f"stage timings: {clock}; process: wall s" + (" / CPU s" if args.cpu else ""))
    rows = ["| cube | process (s) | statistics (s, floor) | fit (s, floor) | method (s, floor) | write (s, floor) "
            "| rank |", "|---|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for name in args.cubes:
            record = measure(noisy_cube(name, folder), folder, args.cpu)
            shape = record["shape"]
            bands, height, width = shape["bands"], shape["rows"], shape["cols"]
            pixels = height * width
            info = record.get("method_info") or {}
            rank = int(info.get("rank") or info.get("front_end", {}).get("rank") or 0)
            sample = min(pixels, 16384)
            floors = {
                "statistics": pixels * bands * 4 / copy,
                "prepare": (2 * sample * bands**2 + bands**3) / gemm,
                "method": (2 * pixels * bands**2 + 4 * pixels * bands * rank) / gemm
                + 8192 * pixels * rank / single + 4 * 2 * 256 * pixels * rank / copy,
                "write": pixels * bands * 4 / copy,
            }
            timings = record["timings_s"]
            cells = [f"{timings.get(stage, float('nan')):.2f} ({floors[stage]:.2f})"
                     for stage in ("statistics", "prepare", "method", "write")]
            process = f"{record['wall_s']:.2f}" + (f" / {record['cpu_s']:.2f}" if args.cpu else "")
            rows.append(f"| {name} ({bands}×{height}×{width}) | {process} | " + " | ".join(cells) + f" | {rank} |")
            print(rows[-1], flush=True)
    print()
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
