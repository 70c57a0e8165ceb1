"""The commands of `hsidenoise` and their one-line summaries: read by the console script's fast ``--help``
(:mod:`hsidenoise.console`) and by Typer's listing (:mod:`hsidenoise.cli`), so the two cannot drift apart."""

from __future__ import annotations

DESCRIPTION = "Denoise hyperspectral cubes (ENVI, GeoTIFF, MAT, HDF5) with DECSC or a fast low-rank method."
"""The tool in one line: the top of ``hsidenoise --help``."""

COMMANDS: dict[str, str] = {
    "noise": "Add synthetic noise to a cube normalised to [0, 1] (reproducible per --seed).",
    "eval": "Score a denoised cube: against a reference (--ref: MPSNR, SSIM, SAM, ERGAS), or without one "
    "(--noisy: input noise, removed std and their ratio, calibrated whiteness of the removed part).",
    "info": "Shape, data type, layout, wavelengths, dead / NaN / nodata bands, per-band noise, memory needed.",
    "convert": "Convert between ENVI, GeoTIFF, MAT and HDF5, block by block, keeping the metadata.",
    "run": "Denoise cubes: read, tile, denoise, blend and write, streaming tile by tile.",
    "train": "Train DECSC on your cubes with synthetic noise; checkpoints, --resume, torchrun-ready.",
    "finetune": "Continue training existing weights (default: the shipped ones) on your own sensor's cubes.",
    "models": "List the DECSC presets, their parameter counts and the weights found in weights/.",
}
"""Command name -> its one-line summary, in the order ``--help`` lists them."""
