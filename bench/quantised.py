"""The front end on quantised data: real integer cubes as the clean reference, noise added and rounded to counts.

Sensor products store integer counts (AVIRIS, HYDICE and the ABU cubes here are int16 / uint16). After noise, a
band's values then repeat (every value is an integer), and a large dark region piles a band's entries on a few
adjacent counts, which the stuck-value search must not take for saturation or dead elements (bench/README.md,
"Quantised data"). Each cube (its clean counts) gets non-i.i.d. Gaussian noise of 1 to 10 counts per band and, for
``mixture``, salt at the band's maximum and pepper at 0 on a third of the bands at 10 to 50 % of the pixels; the
result is rounded to integers as a sensor writes it and denoised by ``--method lowrank`` (in memory). MPSNR uses
each band's clean range as its peak; ``stuck`` is the share of the noisy cube's entries at a stuck value (the
mixture's impulses are about 10 %)::

    .venv/bin/python bench/quantised.py [CUBE ...]   # default: the ABU beach, urban and airport cubes, San Diego, HYDICE
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from hsidenoise.io import read_cube  # noqa: E402
from hsidenoise.subspace import LowRankConfig, lowrank_denoise  # noqa: E402
from hsidenoise.subspace.stuck_values import find_stuck_values  # noqa: E402

DATA = REPO.parent / "shared" / "data"
CUBES = (
    "abu_airport_beach_urban/abu-beach-1.mat",
    "abu_airport_beach_urban/abu-beach-2.mat",
    "abu_airport_beach_urban/abu-urban-3.mat",
    "abu_airport_beach_urban/abu-urban-1.mat",
    "abu_airport_beach_urban/abu-airport-1.mat",
    "aviris_san_diego/sandiego.mat",
    "hydice_urban_crop/hydice.mat",
)
SEED = 77


def quantised_case(clean: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    """(B, H, W) float32 integer counts: ``clean`` plus non-i.i.d. noise (and impulses for ``mixture``), rounded."""
    bands = clean.shape[0]
    noisy = clean + rng.uniform(1, 10, bands)[:, None, None] * rng.standard_normal(clean.shape)
    if kind == "mixture":
        for band in rng.choice(bands, bands // 3, replace=False):
            hit = rng.random(clean.shape[1:]) < rng.uniform(0.1, 0.5)
            noisy[band][hit] = np.where(rng.random(int(hit.sum())) < 0.5, 0.0, clean[band].max())
    return np.round(noisy).astype(np.float32)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cubes", nargs="*", default=list(CUBES), help="integer cubes (relative to ../shared/data)")
    args = parser.parse_args(argv)
    print("| cube | noise | MPSNR (dB) | entries at a stuck value |\n| --- | --- | --- | --- |")
    for path in args.cubes:
        clean = np.asarray(read_cube(DATA / path).data, dtype=np.float64)
        flat = clean.reshape(clean.shape[0], -1)
        peak = flat.max(axis=1) - flat.min(axis=1)
        for kind in ("noniid", "mixture"):
            noisy = quantised_case(clean, kind, np.random.default_rng(SEED))
            stuck = find_stuck_values(noisy.reshape(noisy.shape[0], -1).T).mask(noisy.reshape(noisy.shape[0], -1))
            denoised, _ = lowrank_denoise(noisy, LowRankConfig(spatial="dct"))
            mse = ((denoised.astype(np.float64) - clean) ** 2).reshape(clean.shape[0], -1).mean(axis=1)
            mpsnr = float(np.mean(10 * np.log10(peak**2 / np.maximum(mse, 1e-12))))
            print(f"| {Path(path).stem} | {kind} | {mpsnr:.2f} | {stuck.mean():.3f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
