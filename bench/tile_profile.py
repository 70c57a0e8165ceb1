"""Where one tile of ``--method lowrank`` spends its CPU time: cProfile on the process clock, one thread.

Builds a speed-bench cube (``bench/speed.py``'s scenes) with non-i.i.d. or mixture noise, fits the pipeline
(``LowRankDenoiser.prepare`` on the cube's statistics, not profiled) and profiles ``denoise_tiles`` on its
top-left tile, printing the functions by own time and the tile's CPU seconds.

Usage::

    OMP_NUM_THREADS=1 .venv/bin/python bench/tile_profile.py                         # 512x512x224, noniid, 256² tile
    OMP_NUM_THREADS=1 .venv/bin/python bench/tile_profile.py --noise mixture --cube 256x256x31
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))


def main(argv: list[str] | None = None) -> int:
    from hsidenoise.cube import CubeMeta
    from hsidenoise.io.memory import ArrayReader
    from hsidenoise.noise import NoiseSpec, add_noise
    from hsidenoise.statistics import compute_statistics
    from hsidenoise.subspace.config import LowRankConfig
    from hsidenoise.subspace.pipeline import LowRankDenoiser
    from speed import CUBES, SEED, SIGMA_MAX, clean_cube

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cube", default="512x512x224", choices=[name for name in CUBES if name != "example"])
    parser.add_argument("--noise", default="noniid", choices=("noniid", "mixture"))
    parser.add_argument("--tile", type=int, default=256, help="tile side (default 256, the tool's)")
    parser.add_argument("--top", type=int, default=25, help="functions to print")
    args = parser.parse_args(argv)
    clean = clean_cube(args.cube)
    noisy = add_noise(clean, NoiseSpec(args.noise, sigma_max=SIGMA_MAX), np.random.default_rng(SEED)).noisy
    noisy = np.asarray(noisy, dtype=np.float32)
    denoiser = LowRankDenoiser(LowRankConfig(spatial="dct"))
    denoiser.prepare(compute_statistics(ArrayReader(noisy, CubeMeta(dtype=np.dtype(np.float32)))))
    tile = np.ascontiguousarray(noisy[:, : args.tile, : args.tile])
    profile = cProfile.Profile(time.process_time)
    started = time.process_time()
    profile.enable()
    denoiser.denoise_tiles([tile])
    profile.disable()
    seconds = time.process_time() - started
    pstats.Stats(profile).sort_stats("tottime").print_stats(args.top)
    rank = denoiser.subspace.rank if denoiser.subspace is not None else 0
    print(f"{args.cube} {args.noise}: one {tile.shape} tile, rank {rank}: {seconds:.2f} CPU s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
