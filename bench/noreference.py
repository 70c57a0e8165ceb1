"""How close the no-reference SURE estimate of MPSNR comes to the true MPSNR, on real cubes with synthetic noise.

For every cube (default: the CAVE, HYDICE and AVIRIS scenes of ``bench/quality.py``), min-max normalised to
[0, 1] as a whole, the script adds non-i.i.d. Gaussian and mixture noise (``hsidenoise.noise``, sigma_max 95,
fixed seeds), prepares the method on the whole noisy cube (``method.prepare`` with its statistics), denoises
the central ``--crop`` window with ``method.denoise_tile`` and prints, for that crop: the true MPSNR (peak 1),
the SURE-estimated MPSNR of :func:`hsidenoise.quality.noreference.no_reference_quality` (sigma estimated on the
noisy crop, peak 1), their difference, the same with the true (oracle) per-band sigma, the share of entries
SURE left out, and the number of bands whose removed part is flagged as not white.

Usage::

    nice -n 19 .venv/bin/python bench/noreference.py --crop 96
    nice -n 19 .venv/bin/python bench/noreference.py --weights weights/decsc-lite.safetensors   # decsc instead
    nice -n 19 .venv/bin/python bench/noreference.py --cubes cave_256/chart_and_stuffed_toy_ms_256.mat

A cube path is absolute or relative to ``../shared/data``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from hsidenoise.noise import add_noise, normalise_cube  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quality import DATA, DEFAULT_CUBES, NOISES  # noqa: E402  (the same cubes and noises as bench/quality.py)

SEED = 2026
"""Noise seed of cube i and noise j: SEED + 100 * i + j (as bench/quality.py's first seed)."""
TARGET_DB = 0.5


def load_clean(path: str) -> np.ndarray:
    """(B, H, W) float32 in [0, 1]: the cube min-max normalised as a whole."""
    from hsidenoise.io import read_cube

    resolved = Path(path) if Path(path).is_absolute() else DATA / path
    if not resolved.exists():
        raise SystemExit(f"cube {resolved} not found; pass paths relative to {DATA} or absolute paths")
    return normalise_cube(np.asarray(read_cube(resolved).data, dtype=np.float64))[0].astype(np.float32)


def build(weights: Path | None):
    from hsidenoise.subspace import LowRankConfig, LowRankDenoiser
    from hsidenoise.methods import build_method

    if weights is None:
        return "lowrank-dct", LowRankDenoiser(LowRankConfig(spatial="dct"))
    return "decsc", build_method("decsc", model=str(weights), device="cpu")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cubes", nargs="+", default=list(DEFAULT_CUBES), help="cube paths (default: three scenes)")
    parser.add_argument("--crop", type=int, default=96, help="side of the central crop (default 96)")
    parser.add_argument("--weights", type=Path, help="score decsc with these weights instead of lowrank-dct")
    args = parser.parse_args(argv)

    from hsidenoise.io.memory import ArrayReader
    from hsidenoise.cube import CubeMeta
    from hsidenoise.quality.metrics import psnr_per_band
    from hsidenoise.quality.noreference import central_crop, no_reference_quality
    from hsidenoise.statistics import compute_statistics

    name, method = build(args.weights)
    header = (
        f"{'cube':<42} {'noise':<8} {'method':<12} {'true':>7} {'SURE':>7} {'diff':>6} "
        f"{'SURE*':>7} {'diff*':>6} {'excl %':>6} {'flag':>5} {'s':>5}"
    )
    print(header)
    print("-" * len(header))
    misses = 0
    for cube_index, path in enumerate(args.cubes):
        clean = load_clean(path)
        rows, cols = central_crop(clean.shape, args.crop)
        for noise_index, (noise_name, spec) in enumerate(NOISES.items()):
            started = time.perf_counter()
            truth = add_noise(clean, spec, np.random.default_rng(SEED + 100 * cube_index + noise_index))
            method.prepare(compute_statistics(ArrayReader(truth.noisy, CubeMeta())))
            noisy = truth.noisy[:, rows, cols]
            denoised = method.denoise_tile(noisy)
            true_mpsnr = float(np.mean(psnr_per_band(denoised, clean[:, rows, cols], peak=1.0)))
            estimated = no_reference_quality(noisy, denoised, method=method, crop=args.crop, peak=1.0)
            oracle = no_reference_quality(noisy, denoised, method=method, crop=args.crop, peak=1.0,
                                          sigma=truth.sigma)
            diff = estimated.sure_mpsnr - true_mpsnr
            misses += abs(diff) > TARGET_DB
            print(
                f"{path:<42} {noise_name:<8} {name:<12} {true_mpsnr:7.2f} {estimated.sure_mpsnr:7.2f} {diff:+6.2f} "
                f"{oracle.sure_mpsnr:7.2f} {oracle.sure_mpsnr - true_mpsnr:+6.2f} "
                f"{100 * np.nanmean(estimated.sure_excluded_fraction):6.2f} {len(estimated.flagged_bands):5d} "
                f"{time.perf_counter() - started:5.0f}",
                flush=True,
            )
    print(f"\nSURE: sigma estimated on the noisy crop; SURE*: the true sigma. Target |diff| <= {TARGET_DB} dB: "
          f"{misses} case(s) missed. flag: bands whose removed part is not white.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
