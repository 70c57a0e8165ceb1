"""`hsidenoise convert`: one cube from any supported format to another, block by block."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from hsidenoise.cli.options import (
    AxesOpt,
    FormatChoice,
    FormatOpt,
    JsonOpt,
    OutputDtype,
    OverwriteOpt,
    QuietOpt,
    VarOpt,
    value_of,
)
from hsidenoise.cli.terminal import ProgressBars, errors_as_one_line, print_json, say


def convert(
    cube: Annotated[Path, typer.Argument(help="Input cube (any supported format).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Output cube; its suffix picks the format.")],
    *,
    fmt: FormatOpt = None,
    to: Annotated[
        FormatChoice | None,
        typer.Option(
            "--to", help="Output format when the suffix does not tell, or mat73 to force MAT v7.3 (HDF5-based)."
        ),
    ] = None,
    var: VarOpt = None,
    axes: AxesOpt = None,
    dtype: Annotated[
        OutputDtype,
        typer.Option(
            "--dtype",
            help="Output data type: the input's own type (default: a conversion keeps the values, like "
            "gdal_translate), or float32 (rounded and clipped; a clip is reported on stderr even with --quiet).",
        ),
    ] = OutputDtype.same,
    overwrite: OverwriteOpt = False,
    quiet: QuietOpt = False,
    json_output: JsonOpt = False,
) -> None:
    """Convert between ENVI, GeoTIFF, MAT and HDF5, block by block, keeping the metadata."""
    with errors_as_one_line():
        from hsidenoise.io import convert_cube

        clipped: list[int] = []
        underflowed: list[int] = []
        with ProgressBars(not (quiet or json_output)) as bars:
            written = convert_cube(
                cube,
                output,
                source_fmt=value_of(fmt),
                fmt=value_of(to),
                var=var,
                axes=axes,
                dtype=dtype.value,
                overwrite=overwrite,
                progress=bars.callback("converting"),
                on_clipped=clipped.append,
                on_underflowed=underflowed.append,
            )
        if json_output:
            print_json(
                {
                    "input": str(cube),
                    "output": str(written),
                    "dtype": dtype.value,
                    "clipped_values": sum(clipped),
                    "underflowed_values": sum(underflowed),
                }
            )
        # A change of the data is a warning, not progress: on stderr even with --quiet or --json.
        if sum(clipped):
            say(f"warning: {sum(clipped)} value(s) did not fit the output type {dtype.value} and were clipped to its range")
        if sum(underflowed):
            say(f"warning: {sum(underflowed)} non-zero value(s) were too small for the output type and became 0")
        if not (quiet or json_output):
            say(f"wrote {written}")
