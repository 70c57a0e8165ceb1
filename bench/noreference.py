"""Calibrated whiteness and the removed/noise ratio of the report's no-reference section, on real cubes with
synthetic noise (truth known).

For every cube (default: the CAVE, HYDICE and AVIRIS scenes of ``bench/quality.py``), min-max normalised to
[0, 1] as a whole and cut to its central ``--crop`` window, four cases are scored with
:func:`hsidenoise.quality.noreference.no_reference_quality`: non-i.i.d. Gaussian noise (sigma_max 95) denoised by
``lowrank`` (pure noise removed: few flags expected), the same noisy cube blurred (signal removed, as ``eval
--noisy`` would score another tool's output: most bands flagged expected), spatially correlated noise removed
exactly and by ``lowrank``, and noise correlated between neighbouring bands (AR(1), rho 0.5) removed exactly (not
flagged expected). It prints the flagged share (with the bands flagged by the
spatial check alone and those in a flagged neighbouring-band pair) and the median ratio. Last, with ``--real``
(default ``examples/santa_barbara.hdr``, real AVIRIS noise, truth unknown): ``lowrank`` on the whole cube and
the same blur, without normalising or cropping (the report's own setting; its dead bands are left out).

The MPSNR estimate is withheld in the report (no estimator validated within 0.5 dB); this script no longer
scores SURE.

Usage::

    nice -n 19 .venv/bin/python bench/noreference.py --crop 96

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
    args = parser.parse_args(argv)

    from scipy import ndimage

    from hsidenoise.cube import CubeMeta
    from hsidenoise.io.memory import ArrayReader
    from hsidenoise.quality.noreference import central_crop, no_reference_quality
    from hsidenoise.statistics import compute_statistics
    from hsidenoise.subspace import LowRankConfig, LowRankDenoiser

    method = LowRankDenoiser(LowRankConfig(spatial="dct"))
    header = (f"{'cube':<48} {'case':<40} {'flagged':>9} {'share':>6} {'spatial':>7} {'spectral':>8} {'ratio':>6} "
              f"{'s':>4}")
    print(header)
    print("-" * len(header))

    def show(path: str, case: str, noisy: np.ndarray, denoised: np.ndarray, crop: int, started: float) -> None:
        report = no_reference_quality(noisy, denoised, crop=crop)
        flagged, measured = len(report.flagged_bands), len(report.bands)
        spectral = {band for pair in report.flagged_pairs for band in (pair, pair + 1)}
        spatial = len(set(report.flagged_bands) - spectral)  # flagged for their spatial correlation only
        print(
            f"{path:<48} {case:<40} {flagged:4d}/{measured:<4d} {flagged / measured:6.1%} "
            f"{spatial / measured:7.1%} {len(spectral) / measured:8.1%} "
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
          "spatial: flagged for the lag-1 check only; spectral: in a flagged neighbouring-band pair; "
          "ratio: median std(removed) / input sigma. Targets: pure noise removed <= 10 % flagged; blur >= 50 %; "
          "correlated noise not flagged.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
