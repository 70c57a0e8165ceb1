"""The noise each eigen-image really carries, next to what the front end assumes (issue 16 item 3).

On the quality bench's validation cubes with non-i.i.d. noise (same cubes, seeds and normalisation as
``bench/quality.py``), the front end is fitted as ``hsidenoise run`` fits it (pixel sample and neighbour pairs),
and for each component j the true noise std of its eigen-image (std of Z - C, C the clean cube on the same
whitening and basis) is printed next to ``Subspace.component_noise`` (the estimate's own carry-through) and its
range (``Subspace.component_noise_range``: the band sigmas' uncertainty carried through), with the truth of the
noise alone (the projection without the tile cleaning: what the cleaning adds is the difference), the MPSNR of
the DCT eigen-image denoiser told 1 (what runs; the estimate is 1 on these draws) and told the true levels (an
oracle), and the band sigmas' ratio to the truth with the band regression alone and with the spatial neighbours. The last line counts
the components whose estimate is within 5 % of the truth and whose truth (and noise alone) lies in the range::

    .venv/bin/python bench/eigen_noise.py [--seeds 2]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.quality import DEFAULT_CUBES, NOISES, SEED, load_clean  # noqa: E402
from hsidenoise.noise import add_noise  # noqa: E402
from hsidenoise.quality.metrics import psnr_per_band  # noqa: E402
from hsidenoise.statistics import neighbour_pairs  # noqa: E402
from hsidenoise.subspace import LowRankConfig, back_project, fit_lowrank, project, sample_pixels  # noqa: E402
from hsidenoise.subspace.eigenimages import DCTDenoiser  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=2)
    args = parser.parse_args()
    config = LowRankConfig(spatial="dct")
    print(
        "| cube | seed | rank | true std per component | noise alone (no tile cleaning) | estimate | range "
        "| MPSNR told 1 (what runs) | told the truth | σ̂/σ median, worst band: band regression alone "
        "| with the neighbours |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    within = inside = noise_inside = total = 0
    for index, name in enumerate(DEFAULT_CUBES):
        clean = np.asarray(load_clean(name, quick=False), dtype=np.float64)
        bands = clean.shape[0]
        for repeat in range(args.seeds):
            seed = SEED + 100 * index + 1000 * repeat  # bench/quality.py's non-i.i.d. seeds
            truth_noise = add_noise(clean, NOISES["noniid"], np.random.default_rng(seed))
            noisy = truth_noise.noisy
            spectra = sample_pixels(noisy, config.sample_size, config.seed)
            subspace = fit_lowrank(spectra, config, neighbour_pairs(noisy, seed=1))
            spectral = fit_lowrank(spectra, config).gaussian_sigma / truth_noise.sigma
            refined = subspace.gaussian_sigma / truth_noise.sigma
            eigen_images, _ = project(noisy, subspace, config)
            whitened = (clean.reshape(bands, -1) - subspace.mean[:, None]) / subspace.sigma[:, None]
            clean_eigen = (subspace.basis.T @ whitened).reshape(eigen_images.shape)
            truth = (eigen_images - clean_eigen).reshape(subspace.rank, -1).std(axis=1)
            raw = (subspace.basis.T @ ((noisy - clean).reshape(bands, -1) / subspace.sigma[:, None])).std(axis=1)
            estimate = subspace.component_noise
            low, high = subspace.component_noise_range()
            within += int(np.count_nonzero(np.abs(estimate / truth - 1.0) <= 0.05))
            inside += int(np.count_nonzero((low <= truth) & (truth <= high)))
            noise_inside += int(np.count_nonzero((low <= raw) & (raw <= high)))
            total += subspace.rank
            denoiser = DCTDenoiser(config.dct_threshold)
            told_estimate = psnr_per_band(back_project(denoiser.denoise(eigen_images, 1.0), subspace), clean).mean()
            told_truth = psnr_per_band(back_project(denoiser.denoise(eigen_images, truth), subspace), clean).mean()
            print(
                f"| {Path(name).stem} | {seed} | {subspace.rank} | {' '.join(f'{v:.2f}' for v in truth)} | "
                f"{' '.join(f'{v:.2f}' for v in raw)} | {' '.join(f'{v:.2f}' for v in estimate)} | "
                f"{' '.join(f'{a:.2f}-{b:.2f}' for a, b in zip(low, high))} | {told_estimate:.2f} | {told_truth:.2f} | "
                f"{np.median(spectral):.3f}, {spectral.max():.2f} | {np.median(refined):.3f}, {refined.max():.2f} |",
                flush=True,
            )
    print(f"\nestimate within 5 % of the truth: {within} of {total} components; "
          f"truth inside the range: {inside} of {total} (the noise alone: {noise_inside} of {total})")


if __name__ == "__main__":
    main()
