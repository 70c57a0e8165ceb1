"""Peak memory of streaming `convert` and `run` on generated ENVI scenes of growing size.

For each size S it writes an S x S x BANDS float32 BSQ scene with numpy.memmap (never held in memory), then runs,
each in a fresh Python process,

* ``import``: importing hsidenoise and numpy only (the floor every run pays),
* ``convert``: a streaming copy, ``open_cube`` -> ``create_cube`` strip by strip,
* ``run``: ``hsidenoise.denoise.denoise`` with the identity denoiser (the pipeline alone, no model),

and records the wall time and the child's peak resident memory: ``VmHWM`` (all resident pages, including
file pages mapped from the input and output) and the peak of ``RssAnon`` (the process's own heap, sampled every
10 ms). Memory that does not grow with the scene shows as equal peaks across sizes.

Usage::

    python bench/memory.py                       # 512 and 1024, 64 bands
    python bench/memory.py --sizes 1024 2048 4096 --json bench/memory.json

The 4096 case writes 4 GiB of input and 4 GiB of output into ``--workdir`` (default: a temporary directory).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

STRIP_BYTES = 16 << 20
"""Bytes per strip when generating scenes and when converting."""


def write_scene(path: Path, size: int, bands: int, seed: int = 0) -> Path:
    """Write a size x size x bands float32 BSQ ENVI scene strip by strip; returns the header path."""
    from spectral.io import envi

    data_path = path.with_suffix(".img")
    scene = np.memmap(data_path, dtype="<f4", mode="w+", shape=(bands, size, size))
    rng = np.random.default_rng(seed)
    rows_per_strip = max(1, STRIP_BYTES // (size * 4))
    ramp = np.linspace(0.2, 0.8, size, dtype=np.float32)
    for band in range(bands):
        for start in range(0, size, rows_per_strip):
            stop = min(start + rows_per_strip, size)
            noise = rng.standard_normal((stop - start, size), dtype=np.float32)
            scene[band, start:stop] = ramp[None, :] * (1 + band / bands) + 0.02 * noise
        scene.flush()
    del scene
    header = {
        "samples": size, "lines": size, "bands": bands, "header offset": 0, "data type": 4,
        "interleave": "bsq", "byte order": 0, "description": "bench/memory.py synthetic scene",
    }
    header_path = path.with_suffix(".hdr")
    envi.write_envi_header(str(header_path), header)
    return header_path


# ------------------------------------------------------------------------------------------ child side


class PeakSampler:
    """Samples RssAnon of this process from /proc/self/status in a background thread."""

    def __init__(self, interval: float = 0.01) -> None:
        self.interval = interval
        self.peak_anon_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    @staticmethod
    def status() -> dict[str, int]:
        values = {}
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                key, _, rest = line.partition(":")
                if key in ("VmHWM", "VmRSS", "RssAnon", "RssFile"):
                    values[key] = int(rest.split()[0])
        return values

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.peak_anon_kib = max(self.peak_anon_kib, self.status().get("RssAnon", 0))
            time.sleep(self.interval)

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_anon_kib = max(self.peak_anon_kib, self.status().get("RssAnon", 0))


def child(job: str, source: str, target: str, tile: int, overlap: int) -> None:
    """Run one job in this process and print one JSON line with its time and peak memory."""
    with PeakSampler() as sampler:
        started = time.perf_counter()
        import hsidenoise  # noqa: F401  (the import floor is part of every job)

        if job == "convert":
            from hsidenoise.io import create_cube, open_cube

            with open_cube(source) as reader:
                bands, height, width = reader.shape
                rows = max(1, STRIP_BYTES // (bands * width * 4))
                with create_cube(target, reader.shape, meta=reader.meta, dtype="float32") as writer:
                    for start in range(0, height, rows):
                        window = slice(start, min(start + rows, height))
                        writer.write(reader.read(window), window, slice(0, width))
        elif job == "run":
            from hsidenoise.denoise import denoise
            from hsidenoise.methods import IdentityDenoiser
            from hsidenoise.tiling import TileConfig

            denoise(source, target, IdentityDenoiser(), TileConfig(tile=tile, overlap=overlap))
        seconds = time.perf_counter() - started
    status = PeakSampler.status()
    print(json.dumps({
        "seconds": seconds,
        "peak_rss_mib": status["VmHWM"] / 1024,
        "peak_anon_mib": sampler.peak_anon_kib / 1024,
    }))


# ----------------------------------------------------------------------------------------- parent side


def run_child(job: str, source: Path, target: Path, args: argparse.Namespace) -> dict:
    command = [sys.executable, __file__, "--child", job, str(source), str(target),
               "--tile", str(args.tile), "--overlap", str(args.overlap)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    completed = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if completed.returncode != 0:
        raise SystemExit(f"{job} on {source} failed:\n{completed.stderr}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 1024], help="scene sides in pixels")
    parser.add_argument("--bands", type=int, default=64)
    parser.add_argument("--tile", type=int, default=256)
    parser.add_argument("--overlap", type=int, default=32)
    parser.add_argument("--workdir", type=Path, default=None, help="where scenes go (default: a temp dir)")
    parser.add_argument("--json", type=Path, default=Path(__file__).with_name("memory.json"))
    parser.add_argument("--child", nargs=3, metavar=("JOB", "SOURCE", "TARGET"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child, tile=args.tile, overlap=args.overlap)
        return

    workdir = Path(tempfile.mkdtemp(prefix="hsidenoise-memory-", dir=args.workdir))
    rows = []
    try:
        for size in args.sizes:
            scene_bytes = size * size * args.bands * 4
            free = shutil.disk_usage(workdir).free
            if free < 2.2 * scene_bytes:
                raise SystemExit(f"{size}^2 needs {2.2 * scene_bytes / 2**30:.1f} GiB free in {workdir}; "
                                 f"{free / 2**30:.1f} GiB are free")
            started = time.perf_counter()
            source = write_scene(workdir / f"scene{size}", size, args.bands)
            print(f"generated {size} x {size} x {args.bands} ({scene_bytes / 2**30:.2f} GiB) in "
                  f"{time.perf_counter() - started:.1f} s", file=sys.stderr)
            for job in ("import", "convert", "run"):
                target = workdir / f"out{size}-{job}.hdr"
                measured = run_child(job, source, target, args)
                rows.append({"size": size, "bands": args.bands, "gib": scene_bytes / 2**30, "job": job, **measured})
                print(f"{job:8s} {size:5d}^2: {measured['seconds']:7.1f} s, peak RSS "
                      f"{measured['peak_rss_mib']:7.1f} MiB, peak anon {measured['peak_anon_mib']:7.1f} MiB",
                      file=sys.stderr)
                for leftover in workdir.glob(f"out{size}-*"):
                    leftover.unlink()
            for leftover in workdir.glob(f"scene{size}.*"):
                leftover.unlink()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    smallest = {row["job"]: row for row in rows if row["size"] == min(args.sizes)}
    print("| scene | job | seconds | peak RSS MiB | x smallest | peak anon MiB | x smallest |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for row in rows:
        base = smallest[row["job"]]
        print(f"| {row['size']}² x {row['bands']} ({row['gib']:.2f} GiB) | {row['job']} | {row['seconds']:.1f} | "
              f"{row['peak_rss_mib']:.0f} | {row['peak_rss_mib'] / base['peak_rss_mib']:.2f} | "
              f"{row['peak_anon_mib']:.0f} | {row['peak_anon_mib'] / base['peak_anon_mib']:.2f} |")
    machine = {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count()}
    args.json.write_text(json.dumps({"machine": machine, "tile": args.tile, "overlap": args.overlap,
                                     "results": rows}, indent=2) + "\n")
    print(f"wrote {args.json}", file=sys.stderr)


if __name__ == "__main__":
    main()
