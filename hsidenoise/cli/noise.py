"""`hsidenoise noise`: add one of the DECSC paper's synthetic noise cases to a cube normalised to [0, 1]."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated, Any

import typer

from hsidenoise.cli.options import AxesOpt, FormatOpt, JsonOpt, OverwriteOpt, QuietOpt, VarOpt, value_of
from hsidenoise.cli.terminal import errors_as_one_line, print_json, say
from hsidenoise.errors import ConfigError


def noise(
    cube: Annotated[Path, typer.Argument(help="Clean cube to corrupt (any supported format).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Noisy cube to write (format from suffix).")],
    *,
    recipe: Annotated[
        str,
        typer.Option("--recipe", help="gauss, noniid, corr, stripe, deadline, impulse or mixture (DECSC paper cases)."),
    ],
    sigma_max: Annotated[
        float | None,
        typer.Option(
            "--sigma-max", min=0, help="Gaussian level on the 0-255 scale (default 95; the peak for corr: 23.08)."
        ),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Random seed; the same seed gives the same noise.")] = 0,
    disjoint: Annotated[
        bool, typer.Option("--disjoint", help="mixture: impulse, stripe, deadline on disjoint thirds.")
    ] = False,
    write_clean: Annotated[
        Path | None, typer.Option("--write-clean", help="Also write the normalised [0, 1] reference used.")
    ] = None,
    fmt: FormatOpt = None,
    var: VarOpt = None,
    axes: AxesOpt = None,
    overwrite: OverwriteOpt = False,
    quiet: QuietOpt = False,
    json_output: JsonOpt = False,
) -> None:
    """Add synthetic noise to a cube normalised to [0, 1] (reproducible per --seed)."""
    with errors_as_one_line():
        import numpy as np

        from hsidenoise.io.discovery import cube_files
        from hsidenoise.io import create_cube, read_cube
        from hsidenoise.io.staging import output_folder
        from hsidenoise.noise import NoiseSpec, add_noise, normalise_cube

        options: dict[str, Any] = {"recipe": recipe, "disjoint": disjoint}
        if sigma_max is not None:
            options["corr_beta" if recipe == "corr" else "sigma_max"] = sigma_max
        spec = NoiseSpec(**options)
        outputs = [output] + ([write_clean] if write_clean is not None else [])
        if write_clean is not None and {p.resolve() for p in cube_files(output, existing=False)} & {
            p.resolve() for p in cube_files(write_clean, existing=False)
        }:
            raise ConfigError(f"-o {output} and --write-clean {write_clean} name the same cube; give two paths")
        protected = cube_files(cube, existing=True)  # an ENVI input is two files; neither may be written
        source = read_cube(cube, fmt=value_of(fmt), var=var, axes=axes)
        clean, low, high = normalise_cube(source.data, nodata=source.meta.nodata)
        result = add_noise(clean, spec, np.random.default_rng(seed))
        meta = source.meta
        meta.scale_factor = None
        if meta.nodata is not None:  # nodata pixels are NaN in both float32 outputs (never noised)
            meta.nodata = float("nan")
        meta.description = f"hsidenoise noise --recipe {recipe} --seed {seed} on {cube.name} (normalised to [0, 1])"
        # Both cubes are staged before either is committed, so a refused second output leaves no first one.
        # Missing output folders are created (as by run and convert) and removed again if the write fails.
        with contextlib.ExitStack() as stack:
            writers = []
            for path in outputs:
                stack.enter_context(output_folder(path))
                writers.append(
                    stack.enter_context(
                        create_cube(path, clean.shape, meta=meta, overwrite=overwrite, inputs=protected)
                    )
                )
            for writer, data in zip(writers, (result.noisy, clean), strict=False):
                writer.write(data, slice(0, clean.shape[1]), slice(0, clean.shape[2]))
        summary = {
            "input": str(cube),
            "outputs": [str(p) for p in outputs],
            "recipe": recipe,
            "seed": seed,
            "spec": {k: getattr(spec, k) for k in ("sigma_max", "disjoint", "corr_beta")},
            "normalisation": {"min": low, "max": high},
            "sigma_per_band": result.sigma,
            "structured_bands": {k: v for k, v in result.bands.items()},
        }
        if json_output:
            print_json(summary)
        elif not quiet:
            say(f"wrote {', '.join(map(str, outputs))} ({recipe}, seed {seed}, bands {source.bands})")
