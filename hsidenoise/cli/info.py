"""`hsidenoise info`: what a cube holds and what running on it will need."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from hsidenoise.cli.options import AxesOpt, FormatOpt, JsonOpt, VarOpt, value_of
from hsidenoise.cli.terminal import band_list, errors_as_one_line, print_json


def info(
    cube: Annotated[Path, typer.Argument(help="Cube file (ENVI .hdr, GeoTIFF, MAT, HDF5).")],
    *,
    fmt: FormatOpt = None,
    var: VarOpt = None,
    axes: AxesOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Shape, data type, layout, wavelengths, dead / NaN / nodata bands, per-band noise, memory needed."""
    with errors_as_one_line():
        from hsidenoise.quality.describe import describe_cube

        facts = describe_cube(cube, fmt=value_of(fmt), var=var, axes=axes)
        if json_output:
            print_json(facts)
            return
        from rich.console import Console
        from rich.markup import escape
        from rich.table import Table

        shape = facts["shape"]
        table = Table(title=escape(str(cube)), show_header=False)
        table.add_row("format", f"{facts['format']} ({facts['interleave'] or 'n/a'} interleave)")
        table.add_row("shape", f"{shape['bands']} bands x {shape['rows']} rows x {shape['cols']} cols")
        table.add_row("data type", f"{facts['dtype']} ({facts['size_bytes'] / 2**20:.1f} MiB)")
        wl = facts["wavelength_range"]
        table.add_row(
            "wavelengths", "none" if wl is None else f"{wl[0]:g} - {wl[1]:g} {facts['wavelength_units'] or ''}"
        )
        table.add_row("nodata / scale", f"{facts['nodata']} / {facts['scale_factor']}")
        geo = facts.get("georeferencing")
        if geo is None:
            table.add_row("georeferencing", "none")
        else:
            place = escape(str(geo["crs"] or "no CRS"))
            if geo["pixel_size"] is not None:
                size_x, size_y = geo["pixel_size"]
                place += f", pixel {size_x:.6g} x {size_y:.6g}, origin ({geo['origin'][0]:.10g}, {geo['origin'][1]:.10g})"
                if geo["rotation_degrees"]:
                    place += f", rotated {geo['rotation_degrees']:.6g} deg"
            table.add_row("georeferencing", place)
        made = facts.get("provenance")
        if made:
            table.add_row(
                "made by", escape(f"{made.get('software', '?')} {made.get('method', '')}, weights "
                                  f"{made.get('weights', '?')}, {made.get('date', '')}")
            )
        table.add_row("dead bands", band_list(facts["dead_bands"]))
        table.add_row("NaN / nodata bands", band_list(facts["nan_or_nodata_bands"]))
        table.add_row("bad-band list (bbl=0)", band_list(facts["bad_band_list_zeros"]))
        noise_facts = facts["noise_sigma"]
        if noise_facts["relative_to_range_median"] is not None:
            table.add_row(
                "noise sigma",
                f"median {100 * noise_facts['relative_to_range_median']:.2f} % of band range; "
                f"noisiest bands {noise_facts['noisiest_bands']}",
            )
        else:
            table.add_row("noise sigma", escape(noise_facts["method"]))
        memory = facts["memory_needed_bytes"]
        table.add_row(
            "memory for run",
            f"about {memory['run_peak_lowrank'] / 2**20:.0f} MiB peak with lowrank "
            f"(pipeline {memory['run_pipeline'] / 2**20:.0f} MiB; DECSC adds its model)",
        )
        Console().print(table)
