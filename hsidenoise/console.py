"""The `hsidenoise` console script: the top-level ``--help`` at once, everything else through Typer.

``hsidenoise --help`` is what a user types first and what shell completion helpers and wrappers call often:
answered by Typer it costs about 0.27 s (Typer, pydantic and rich import, and every command's options are
built), of which the listing itself needs nothing. This module imports nothing heavy: exactly ``--help`` prints
the listing below and exits 0; any other command line goes to :data:`hsidenoise.cli.app`. The command names and
one-line summaries live here once (:data:`COMMANDS`) and Typer's own listing uses them too (``short_help``),
so the two cannot drift apart.
"""

from __future__ import annotations

import sys

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


def top_level_help(width: int = 80) -> str:
    """The text of ``hsidenoise --help``: usage, description, options and the commands with their summaries."""
    import textwrap

    name_width = max(map(len, COMMANDS)) + 2
    lines = ["Usage: hsidenoise [OPTIONS] COMMAND [ARGS]...", "", *textwrap.wrap(DESCRIPTION, width, initial_indent="  ", subsequent_indent="  "), ""]
    lines += ["Options:", "  --version, -V  Print the version.", "  --help         Show this message and exit.", ""]
    lines += ["Commands:"]
    for name, summary in COMMANDS.items():
        wrapped = textwrap.wrap(summary, width - 2 - name_width) or [""]
        lines.append(f"  {name:<{name_width}}{wrapped[0]}")
        lines += [" " * (2 + name_width) + more for more in wrapped[1:]]
    lines += ["", "Run 'hsidenoise COMMAND --help' for a command's options."]
    return "\n".join(lines) + "\n"


def main() -> None:
    """Entry point of the ``hsidenoise`` script and of ``python -m hsidenoise``."""
    if sys.argv[1:] == ["--help"]:
        sys.stdout.write(top_level_help())
        raise SystemExit(0)
    from hsidenoise.cli import app

    app()
