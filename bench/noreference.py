"""Calibrated whiteness and the removed/noise ratio of the report's no-reference section, on real cubes with
synthetic noise (truth known).

For every cube (default: the CAVE, HYDICE and AVIRIS scenes of ``bench/quality.py``), min-max normalised to
[0, 1] as a whole and cut to its central ``--crop`` window, four cases are scored with
:func:`hsidenoise.quality.noreference.no_reference_quality`: non-i.i.d. Gaussian noise (sigma_max 95) denoised by
``lowrank`` (pure noise removed: few flags expected), the same noisy cube blurred (signal removed, as ``eval
--noisy`` would score another tool's output: most bands flagged expected), spatially correlated noise removed
exactly and by ``lowrank``, and noise correlated between neighbouring bands (AR(1), rho 0.5) removed exactly (not
flagged expected). It prints the flagged share (with the bands flagged by the
spatial checks alone, those in a flagged neighbouring-band pair, and those flagged by the coarse-scale check) and
the median ratio. Last, with ``--real``
(default ``examples/santa_barbara.hdr``, real AVIRIS noise, truth unknown): ``lowrank`` on the whole cube and
the same blur, without normalising or cropping (the report's own setting; its dead bands are left out).

With ``--mpsnr`` it scores the report's MPSNR estimate instead (issue 18 item 3): on the same cubes at full size
(as ``bench/quality.py`` loads them, with its noises and seeds), each cube is denoised by ``lowrank`` (DCT) and
``decsc`` (the shipped subspace weights) through the tiled pipeline, the estimate
(:func:`hsidenoise.quality.subspace_mse.estimate_subspace_mse`) is taken on the central 128 x 128 crop of the
256 x 256 window as ``run --report`` takes it, and its point (the mean over the bands whose estimate is above
0), interval and what the report prints are shown next to the true MPSNR of the same crop with the same peak
(the output's value range over the window), and the share of the true error outside the subspace.

Usage::

    nice -n 19 .venv/bin/python bench/noreference.py --crop 96
    nice -n 19 .venv/bin/python bench/noreference.py --mpsnr [--seeds 2] [--methods lowrank decsc]

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

SPECTRAL_RHO = 0.5
"""Correlation between neighbouring bands of the spectrally correlated noise case."""
SEED = 2026
"""Noise seed of cube i and noise j: SEED + 100 * i + j (as bench/quality.py's first seed)."""


def load_clean(path: str) -> np.ndarray:
    """(B, H, W) float32 in [0, 1]: the cube min-max normalised as a whole."""
    from hsidenoise.io import read_cube

    resolved = Path(path) if Path(path).is_absolute() else DATA / path
    if not resolved.exists():
        raise SystemExit(f"cube {resolved} not found; pass paths relative to {DATA} or absolute paths")
    return normalise_cube(np.asarray(read_cube(resolved).data, dtype=np.float64))[0].astype(np.float32)



def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cubes", nargs="+", default=list(DEFAULT_CUBES), help="cube paths (default: three scenes)")
    parser.add_argument("--crop", type=int, default=96, help="side of the central crop (default 96)")
    parser.add_argument("--real", default=str(REPO / "examples" / "santa_barbara.hdr"),
                        help="a cube with real noise, scored as it is ('' to skip)")
    parser.add_argument("--mpsnr", action="store_true", help="score the MPSNR estimate instead of the flags")
    parser.add_argument("--seeds", type=int, default=2, help="--mpsnr: noise seeds per case (default 2)")
    parser.add_argument("--methods", nargs="+", default=["lowrank", "decsc"], help="--mpsnr: lowrank and/or decsc")
    args = parser.parse_args(argv)
    if args.mpsnr:
        return score_mpsnr(args.cubes, args.seeds, args.methods)

    from scipy import ndimage

    from hsidenoise.cube import CubeMeta
    from hsidenoise.io.memory import ArrayReader
    from hsidenoise.quality.noreference import central_crop, no_reference_quality
    from hsidenoise.statistics import compute_statistics
    from hsidenoise.subspace import LowRankConfig, LowRankDenoiser

    method = LowRankDenoiser(LowRankConfig(spatial="dct"))
    header = (f"{'cube':<48} {'case':<40} {'flagged':>9} {'share':>6} {'spatial':>7} {'spectral':>8} {'coarse':>6} "
              f"{'ratio':>6} {'s':>4}")
    print(header)
    print("-" * len(header))

    def show(path: str, case: str, noisy: np.ndarray, denoised: np.ndarray, crop: int, started: float) -> None:
        report = no_reference_quality(noisy, denoised, crop=crop)
        flagged, measured = len(report.flagged_bands), len(report.bands)
        spectral = {band for pair in report.flagged_pairs for band in (pair, pair + 1)}
        spatial = len(set(report.flagged_bands) - spectral)  # flagged for their spatial correlation only
        coarse = sum("coarse part" in reason for reason in report.flag_reasons.values())  # by the block check
        print(
            f"{path:<48} {case:<40} {flagged:4d}/{measured:<4d} {flagged / measured:6.1%} "
            f"{spatial / measured:7.1%} {len(spectral) / measured:8.1%} {coarse / measured:6.1%} "
            f"{np.nanmedian(report.removed_ratio):6.2f} {time.perf_counter() - started:4.0f}",
            flush=True,
        )

    for cube_index, path in enumerate(args.cubes):
        clean = load_clean(path)
        rows, cols = central_crop(clean.shape, args.crop)
        clean = clean[:, rows, cols]
        rng = np.random.default_rng(SEED + 100 * cube_index)
        truth = add_noise(clean, NOISES["noniid"], rng)
        sigma = np.asarray(truth.sigma, dtype=np.float64)[:, None, None]
        white = rng.standard_normal(clean.shape)
        correlated = (white + np.roll(white, 1, axis=2) + np.roll(white, 1, axis=1)) / np.sqrt(3.0)
        cases = []
        started = time.perf_counter()
        method.prepare(compute_statistics(ArrayReader(truth.noisy, CubeMeta())))
        cases.append(("non-i.i.d. noise, lowrank", truth.noisy, method.denoise_tile(truth.noisy)))
        blurred = ndimage.gaussian_filter(truth.noisy, sigma=(0, 1.5, 1.5))
        cases.append(("blur sigma 1.5 px (eval --noisy)", truth.noisy, blurred))
        noisy_corr = (clean + sigma * correlated).astype(np.float32)
        cases.append(("correlated noise, removed exactly", noisy_corr, clean))
        method.prepare(compute_statistics(ArrayReader(noisy_corr, CubeMeta())))
        cases.append(("correlated noise, lowrank", noisy_corr, method.denoise_tile(noisy_corr)))
        along = np.empty_like(white)  # AR(1) along the spectrum: neighbouring bands' noise correlates 0.5
        along[0] = white[0]
        for band in range(1, clean.shape[0]):
            along[band] = SPECTRAL_RHO * along[band - 1] + np.sqrt(1.0 - SPECTRAL_RHO**2) * white[band]
        noisy_spectral = (clean + sigma * along).astype(np.float32)
        cases.append(("spectrally corr. noise, removed exactly", noisy_spectral, clean))
        for case, noisy, denoised in cases:
            show(path, case, noisy, denoised, args.crop, started)
    if args.real:
        from hsidenoise.denoise import denoise_array
        from hsidenoise.io import read_cube

        started = time.perf_counter()
        noisy = np.asarray(read_cube(args.real).data, dtype=np.float32)
        name = Path(args.real).name + " (real noise)"
        denoised = denoise_array(noisy, LowRankDenoiser(LowRankConfig(spatial="dct")))  # dead bands pass through
        show(name, "lowrank (truth unknown)", noisy, denoised, 128, started)
        show(name, "blur sigma 1.5 px (eval --noisy)", noisy, ndimage.gaussian_filter(noisy, sigma=(0, 1.5, 1.5)), 128,
             started)  # fmt: skip
    print("\nflagged: bands whose removed part is correlated unlike the input noise (calibrated whiteness); "
          "spatial: flagged for the spatial checks only (lag 1, coarse scale); spectral: in a flagged neighbouring-band "
          "pair; coarse: flagged by the coarse-scale (4 x 4-block) check, alone or with others; "
          "ratio: median std(removed) / input sigma. Targets: pure noise removed <= 10 % flagged; blur >= 50 %; "
          "correlated noise not flagged.")
    return 0


def score_mpsnr(cubes: list[str], seeds: int, methods: list[str]) -> int:
    """The report's MPSNR estimate against the truth, per cube, noise, seed and method (module docstring)."""
    from quality import SEED as QUALITY_SEED
    from quality import load_clean as load_quality_clean

    from hsidenoise.denoise import denoise_array
    from hsidenoise.methods import build_method
    from hsidenoise.quality.noreference import DEFAULT_CROP, central_crop, no_reference_quality
    from hsidenoise.quality.run_report import NO_REFERENCE_WINDOW
    from hsidenoise.quality.subspace_mse import estimate_subspace_mse
    from hsidenoise.subspace import LowRankConfig, LowRankDenoiser, back_project

    def db(mse: np.ndarray, peak: float) -> float:
        with np.errstate(divide="ignore"):
            return float(np.mean(10.0 * np.log10(peak**2 / mse)))

    print("| cube | noise | seed | method | true MPSNR | estimate (point) | interval | entries cleaned | printed "
          "| outside / true MSE (median band) | estimate + section s | run s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for index, path in enumerate(cubes):
        clean_full = np.asarray(load_quality_clean(path, quick=False), dtype=np.float32)
        for noise_index, noise in enumerate(NOISES):
            for repeat in range(seeds):
                seed = QUALITY_SEED + 100 * index + noise_index + 1000 * repeat
                noisy_full = add_noise(clean_full, NOISES[noise], np.random.default_rng(seed)).noisy.astype(np.float32)
                for name in methods:
                    method = (LowRankDenoiser(LowRankConfig(spatial="dct")) if name == "lowrank"
                              else build_method("decsc", device="cpu"))  # fmt: skip
                    started = time.perf_counter()
                    denoised_full = denoise_array(noisy_full, method)
                    run_seconds = time.perf_counter() - started
                    window_rows, window_cols = central_crop(noisy_full.shape, NO_REFERENCE_WINDOW)  # the report's
                    window = (noisy_full[:, window_rows, window_cols],
                              denoised_full[:, window_rows, window_cols].astype(np.float64))  # fmt: skip
                    rows, cols = central_crop(window[0].shape, DEFAULT_CROP)  # where it estimates the MSE
                    noisy, denoised = window[0][:, rows, cols], window[1][:, rows, cols]
                    clean = clean_full[:, window_rows, window_cols][:, rows, cols].astype(np.float64)
                    started = time.perf_counter()
                    estimate = estimate_subspace_mse(noisy, method)
                    report = no_reference_quality(*window, method=method, mse_estimate=estimate)
                    estimate_seconds = time.perf_counter() - started
                    peak = report.peak
                    true_mse = np.mean((denoised - clean).reshape(clean.shape[0], -1) ** 2, axis=1)
                    subspace = method.subspace
                    weights = subspace.basis.T / subspace.sigma[None, :]
                    clean_eigen = (weights @ (clean.reshape(clean.shape[0], -1) - subspace.mean[:, None]))
                    kept = back_project(clean_eigen.reshape(subspace.rank, *clean.shape[1:]), subspace)
                    outside = np.mean((kept - clean).reshape(clean.shape[0], -1) ** 2, axis=1)
                    reason = report.estimated_mpsnr_reason
                    printed = (f"{report.estimated_mpsnr_db:.2f}" if report.estimated_mpsnr_db is not None else
                               "withheld (cleaned)" if "front end replaced" in reason else "withheld (uncertain)")
                    finite = estimate.mse > 0
                    interval = f"{db(estimate.high, peak):.1f} to {db(estimate.low, peak):.1f}"
                    print(
                        f"| {Path(path).stem} | {noise} | {seed} | {name} | {db(true_mse, peak):.2f} | "
                        f"{db(estimate.mse[finite], peak):.2f}"
                        f"{'' if finite.all() else f' ({np.count_nonzero(~finite)} bands at 0)'} | "
                        f"{interval} | {estimate.cleaned_entries} | {printed} | "
                        f"{np.median(outside / true_mse):.2f} | {estimate_seconds:.1f} | {run_seconds:.1f} |",
                        flush=True,
                    )
    print("\ntrue MPSNR and the estimate: the central crop the report estimates on, peak = the output's value range; "
          "interval: the estimate's range given the noise estimate's uncertainty, the sampling error and the part "
          "outside the subspace (no range is claimed where the front end cleaned entries: the report withholds then); "
          "printed: what report.json says (a number only within +-0.5 dB).")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
