"""Where the front end loses on mixed noise: the same draw with and without its non-Gaussian part.

For every validation cube (the quality bench's three, min-max normalised to [0, 1]) and seed, the mixture recipe
of :mod:`hsidenoise.noise` is drawn, and so is its Gaussian part alone (the same generator state: the
non-i.i.d. base comes first). ``hsidenoise run --method lowrank`` (DCT eigen-images, in memory) denoises both;
the table gives MPSNR (dB) and the loss per band group: untouched bands, stripe bands, dead-line bands and
impulse bands per density (bands hit by two corruptions count in the first of impulse, dead line, stripe).
Oracle rows show where the rest of the loss is:

* ``oracle mask``: the corrupted entries (impulse, dead lines) and the stripe offsets known and removed, the
  model fitted on the Gaussian part: what a perfect outlier step with a perfect fit reaches;
* ``oracle mask, own fit``: the same cleaning, the model fitted on the mixture cube as the pipeline does;
* ``Gaussian part's fit``: the pipeline's own tile step on the mixture cube with the model (σ, subspace,
  regression) fitted on the Gaussian part (pixel sample and neighbour pairs): what the fit costs;
* ``stripes known``: the mixture cube with its stripes subtracted exactly (and its impulses, which the stripes
  shifted, at their exact values again), run as a user would: what the stripes cost, in the fit and the tiles.

``--heldout`` runs the same split on 17 cubes that no setting of the front end was tuned on (the other shared
cubes with a clean reference: the ABU airport, beach and urban scenes, San Diego, Pavia, Samson, MUUFL, the CAVE
chart; each its first 150 x 150 pixels at most, seeds 9000 + 10 i + s): what a user's cube meets.

``--heldout --quality-draws`` draws the same cubes' noise with ``bench/quality.py --heldout``'s mixture seeds
(SEED + 100 i + 1 + 1000 s) instead: 34 more draws, the ones that bench scores.

``--mosaic SIZE ...`` runs each cube as a SIZE x SIZE mosaic of mirrored copies of itself (fresh noise everywhere,
seeds 4000 + SIZE + 1000 s) at each size in turn: how the mixture's cost grows with the scene. The model's fit
works on a bounded pixel sample (``LowRankConfig.sample_size``, ``regression_sample``), so its cost stops growing
once the sample is full, while the tiles' grows with the pixels.

Usage::

    .venv/bin/python bench/mixture.py --heldout --seeds 2   # 17 held-out cubes, two seeds each
    .venv/bin/python bench/mixture.py                  # three cubes, seed 0
    .venv/bin/python bench/mixture.py --seeds 2 --oracles
    OMP_NUM_THREADS=1 .venv/bin/python bench/mixture.py --cubes aviris_san_diego/sandiego_plane.mat --mosaic 100 200 300 512
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from hsidenoise.io import read_cube  # noqa: E402
from hsidenoise.noise import NoiseSpec, add_noise, get_noise, normalise_cube  # noqa: E402
from hsidenoise.subspace import LowRankConfig, fit_lowrank, lowrank_denoise, sample_pixels  # noqa: E402
from hsidenoise.subspace.eigenimages import spatial_denoiser  # noqa: E402
from hsidenoise.subspace.noise_estimate import fill_missing  # noqa: E402
from hsidenoise.subspace.pipeline import denoise_with_subspace  # noqa: E402
from hsidenoise.statistics import neighbour_pairs  # noqa: E402

DATA = REPO.parent / "shared" / "data"
CUBES = (
    "cave_256/real_and_fake_apples_ms_256.mat",
    "hydice_urban_crop/hydice.mat",
    "aviris_san_diego/sandiego_plane.mat",
)
SEED = 2026
"""Seed of cube i and seed index s: SEED + 100 * i + 1 + 1000 * s (the quality bench's mixture seeds)."""
HELDOUT = (
    *(f"abu_airport_beach_urban/abu-airport-{i}.mat" for i in (1, 2, 3, 4)),
    *(f"abu_airport_beach_urban/abu-beach-{i}.mat" for i in (1, 2, 3)),
    *(f"abu_airport_beach_urban/abu-urban-{i}.mat" for i in (1, 2, 3, 4, 5)),
    "aviris_san_diego/sandiego.mat",
    "pavia_centre_rosis_abu_beach4/abu-beach-4.mat",
    "samson/samson_1.mat",
    "muufl_gulfport_sub/an_hsi_image_sub_for_demo.mat",
    "cave_256/chart_and_stuffed_toy_ms_256.mat",
)
"""``--heldout``'s cubes: every shared cube with a clean reference that is neither a validation cube nor real noise."""
HELDOUT_SEED = 9000
"""Seed of held-out cube i and seed index s: HELDOUT_SEED + 10 * i + s."""
HELDOUT_CROP = 150
"""Held-out cubes are cut to their first HELDOUT_CROP rows and columns (after normalising the whole cube)."""
MOSAIC_SEED = 4000
"""Seed of a mosaic of side SIZE and seed index s: MOSAIC_SEED + SIZE + 1000 * s."""
CONFIG = LowRankConfig(spatial="dct")


def mosaic(cube: np.ndarray, size: int) -> np.ndarray:
    """(B, size, size) tiling of (B, h, w) ``cube`` by copies of itself mirrored at every edge (no seams)."""
    _, height, width = cube.shape

    def mirrored(length: int) -> np.ndarray:
        index = np.arange(size) % (2 * length)
        return np.where(index < length, index, 2 * length - 1 - index)

    return np.ascontiguousarray(cube[:, mirrored(height)][:, :, mirrored(width)])


def psnr_per_band(estimate: np.ndarray, clean: np.ndarray) -> np.ndarray:
    mse = ((np.asarray(estimate, np.float64) - clean) ** 2).reshape(clean.shape[0], -1).mean(axis=1)
    return 10.0 * np.log10(1.0 / mse)


def band_groups(truth, band_count: int) -> dict[str, list[int]]:
    impulse, stripe, deadline = (set(truth.bands.get(name, ())) for name in ("impulse", "stripe", "deadline"))
    groups: dict[str, list[int]] = {"untouched": [b for b in range(band_count) if b not in impulse | stripe | deadline]}
    for band in sorted(impulse):
        density = truth.mask[band].mean()
        groups.setdefault(f"impulse p={round(density * 10) / 10:.1f}", []).append(band)
    groups["dead lines"] = [b for b in sorted(deadline) if b not in impulse]
    groups["stripes"] = [b for b in sorted(stripe) if b not in impulse | deadline]
    return {name: bands for name, bands in groups.items() if bands}


def oracle_cleaning(noisy: np.ndarray, gaussian: np.ndarray, truth, subspace) -> np.ndarray:
    """The mixture cube with its stripe offsets subtracted and its replaced entries imputed from the other bands."""
    bands = noisy.shape[0]
    cube = noisy.astype(np.float64)
    for band in truth.bands.get("stripe", ()):
        offset = cube[band] - gaussian[band]
        cube[band] -= np.where(truth.mask[band], 0.0, offset)
    flat = cube.reshape(bands, -1)
    missing = truth.mask.reshape(bands, -1)
    flat[missing] = np.broadcast_to(subspace.regression.mean[:, None], flat.shape)[missing]
    fill_missing(flat, missing, subspace.regression, 3)
    return flat.reshape(noisy.shape)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--oracles", action="store_true", help="add the oracle rows")
    parser.add_argument("--cubes", nargs="+", default=list(CUBES))
    parser.add_argument("--heldout", action="store_true", help="the 17 held-out cubes instead of --cubes")
    parser.add_argument("--quality-draws", action="store_true",
                        help="with --heldout: the quality bench's mixture draws of those cubes (other seeds)")
    parser.add_argument("--mosaic", type=int, nargs="+", metavar="SIZE",
                        help="each cube as SIZE x SIZE mosaics of mirrored copies, one run per size")
    args = parser.parse_args(argv)
    if args.heldout and args.mosaic:
        parser.error("--heldout and --mosaic are separate runs")
    if args.quality_draws and not args.heldout:
        parser.error("--quality-draws goes with --heldout")
    if args.heldout:
        args.cubes = list(HELDOUT)
    spec = NoiseSpec("mixture", sigma_max=95.0)
    sizes = args.mosaic or [None]
    lines = ["| cube | seed | Gaussian part | mixture | loss | " + "group losses (dB) | time G / mix (s) |", "|---|---|---|---|---|---|---|"]
    losses = []
    for index, path in enumerate(args.cubes):
        resolved = Path(path) if Path(path).is_absolute() else DATA / path
        clean = normalise_cube(np.asarray(read_cube(resolved).data, dtype=np.float64))[0].astype(np.float64)
        if args.heldout:
            clean = clean[:, :HELDOUT_CROP, :HELDOUT_CROP]
        runs = [(size, seed_index) for size in sizes for seed_index in range(args.seeds)]
        base = clean
        for size, seed_index in runs:
            if size is not None:
                clean = mosaic(base, size)
                seed = MOSAIC_SEED + size + 1000 * seed_index
            elif args.heldout and not args.quality_draws:
                seed = HELDOUT_SEED + 10 * index + seed_index
            else:  # bench/quality.py's mixture seeds (its --heldout ones with --quality-draws)
                seed = SEED + 100 * index + 1 + 1000 * seed_index
            label = Path(path).stem if size is None else f"{Path(path).stem} {size}x{size}"
            truth = add_noise(clean, spec, np.random.default_rng(seed))
            gaussian = get_noise("noniid")(clean.astype(np.float32), spec, np.random.default_rng(seed)).noisy
            started = time.perf_counter()
            reference = psnr_per_band(lowrank_denoise(gaussian, CONFIG)[0], clean)
            gaussian_seconds = time.perf_counter() - started
            started = time.perf_counter()
            mixture = psnr_per_band(lowrank_denoise(truth.noisy, CONFIG)[0], clean)
            mixture_seconds = time.perf_counter() - started
            groups = band_groups(truth, clean.shape[0])
            detail = ", ".join(f"{name} {np.mean(mixture[b] - reference[b]):+.2f} ({len(b)})" for name, b in groups.items())
            loss = mixture.mean() - reference.mean()
            losses.append(loss)
            lines.append(f"| {label} | {seed_index} | {reference.mean():.2f} | {mixture.mean():.2f} | {loss:+.2f} | "
                         f"{detail} | {gaussian_seconds:.1f} / {mixture_seconds:.1f} |")
            if args.oracles:
                denoiser = spatial_denoiser(CONFIG)
                plain = dataclasses.replace(CONFIG, robust_passes=0)
                for name, fitted_on in (("oracle mask", gaussian), ("oracle mask, own fit", truth.noisy)):
                    subspace = fit_lowrank(sample_pixels(fitted_on, CONFIG.sample_size, CONFIG.seed), plain)
                    subspace = dataclasses.replace(subspace, regression=fit_lowrank(
                        sample_pixels(fitted_on, CONFIG.sample_size, CONFIG.seed), CONFIG).regression)
                    cleaned = oracle_cleaning(truth.noisy, gaussian, truth, subspace)
                    score = psnr_per_band(denoise_with_subspace(cleaned, subspace, plain, denoiser), clean)
                    lines.append(f"| {label} | {seed_index} | | {score.mean():.2f} | {score.mean() - reference.mean():+.2f} | {name} | |")
                pairs = neighbour_pairs(gaussian, seed=CONFIG.seed + 1)
                fitted = fit_lowrank(sample_pixels(gaussian, CONFIG.sample_size, CONFIG.seed), CONFIG, pairs)
                score = psnr_per_band(denoise_with_subspace(truth.noisy, fitted, CONFIG, denoiser), clean)
                rows = [("Gaussian part's fit", score)]
                # impulses are 0 or 1 and stripes at most 0.25: rounding the replaced entries undoes the shift
                exact = np.where(truth.mask, np.round(truth.noisy), gaussian).astype(np.float32)
                rows.append(("stripes known", psnr_per_band(lowrank_denoise(exact, CONFIG)[0], clean)))
                for name, score in rows:
                    detail = ", ".join(f"{group} {np.mean(score[b] - reference[b]):+.2f}" for group, b in groups.items())
                    lines.append(f"| {label} | {seed_index} | | {score.mean():.2f} | {score.mean() - reference.mean():+.2f} | {name}: {detail} | |")
            print(lines[-1], flush=True)
    print()
    print("\n".join(lines))
    print(f"\nmixture - Gaussian part: worst {min(losses):+.2f} dB, mean {np.mean(losses):+.2f} dB over {len(losses)} cases")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
