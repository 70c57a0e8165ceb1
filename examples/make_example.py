"""Regenerate examples/santa_barbara.hdr + .img from the shared AVIRIS Santa Barbara cube.

The source is ``../shared/data/aviris_santa_barbara_lacumbre_224/a_hsi_img_for_VI_demo.mat``
(GatorSense/hsi_toolkit_py, MIT; see examples/README.md): ``hsi_img`` (90, 90, 224) int16 and
``wavelengths`` (224, 1) in nanometres. The pixels are copied unchanged (int16, every band kept,
the 43 zero-filled bad bands included) into an ENVI BSQ cube with the library's own writer.

Usage (from the repository root)::

    .venv/bin/python examples/make_example.py            # refuses to replace an existing cube
    .venv/bin/python examples/make_example.py --overwrite
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np

from hsidenoise.errors import HsiDenoiseError
from hsidenoise.io import read_cube, write_cube

EXAMPLES = Path(__file__).resolve().parent
SOURCE = (
    EXAMPLES.parents[1] / "shared" / "data" / "aviris_santa_barbara_lacumbre_224" / "a_hsi_img_for_VI_demo.mat"
)
TARGET = EXAMPLES / "santa_barbara.hdr"
DESCRIPTION = (
    "AVIRIS, Santa Barbara (La Cumbre Country Club), 16 Apr 2014: 90 x 90 pixels x 224 bands, 365.9-2496.2 nm, "
    "int16 as distributed (reflectance-like, about x 10^4; not documented). All 224 bands kept: 43 bad bands are "
    "zero-filled (0-based 0-1, 96-115, 153-170, 221-223) and low-SNR bands border the 1.4 / 1.9 um water windows. "
    "Source: GatorSense/hsi_toolkit_py demos/a_hsi_img_for_VI_demo.mat "
    "@ 8c5a023bf2395c6bf88171aefcc3888b78c0d709 (MIT licence); AVIRIS data NASA/JPL. "
    "Converted unchanged to ENVI by hsidenoise examples/make_example.py."
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=SOURCE, help="the .mat file from ../shared/data")
    parser.add_argument("--output", type=Path, default=TARGET, help="ENVI header to write (data file: .img)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing example cube")
    args = parser.parse_args()

    if not args.source.is_file():
        raise SystemExit(f"source cube not found: {args.source}; check out shared/ next to the repository")
    cube = read_cube(args.source, var="hsi_img")
    if cube.shape != (224, 90, 90) or cube.data.dtype != np.int16:
        raise SystemExit(f"unexpected source cube {cube.shape} {cube.data.dtype}; expected (224, 90, 90) int16")
    cube.meta = dataclasses.replace(
        cube.meta, wavelength_units="Nanometers", description=DESCRIPTION, interleave="bsq"
    )
    try:
        write_cube(args.output, cube, dtype="same", overwrite=args.overwrite)
    except HsiDenoiseError as error:
        raise SystemExit(f"error: {error}") from None
    print(f"wrote {args.output} and {args.output.with_suffix('.img')}: {cube.shape} (bands, rows, cols) int16")


if __name__ == "__main__":
    main()
